//! Per-source operation recorder: what every load operation and probe
//! reading did, kept sample by sample so any window can be judged later.
//!
//! The runner asks for arbitrary windows (each phase, the last few seconds
//! for guardrails, every suffix of the recovery phase for the recovery
//! time), so aggregates fixed at record time would not do: the recorder
//! keeps one compact sample per operation, ordered by start, and builds a
//! window's figures on demand. An operation belongs to the window its
//! *start* falls in, so a slow operation counts where it was issued.
//!
//! Everything is bounded: [`MAX_SAMPLES`] samples of 16 bytes,
//! [`MAX_VALUES`] probe values, [`MAX_CLASSES`] error classes of at most
//! [`MAX_CLASS_LEN`] bytes. Past the sample bound new operations are
//! dropped and counted ([`Summary::dropped`]); windows that only hold
//! dropped operations then read as "no data", never as a false figure.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;
use tracing::warn;

use super::spec::Metric;

/// Samples kept per source. At 16 bytes each this is at most 128 MB per
/// load, which holds 2.2 hours at 1000 operations per second; longer or
/// faster runs drop (and count) the excess rather than grow without bound.
pub const MAX_SAMPLES: usize = 8_000_000;
/// Probe values kept per source (16 bytes each, 16 MB at most): probes read
/// every few seconds, so this is weeks of readings.
pub const MAX_VALUES: usize = 1_000_000;
/// Distinct error classes named per source; enough for every SQLSTATE or
/// status a run plausibly produces, few enough to print. The rest are
/// counted under [`OTHER`].
pub const MAX_CLASSES: usize = 32;
/// Longest error class kept, in bytes: classes are short labels
/// (`sqlstate 57014`), never messages.
pub const MAX_CLASS_LEN: usize = 48;
/// The class of errors beyond [`MAX_CLASSES`].
pub const OTHER: &str = "other";

/// Latency of an operation that never ran (`overloaded`).
const NO_LATENCY: u32 = u32::MAX;
/// Class code of a successful operation.
const OK: u8 = 0;
/// Class code of [`OTHER`]; named classes are `1..=MAX_CLASSES`.
const OTHER_CODE: u8 = MAX_CLASSES as u8 + 1;
/// Growth step of the sample vector when it is small: avoids a dozen tiny
/// reallocations at the start of every run.
const MIN_GROWTH: usize = 1024;

/// One operation, compact: 16 bytes with padding.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Start, nanoseconds after `t0`.
    start_ns: u64,
    /// Microseconds, saturated below [`NO_LATENCY`] (71 minutes);
    /// [`NO_LATENCY`] when the operation never ran.
    latency_us: u32,
    /// [`OK`], a class index + 1, or [`OTHER_CODE`].
    class: u8,
}

#[derive(Debug, Default)]
struct State {
    /// Ordered by `start_ns`.
    samples: Vec<Sample>,
    /// `(start_ns, value)`, ordered by start.
    values: Vec<(u64, f64)>,
    /// Named error classes; code `i + 1` is `classes[i]`.
    classes: Vec<String>,
    /// Operations not kept because [`MAX_SAMPLES`] was reached.
    dropped: u64,
}

/// Records operations of one load or probe; shared by the tasks that run
/// them and the runner that judges them.
#[derive(Debug)]
pub struct Recorder {
    t0: Instant,
    max_samples: usize,
    state: Mutex<State>,
}

impl Recorder {
    /// A recorder whose offsets count from `t0` (the start of the run).
    pub fn new(t0: Instant) -> Arc<Self> {
        Self::with_limit(t0, MAX_SAMPLES)
    }

    fn with_limit(t0: Instant, max_samples: usize) -> Arc<Self> {
        Arc::new(Self {
            t0,
            max_samples,
            state: Mutex::new(State::default()),
        })
    }

    /// Records one operation started at `start`. `latency` is `None` for an
    /// operation that never ran (no free slot); `result` is the value read
    /// (if any) on success, or a short error class (`timeout`,
    /// `sqlstate 57014`, …) on failure. NaN values are ignored.
    pub fn record(
        &self,
        start: Instant,
        latency: Option<Duration>,
        result: Result<Option<f64>, &str>,
    ) {
        let start_ns =
            u64::try_from(start.saturating_duration_since(self.t0).as_nanos()).unwrap_or(u64::MAX);
        let latency_us = latency.map_or(NO_LATENCY, |d| {
            u32::try_from(d.as_micros()).map_or(NO_LATENCY - 1, |us| us.min(NO_LATENCY - 1))
        });
        let mut st = self.lock();
        if st.samples.len() >= self.max_samples {
            if st.dropped == 0 {
                warn!(
                    max = self.max_samples,
                    "operation recorder full; later operations are not recorded"
                );
            }
            st.dropped += 1;
            return;
        }
        let (class, value) = match result {
            Ok(v) => (OK, v.filter(|v| !v.is_nan())),
            Err(c) => (st.class_code(c), None),
        };
        let sample = Sample {
            start_ns,
            latency_us,
            class,
        };
        let max = self.max_samples;
        insert_by_start(&mut st.samples, sample, max, |s| s.start_ns);
        if let Some(v) = value
            && st.values.len() < MAX_VALUES
        {
            insert_by_start(&mut st.values, (start_ns, v), MAX_VALUES, |s| s.0);
        }
    }

    /// Records a successful operation.
    pub fn ok(&self, start: Instant, latency: Duration, value: Option<f64>) {
        self.record(start, Some(latency), Ok(value));
    }

    /// Records a failed operation of class `class`; `latency` is `None`
    /// when it never ran.
    pub fn error(&self, start: Instant, latency: Option<Duration>, class: &str) {
        self.record(start, latency, Err(class));
    }

    /// Summary of operations started in `[from, to)`.
    pub fn summary(&self, from: Instant, to: Instant) -> Summary {
        let lo = self.offset(from);
        let hi = self.offset(to);
        let seconds = to.saturating_duration_since(from).as_secs_f64();
        let st = self.lock();
        let window = slice_between(&st.samples, lo, hi, |s| s.start_ns);
        let values = slice_between(&st.values, lo, hi, |s| s.0);

        let mut ops = 0u64;
        let mut errors = 0u64;
        let mut by_code = [0u64; OTHER_CODE as usize + 1];
        // Microseconds, 3 significant digits, up to the largest latency kept.
        let mut hist = Histogram::<u64>::new_with_bounds(1, u64::from(NO_LATENCY), 3).ok();
        let mut max_us: Option<u32> = None;
        for s in window {
            ops += 1;
            if s.class != OK {
                errors += 1;
                by_code[usize::from(s.class)] += 1;
            }
            if s.latency_us != NO_LATENCY {
                if let Some(h) = hist.as_mut() {
                    h.saturating_record(u64::from(s.latency_us));
                }
                max_us = Some(max_us.map_or(s.latency_us, |m| m.max(s.latency_us)));
            }
        }
        let pct = |q: f64| -> Option<f64> {
            let h = hist.as_ref()?;
            let m = u64::from(max_us?);
            // HdrHistogram reports the top of a bucket, up to 0.1 % above
            // the samples in it; never above the exact maximum.
            Some(h.value_at_quantile(q).min(m) as f64 / 1e6)
        };
        let mut errors_by_class: Vec<(String, u64)> = by_code
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .filter_map(|(code, n)| {
                let name = match code {
                    0 => return None,
                    c if c == usize::from(OTHER_CODE) => OTHER.to_string(),
                    c => st.classes.get(c - 1)?.clone(),
                };
                Some((name, *n))
            })
            .collect();
        errors_by_class.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let value = if values.is_empty() {
            None
        } else {
            Some(values.iter().map(|v| v.1).sum::<f64>() / values.len() as f64)
        };
        Summary {
            ops,
            errors,
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
            max: max_us.map(|m| f64::from(m) / 1e6),
            value,
            seconds,
            values: values.len() as u64,
            errors_by_class,
            dropped: st.dropped,
        }
    }

    fn offset(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.t0).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The state, even if a recording task panicked while holding it (the
    /// samples are still valid: every update is a single push or insert).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn class_code(&mut self, class: &str) -> u8 {
        let class = truncate(class, MAX_CLASS_LEN);
        if let Some(i) = self.classes.iter().position(|c| c == class) {
            return i as u8 + 1;
        }
        if self.classes.len() < MAX_CLASSES {
            self.classes.push(class.to_string());
            return self.classes.len() as u8;
        }
        OTHER_CODE
    }
}

/// `s` cut to at most `max` bytes at a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Inserts keeping `v` ordered by `key`. Operations finish out of order,
/// but only slightly (by at most a timeout), so the insertion point is
/// almost always at or near the end: the shift is short.
fn insert_by_start<T>(v: &mut Vec<T>, item: T, max: usize, key: impl Fn(&T) -> u64) {
    if v.len() == v.capacity() {
        // Grow by doubling, but never past the bound (no 2× overshoot).
        let want = (v.capacity() * 2).max(MIN_GROWTH).min(max.max(1));
        v.reserve_exact(want.saturating_sub(v.len()).max(1));
    }
    let k = key(&item);
    let pos = if v.last().is_none_or(|l| key(l) <= k) {
        v.len()
    } else {
        v.partition_point(|x| key(x) <= k)
    };
    v.insert(pos, item);
}

/// The elements of the ordered `v` whose key is in `[lo, hi)`.
fn slice_between<T>(v: &[T], lo: u64, hi: u64, key: impl Fn(&T) -> u64) -> &[T] {
    let a = v.partition_point(|x| key(x) < lo);
    let b = v.partition_point(|x| key(x) < hi);
    if a < b { &v[a..b] } else { &[] }
}

/// What a source did in a window: the figures SLOs are checked on and
/// reports print.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Operations started in the window (failed ones included).
    pub ops: u64,
    /// Failed operations (timeouts and `overloaded` included).
    pub errors: u64,
    /// Median latency, seconds, over every operation that ran (failed ones
    /// included, a timed-out one with the time waited); `None` without any.
    pub p50: Option<f64>,
    /// 95th percentile latency, seconds.
    pub p95: Option<f64>,
    /// 99th percentile latency, seconds.
    pub p99: Option<f64>,
    /// Largest latency, seconds (exact to the microsecond).
    pub max: Option<f64>,
    /// Mean of the values read (probes); `None` without any.
    pub value: Option<f64>,
    /// Window length, seconds.
    pub seconds: f64,
    /// How many values the mean is over.
    pub values: u64,
    /// Failed operations per error class, most frequent first.
    pub errors_by_class: Vec<(String, u64)>,
    /// Operations the recorder dropped (over the whole run, not just this
    /// window) because it was full; nonzero means figures may be missing.
    pub dropped: u64,
}

impl Summary {
    /// A metric of this summary; `None` means "no data" (the verdict is
    /// then inconclusive), never a made-up zero.
    pub fn metric(&self, m: Metric) -> Option<f64> {
        let rate = |n: u64| n as f64 / self.ops as f64;
        match m {
            Metric::LatencyP50 => self.p50,
            Metric::LatencyP95 => self.p95,
            Metric::LatencyP99 => self.p99,
            Metric::LatencyMax => self.max,
            Metric::ErrorRate => (self.ops > 0).then(|| rate(self.errors)),
            Metric::Availability => {
                (self.ops > 0).then(|| rate(self.ops.saturating_sub(self.errors)))
            }
            // A load whose every operation failed did nothing useful: 0.
            // One that started no operation at all gave no data: None.
            Metric::Throughput => (self.ops > 0 && self.seconds > 0.0)
                .then(|| self.ops.saturating_sub(self.errors) as f64 / self.seconds),
            Metric::Value => self.value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A small deterministic generator (xorshift64*), so the test is
    /// repeatable and independent of the crate's RNG plumbing.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// Nearest rank: the smallest sample with at least `p`% of the samples
    /// at or below it, computed with integers on the sorted samples.
    fn nearest_rank(sorted: &[u64], p: u64) -> u64 {
        let n = sorted.len() as u64;
        let rank = (p * n).div_ceil(100).max(1);
        sorted[(rank - 1) as usize]
    }

    #[test]
    fn percentiles_match_nearest_rank_on_the_same_samples() {
        let t0 = Instant::now();
        for (seed, n) in [(1u64, 1usize), (2, 7), (3, 100), (4, 1013), (5, 20_000)] {
            let rec = Recorder::new(t0);
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut lat_us = Vec::with_capacity(n);
            for i in 0..n {
                // A long-tailed mix: mostly 1–20 ms, some up to 2 s.
                let r = rng.next();
                let us = if r.is_multiple_of(10) {
                    20_000 + r % 2_000_000
                } else {
                    1_000 + r % 19_000
                };
                lat_us.push(us);
                let ok = !i.is_multiple_of(3);
                let d = Duration::from_micros(us);
                if ok {
                    rec.ok(t0 + Duration::from_micros(i as u64), d, None);
                } else {
                    // Failed operations with a latency count too.
                    rec.error(t0 + Duration::from_micros(i as u64), Some(d), "timeout");
                }
            }
            let s = rec.summary(t0, t0 + 10 * S);
            lat_us.sort_unstable();
            for (p, got) in [(50, s.p50), (95, s.p95), (99, s.p99)] {
                let want = nearest_rank(&lat_us, p) as f64 / 1e6;
                let got = got.expect("percentile");
                // HdrHistogram with 3 significant digits: within 0.1 %.
                let tol = want * 0.001 + 1e-6;
                assert!(
                    (got - want).abs() <= tol,
                    "n={n} p{p}: hdr {got} vs nearest rank {want}"
                );
            }
            let max = *lat_us.last().expect("samples") as f64 / 1e6;
            assert_eq!(s.max, Some(max), "max is exact");
            assert!(s.p99.expect("p99") <= max);
            assert_eq!(s.ops, n as u64);
        }
    }

    #[test]
    fn window_is_by_start_half_open() {
        let t0 = Instant::now();
        let rec = Recorder::new(t0);
        // Recorded out of order, as operations finish.
        rec.ok(t0 + ms(1500), ms(30), None);
        rec.ok(t0 + ms(500), ms(10), None);
        rec.error(t0 + ms(1000), Some(ms(20)), "timeout");
        rec.ok(t0 + ms(999), ms(5), None);
        let s = rec.summary(t0 + ms(1000), t0 + ms(1500));
        assert_eq!((s.ops, s.errors), (1, 1));
        assert_eq!(s.max, Some(0.020));
        assert_eq!(s.seconds, 0.5);
        let s = rec.summary(t0, t0 + ms(1000));
        assert_eq!((s.ops, s.max), (2, Some(0.010)));
        let s = rec.summary(t0 + ms(1500), t0 + 2 * S);
        assert_eq!((s.ops, s.p50), (1, Some(0.030)));
        let s = rec.summary(t0 + 3 * S, t0 + 4 * S);
        assert_eq!(s.ops, 0);
        let s = rec.summary(t0 + ms(1000), t0 + ms(1000));
        assert_eq!((s.ops, s.seconds), (0, 0.0));
        // A window starting before t0 holds everything from t0 on.
        let before = t0.checked_sub(S).unwrap_or(t0);
        assert_eq!(rec.summary(before, t0 + 2 * S).ops, 4);
    }

    #[test]
    fn metrics() {
        let t0 = Instant::now();
        let rec = Recorder::new(t0);
        for i in 0..6 {
            rec.ok(t0 + ms(i * 100), ms(10 * (i + 1)), None);
        }
        rec.error(t0 + ms(700), Some(ms(500)), "timeout");
        rec.error(t0 + ms(800), None, "overloaded");
        let s = rec.summary(t0, t0 + 2 * S);
        assert_eq!((s.ops, s.errors), (8, 2));
        assert_eq!(s.metric(Metric::ErrorRate), Some(0.25));
        assert_eq!(s.metric(Metric::Availability), Some(0.75));
        assert_eq!(s.metric(Metric::Throughput), Some(3.0), "6 ok / 2 s");
        // 7 latencies: 10..60 ms and the 500 ms timeout; overloaded has none.
        assert_eq!(s.metric(Metric::LatencyMax), Some(0.5));
        let p50 = s.metric(Metric::LatencyP50).expect("p50");
        assert!((p50 - 0.040).abs() < 0.040 * 0.001, "{p50}");
        let p95 = s.metric(Metric::LatencyP95).expect("p95");
        assert!((p95 - 0.5).abs() < 0.5 * 0.001, "{p95}");
        assert_eq!(s.metric(Metric::Value), None);
        assert_eq!(
            s.errors_by_class,
            vec![("overloaded".to_string(), 1), ("timeout".to_string(), 1)]
        );
    }

    #[test]
    fn no_data_versus_all_failed() {
        let t0 = Instant::now();
        let rec = Recorder::new(t0);
        let empty = rec.summary(t0, t0 + S);
        for m in [
            Metric::LatencyP50,
            Metric::LatencyP95,
            Metric::LatencyP99,
            Metric::LatencyMax,
            Metric::ErrorRate,
            Metric::Availability,
            Metric::Throughput,
            Metric::Value,
        ] {
            assert_eq!(empty.metric(m), None, "{m:?} without operations");
        }
        for i in 0..4 {
            rec.error(t0 + ms(i * 10), None, "overloaded");
        }
        let s = rec.summary(t0, t0 + S);
        assert_eq!(s.metric(Metric::Throughput), Some(0.0));
        assert_eq!(s.metric(Metric::ErrorRate), Some(1.0));
        assert_eq!(s.metric(Metric::Availability), Some(0.0));
        assert_eq!(s.metric(Metric::LatencyP99), None, "nothing ran");
        let zero_len = rec.summary(t0, t0);
        assert_eq!(zero_len.metric(Metric::Throughput), None);
    }

    #[test]
    fn values_mean_in_window() {
        let t0 = Instant::now();
        let rec = Recorder::new(t0);
        rec.ok(t0, ms(1), Some(1.0));
        rec.ok(t0 + ms(100), ms(1), Some(3.0));
        rec.ok(t0 + ms(200), ms(1), None);
        rec.ok(t0 + ms(300), ms(1), Some(f64::NAN));
        rec.error(t0 + ms(400), Some(ms(1)), "empty");
        rec.ok(t0 + 2 * S, ms(1), Some(100.0));
        let s = rec.summary(t0, t0 + S);
        assert_eq!(s.metric(Metric::Value), Some(2.0));
        assert_eq!((s.values, s.ops, s.errors), (2, 5, 1));
        assert_eq!(rec.summary(t0 + S, t0 + 3 * S).value, Some(100.0));
    }

    #[test]
    fn classes_are_bounded() {
        let t0 = Instant::now();
        let rec = Recorder::new(t0);
        for i in 0..40 {
            rec.error(t0, None, &format!("status {}", 500 + i));
            rec.error(t0, None, &format!("status {}", 500 + i));
        }
        rec.error(t0, None, &"x".repeat(1000));
        let s = rec.summary(t0, t0 + S);
        assert_eq!(s.errors, 81);
        assert_eq!(s.errors_by_class.len(), MAX_CLASSES + 1);
        assert_eq!(s.errors_by_class[0], (OTHER.to_string(), 17));
        assert!(
            s.errors_by_class
                .iter()
                .all(|(c, _)| c.len() <= MAX_CLASS_LEN)
        );
        assert_eq!(s.errors_by_class.iter().map(|c| c.1).sum::<u64>(), 81);
    }

    #[test]
    fn samples_are_bounded_and_drops_counted() {
        let t0 = Instant::now();
        let rec = Recorder::with_limit(t0, 3000);
        for i in 0..3500u64 {
            rec.ok(t0 + Duration::from_micros(i), ms(1), None);
        }
        let s = rec.summary(t0, t0 + S);
        assert_eq!((s.ops, s.dropped), (3000, 500));
        assert!(rec.lock().samples.capacity() <= 3000);
    }
}
