//! Seeded randomness for faults.
//!
//! Every random choice a fault makes comes from here, derived from the run's
//! seed, so the same seed gives the same decisions. Values are derived from
//! stable identities (proxy name, connection number, direction, fault name)
//! rather than drawn from one shared stream, so a decision does not depend on
//! the order in which concurrent connections happen to be scheduled.

use rand::RngExt;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Direction;

/// The generator faults use: small, fast and identical on every platform.
pub type FaultRng = ChaCha8Rng;

/// SplitMix64's finaliser: spreads the bits of a combined key.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a: a stable hash of a name (std's hasher may change between releases).
pub fn hash_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// Combines a seed with further parts into one well-mixed value.
pub fn derive(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(mix(seed), |acc, p| mix(acc ^ mix(*p)))
}

/// The seed of one proxy, from the run's seed and the proxy's name.
pub fn proxy_seed(run_seed: u64, proxy: &str) -> u64 {
    derive(run_seed, &[hash_name(proxy)])
}

fn dir_tag(dir: Direction) -> u64 {
    match dir {
        Direction::Upstream => 1,
        Direction::Downstream => 2,
    }
}

/// The generator for one connection direction (jitter, slicer sizes).
pub fn direction_rng(proxy_seed: u64, conn: u64, dir: Direction) -> FaultRng {
    FaultRng::seed_from_u64(derive(proxy_seed, &[conn, dir_tag(dir)]))
}

/// The toxicity draw of one fault on one connection direction, in `[0, 1)`.
///
/// Drawn once: the fault is active there while `draw < toxicity`, so raising
/// the toxicity later only adds connections, never reshuffles them.
pub fn toxicity_draw(proxy_seed: u64, conn: u64, dir: Direction, fault: &str) -> f32 {
    let mut rng =
        FaultRng::seed_from_u64(derive(proxy_seed, &[conn, dir_tag(dir), hash_name(fault)]));
    rng.random::<f32>()
}

/// The toxicity draw of a PostgreSQL fault for one query of a session
/// (`query` counts the session's queries from 0), in `[0, 1)`: the same
/// seed and the same sequence of queries give the same decisions.
pub fn query_draw(proxy_seed: u64, conn: u64, query: u64, fault: &str) -> f32 {
    let mut rng = FaultRng::seed_from_u64(derive(proxy_seed, &[conn, 3, query, hash_name(fault)]));
    rng.random::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_stable_and_spread() {
        let a = toxicity_draw(7, 3, Direction::Upstream, "x");
        assert_eq!(a, toxicity_draw(7, 3, Direction::Upstream, "x"));
        assert_ne!(a, toxicity_draw(7, 3, Direction::Downstream, "x"));
        assert_ne!(a, toxicity_draw(8, 3, Direction::Upstream, "x"));
        let below = (0..10_000)
            .filter(|c| toxicity_draw(1, *c, Direction::Upstream, "t") < 0.5)
            .count();
        // Binomial(10000, 0.5): sd = 50; 5 sd either way.
        assert!((4750..=5250).contains(&below), "{below}");
    }
}
