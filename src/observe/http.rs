//! What an HTTP proxy observes, kept for `/metrics` and for the experiment
//! runner.
//!
//! The session code reports three events per request: it started, it was
//! answered (status and source, latency to the response headers), and its
//! response ended (full response time, whether `http_reset` cut it).
//! [`HttpStats`] keeps them, per route, twice, as
//! [`PgStats`](super::pg::PgStats) does:
//!
//! - **cumulative totals**, for [`HttpStats::snapshot`] and Prometheus;
//! - **one-second buckets** for the last [`RETENTION`], for
//!   [`HttpStats::window`]: requests, errors, status classes and latency
//!   percentiles of exactly `[from, to)`.
//!
//! Routes come from the proxy's config (at most
//! [`MAX_ROUTES`](crate::config::MAX_ROUTES), plus `other`), so the label
//! set is fixed when the proxy is created. Recording is relaxed atomics only
//! (about a dozen per request); the one-second buckets live in the same
//! lock-free ring as PostgreSQL's (`observe::ring`: seqlock-style epochs, a
//! lock only to clear a slot once a second), and latencies use the same
//! log-linear buckets, so percentiles are within [`PERCENTILE_MAX_ERROR`]
//! (6.25 %).
//!
//! # Memory
//!
//! A second's bucket holds, per route, 9 status cells and 170 latency
//! cells of 4 bytes (about 0.7 kB), plus one latency histogram for full
//! response times: 900 seconds cost about 0.65 MB per route plus 0.65 MB
//! per proxy (1.3 MB with no route configured, 22 MB at the 32-route cap).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Histogram;
use super::histogram::HistogramSnapshot;
use super::pg::{FINE_BUCKETS, LatencySummary, fine_index, nanos};
use super::ring::{Cell, RING_SECONDS, Ring, SlotCounters};

pub use super::pg::PERCENTILE_MAX_ERROR;

/// How far back [`HttpStats::window`] can look (as for PostgreSQL).
pub const RETENTION: Duration = Duration::from_secs(RING_SECONDS);

/// Status classes, in this order: the `class` label of
/// `shakedown_http_requests_total` and the keys of `by_class`. `error` is
/// shakedown's own 502/504 (the upstream failed or timed out); `injected`
/// is an answer made by a fault (`http_abort`, an Envoy abort header).
pub const CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error", "injected"];

const C_5XX: usize = 4;
const C_ERROR: usize = 5;
const C_INJECTED: usize = 6;
const C_INJECTED_5XX: usize = 7;
const C_RESET: usize = 8;
const CELLS: usize = 9;

/// Who answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The upstream, with this status.
    Upstream(u16),
    /// shakedown, because the upstream failed (502) or timed out (504).
    ProxyError(u16),
    /// A fault, with this status.
    Injected(u16),
}

impl Answer {
    fn cell(self) -> usize {
        match self {
            Answer::Upstream(s) => match s {
                0..=199 => 0,
                200..=299 => 1,
                300..=399 => 2,
                400..=499 => 3,
                _ => C_5XX,
            },
            Answer::ProxyError(_) => C_ERROR,
            Answer::Injected(s) if s >= 500 => C_INJECTED_5XX,
            Answer::Injected(_) => C_INJECTED,
        }
    }
}

/// A fine latency histogram with its exact sum and maximum.
struct Lat<C> {
    buckets: [C; FINE_BUCKETS],
    sum: AtomicU64,
    max: AtomicU64,
}

impl<C: Cell> Default for Lat<C> {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| C::default()),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl<C: Cell> Lat<C> {
    fn record(&self, ns: u64) {
        self.buckets[fine_index(ns)].add(1);
        self.sum.fetch_add(ns, Ordering::Relaxed);
        self.max.fetch_max(ns, Ordering::Relaxed);
    }

    fn clear(&self) {
        for b in &self.buckets {
            b.clear();
        }
        self.sum.store(0, Ordering::Relaxed);
        self.max.store(0, Ordering::Relaxed);
    }

    fn add_to(&self, acc: &mut LatAcc) {
        for (d, s) in acc.buckets.iter_mut().zip(&self.buckets) {
            *d += s.get();
        }
        acc.sum += self.sum.load(Ordering::Relaxed);
        acc.max = acc.max.max(self.max.load(Ordering::Relaxed));
    }
}

struct RouteCells<C> {
    cells: [C; CELLS],
    latency: Lat<C>,
}

impl<C: Cell> Default for RouteCells<C> {
    fn default() -> Self {
        Self {
            cells: std::array::from_fn(|_| C::default()),
            latency: Lat::default(),
        }
    }
}

/// The counters of one span (all time, or one second).
struct Counters<C> {
    routes: Box<[RouteCells<C>]>,
    full: Lat<C>,
}

impl<C: Cell> Counters<C> {
    fn new(routes: usize) -> Self {
        Self {
            routes: (0..routes).map(|_| RouteCells::default()).collect(),
            full: Lat::default(),
        }
    }
}

impl<C: Cell> SlotCounters for Counters<C> {
    type Acc = Acc;

    fn new_acc(&self) -> Acc {
        Acc::new(self.routes.len())
    }

    fn clear(&self) {
        for r in self.routes.iter() {
            for c in &r.cells {
                c.clear();
            }
            r.latency.clear();
        }
        self.full.clear();
    }

    fn add_to(&self, acc: &mut Acc) {
        for (a, r) in acc.routes.iter_mut().zip(self.routes.iter()) {
            for (d, s) in a.cells.iter_mut().zip(&r.cells) {
                *d += s.get();
            }
            r.latency.add_to(&mut a.latency);
        }
        self.full.add_to(&mut acc.full);
    }

    fn merge(acc: &mut Acc, one: &Acc) {
        acc.add(one);
    }
}

#[derive(Clone)]
struct LatAcc {
    buckets: [u64; FINE_BUCKETS],
    sum: u64,
    max: u64,
}

impl Default for LatAcc {
    fn default() -> Self {
        Self {
            buckets: [0; FINE_BUCKETS],
            sum: 0,
            max: 0,
        }
    }
}

impl LatAcc {
    fn add(&mut self, o: &LatAcc) {
        for (d, s) in self.buckets.iter_mut().zip(&o.buckets) {
            *d += s;
        }
        self.sum += o.sum;
        self.max = self.max.max(o.max);
    }

    fn summary(&self) -> LatencySummary {
        LatencySummary::from_fine(&self.buckets, self.sum, self.max)
    }
}

#[derive(Clone, Default)]
struct RouteAcc {
    cells: [u64; CELLS],
    latency: LatAcc,
}

/// Plain sums of [`Counters`], for reading.
#[derive(Clone)]
struct Acc {
    routes: Vec<RouteAcc>,
    full: LatAcc,
}

impl Acc {
    fn new(routes: usize) -> Self {
        Self {
            routes: vec![RouteAcc::default(); routes],
            full: LatAcc::default(),
        }
    }

    fn add(&mut self, o: &Acc) {
        for (a, b) in self.routes.iter_mut().zip(&o.routes) {
            for (d, s) in a.cells.iter_mut().zip(&b.cells) {
                *d += s;
            }
            a.latency.add(&b.latency);
        }
        self.full.add(&o.full);
    }
}

/// Requests counted over a span: those of one route, or of all routes.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RequestCounts {
    /// Requests answered.
    pub requests: u64,
    /// Of those, errors: 5xx from the upstream, shakedown's 502/504,
    /// injected answers with a 5xx status, and responses cut by
    /// `http_reset`.
    pub errors: u64,
    /// Answered by a fault.
    pub injected: u64,
    /// Cut by `http_reset`.
    pub resets: u64,
    /// Requests per class of [`CLASSES`] (every class present).
    pub by_class: BTreeMap<String, u64>,
    /// Time from the request's arrival to its response headers going out.
    pub latency: LatencySummary,
}

impl RequestCounts {
    fn of(cells: &[u64; CELLS], latency: &LatAcc) -> Self {
        let injected = cells[C_INJECTED] + cells[C_INJECTED_5XX];
        RequestCounts {
            requests: cells[..C_RESET].iter().sum(),
            errors: cells[C_5XX] + cells[C_ERROR] + cells[C_INJECTED_5XX] + cells[C_RESET],
            injected,
            resets: cells[C_RESET],
            by_class: CLASSES
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let n = if i == C_INJECTED { injected } else { cells[i] };
                    (name.to_string(), n)
                })
                .collect(),
            latency: latency.summary(),
        }
    }

    /// `errors / requests`, 0 without requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// Counts of one route over a span.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteCounts {
    /// The route's name (`other` for unmatched requests).
    pub name: String,
    /// Its requests.
    #[serde(flatten)]
    pub counts: RequestCounts,
}

/// Counts over a span, shared by [`HttpSnapshot`] and [`HttpWindow`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HttpCounts {
    /// The requests of all routes.
    #[serde(flatten)]
    pub all: RequestCounts,
    /// Time to the end of the response body, all routes.
    pub response_time: LatencySummary,
    /// Per route, in config order, `other` last.
    pub routes: Vec<RouteCounts>,
}

impl HttpCounts {
    /// The counts of one route by name.
    pub fn route(&self, name: &str) -> Option<&RequestCounts> {
        self.routes
            .iter()
            .find(|r| r.name == name)
            .map(|r| &r.counts)
    }
}

/// Totals since the proxy was created.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HttpSnapshot {
    /// The counts.
    #[serde(flatten)]
    pub counts: HttpCounts,
    /// Requests in flight now (received, response not yet finished).
    pub requests_active: u64,
}

/// What was observed in a time window, from the per-second buckets.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HttpWindow {
    /// Whole seconds covered: the bucket holding `from` up to, not
    /// including, the one holding `to`.
    pub seconds: u64,
    /// True if part of the window is older than [`RETENTION`].
    pub truncated: bool,
    /// The counts.
    #[serde(flatten)]
    pub counts: HttpCounts,
}

/// Everything an HTTP proxy observes; shared by its connections.
pub struct HttpStats {
    routes: Vec<String>,
    totals: Counters<AtomicU64>,
    export: Box<[Histogram]>,
    export_full: Histogram,
    active: AtomicU64,
    ring: Ring<Counters<AtomicU32>>,
}

impl std::fmt::Debug for HttpStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStats")
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl HttpStats {
    /// A store for these route names (in order); `other` is added last.
    pub fn new<S: AsRef<str>>(routes: &[S]) -> Self {
        let mut names: Vec<String> = routes.iter().map(|r| r.as_ref().to_string()).collect();
        names.push(crate::config::OTHER_ROUTE.to_string());
        let n = names.len();
        Self {
            routes: names,
            totals: Counters::new(n),
            export: (0..n).map(|_| Histogram::default()).collect(),
            export_full: Histogram::default(),
            active: AtomicU64::new(0),
            ring: Ring::new(|| Counters::new(n)),
        }
    }

    /// Route names, `other` last: index `i` is the `route` of the
    /// recording methods.
    pub fn route_names(&self) -> &[String] {
        &self.routes
    }

    /// The index of `other`.
    pub fn other_route(&self) -> usize {
        self.routes.len() - 1
    }

    /// A request arrived (counted active until [`HttpStats::completed`]).
    pub fn started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was answered: its response headers go out now, `latency`
    /// after it arrived. An out-of-range `route` counts as `other`.
    pub fn answered(&self, route: usize, answer: Answer, latency: Duration) {
        self.answered_at(Instant::now(), route, answer, latency);
    }

    /// A request ended without an answer (the client went away, or the
    /// proxy stopped, while it waited): it is no longer active, and counts
    /// nowhere else.
    pub fn abandoned(&self) {
        let _ = self
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// A response ended (whole, cut by a fault, or abandoned by the
    /// client), `full` after its request arrived.
    pub fn completed(&self, route: usize, full: Duration, reset: bool) {
        self.completed_at(Instant::now(), route, full, reset);
    }

    fn route(&self, route: usize) -> usize {
        route.min(self.routes.len() - 1)
    }

    fn answered_at(&self, now: Instant, route: usize, answer: Answer, latency: Duration) {
        let r = self.route(route);
        let cell = answer.cell();
        let ns = nanos(latency);
        let totals = &self.totals.routes[r];
        totals.cells[cell].add(1);
        totals.latency.record(ns);
        self.export[r].observe(latency);
        self.ring.record(now, |c| {
            let x = &c.routes[r];
            x.cells[cell].add(1);
            x.latency.record(ns);
        });
    }

    fn completed_at(&self, now: Instant, route: usize, full: Duration, reset: bool) {
        let r = self.route(route);
        let _ = self
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let ns = nanos(full);
        self.totals.full.record(ns);
        self.export_full.observe(full);
        if reset {
            self.totals.routes[r].cells[C_RESET].add(1);
        }
        self.ring.record(now, |c| {
            c.full.record(ns);
            if reset {
                c.routes[r].cells[C_RESET].add(1);
            }
        });
    }

    /// Requests in flight now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Totals since the proxy was created.
    pub fn snapshot(&self) -> HttpSnapshot {
        let mut acc = Acc::new(self.routes.len());
        self.totals.add_to(&mut acc);
        HttpSnapshot {
            counts: self.counts(&acc),
            requests_active: self.active(),
        }
    }

    /// Everything observed in `[from, to)`, at one-second resolution, as
    /// [`PgStats::window`](super::pg::PgStats::window) counts it: adjacent
    /// windows never count a request twice, and `to = now` leaves out the
    /// unfinished current second.
    pub fn window(&self, from: Instant, to: Instant) -> HttpWindow {
        self.window_at(Instant::now(), from, to)
    }

    /// Latency to the response headers of one route, in the coarse fixed
    /// buckets, cumulative, for Prometheus.
    pub fn latency_histogram(&self, route: usize) -> HistogramSnapshot {
        self.export[self.route(route)].snapshot()
    }

    /// Full response times (all routes), for Prometheus.
    pub fn response_histogram(&self) -> HistogramSnapshot {
        self.export_full.snapshot()
    }

    fn window_at(&self, now: Instant, from: Instant, to: Instant) -> HttpWindow {
        let span = self.ring.seconds_for(now, from, to);
        let mut acc = Acc::new(self.routes.len());
        self.ring.sum(span.read, &mut acc);
        HttpWindow {
            seconds: span.covered,
            truncated: span.truncated,
            counts: self.counts(&acc),
        }
    }

    fn counts(&self, acc: &Acc) -> HttpCounts {
        let mut all_cells = [0u64; CELLS];
        let mut all_latency = LatAcc::default();
        let mut routes = Vec::with_capacity(self.routes.len());
        for (name, r) in self.routes.iter().zip(&acc.routes) {
            for (d, s) in all_cells.iter_mut().zip(&r.cells) {
                *d += s;
            }
            all_latency.add(&r.latency);
            routes.push(RouteCounts {
                name: name.clone(),
                counts: RequestCounts::of(&r.cells, &r.latency),
            });
        }
        HttpCounts {
            all: RequestCounts::of(&all_cells, &all_latency),
            response_time: acc.full.summary(),
            routes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &HttpStats, secs: f64) -> Instant {
        s.ring.base() + Duration::from_secs_f64(secs)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn snapshots_serialise_flat_as_the_stats_endpoint_shows_them() {
        let s = HttpStats::new(&["checkout"]);
        s.completed(0, ms(1), false);
        let v = serde_json::to_value(s.snapshot()).unwrap();
        for key in ["requests", "errors", "by_class", "latency", "response_time"] {
            assert!(v.get(key).is_some(), "`{key}` at the top: {v}");
        }
        assert_eq!(v["routes"][0]["name"], "checkout");
        assert!(v["routes"][0].get("requests").is_some(), "{v}");
        assert!(v.get("all").is_none() && v["routes"][0].get("counts").is_none());
    }

    #[test]
    fn counts_by_class_route_and_source() {
        let s = HttpStats::new(&["checkout", "inventory"]);
        assert_eq!(s.route_names(), ["checkout", "inventory", "other"]);
        for (route, answer, lat) in [
            (0, Answer::Upstream(200), 2),
            (0, Answer::Upstream(201), 4),
            (0, Answer::Injected(503), 0),
            (1, Answer::Upstream(404), 1),
            (1, Answer::Upstream(500), 1),
            (2, Answer::ProxyError(502), 3),
            (2, Answer::Injected(429), 0),
            (99, Answer::Upstream(302), 5),
            (2, Answer::Upstream(101), 1),
        ] {
            s.started();
            s.answered(route, answer, ms(lat));
        }
        for i in 0..9 {
            s.completed([0, 0, 0, 1, 1, 2, 2, 2, 2][i], ms(10), i == 1);
        }
        s.completed(0, ms(1), false); // unmatched: the gauge stays at 0
        let snap = s.snapshot();
        assert_eq!(snap.requests_active, 0);
        let c = &snap.counts;
        assert_eq!(c.all.requests, 9);
        // 500, 502, injected 503, one reset.
        assert_eq!(c.all.errors, 4);
        assert_eq!(c.all.injected, 2);
        assert_eq!(c.all.resets, 1);
        let want: BTreeMap<String, u64> = [
            ("1xx", 1),
            ("2xx", 2),
            ("3xx", 1),
            ("4xx", 1),
            ("5xx", 1),
            ("error", 1),
            ("injected", 2),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        assert_eq!(c.all.by_class, want);
        let checkout = c.route("checkout").unwrap();
        assert_eq!(checkout.requests, 3);
        assert_eq!(checkout.errors, 2, "injected 503 and the reset");
        assert_eq!(checkout.latency.max_seconds, Some(0.004));
        let other = c.route("other").unwrap();
        assert_eq!(other.requests, 4);
        assert_eq!(other.by_class["3xx"], 1, "out of range counts as other");
        assert_eq!(c.all.latency.count, 9);
        assert_eq!(c.response_time.count, 10);
        assert_eq!(s.latency_histogram(0).count, 3);
        assert_eq!(s.response_histogram().count, 10);
    }

    #[test]
    fn windows_partition_the_seconds() {
        let s = HttpStats::new(&["a"]);
        s.answered_at(at(&s, 0.5), 0, Answer::Upstream(200), ms(1));
        s.answered_at(at(&s, 1.5), 0, Answer::Upstream(503), ms(700));
        s.completed_at(at(&s, 1.9), 0, ms(800), true);
        s.answered_at(at(&s, 3.2), 1, Answer::Injected(503), ms(0));
        let now = at(&s, 5.0);
        let a = s.window_at(now, at(&s, 0.0), at(&s, 1.0));
        assert_eq!(a.seconds, 1);
        assert_eq!(a.counts.all.requests, 1);
        assert_eq!(a.counts.all.errors, 0);
        let b = s.window_at(now, at(&s, 1.0), at(&s, 4.0));
        assert_eq!(b.counts.all.requests, 2);
        assert_eq!(b.counts.all.errors, 3, "503, reset, injected 503");
        assert_eq!(b.counts.all.resets, 1);
        assert_eq!(b.counts.route("a").unwrap().latency.max_seconds, Some(0.7));
        assert_eq!(b.counts.response_time.max_seconds, Some(0.8));
        assert!((b.counts.all.error_rate() - 1.5).abs() < 1e-9);
        let all = s.window_at(now, at(&s, 0.0), at(&s, 100.0));
        assert_eq!(all.counts, s.snapshot().counts);
        // One lap later the old seconds are gone and flagged.
        let later = at(&s, RING_SECONDS as f64 + 2.0);
        let w = s.window_at(later, at(&s, 0.0), at(&s, 3.0));
        assert!(w.truncated);
        assert_eq!(w.counts.all.requests, 0);
    }

    #[test]
    fn concurrent_recording_sums_exactly() {
        use std::sync::Arc;
        let s = Arc::new(HttpStats::new(&["x", "y"]));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let now = at(&s, (i % 5) as f64 + 0.5);
                        s.answered_at(
                            now,
                            (i % 3) as usize,
                            Answer::Upstream(200 + (t as u16) * 100),
                            Duration::from_micros(i),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let w = s.window_at(at(&s, 5.0), at(&s, 0.0), at(&s, 5.0));
        assert_eq!(w.counts.all.requests, 40_000);
        assert_eq!(w.counts.all.by_class["5xx"], 10_000);
        assert_eq!(w.counts.all.errors, 10_000);
        assert_eq!(w.counts.all.latency.count, 40_000);
    }

    #[test]
    fn windows_serialize_for_the_journal() {
        let s = HttpStats::new(&["checkout"]);
        s.answered_at(at(&s, 0.5), 0, Answer::Injected(503), ms(3));
        let v = serde_json::to_value(s.window_at(at(&s, 2.0), at(&s, 0.0), at(&s, 2.0))).unwrap();
        assert_eq!(v["seconds"], 2);
        assert_eq!(v["requests"], 1);
        assert_eq!(v["by_class"]["injected"], 1);
        assert_eq!(v["routes"][0]["name"], "checkout");
        assert_eq!(v["routes"][1]["name"], "other");
        assert!(v["latency"]["p95_seconds"].as_f64().unwrap() > 0.0);
    }
}
