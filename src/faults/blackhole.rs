//! `blackhole`: a network partition in one direction.
//!
//! Nothing passes in that direction and neither peer gets an error: they see
//! a hang, as behind a firewall that silently drops packets. By default the
//! bytes are *held*, as TCP would keep retransmitting them: shakedown stops
//! reading once its queue is full, so the sender blocks on a full window, and
//! when the fault is removed everything held is delivered (the partition
//! healed, no byte lost). With `drop = true` the bytes read during the
//! partition are discarded instead, and the stream is not whole afterwards.
//! Use it on both directions for a full partition.

use serde::{Deserialize, Serialize};

use super::chain::Item;

/// Attributes of `blackhole`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Blackhole {
    /// Discard the bytes instead of holding them (`0`/`false` holds).
    #[serde(deserialize_with = "bool_or_int")]
    pub drop: bool,
}

/// Toxiproxy clients send attributes as numbers; accept `1`/`0` as well.
fn bool_or_int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Int(i64),
    }
    Ok(match B::deserialize(d)? {
        B::Bool(b) => b,
        B::Int(i) => i != 0,
    })
}

impl Blackhole {
    pub(crate) fn apply(&self, item: Item, out: &mut Vec<Item>) {
        if !(self.drop && item.is_stream()) {
            out.push(item);
        }
    }

    /// Whether the chain must stop delivering while this fault is active.
    pub(crate) fn holds(&self) -> bool {
        !self.drop
    }
}
