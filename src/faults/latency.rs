//! `latency`: delays every chunk by `latency ± jitter` milliseconds.
//!
//! As in Toxiproxy, the delay counts from when the chunk was read, so chunks
//! queued behind one another are not delayed cumulatively and throughput is
//! kept; chained latency faults add up. The end of the stream (FIN) is
//! delayed as well, as it would be on a slow link.

use std::time::Duration;

use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::chain::Item;
use super::random::FaultRng;
use super::units::Millis;

/// Attributes of `latency`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// Added delay (ms).
    pub latency: Millis,
    /// Uniform variation either way (ms): `U[-jitter, +jitter)`.
    pub jitter: Millis,
}

impl Latency {
    /// The delay for one chunk.
    pub fn sample(&self, rng: &mut FaultRng) -> Duration {
        let base = self.latency.0.as_nanos() as i128;
        let jitter = self.jitter.0.as_nanos() as i128;
        let delay = if jitter > 0 {
            let j = rng.random_range(0..(2 * jitter) as u64) as i128 - jitter;
            base + j
        } else {
            base
        };
        Duration::from_nanos(delay.max(0) as u64)
    }

    pub(crate) fn apply(&self, mut item: Item, rng: &mut FaultRng, out: &mut Vec<Item>) {
        if item.is_stream() {
            item.at += self.sample(rng);
        }
        out.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn jitter_stays_in_range() {
        let l = Latency {
            latency: Millis::from_ms(100),
            jitter: Millis::from_ms(10),
        };
        let mut rng = FaultRng::seed_from_u64(1);
        for _ in 0..1000 {
            let d = l.sample(&mut rng);
            assert!(d >= Duration::from_millis(90) && d < Duration::from_millis(110));
        }
    }
}
