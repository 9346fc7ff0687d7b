//! `reset_peer`: on the first data (or end of stream) in its direction, waits
//! `timeout` ms and then resets the connection: both sockets are closed with
//! `SO_LINGER` 0, so both peers get a real RST (ECONNRESET). The triggering
//! data is dropped, as in Toxiproxy. Unlike Toxiproxy (its issue #603), a
//! connection the fault does not affect (toxicity) closes normally.

use serde::{Deserialize, Serialize};

use super::chain::{Item, Payload, StageState};
use super::units::Millis;

/// Attributes of `reset_peer`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResetPeer {
    /// Wait before the reset (ms).
    pub timeout: Millis,
}

impl ResetPeer {
    pub(crate) fn apply(&self, item: Item, state: &mut StageState, out: &mut Vec<Item>) {
        if !item.is_stream() {
            out.push(item);
            return;
        }
        if !state.fired {
            state.fired = true;
            out.push(Item {
                at: item.at + self.timeout.0,
                payload: Payload::Reset,
            });
        }
    }
}
