//! `timeout`: drops all data in its direction and closes the connection
//! `timeout` ms after the last data arrived (the timer restarts on every
//! chunk, as in Toxiproxy). With `timeout = 0` data is dropped and the
//! connection is never closed by the fault. Removing the fault closes the
//! connections it affected, since the bytes it dropped are gone.

use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use super::chain::{Item, StageState};
use super::units::Millis;

/// Attributes of `timeout`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timeout {
    /// Quiet period before the close (ms); 0 never closes.
    pub timeout: Millis,
}

impl Timeout {
    /// Arms (or re-arms) the close timer from `now`.
    pub(crate) fn arm(&self, state: &mut StageState, now: Instant) {
        state.deadline = (!self.timeout.0.is_zero()).then(|| now + self.timeout.0);
    }

    pub(crate) fn apply(
        &self,
        item: Item,
        state: &mut StageState,
        now: Instant,
        out: &mut Vec<Item>,
    ) {
        if item.is_stream() {
            self.arm(state, now);
        } else {
            out.push(item);
        }
    }
}
