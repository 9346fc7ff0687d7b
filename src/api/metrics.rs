//! `/metrics`: Prometheus text, built from the registry when scraped.
//!
//! The data path counts with plain atomics; this module reads them at
//! scrape time into metric families of the `prometheus` crate, so bytes are
//! counted live and the hot path never touches a metrics library. Labels
//! stay bounded: proxy, direction, fault kind (and, for Toxiproxy's names,
//! the proxy's configured listen and upstream addresses) — never a client.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use super::{ApiState, Body, error};
use crate::config::Protocol;
use crate::faults::{Direction, KINDS};
use crate::observe::histogram::HistogramSnapshot;
use crate::observe::http::{CLASSES, HttpStats};
use crate::observe::pg::{PgStats, STATEMENT_KINDS, Source};
use crate::registry::Registry;

/// Serves the metrics of every proxy.
pub fn handle(state: &ApiState) -> Response<Body> {
    let mut families = gather(&state.registry);
    let proxies = state.registry.list();
    let pg: Vec<(&str, &PgStats)> = proxies
        .iter()
        .filter(|p| p.info().protocol == Protocol::Postgres)
        .map(|p| (p.name(), p.pg_stats()))
        .collect();
    families.extend(pg_families(&pg));
    let http: Vec<HttpProxy<'_>> = proxies
        .iter()
        .filter_map(|p| {
            p.http_stats().map(|h| HttpProxy {
                name: p.name(),
                stats: h,
                activations: &p.stats().activations,
            })
        })
        .collect();
    families.extend(http_families(&http));
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&families, &mut buf) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
    }
    if let Ok(extra) = state.extra_metrics.read() {
        buf.extend_from_slice(extra.as_bytes());
    }
    let mut r = Response::new(Body::from(buf));
    if let Ok(v) = HeaderValue::from_str(encoder.format_type()) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

struct Family {
    mf: MetricFamily,
}

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_string());
        if !help.is_empty() {
            mf.set_help(help.to_string());
        }
        mf.set_field_type(kind);
        Self { mf }
    }

    fn push(&mut self, labels: &[(&str, &str)], fill: impl FnOnce(&mut Metric)) {
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect(),
        );
        fill(&mut m);
        self.mf.mut_metric().push(m);
    }

    fn counter(&mut self, labels: &[(&str, &str)], v: u64) {
        self.push(labels, |m| {
            let mut c = Counter::default();
            c.set_value(v as f64);
            m.set_counter(c);
        });
    }

    fn gauge(&mut self, labels: &[(&str, &str)], v: f64) {
        self.push(labels, |m| {
            let mut g = Gauge::default();
            g.set_value(v);
            m.set_gauge(g);
        });
    }

    fn histogram(&mut self, labels: &[(&str, &str)], snap: &HistogramSnapshot) {
        self.push(labels, |m| {
            let mut h = Histogram::default();
            h.set_sample_count(snap.count);
            h.set_sample_sum(snap.sum);
            h.set_bucket(
                snap.buckets
                    .iter()
                    .map(|(le, c)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(*le);
                        b.set_cumulative_count(*c);
                        b
                    })
                    .collect(),
            );
            m.set_histogram(h);
        });
    }

    fn into_family(self) -> Option<MetricFamily> {
        (!self.mf.get_metric().is_empty()).then_some(self.mf)
    }
}

/// Builds every metric family from the registry's current state.
pub fn gather(registry: &Registry) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let mut active = Family::new(
        "shakedown_connections_active",
        "Client connections open now.",
        GAUGE,
    );
    let mut total = Family::new(
        "shakedown_connections_total",
        "Client connections accepted.",
        COUNTER,
    );
    let mut bytes = Family::new(
        "shakedown_bytes_total",
        "Bytes forwarded, counted as they flow.",
        COUNTER,
    );
    let mut received = Family::new("toxiproxy_proxy_received_bytes_total", "", COUNTER);
    let mut sent = Family::new("toxiproxy_proxy_sent_bytes_total", "", COUNTER);
    let mut connect_errors = Family::new(
        "shakedown_upstream_connect_errors_total",
        "Upstream dials that failed or timed out.",
        COUNTER,
    );
    let mut connect_time = Family::new(
        "shakedown_upstream_connect_seconds",
        "Time to establish upstream connections.",
        HISTOGRAM,
    );
    let mut enabled = Family::new(
        "shakedown_proxy_enabled",
        "1 while the proxy accepts connections.",
        GAUGE,
    );
    let mut faults_active = Family::new(
        "shakedown_faults_active",
        "Faults configured on the proxy, by kind.",
        GAUGE,
    );
    let mut activations = Family::new(
        "shakedown_fault_activations_total",
        "Times a fault took effect on a connection direction (or refused a connection), by kind.",
        COUNTER,
    );
    let mut slots_limit = Family::new(
        "shakedown_connection_slots",
        "Connections all proxies may hold at once, sized from the open-file limit.",
        GAUGE,
    );
    slots_limit.gauge(&[], crate::proxy::slots::total() as f64);
    let mut slots_used = Family::new(
        "shakedown_connection_slots_in_use",
        "Connection slots held now by open client connections.",
        GAUGE,
    );
    slots_used.gauge(&[], crate::proxy::slots::in_use() as f64);

    for proxy in registry.list() {
        let info = proxy.info();
        let stats = proxy.stats();
        let name = info.name.as_str();
        let p = [("proxy", name)];
        active.gauge(&p, stats.connections_active.load(Ordering::Relaxed) as f64);
        total.counter(&p, stats.connections_total.load(Ordering::Relaxed));
        enabled.gauge(&p, if info.enabled { 1.0 } else { 0.0 });
        connect_errors.counter(&p, stats.connect_errors.load(Ordering::Relaxed));
        for dir in Direction::BOTH {
            let d = stats.dir(dir);
            let s = d.sent.load(Ordering::Relaxed);
            bytes.counter(&[("proxy", name), ("direction", dir.as_str())], s);
            let labels = [
                ("direction", dir.as_str()),
                ("listener", info.listen.as_str()),
                ("proxy", name),
                ("upstream", info.upstream.as_str()),
            ];
            received.counter(&labels, d.received.load(Ordering::Relaxed));
            sent.counter(&labels, s);
        }
        connect_time.histogram(&p, &stats.connect_time.snapshot());
        let mut per_kind: BTreeMap<&str, u64> = BTreeMap::new();
        for spec in proxy.faults() {
            *per_kind.entry(spec.fault.kind()).or_default() += 1;
        }
        for (kind, n) in per_kind {
            faults_active.gauge(&[("proxy", name), ("kind", kind)], n as f64);
        }
        for (i, (kind, _)) in KINDS.iter().enumerate() {
            let n = stats.activations[i].load(Ordering::Relaxed);
            if n > 0 {
                activations.counter(&[("proxy", name), ("kind", kind)], n);
            }
        }
    }
    [
        active,
        total,
        bytes,
        connect_errors,
        connect_time,
        enabled,
        faults_active,
        activations,
        slots_limit,
        slots_used,
        received,
        sent,
    ]
    .into_iter()
    .filter_map(Family::into_family)
    .collect()
}

/// Builds the metric families of PostgreSQL-aware proxies from their
/// [`PgStats`], one `(proxy name, stats)` pair each.
///
/// Kept apart from [`gather`] until the proxies own their `PgStats`; the
/// caller appends the result to `gather`'s. Labels stay bounded: proxy,
/// statement kind, SQLSTATE (at most `SQLSTATE_CODES` + 2 values per
/// proxy), source and outcome.
pub fn pg_families(proxies: &[(&str, &PgStats)]) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let mut queries = Family::new(
        "shakedown_pg_queries_total",
        "PostgreSQL queries answered (simple queries and extended batches), by statement kind.",
        COUNTER,
    );
    let mut duration = Family::new(
        "shakedown_pg_query_duration_seconds",
        "Time from a query frame to its ReadyForQuery.",
        HISTOGRAM,
    );
    let mut errors = Family::new(
        "shakedown_pg_errors_total",
        "ErrorResponses seen by clients, by SQLSTATE and source (server or injected).",
        COUNTER,
    );
    let mut active = Family::new(
        "shakedown_pg_sessions_active",
        "PostgreSQL sessions open now.",
        GAUGE,
    );
    let mut sessions = Family::new(
        "shakedown_pg_sessions_total",
        "PostgreSQL sessions started.",
        COUNTER,
    );
    let mut rejected = Family::new(
        "shakedown_pg_sessions_rejected_total",
        "New sessions refused, by a fault (injected) or by the server's FATAL at startup.",
        COUNTER,
    );
    let mut transactions = Family::new(
        "shakedown_pg_transactions_total",
        "Transactions ended, by outcome.",
        COUNTER,
    );

    for (name, stats) in proxies {
        let name = *name;
        let p = [("proxy", name)];
        let snap = stats.snapshot();
        let c = &snap.counts;
        for kind in STATEMENT_KINDS {
            let n = c.queries.get(kind).copied().unwrap_or(0);
            queries.counter(&[("proxy", name), ("statement", kind)], n);
        }
        duration.histogram(&p, &stats.latency_histogram());
        for e in &c.errors_by_sqlstate {
            let labels = [
                ("proxy", name),
                ("sqlstate", e.sqlstate.as_str()),
                ("source", e.source.as_str()),
            ];
            errors.counter(&labels, e.count);
        }
        active.gauge(&p, snap.sessions_active as f64);
        sessions.counter(&p, c.sessions_started);
        for (source, n) in [
            (Source::Server, c.sessions_rejected.server),
            (Source::Injected, c.sessions_rejected.injected),
        ] {
            rejected.counter(&[("proxy", name), ("source", source.as_str())], n);
        }
        for (outcome, n) in [
            ("committed", c.transactions_committed),
            ("rolled_back", c.transactions_rolled_back),
        ] {
            transactions.counter(&[("proxy", name), ("outcome", outcome)], n);
        }
    }
    [
        queries,
        duration,
        errors,
        active,
        sessions,
        rejected,
        transactions,
    ]
    .into_iter()
    .filter_map(Family::into_family)
    .collect()
}

/// What [`http_families`] reads of one HTTP proxy.
pub struct HttpProxy<'a> {
    /// The proxy's name.
    pub name: &'a str,
    /// Its observations.
    pub stats: &'a HttpStats,
    /// Its fault activations per kind (indexed like `KINDS`).
    pub activations: &'a [std::sync::atomic::AtomicU64],
}

/// The HTTP kinds, for `shakedown_http_injected_total{kind}`.
const HTTP_KINDS: [&str; 4] = ["http_abort", "http_latency", "http_throttle", "http_reset"];

/// Builds the metric families of HTTP proxies. Labels stay bounded: proxy,
/// route (the config's, at most 32, plus `other`), class (the 7 of
/// [`CLASSES`]) and the 4 HTTP fault kinds.
pub fn http_families(proxies: &[HttpProxy<'_>]) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let mut requests = Family::new(
        "shakedown_http_requests_total",
        "HTTP requests answered, by route and class (1xx-5xx from the upstream, error = shakedown's 502/504, injected = a fault's answer).",
        COUNTER,
    );
    let mut duration = Family::new(
        "shakedown_http_request_duration_seconds",
        "Time from a request's arrival to its response headers going out, by route.",
        HISTOGRAM,
    );
    let mut response = Family::new(
        "shakedown_http_response_duration_seconds",
        "Time from a request's arrival to the end of its response body.",
        HISTOGRAM,
    );
    let mut active = Family::new(
        "shakedown_http_requests_active",
        "HTTP requests in flight (received, response not finished).",
        GAUGE,
    );
    let mut injected = Family::new(
        "shakedown_http_injected_total",
        "Requests an HTTP fault (or an Envoy fault header) acted on, by kind.",
        COUNTER,
    );
    let mut resets = Family::new(
        "shakedown_http_resets_total",
        "Responses cut by http_reset, by route.",
        COUNTER,
    );
    for p in proxies {
        let snap = p.stats.snapshot();
        for (i, r) in snap.counts.routes.iter().enumerate() {
            for class in CLASSES {
                let n = r.counts.by_class.get(class).copied().unwrap_or(0);
                requests.counter(
                    &[
                        ("proxy", p.name),
                        ("route", r.name.as_str()),
                        ("class", class),
                    ],
                    n,
                );
            }
            duration.histogram(
                &[("proxy", p.name), ("route", r.name.as_str())],
                &p.stats.latency_histogram(i),
            );
            resets.counter(
                &[("proxy", p.name), ("route", r.name.as_str())],
                r.counts.resets,
            );
        }
        response.histogram(&[("proxy", p.name)], &p.stats.response_histogram());
        active.gauge(&[("proxy", p.name)], snap.requests_active as f64);
        for kind in HTTP_KINDS {
            let n = KINDS
                .iter()
                .position(|(k, _)| *k == kind)
                .and_then(|i| p.activations.get(i))
                .map_or(0, |c| c.load(Ordering::Relaxed));
            injected.counter(&[("proxy", p.name), ("kind", kind)], n);
        }
    }
    [requests, duration, response, active, injected, resets]
        .into_iter()
        .filter_map(Family::into_family)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn text(families: &[MetricFamily]) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(families, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn pg_families_export_every_family_with_bounded_labels() {
        let db = PgStats::default();
        db.session_started();
        db.session_started();
        db.session_ended();
        db.query(0, Duration::from_millis(3));
        db.query(0, Duration::from_millis(30));
        db.query(6, Duration::from_micros(200));
        db.error("40001", false, true);
        db.error("40001", false, false);
        db.error("not a code", false, false);
        db.transaction(true);
        db.transaction(false);
        db.session_rejected(true);
        let idle = PgStats::default();
        let t = text(&pg_families(&[("db", &db), ("idle", &idle)]));

        for line in [
            "# TYPE shakedown_pg_queries_total counter",
            "shakedown_pg_queries_total{proxy=\"db\",statement=\"select\"} 2",
            "shakedown_pg_queries_total{proxy=\"db\",statement=\"commit\"} 1",
            "shakedown_pg_queries_total{proxy=\"db\",statement=\"ddl\"} 0",
            "shakedown_pg_queries_total{proxy=\"idle\",statement=\"other\"} 0",
            "# TYPE shakedown_pg_query_duration_seconds histogram",
            "shakedown_pg_query_duration_seconds_bucket{proxy=\"db\",le=\"0.0005\"} 1",
            "shakedown_pg_query_duration_seconds_bucket{proxy=\"db\",le=\"0.005\"} 2",
            "shakedown_pg_query_duration_seconds_bucket{proxy=\"db\",le=\"0.05\"} 3",
            "shakedown_pg_query_duration_seconds_bucket{proxy=\"db\",le=\"+Inf\"} 3",
            "shakedown_pg_query_duration_seconds_count{proxy=\"db\"} 3",
            "shakedown_pg_query_duration_seconds_count{proxy=\"idle\"} 0",
            "# TYPE shakedown_pg_errors_total counter",
            "shakedown_pg_errors_total{proxy=\"db\",sqlstate=\"40001\",source=\"server\"} 1",
            "shakedown_pg_errors_total{proxy=\"db\",sqlstate=\"40001\",source=\"injected\"} 1",
            "shakedown_pg_errors_total{proxy=\"db\",sqlstate=\"?????\",source=\"server\"} 1",
            "# TYPE shakedown_pg_sessions_active gauge",
            "shakedown_pg_sessions_active{proxy=\"db\"} 1",
            "shakedown_pg_sessions_total{proxy=\"db\"} 2",
            "shakedown_pg_sessions_rejected_total{proxy=\"db\",source=\"injected\"} 1",
            "shakedown_pg_sessions_rejected_total{proxy=\"db\",source=\"server\"} 0",
            "shakedown_pg_transactions_total{proxy=\"db\",outcome=\"committed\"} 1",
            "shakedown_pg_transactions_total{proxy=\"db\",outcome=\"rolled_back\"} 1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        assert!(
            !t.contains("shakedown_pg_errors_total{proxy=\"idle\""),
            "no zero error series"
        );
        let series = t.lines().filter(|l| !l.starts_with('#')).count();
        // Per proxy: 9 statements, 14 buckets + Inf + sum + count, 2
        // sources, 2 outcomes, active, total; errors only for db (3).
        assert_eq!(series, 2 * (9 + 17 + 2 + 2 + 2) + 3);
    }

    #[test]
    fn http_families_export_every_family_with_bounded_labels() {
        use crate::observe::http::Answer;
        let s = HttpStats::new(&["checkout"]);
        s.started();
        s.answered(0, Answer::Injected(503), Duration::from_millis(1));
        s.started();
        s.answered(1, Answer::Upstream(200), Duration::from_millis(30));
        s.completed(1, Duration::from_millis(40), false);
        let activations: Vec<std::sync::atomic::AtomicU64> =
            KINDS.iter().map(|_| Default::default()).collect();
        let abort = KINDS.iter().position(|(k, _)| *k == "http_abort").unwrap();
        activations[abort].store(1, Ordering::Relaxed);
        let t = text(&http_families(&[HttpProxy {
            name: "web",
            stats: &s,
            activations: &activations,
        }]));
        for line in [
            "shakedown_http_requests_total{proxy=\"web\",route=\"checkout\",class=\"injected\"} 1",
            "shakedown_http_requests_total{proxy=\"web\",route=\"other\",class=\"2xx\"} 1",
            "shakedown_http_requests_total{proxy=\"web\",route=\"other\",class=\"error\"} 0",
            "shakedown_http_request_duration_seconds_bucket{proxy=\"web\",route=\"other\",le=\"0.05\"} 1",
            "shakedown_http_request_duration_seconds_count{proxy=\"web\",route=\"checkout\"} 1",
            "shakedown_http_response_duration_seconds_count{proxy=\"web\"} 1",
            "shakedown_http_requests_active{proxy=\"web\"} 1",
            "shakedown_http_injected_total{proxy=\"web\",kind=\"http_abort\"} 1",
            "shakedown_http_injected_total{proxy=\"web\",kind=\"http_reset\"} 0",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }

    #[test]
    fn pg_families_without_proxies_is_empty() {
        assert!(pg_families(&[]).is_empty());
    }
}
