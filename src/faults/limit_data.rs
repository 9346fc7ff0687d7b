//! `limit_data`: forwards at most `bytes` bytes in its direction (the last
//! chunk truncated), then closes the connection. The count survives changes
//! to the fault set for the life of the connection, as Toxiproxy's stateful
//! toxic does.

use serde::{Deserialize, Serialize};

use super::chain::{Item, Payload, StageState};

/// Attributes of `limit_data`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitData {
    /// Bytes allowed through before the close.
    pub bytes: i64,
}

impl LimitData {
    pub(crate) fn apply(&self, item: Item, state: &mut StageState, out: &mut Vec<Item>) {
        let Payload::Data(mut data) = item.payload else {
            out.push(item);
            return;
        };
        if state.fired {
            return;
        }
        let limit = self.bytes.max(0) as u64;
        let remaining = limit.saturating_sub(state.count) as usize;
        if data.len() > remaining {
            data.truncate(remaining);
        }
        state.count += data.len() as u64;
        let at = item.at;
        if !data.is_empty() {
            out.push(Item {
                at,
                payload: Payload::Data(data),
            });
        }
        if state.count >= limit {
            state.fired = true;
            out.push(Item {
                at,
                payload: Payload::Close,
            });
        }
    }
}
