//! What a PostgreSQL-aware proxy observes, kept for `/metrics` and for the
//! experiment runner.
//!
//! The session code reports events (a query answered, an `ErrorResponse`,
//! a transaction's end, a session's start and end); [`PgStats`] keeps them
//! twice:
//!
//! - **cumulative totals** since the store was created, for
//!   [`PgStats::snapshot`] and Prometheus (`api::metrics::pg_families`);
//! - **one-second buckets** for the last [`RETENTION`], for
//!   [`PgStats::window`]: the runner asks "what happened in `[from, to)`"
//!   once per phase or per tick, and gets counts, a latency histogram and
//!   percentile estimates for exactly that span.
//!
//! # Cost on the data path
//!
//! Recording is atomics only: a query costs about a dozen relaxed atomic
//! adds (totals, the Prometheus histogram, the current second's bucket) and
//! one `Instant::now()` — measured at ~25 ns plus ~30 ns for the clock on a
//! 2-core VM. A `Mutex` per record measured about the same uncontended, but
//! under contention it can park a runtime thread; atomics never block. The
//! buckets live in the lock-free ring of `observe::ring` (shared with
//! [`HttpStats`](super::http::HttpStats)), which takes a lock only to clear
//! a slot left from its previous lap, about once a second; its epochs work
//! as a seqlock, so a reader never sees a slot half-cleared. SQLSTATE codes
//! are interned lock-free into a fixed table, so errors are atomics too.
//!
//! # Latency resolution
//!
//! Windows use a finer histogram than [`LATENCY_BUCKETS`]: log-linear, 8
//! buckets per power of two of nanoseconds, from 2^15 ns (32.8 µs) to 2^36
//! ns (68.7 s), plus one bucket below and one above. A bucket is at most
//! 1/8 of its lower bound wide, so a percentile reported as its bucket's
//! midpoint is within [`PERCENTILE_MAX_ERROR`] (1/16, 6.25 %) of the true
//! value (nearest-rank) for latencies in that range. Estimates are also
//! clamped to the window's exact maximum; below 32.8 µs the absolute error
//! is under 16.4 µs, above 68.7 s the estimate is the maximum.
//!
//! [`LATENCY_BUCKETS`]: super::histogram::LATENCY_BUCKETS

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Histogram;
use super::histogram::HistogramSnapshot;
use super::ring::{Cell, RING_SECONDS, Ring, SlotCounters};

/// Statement kinds, in this fixed order (index = position): the `kind`
/// argument of [`PgStats::query`] and the `statement` label of metrics.
pub const STATEMENT_KINDS: [&str; 9] = [
    "select", "insert", "update", "delete", "ddl", "begin", "commit", "rollback", "other",
];

const KINDS: usize = STATEMENT_KINDS.len();
const OTHER_KIND: usize = KINDS - 1;

/// How far back [`PgStats::window`] can look: 15 minutes covers a baseline,
/// an injection and a recovery phase of typical experiments, and costs
/// about 1.2 MB per PostgreSQL proxy (900 buckets of ~1.3 kB).
pub const RETENTION: Duration = Duration::from_secs(RING_SECONDS);

/// Largest relative error of a percentile estimate for latencies between
/// 32.8 µs and 68.7 s: half of the widest bucket, relative to its lower
/// bound.
pub const PERCENTILE_MAX_ERROR: f64 = 1.0 / 16.0;

/// Label of an SQLSTATE that is not 5 characters of `[0-9A-Z]`: a protocol
/// oddity must not become a new label value.
pub const INVALID_SQLSTATE: &str = "?????";

/// Label of valid SQLSTATEs seen after [`SQLSTATE_CODES`] distinct ones:
/// keeps the label set bounded however many kinds of error a run provokes.
pub const OVERFLOW_SQLSTATE: &str = "other";

/// Distinct SQLSTATE codes kept apart per store; a run sees a handful
/// (serialization failures, deadlocks, admin shutdown, injected codes).
pub const SQLSTATE_CODES: usize = 32;

const INVALID_INDEX: usize = SQLSTATE_CODES;
const OVERFLOW_INDEX: usize = SQLSTATE_CODES + 1;
/// (code index, source) pairs: index * 2 + injected.
const ERROR_CELLS: usize = (SQLSTATE_CODES + 2) * 2;

// Fine latency buckets: 8 per octave of nanoseconds from 2^15 to 2^36.
const SUB_BITS: u32 = 3;
const SUB: u32 = 1 << SUB_BITS;
const MIN_OCTAVE: u32 = 15;
const MAX_OCTAVE: u32 = 36;
pub(crate) const FINE_BUCKETS: usize = 1 + ((MAX_OCTAVE - MIN_OCTAVE) * SUB) as usize + 1;

/// The fine bucket of a latency in nanoseconds.
pub(crate) fn fine_index(nanos: u64) -> usize {
    if nanos < 1 << MIN_OCTAVE {
        return 0;
    }
    let octave = 63 - nanos.leading_zeros();
    if octave >= MAX_OCTAVE {
        return FINE_BUCKETS - 1;
    }
    let sub = ((nanos >> (octave - SUB_BITS)) as u32) & (SUB - 1);
    1 + ((octave - MIN_OCTAVE) * SUB + sub) as usize
}

/// `[lower, upper)` of a fine bucket in nanoseconds; the last is unbounded.
fn fine_bounds(i: usize) -> (u64, Option<u64>) {
    if i == 0 {
        return (0, Some(1 << MIN_OCTAVE));
    }
    if i >= FINE_BUCKETS - 1 {
        return (1 << MAX_OCTAVE, None);
    }
    let k = (i - 1) as u32;
    let octave = MIN_OCTAVE + k / SUB;
    let width = 1u64 << (octave - SUB_BITS);
    let lower = (1u64 << octave) + u64::from(k % SUB) * width;
    (lower, Some(lower + width))
}

pub(crate) fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

fn cells<C: Cell, const N: usize>() -> [C; N] {
    std::array::from_fn(|_| C::default())
}

/// The counters of one span (all time, or one second).
struct Counters<C> {
    queries: [C; KINDS],
    latency: [C; FINE_BUCKETS],
    latency_sum_nanos: AtomicU64,
    latency_max_nanos: AtomicU64,
    errors: [C; ERROR_CELLS],
    errors_fatal: [C; ERROR_CELLS],
    committed: C,
    rolled_back: C,
    sessions_started: C,
    sessions_ended: C,
    rejected: [C; 2],
}

impl<C: Cell> Default for Counters<C> {
    fn default() -> Self {
        Self {
            queries: cells(),
            latency: cells(),
            latency_sum_nanos: AtomicU64::new(0),
            latency_max_nanos: AtomicU64::new(0),
            errors: cells(),
            errors_fatal: cells(),
            committed: C::default(),
            rolled_back: C::default(),
            sessions_started: C::default(),
            sessions_ended: C::default(),
            rejected: cells(),
        }
    }
}

impl<C> std::fmt::Debug for Counters<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counters { .. }")
    }
}

impl<C: Cell> Counters<C> {
    fn query(&self, kind: usize, bucket: usize, nanos: u64) {
        self.queries[kind].add(1);
        self.latency[bucket].add(1);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.latency_max_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    fn error(&self, cell: usize, fatal: bool) {
        self.errors[cell].add(1);
        if fatal {
            self.errors_fatal[cell].add(1);
        }
    }

    fn transaction(&self, committed: bool) {
        if committed {
            self.committed.add(1);
        } else {
            self.rolled_back.add(1);
        }
    }
}

impl<C: Cell> SlotCounters for Counters<C> {
    type Acc = Acc;

    fn new_acc(&self) -> Acc {
        Acc::default()
    }

    fn clear(&self) {
        let all = self
            .queries
            .iter()
            .chain(&self.latency)
            .chain(&self.errors)
            .chain(&self.errors_fatal)
            .chain(&self.rejected)
            .chain([
                &self.committed,
                &self.rolled_back,
                &self.sessions_started,
                &self.sessions_ended,
            ]);
        for c in all {
            c.clear();
        }
        self.latency_sum_nanos.store(0, Ordering::Relaxed);
        self.latency_max_nanos.store(0, Ordering::Relaxed);
    }

    fn add_to(&self, acc: &mut Acc) {
        fn add<C: Cell>(dst: &mut [u64], src: &[C]) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s.get();
            }
        }
        add(&mut acc.queries, &self.queries);
        add(&mut acc.latency, &self.latency);
        add(&mut acc.errors, &self.errors);
        add(&mut acc.errors_fatal, &self.errors_fatal);
        add(&mut acc.rejected, &self.rejected);
        acc.latency_sum_nanos += self.latency_sum_nanos.load(Ordering::Relaxed);
        acc.latency_max_nanos = acc
            .latency_max_nanos
            .max(self.latency_max_nanos.load(Ordering::Relaxed));
        acc.committed += self.committed.get();
        acc.rolled_back += self.rolled_back.get();
        acc.sessions_started += self.sessions_started.get();
        acc.sessions_ended += self.sessions_ended.get();
    }

    fn merge(acc: &mut Acc, one: &Acc) {
        acc.add(one);
    }
}

/// Plain sums of [`Counters`], for reading.
struct Acc {
    queries: [u64; KINDS],
    latency: [u64; FINE_BUCKETS],
    latency_sum_nanos: u64,
    latency_max_nanos: u64,
    errors: [u64; ERROR_CELLS],
    errors_fatal: [u64; ERROR_CELLS],
    committed: u64,
    rolled_back: u64,
    sessions_started: u64,
    sessions_ended: u64,
    rejected: [u64; 2],
}

impl Default for Acc {
    fn default() -> Self {
        Self {
            queries: [0; KINDS],
            latency: [0; FINE_BUCKETS],
            latency_sum_nanos: 0,
            latency_max_nanos: 0,
            errors: [0; ERROR_CELLS],
            errors_fatal: [0; ERROR_CELLS],
            committed: 0,
            rolled_back: 0,
            sessions_started: 0,
            sessions_ended: 0,
            rejected: [0; 2],
        }
    }
}

impl Acc {
    fn add(&mut self, o: &Acc) {
        fn add(dst: &mut [u64], src: &[u64]) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
        add(&mut self.queries, &o.queries);
        add(&mut self.latency, &o.latency);
        add(&mut self.errors, &o.errors);
        add(&mut self.errors_fatal, &o.errors_fatal);
        add(&mut self.rejected, &o.rejected);
        self.latency_sum_nanos += o.latency_sum_nanos;
        self.latency_max_nanos = self.latency_max_nanos.max(o.latency_max_nanos);
        self.committed += o.committed;
        self.rolled_back += o.rolled_back;
        self.sessions_started += o.sessions_started;
        self.sessions_ended += o.sessions_ended;
    }
}

/// SQLSTATE codes seen, interned lock-free in order of first sighting.
struct Codes {
    /// A code packed into its 5 bytes; 0 = free. Never freed.
    packed: [AtomicU64; SQLSTATE_CODES],
}

impl Default for Codes {
    fn default() -> Self {
        Self { packed: cells() }
    }
}

impl std::fmt::Debug for Codes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries((0..SQLSTATE_CODES).filter_map(|i| self.code(i)))
            .finish()
    }
}

impl Codes {
    fn pack(sqlstate: &str) -> Option<u64> {
        let b = sqlstate.as_bytes();
        if b.len() != 5
            || !b
                .iter()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        {
            return None;
        }
        Some(b.iter().fold(0, |acc, c| acc << 8 | u64::from(*c)))
    }

    /// The index of a code: its slot, [`INVALID_INDEX`] or
    /// [`OVERFLOW_INDEX`].
    fn index(&self, sqlstate: &str) -> usize {
        let Some(code) = Self::pack(sqlstate) else {
            return INVALID_INDEX;
        };
        // Slots fill in order and are never freed, so two threads adding
        // the same code meet at the same slot.
        for (i, slot) in self.packed.iter().enumerate() {
            let seen = slot.load(Ordering::Acquire);
            if seen == code {
                return i;
            }
            if seen == 0 {
                match slot.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return i,
                    Err(actual) if actual == code => return i,
                    Err(_) => {}
                }
            }
        }
        OVERFLOW_INDEX
    }

    fn code(&self, i: usize) -> Option<String> {
        let packed = self.packed.get(i)?.load(Ordering::Acquire);
        (packed != 0).then(|| {
            (0..5)
                .rev()
                .map(|k| char::from((packed >> (8 * k)) as u8))
                .collect()
        })
    }

    fn label(&self, index: usize) -> Option<String> {
        match index {
            INVALID_INDEX => Some(INVALID_SQLSTATE.to_string()),
            OVERFLOW_INDEX => Some(OVERFLOW_SQLSTATE.to_string()),
            i => self.code(i),
        }
    }
}

/// Who produced an error or refused a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The PostgreSQL server.
    Server,
    /// A shakedown fault.
    Injected,
}

impl Source {
    /// The `source` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Server => "server",
            Source::Injected => "injected",
        }
    }

    fn from_injected(injected: bool) -> Self {
        if injected {
            Source::Injected
        } else {
            Source::Server
        }
    }
}

/// A count split by [`Source`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BySource {
    /// Produced by the server.
    pub server: u64,
    /// Produced by a shakedown fault.
    pub injected: u64,
}

impl BySource {
    /// Both together.
    pub fn total(&self) -> u64 {
        self.server + self.injected
    }
}

/// Errors of one SQLSTATE from one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    /// The code, [`INVALID_SQLSTATE`] or [`OVERFLOW_SQLSTATE`].
    pub sqlstate: String,
    /// Server's or injected.
    pub source: Source,
    /// `ErrorResponse`s seen by clients.
    pub count: u64,
    /// Of those, how many had severity FATAL (the session ended).
    pub fatal: u64,
}

/// One bucket of the fine latency histogram.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyBucket {
    /// Inclusive lower bound, seconds.
    pub lower_seconds: f64,
    /// Exclusive upper bound, seconds; `None` for the last, unbounded one.
    pub upper_seconds: Option<f64>,
    /// Queries whose latency fell in it.
    pub count: u64,
}

/// Query latencies (query frame to its ReadyForQuery) over a span.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Queries measured.
    pub count: u64,
    /// Sum of latencies, seconds (for the mean).
    pub sum_seconds: f64,
    /// Exact maximum, seconds; `None` without queries.
    pub max_seconds: Option<f64>,
    /// Median estimate, seconds (see [`PERCENTILE_MAX_ERROR`]).
    pub p50_seconds: Option<f64>,
    /// 95th percentile estimate, seconds.
    pub p95_seconds: Option<f64>,
    /// 99th percentile estimate, seconds.
    pub p99_seconds: Option<f64>,
    /// The non-empty fine buckets, ascending (for other quantiles, or to
    /// merge spans by adding counts).
    pub buckets: Vec<LatencyBucket>,
}

impl LatencySummary {
    pub(crate) fn from_fine(counts: &[u64], sum_nanos: u64, max_nanos: u64) -> Self {
        let buckets: Vec<LatencyBucket> = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| {
                let (lower, upper) = fine_bounds(i);
                LatencyBucket {
                    lower_seconds: lower as f64 / 1e9,
                    upper_seconds: upper.map(|u| u as f64 / 1e9),
                    count: *c,
                }
            })
            .collect();
        let count = counts.iter().sum();
        let mut s = Self {
            count,
            sum_seconds: sum_nanos as f64 / 1e9,
            max_seconds: (count > 0).then_some(max_nanos as f64 / 1e9),
            buckets,
            ..Self::default()
        };
        s.p50_seconds = s.quantile(0.50);
        s.p95_seconds = s.quantile(0.95);
        s.p99_seconds = s.quantile(0.99);
        s
    }

    /// Estimates the `q` quantile (0 < q ≤ 1, nearest rank), in seconds:
    /// the midpoint of the bucket holding that rank, clamped to the
    /// maximum. `None` without queries.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let max = self.max_seconds?;
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for b in &self.buckets {
            seen += b.count;
            if seen >= rank {
                let mid = b.upper_seconds.map_or(max, |u| (b.lower_seconds + u) / 2.0);
                return Some(mid.min(max));
            }
        }
        Some(max)
    }
}

/// Counts over a span, shared by [`PgSnapshot`] and [`PgWindow`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PgCounts {
    /// Queries answered per statement kind; every kind of
    /// [`STATEMENT_KINDS`] is present.
    pub queries: BTreeMap<String, u64>,
    /// All queries answered.
    pub queries_total: u64,
    /// Their latencies.
    pub latency: LatencySummary,
    /// `ErrorResponse`s seen by clients.
    pub errors: BySource,
    /// Of those, severity FATAL.
    pub errors_fatal: BySource,
    /// Errors per (SQLSTATE, source), sorted, non-zero only.
    pub errors_by_sqlstate: Vec<ErrorCount>,
    /// Transactions that committed.
    pub transactions_committed: u64,
    /// Transactions that rolled back (explicitly or after an error).
    pub transactions_rolled_back: u64,
    /// Sessions started.
    pub sessions_started: u64,
    /// Sessions ended.
    pub sessions_ended: u64,
    /// New sessions refused (by a fault, or the server's FATAL at startup).
    pub sessions_rejected: BySource,
}

/// Totals since the store was created.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PgSnapshot {
    /// The counts.
    #[serde(flatten)]
    pub counts: PgCounts,
    /// Sessions open now.
    pub sessions_active: u64,
}

/// What was observed in a time window, from the per-second buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PgWindow {
    /// Whole seconds the window covers: the buckets from the one holding
    /// `from` up to, not including, the one holding `to`.
    pub seconds: u64,
    /// True if part of the window is older than [`RETENTION`] and was not
    /// counted.
    pub truncated: bool,
    /// The counts.
    #[serde(flatten)]
    pub counts: PgCounts,
    /// Sessions open at the end of the window; `None` if the window ended
    /// longer than [`RETENTION`] ago.
    pub sessions_active: Option<u64>,
}

/// Everything a PostgreSQL-aware proxy observes; shared by its sessions.
#[derive(Debug, Default)]
pub struct PgStats {
    totals: Counters<AtomicU64>,
    /// Latencies in [`LATENCY_BUCKETS`](super::histogram::LATENCY_BUCKETS),
    /// for Prometheus.
    export: Histogram,
    sessions_active: AtomicU64,
    codes: Codes,
    ring: Ring<Counters<AtomicU32>>,
}

impl PgStats {
    /// A session began (client connected and the proxy took it).
    pub fn session_started(&self) {
        self.session_started_at(Instant::now());
    }

    /// A session ended, however it ended.
    pub fn session_ended(&self) {
        self.session_ended_at(Instant::now());
    }

    /// One query answered (simple Query, or an extended batch up to its
    /// Sync): `kind` indexes [`STATEMENT_KINDS`] (out of range counts as
    /// `other`), `latency` runs from the query frame to its ReadyForQuery.
    pub fn query(&self, kind: usize, latency: Duration) {
        self.query_at(Instant::now(), kind, latency);
    }

    /// An `ErrorResponse` seen by the client; `injected` if a shakedown
    /// fault produced it. `sqlstate` should be 5 characters of `[0-9A-Z]`;
    /// anything else counts as [`INVALID_SQLSTATE`], and valid codes past
    /// the first [`SQLSTATE_CODES`] distinct ones as [`OVERFLOW_SQLSTATE`].
    pub fn error(&self, sqlstate: &str, severity_fatal: bool, injected: bool) {
        self.error_at(Instant::now(), sqlstate, severity_fatal, injected);
    }

    /// A transaction ended: committed, or rolled back.
    pub fn transaction(&self, committed: bool) {
        self.transaction_at(Instant::now(), committed);
    }

    /// A new session refused (by a fault, or the server's FATAL at
    /// startup). Only counts the refusal: a session that was counted as
    /// started is still ended with [`PgStats::session_ended`].
    pub fn session_rejected(&self, injected: bool) {
        self.session_rejected_at(Instant::now(), injected);
    }

    /// Totals since the store was created.
    pub fn snapshot(&self) -> PgSnapshot {
        let mut acc = Acc::default();
        self.totals.add_to(&mut acc);
        PgSnapshot {
            counts: self.counts(&acc),
            sessions_active: self.sessions_active.load(Ordering::Relaxed),
        }
    }

    /// Everything observed in `[from, to)`, at one-second resolution: the
    /// buckets from the second holding `from` up to, not including, the
    /// second holding `to` (so adjacent windows never count an event
    /// twice, and `to = now` leaves out the unfinished current second).
    /// Seconds older than [`RETENTION`] are left out and flagged.
    pub fn window(&self, from: Instant, to: Instant) -> PgWindow {
        self.window_at(Instant::now(), from, to)
    }

    /// Query latencies in the coarse, fixed
    /// [`LATENCY_BUCKETS`](super::histogram::LATENCY_BUCKETS), cumulative,
    /// for Prometheus.
    pub fn latency_histogram(&self) -> HistogramSnapshot {
        self.export.snapshot()
    }

    fn session_started_at(&self, now: Instant) {
        self.sessions_active.fetch_add(1, Ordering::Relaxed);
        self.totals.sessions_started.add(1);
        self.ring.record(now, |c| c.sessions_started.add(1));
    }

    fn session_ended_at(&self, now: Instant) {
        // Saturating: an unmatched end must not wrap the gauge.
        let _ = self
            .sessions_active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.totals.sessions_ended.add(1);
        self.ring.record(now, |c| c.sessions_ended.add(1));
    }

    fn query_at(&self, now: Instant, kind: usize, latency: Duration) {
        let kind = kind.min(OTHER_KIND);
        let ns = nanos(latency);
        let bucket = fine_index(ns);
        self.totals.query(kind, bucket, ns);
        self.export.observe(latency);
        self.ring.record(now, |c| c.query(kind, bucket, ns));
    }

    fn error_at(&self, now: Instant, sqlstate: &str, fatal: bool, injected: bool) {
        let cell = self.codes.index(sqlstate) * 2 + usize::from(injected);
        self.totals.error(cell, fatal);
        self.ring.record(now, |c| c.error(cell, fatal));
    }

    fn transaction_at(&self, now: Instant, committed: bool) {
        self.totals.transaction(committed);
        self.ring.record(now, |c| c.transaction(committed));
    }

    fn session_rejected_at(&self, now: Instant, injected: bool) {
        let i = usize::from(injected);
        self.totals.rejected[i].add(1);
        self.ring.record(now, |c| c.rejected[i].add(1));
    }

    fn window_at(&self, now: Instant, from: Instant, to: Instant) -> PgWindow {
        let span = self.ring.seconds_for(now, from, to);
        let mut acc = Acc::default();
        self.ring.sum(span.read, &mut acc);
        // Sessions open at the end: those open now, minus the net change
        // since the window ended (nothing if it ends in the future).
        let active_now = self.sessions_active.load(Ordering::Relaxed);
        let sessions_active = span.after.map(|after| {
            let mut since = Acc::default();
            self.ring.sum(after, &mut since);
            (active_now + since.sessions_ended).saturating_sub(since.sessions_started)
        });
        PgWindow {
            seconds: span.covered,
            truncated: span.truncated,
            counts: self.counts(&acc),
            sessions_active,
        }
    }

    fn counts(&self, acc: &Acc) -> PgCounts {
        let mut errors = BySource::default();
        let mut errors_fatal = BySource::default();
        let mut by_code = Vec::new();
        for (cell, (&count, &fatal)) in acc.errors.iter().zip(&acc.errors_fatal).enumerate() {
            if count == 0 {
                continue;
            }
            let source = Source::from_injected(cell % 2 == 1);
            let (total, total_fatal) = match source {
                Source::Server => (&mut errors.server, &mut errors_fatal.server),
                Source::Injected => (&mut errors.injected, &mut errors_fatal.injected),
            };
            *total += count;
            *total_fatal += fatal;
            let sqlstate = self
                .codes
                .label(cell / 2)
                .unwrap_or_else(|| INVALID_SQLSTATE.to_string());
            by_code.push(ErrorCount {
                sqlstate,
                source,
                count,
                fatal,
            });
        }
        by_code.sort_by(|a, b| (&a.sqlstate, a.source).cmp(&(&b.sqlstate, b.source)));
        PgCounts {
            queries: STATEMENT_KINDS
                .iter()
                .zip(acc.queries)
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
            queries_total: acc.queries.iter().sum(),
            latency: LatencySummary::from_fine(
                &acc.latency,
                acc.latency_sum_nanos,
                acc.latency_max_nanos,
            ),
            errors,
            errors_fatal,
            errors_by_sqlstate: by_code,
            transactions_committed: acc.committed,
            transactions_rolled_back: acc.rolled_back,
            sessions_started: acc.sessions_started,
            sessions_ended: acc.sessions_ended,
            sessions_rejected: BySource {
                server: acc.rejected[0],
                injected: acc.rejected[1],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn at(s: &PgStats, secs: f64) -> Instant {
        s.ring.base() + Duration::from_secs_f64(secs)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn fine_buckets_are_contiguous_and_within_resolution() {
        let mut expect_lower = 0;
        for i in 0..FINE_BUCKETS {
            let (lower, upper) = fine_bounds(i);
            assert_eq!(
                lower,
                expect_lower,
                "bucket {i} starts where {} ends",
                i - 1
            );
            assert_eq!(fine_index(lower), i);
            match upper {
                Some(u) => {
                    assert_eq!(fine_index(u - 1), i);
                    if i > 0 {
                        assert!((u - lower) as f64 / lower as f64 <= 2.0 * PERCENTILE_MAX_ERROR);
                    }
                    expect_lower = u;
                }
                None => assert_eq!(i, FINE_BUCKETS - 1),
            }
        }
        assert_eq!(fine_index(u64::MAX), FINE_BUCKETS - 1);
        assert!(
            fine_index(60_000_000_000) < FINE_BUCKETS - 1,
            "60 s is resolved"
        );
        assert!(fine_index(50_000) > 0, "50 µs is resolved");
    }

    #[test]
    fn ring_costs_what_retention_says() {
        let slot = std::mem::size_of::<crate::observe::ring::Slot<Counters<AtomicU32>>>();
        assert!((1200..=1400).contains(&slot), "a bucket is {slot} bytes");
        assert_eq!(RETENTION.as_secs(), RING_SECONDS);
        assert_eq!(PgStats::default().ring.len() as u64, RING_SECONDS);
    }

    #[test]
    fn records_into_the_snapshot() {
        let s = PgStats::default();
        s.session_started();
        s.session_started();
        s.session_ended();
        s.session_ended();
        s.session_ended(); // unmatched: the gauge stays at 0
        s.session_started();
        s.query(0, ms(2));
        s.query(0, ms(4));
        s.query(1, ms(8));
        s.query(99, ms(1)); // out of range: other
        s.error("40001", false, false);
        s.error("40001", false, true);
        s.error("40001", false, true);
        s.error("57P01", true, true);
        s.error("oops", false, false);
        s.error("4000", false, false);
        s.transaction(true);
        s.transaction(false);
        s.transaction(false);
        s.session_rejected(true);
        s.session_rejected(false);
        s.session_rejected(true);

        let snap = s.snapshot();
        assert_eq!(snap.sessions_active, 1);
        let c = &snap.counts;
        assert_eq!(c.sessions_started, 3);
        assert_eq!(c.sessions_ended, 3);
        assert_eq!(c.queries.len(), STATEMENT_KINDS.len());
        assert_eq!(c.queries["select"], 2);
        assert_eq!(c.queries["insert"], 1);
        assert_eq!(c.queries["other"], 1);
        assert_eq!(c.queries["commit"], 0);
        assert_eq!(c.queries_total, 4);
        assert_eq!(c.latency.count, 4);
        assert!((c.latency.sum_seconds - 0.015).abs() < 1e-9);
        assert_eq!(c.latency.max_seconds, Some(0.008));
        assert_eq!(
            c.errors,
            BySource {
                server: 3,
                injected: 3
            }
        );
        assert_eq!(
            c.errors_fatal,
            BySource {
                server: 0,
                injected: 1
            }
        );
        let err = |code: &str, source, count, fatal| ErrorCount {
            sqlstate: code.to_string(),
            source,
            count,
            fatal,
        };
        assert_eq!(
            c.errors_by_sqlstate,
            vec![
                err("40001", Source::Server, 1, 0),
                err("40001", Source::Injected, 2, 0),
                err("57P01", Source::Injected, 1, 1),
                err(INVALID_SQLSTATE, Source::Server, 2, 0),
            ]
        );
        assert_eq!(c.transactions_committed, 1);
        assert_eq!(c.transactions_rolled_back, 2);
        assert_eq!(
            c.sessions_rejected,
            BySource {
                server: 1,
                injected: 2
            }
        );
        let coarse = s.latency_histogram();
        assert_eq!(coarse.count, 4);
        assert_eq!(coarse.buckets[2], (0.0025, 2), "1 ms and 2 ms");
    }

    #[test]
    fn windows_add_up_the_seconds_they_cover() {
        let s = PgStats::default();
        // second 0: two selects, a session; second 1: an insert, an
        // injected error; second 2: a commit, the session ends; second 5:
        // a slow select, a new session.
        s.session_started_at(at(&s, 0.1));
        s.query_at(at(&s, 0.2), 0, ms(1));
        s.query_at(at(&s, 0.9), 0, ms(3));
        s.query_at(at(&s, 1.0), 1, ms(5));
        s.error_at(at(&s, 1.5), "40P01", false, true);
        s.transaction_at(at(&s, 2.0), true);
        s.session_ended_at(at(&s, 2.5));
        s.session_started_at(at(&s, 5.0));
        s.query_at(at(&s, 5.99), 0, ms(700));
        let now = at(&s, 6.5);

        let w = s.window_at(now, at(&s, 0.0), at(&s, 2.0));
        assert_eq!(w.seconds, 2);
        assert!(!w.truncated);
        assert_eq!(w.counts.queries["select"], 2);
        assert_eq!(w.counts.queries["insert"], 1);
        assert_eq!(
            w.counts.errors,
            BySource {
                server: 0,
                injected: 1
            }
        );
        assert_eq!(w.counts.errors_by_sqlstate[0].sqlstate, "40P01");
        assert_eq!(
            w.counts.transactions_committed, 0,
            "second 2 is not in [0, 2)"
        );
        assert_eq!(w.counts.latency.max_seconds, Some(0.005));
        assert_eq!(w.sessions_active, Some(1), "open at the end of second 1");

        // The bucket holding `from` is in, the one holding `to` is out:
        // adjacent windows partition the events.
        let a = s.window_at(now, at(&s, 0.7), at(&s, 2.3));
        let b = s.window_at(now, at(&s, 2.3), at(&s, 6.0));
        assert_eq!(a.counts.queries_total + b.counts.queries_total, 4);
        assert_eq!(a.counts.queries_total, 3);
        assert_eq!(a.counts.transactions_committed, 0);
        assert_eq!(b.counts.transactions_committed, 1);
        assert_eq!(b.counts.sessions_ended, 1);
        assert_eq!(b.counts.sessions_started, 1);
        assert_eq!(b.sessions_active, Some(1));
        assert_eq!(b.counts.latency.max_seconds, Some(0.7));

        let quiet = s.window_at(now, at(&s, 3.0), at(&s, 5.0));
        assert_eq!(quiet.counts.queries_total, 0);
        assert_eq!(quiet.counts.latency.p95_seconds, None);
        assert_eq!(quiet.sessions_active, Some(0), "between the two sessions");

        // A window reaching into the future counts up to now.
        let all = s.window_at(now, at(&s, 0.0), at(&s, 100.0));
        assert_eq!(all.counts, s.snapshot().counts);
        assert_eq!(all.sessions_active, Some(1));

        let empty = s.window_at(now, at(&s, 3.0), at(&s, 1.0));
        assert_eq!(empty.seconds, 0);
        assert_eq!(empty.counts.queries_total, 0);
    }

    #[test]
    fn stale_ring_slots_after_wrap_around_are_not_counted() {
        let s = PgStats::default();
        let lap = RING_SECONDS as f64;
        for _ in 0..5 {
            s.query_at(at(&s, 3.5), 0, ms(1));
        }
        s.error_at(at(&s, 3.5), "40001", false, false);
        s.session_started_at(at(&s, 3.5));

        // One lap later the slot of second 3 still holds second 3: a
        // window over second 903 must not see it, before or after a write.
        let now = at(&s, lap + 3.9);
        let w = s.window_at(now, at(&s, lap + 3.0), at(&s, lap + 4.0));
        assert_eq!(w.counts.queries_total, 0);
        assert!(w.counts.errors_by_sqlstate.is_empty());
        s.query_at(at(&s, lap + 3.2), 1, ms(2));
        let w = s.window_at(now, at(&s, lap + 3.0), at(&s, lap + 4.0));
        assert_eq!(w.counts.queries["select"], 0, "cleared on reuse");
        assert_eq!(w.counts.queries["insert"], 1);
        assert_eq!(w.counts.errors.total(), 0);
        assert_eq!(w.counts.sessions_started, 0);
        assert_eq!(w.counts.latency.max_seconds, Some(0.002));

        // Second 3 is past retention: not counted, and flagged.
        let old = s.window_at(now, at(&s, 0.0), at(&s, 10.0));
        assert!(old.truncated);
        assert_eq!(old.counts.queries_total, 0);
        assert_eq!(old.sessions_active, Some(1), "second 10 is retained");
        let gone = s.window_at(now, at(&s, 0.0), at(&s, 3.0));
        assert!(gone.truncated);
        assert_eq!(gone.sessions_active, None, "ended before retention");
        // Second 4 (untouched since) is the oldest retained one.
        let edge = s.window_at(now, at(&s, 4.0), at(&s, 5.0));
        assert!(!edge.truncated);
        assert_eq!(edge.sessions_active, Some(1));

        // A writer later than the slot's lap is dropped, not mixed in.
        s.query_at(at(&s, 3.5), 0, ms(1));
        let w = s.window_at(now, at(&s, lap + 3.0), at(&s, lap + 4.0));
        assert_eq!(w.counts.queries_total, 1);
        assert_eq!(s.snapshot().counts.queries_total, 7, "totals keep all");
    }

    /// Nearest-rank quantile of sorted values.
    fn exact(sorted: &[Duration], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1].as_secs_f64()
    }

    #[test]
    fn percentile_estimates_are_within_the_documented_error() {
        // Log-uniform from 50 µs to 60 s, and uniform from 1 to 20 ms,
        // interleaved over 100 seconds.
        let n = 20_000u32;
        let mut values: Vec<Duration> = (0..n)
            .map(|i| {
                let x = f64::from(i) / f64::from(n - 1);
                if i % 2 == 0 {
                    Duration::from_secs_f64(50e-6 * (60.0f64 / 50e-6).powf(x))
                } else {
                    Duration::from_secs_f64(0.001 + 0.019 * x)
                }
            })
            .collect();
        let s = PgStats::default();
        for (i, v) in values.iter().enumerate() {
            s.query_at(at(&s, (i % 100) as f64), 0, *v);
        }
        values.sort();
        let w = s.window_at(at(&s, 100.0), at(&s, 0.0), at(&s, 100.0));
        let snap = s.snapshot();
        for lat in [&w.counts.latency, &snap.counts.latency] {
            assert_eq!(lat.count, u64::from(n));
            assert_eq!(lat.max_seconds, values.last().map(|d| d.as_secs_f64()));
            for (q, got) in [
                (0.5, lat.p50_seconds),
                (0.95, lat.p95_seconds),
                (0.99, lat.p99_seconds),
                (0.10, lat.quantile(0.10)),
                (0.75, lat.quantile(0.75)),
                (1.0, lat.quantile(1.0)),
            ] {
                let want = exact(&values, q);
                let got = got.unwrap();
                let err = (got - want).abs() / want;
                assert!(err <= PERCENTILE_MAX_ERROR, "q{q}: {got} vs {want}: {err}");
            }
        }
        // A single value: every quantile within the error, never above it.
        let one = PgStats::default();
        one.query(2, ms(123));
        let p99 = one.snapshot().counts.latency.p99_seconds.unwrap();
        assert!(p99 <= 0.123 && (0.123 - p99) / 0.123 <= PERCENTILE_MAX_ERROR);
    }

    #[test]
    fn concurrent_recording_sums_exactly() {
        const THREADS: u64 = 8;
        const PER_THREAD: u64 = 20_000;
        const SECONDS: u64 = 10;
        let s = Arc::new(PgStats::default());
        // Two passes: fresh slots, then the same slots one lap later, so
        // threads race to claim a slot and to clear a stale one.
        for lap in [0, RING_SECONDS] {
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let s = Arc::clone(&s);
                    std::thread::spawn(move || {
                        for i in 0..PER_THREAD {
                            let now = at(&s, (lap + i % SECONDS) as f64 + 0.5);
                            s.query_at(now, (i % 9) as usize, Duration::from_micros(100 + i));
                            if i % 10 == 0 {
                                s.error_at(
                                    now,
                                    ["40001", "40P01", "08006"][(i % 3) as usize],
                                    false,
                                    t % 2 == 0,
                                );
                                s.session_started_at(now);
                                s.session_ended_at(now);
                                s.transaction_at(now, i % 20 == 0);
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let now = at(&s, (lap + SECONDS) as f64);
            let w = s.window_at(now, at(&s, lap as f64), now);
            let c = &w.counts;
            assert_eq!(c.queries_total, THREADS * PER_THREAD);
            assert_eq!(c.latency.count, THREADS * PER_THREAD);
            let per_kind = THREADS * PER_THREAD / 9;
            assert!(c.queries.values().all(|n| n.abs_diff(per_kind) <= THREADS));
            let events = THREADS * PER_THREAD / 10;
            assert_eq!(c.errors.total(), events);
            assert_eq!(c.errors.injected, events / 2);
            assert_eq!(c.errors_by_sqlstate.len(), 6, "3 codes x 2 sources");
            assert_eq!(c.sessions_started, events);
            assert_eq!(c.sessions_ended, events);
            assert_eq!(
                c.transactions_committed + c.transactions_rolled_back,
                events
            );
            assert_eq!(c.transactions_committed, events / 2);
            assert_eq!(w.sessions_active, Some(0));
            let max = Duration::from_micros(100 + PER_THREAD - 1).as_secs_f64();
            assert_eq!(c.latency.max_seconds, Some(max));
        }
        let snap = s.snapshot();
        assert_eq!(snap.counts.queries_total, 2 * THREADS * PER_THREAD);
        assert_eq!(snap.counts.errors.total(), 2 * THREADS * PER_THREAD / 10);
        assert_eq!(snap.sessions_active, 0);
    }

    #[test]
    fn sqlstate_labels_stay_bounded() {
        let s = Arc::new(PgStats::default());
        // Many threads interning the same codes agree on one slot each.
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..(SQLSTATE_CODES + 8) {
                        s.error(&format!("XX{i:03}"), false, false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        s.error("xx000", false, true); // lowercase: not an SQLSTATE
        s.error("", false, true);
        s.error("40001\n", false, true);
        let errors = s.snapshot().counts.errors_by_sqlstate;
        assert_eq!(errors.len(), SQLSTATE_CODES + 2);
        let count = |code: &str| errors.iter().find(|e| e.sqlstate == code).map(|e| e.count);
        assert_eq!(count("XX000"), Some(8));
        assert_eq!(count(OVERFLOW_SQLSTATE), Some(8 * 8));
        assert_eq!(count(INVALID_SQLSTATE), Some(3));
        assert_eq!(s.snapshot().counts.errors.total(), 8 * 40 + 3);
    }

    #[test]
    fn windows_serialize_for_the_journal() {
        let s = PgStats::default();
        s.query_at(at(&s, 0.5), 0, ms(3));
        s.error_at(at(&s, 0.5), "40001", false, true);
        let w = s.window_at(at(&s, 2.0), at(&s, 0.0), at(&s, 2.0));
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(v["seconds"], 2);
        assert_eq!(v["queries"]["select"], 1);
        assert_eq!(v["errors"]["injected"], 1);
        assert_eq!(v["errors_by_sqlstate"][0]["source"], "injected");
        assert_eq!(v["sessions_active"], 0);
        assert!(v["latency"]["p95_seconds"].as_f64().unwrap() > 0.0);
        assert!(v["latency"]["buckets"][0]["upper_seconds"].is_number());
        let snap = serde_json::to_value(s.snapshot()).unwrap();
        assert_eq!(snap["queries_total"], 1);
    }
}
