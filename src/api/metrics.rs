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
use crate::faults::{Direction, KINDS};
use crate::registry::Registry;

/// Serves the metrics of every proxy.
pub fn handle(state: &ApiState) -> Response<Body> {
    let families = gather(&state.registry);
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&families, &mut buf) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
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
        let snap = stats.connect_time.snapshot();
        connect_time.push(&p, |m| {
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
        received,
        sent,
    ]
    .into_iter()
    .map(|f| f.mf)
    .filter(|mf| !mf.get_metric().is_empty())
    .collect()
}
