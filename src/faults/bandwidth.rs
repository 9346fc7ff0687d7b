//! `bandwidth`: limits the rate to `rate` KB/s (KB = 1000 bytes).
//!
//! Each chunk is scheduled on an absolute timeline (`next` moves forward by
//! `len / rate` per chunk), so timer imprecision never accumulates: a late
//! wake-up is made good by the next chunk, as Toxiproxy's carried sleep error
//! does. Chunks larger than 100 ms worth of data are split so the flow stays
//! smooth. `rate <= 0` means unlimited.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::chain::{Item, Payload, StageState};

/// Attributes of `bandwidth`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bandwidth {
    /// KB/s (1 KB = 1000 bytes).
    pub rate: i64,
}

impl Bandwidth {
    pub(crate) fn apply(&self, item: Item, state: &mut StageState, out: &mut Vec<Item>) {
        if self.rate <= 0 {
            out.push(item);
            return;
        }
        let rate = self.rate as u64;
        let start = state.next.map_or(item.at, |n| n.max(item.at));
        match item.payload {
            Payload::Data(mut data) => {
                // 100 ms worth of bytes at most per piece.
                let piece = (rate * 100).max(1) as usize;
                let mut at = start;
                while !data.is_empty() {
                    let part = data.split_to(piece.min(data.len()));
                    // len bytes at rate*1000 B/s take len/rate ms.
                    at += Duration::from_nanos(part.len() as u64 * 1_000_000 / rate);
                    out.push(Item {
                        at,
                        payload: Payload::Data(part),
                    });
                }
                state.next = Some(at);
            }
            other => out.push(Item {
                at: start,
                payload: other,
            }),
        }
    }
}
