//! `slicer`: cuts each chunk into pieces of about `average_size` bytes
//! (± `size_variation`), sent `delay` microseconds apart, as Toxiproxy does
//! by halving recursively around a randomly moved midpoint. Useful to flush
//! out parsers that assume a message arrives in one read.

use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::chain::{Item, Payload, StageState};
use super::random::FaultRng;
use super::units::Micros;

/// Attributes of `slicer`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Slicer {
    /// Target piece size (bytes).
    pub average_size: i64,
    /// Allowed variation of the piece size (bytes).
    pub size_variation: i64,
    /// Pause between pieces (µs, as in Toxiproxy).
    pub delay: Micros,
}

impl Slicer {
    /// The piece boundaries of a `len`-byte chunk: `[0, b1, ..., len]`.
    pub fn cuts(&self, len: usize, rng: &mut FaultRng) -> Vec<usize> {
        let mut cuts = vec![0];
        self.split(0, len as i64, rng, &mut cuts);
        cuts
    }

    fn split(&self, start: i64, end: i64, rng: &mut FaultRng, cuts: &mut Vec<usize>) {
        // Toxiproxy does not validate its attributes; a piece of at least one
        // byte keeps a zero or negative size from recursing forever.
        let bound = (self.average_size + self.size_variation.max(0)).max(1);
        if end - start <= bound {
            cuts.push(end as usize);
            return;
        }
        let mut mid = start + (end - start) / 2;
        if self.size_variation > 0 {
            let v = self.size_variation;
            mid += rng.random_range(0..2 * v) - v;
        }
        let mid = mid.clamp(start + 1, end - 1);
        self.split(start, mid, rng, cuts);
        self.split(mid, end, rng, cuts);
    }

    pub(crate) fn apply(
        &self,
        item: Item,
        state: &mut StageState,
        rng: &mut FaultRng,
        out: &mut Vec<Item>,
    ) {
        let base = state.next.map_or(item.at, |n| n.max(item.at));
        match item.payload {
            Payload::Data(data) => {
                let cuts = self.cuts(data.len(), rng);
                let mut at = base;
                for w in cuts.windows(2) {
                    out.push(Item {
                        at,
                        payload: Payload::Data(data.slice(w[0]..w[1])),
                    });
                    at += self.delay.0;
                }
                state.next = Some(at);
            }
            other => out.push(Item {
                at: base,
                payload: other,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn cuts_cover_the_chunk_in_bounded_pieces() {
        let s = Slicer {
            average_size: 10,
            size_variation: 3,
            delay: Micros::default(),
        };
        let mut rng = FaultRng::seed_from_u64(9);
        for len in [0usize, 1, 13, 14, 100, 4096] {
            let cuts = s.cuts(len, &mut rng);
            assert_eq!(*cuts.first().unwrap(), 0);
            assert_eq!(*cuts.last().unwrap(), len);
            for w in cuts.windows(2) {
                assert!(w[1] > w[0] || len == 0);
                assert!(w[1] - w[0] <= 13, "{cuts:?}");
            }
        }
        let zero = Slicer::default();
        assert_eq!(zero.cuts(3, &mut rng), vec![0, 1, 2, 3]);
    }
}
