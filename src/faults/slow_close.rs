//! `slow_close`: data flows normally; the end of the stream is passed on only
//! `delay` milliseconds after it arrived.

use serde::{Deserialize, Serialize};

use super::chain::{Item, Payload};
use super::units::Millis;

/// Attributes of `slow_close`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlowClose {
    /// How long the close is held back (ms).
    pub delay: Millis,
}

impl SlowClose {
    pub(crate) fn apply(&self, mut item: Item, out: &mut Vec<Item>) {
        if matches!(item.payload, Payload::Eof) {
            item.at += self.delay.0;
        }
        out.push(item);
    }
}
