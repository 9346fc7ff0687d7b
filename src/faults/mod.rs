//! Faults: the single description of everything shakedown can inject.
//!
//! A [`Fault`] is the kind plus its attributes, tagged the way Toxiproxy's API
//! writes a toxic (`type` + `attributes`); a [`FaultSpec`] adds the name, the
//! direction and the toxicity. The TOML config, the control API and the
//! experiment runner all build the same `FaultSpec`.
//!
//! Each byte fault lives in a file of its own with its attributes and the
//! function that applies it to one chunk; [`chain`] strings the active ones
//! of a connection direction together.

pub mod bandwidth;
pub mod blackhole;
pub mod chain;
pub mod http;
pub mod latency;
pub mod limit_data;
pub mod noop;
pub mod query;
pub mod random;
pub mod refuse;
pub mod reset_peer;
pub mod slicer;
pub mod slow_close;
pub mod timeout;
pub mod units;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use bandwidth::Bandwidth;
pub use blackhole::Blackhole;
pub use http::{HttpAbort, HttpLatency, HttpReset, HttpThrottle};
pub use latency::Latency;
pub use limit_data::LimitData;
pub use noop::Noop;
pub use query::{QueryError, QueryLatency, RejectConnections, StartupLatency, Terminate};
pub use refuse::Refuse;
pub use reset_peer::ResetPeer;
pub use slicer::Slicer;
pub use slow_close::SlowClose;
pub use timeout::Timeout;
pub use units::{Micros, Millis};

/// Which way the bytes a fault acts on are flowing.
///
/// Toxiproxy's names: `upstream` is client to server (requests), `downstream`
/// is server to client (responses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client to server.
    Upstream,
    /// Server to client.
    Downstream,
}

impl Direction {
    /// Both directions, upstream first (Toxiproxy lists toxics in this order).
    pub const BOTH: [Direction; 2] = [Direction::Upstream, Direction::Downstream];

    /// The lower-case name used in configs, the API and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = String;

    /// Case-insensitive, as Toxiproxy's `stream.ParseDirection` is.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "upstream" => Ok(Direction::Upstream),
            "downstream" => Ok(Direction::Downstream),
            _ => Err(format!(
                "direction `{s}` is invalid, can be either upstream or downstream"
            )),
        }
    }
}

/// What to inject, with its attributes.
///
/// Serialised with Toxiproxy's envelope: `{"type": "latency", "attributes": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "attributes", rename_all = "snake_case")]
pub enum Fault {
    /// Passes data through unchanged (Toxiproxy registers it as a real type).
    Noop(Noop),
    /// Delays every chunk.
    Latency(Latency),
    /// Limits the transfer rate.
    Bandwidth(Bandwidth),
    /// Delays the close after the data.
    SlowClose(SlowClose),
    /// Drops data and closes after a quiet period.
    Timeout(Timeout),
    /// Resets the connection (RST) on the first data.
    ResetPeer(ResetPeer),
    /// Splits chunks into small pieces with pauses between them.
    Slicer(Slicer),
    /// Closes the connection after a byte budget.
    LimitData(LimitData),
    /// A network partition in one direction: data stops, peers see a hang.
    Blackhole(Blackhole),
    /// New connections are reset at once; live ones carry on.
    Refuse(Refuse),
    /// PostgreSQL: delays matching queries.
    QueryLatency(QueryLatency),
    /// PostgreSQL: matching queries fail with an SQLSTATE.
    QueryError(QueryError),
    /// PostgreSQL: ends sessions with FATAL 57P01.
    Terminate(Terminate),
    /// PostgreSQL: new sessions get the server's FATAL after startup.
    RejectConnections(RejectConnections),
    /// PostgreSQL: slow session establishment.
    StartupLatency(StartupLatency),
    /// HTTP: matching requests are answered by shakedown (not forwarded).
    HttpAbort(HttpAbort),
    /// HTTP: matching requests or their answers are delayed.
    HttpLatency(HttpLatency),
    /// HTTP: the response bodies of matching requests are rate-limited.
    HttpThrottle(HttpThrottle),
    /// HTTP: the connection is reset part-way through matching responses.
    HttpReset(HttpReset),
}

/// The matching attributes every PostgreSQL fault takes after its own.
const PG_MATCH: &[&str] = query::MATCH_ATTRIBUTES;

/// `own` followed by a protocol's matching attributes (`tail`), as one
/// array; the length `M` must be exactly both (checked at compile time).
const fn with_match<const N: usize, const M: usize>(
    own: [&'static str; N],
    tail: &[&'static str],
) -> [&'static str; M] {
    assert!(N + tail.len() == M, "attribute array of the wrong length");
    let mut out = [""; M];
    let mut i = 0;
    while i < N {
        out[i] = own[i];
        i += 1;
    }
    let mut j = 0;
    while j < tail.len() {
        out[N + j] = tail[j];
        j += 1;
    }
    out
}

const QUERY_LATENCY_ATTRS: [&str; 9] = with_match(["latency", "jitter"], PG_MATCH);
const QUERY_ERROR_ATTRS: [&str; 12] = with_match(
    ["sqlstate", "message", "severity", "detail", "hint"],
    PG_MATCH,
);
const TERMINATE_ATTRS: [&str; 9] = with_match(["when", "after_queries"], PG_MATCH);
const REJECT_ATTRS: [&str; 9] = with_match(["sqlstate", "message"], PG_MATCH);
const STARTUP_LATENCY_ATTRS: [&str; 9] = with_match(["latency", "jitter"], PG_MATCH);

const HTTP_ABORT_ATTRS: [&str; 8] =
    with_match(["status", "body", "headers"], http::MATCH_ATTRIBUTES);
const HTTP_LATENCY_ATTRS: [&str; 8] =
    with_match(["latency", "jitter", "on"], http::MATCH_ATTRIBUTES);
const HTTP_THROTTLE_ATTRS: [&str; 6] = with_match(["rate"], http::MATCH_ATTRIBUTES);
const HTTP_RESET_ATTRS: [&str; 6] = with_match(["after_bytes"], http::MATCH_ATTRIBUTES);

/// Every fault kind's name with its attribute names, for validation and docs.
pub const KINDS: &[(&str, &[&str])] = &[
    ("noop", &[]),
    ("latency", &["latency", "jitter"]),
    ("bandwidth", &["rate"]),
    ("slow_close", &["delay"]),
    ("timeout", &["timeout"]),
    ("reset_peer", &["timeout"]),
    ("slicer", &["average_size", "size_variation", "delay"]),
    ("limit_data", &["bytes"]),
    ("blackhole", &["drop"]),
    ("refuse", &[]),
    ("query_latency", &QUERY_LATENCY_ATTRS),
    ("query_error", &QUERY_ERROR_ATTRS),
    ("terminate", &TERMINATE_ATTRS),
    ("reject_connections", &REJECT_ATTRS),
    ("startup_latency", &STARTUP_LATENCY_ATTRS),
    ("http_abort", &HTTP_ABORT_ATTRS),
    ("http_latency", &HTTP_LATENCY_ATTRS),
    ("http_throttle", &HTTP_THROTTLE_ATTRS),
    ("http_reset", &HTTP_RESET_ATTRS),
];

impl Fault {
    /// The kind's name as written in configs and in the API's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Noop(_) => "noop",
            Fault::Latency(_) => "latency",
            Fault::Bandwidth(_) => "bandwidth",
            Fault::SlowClose(_) => "slow_close",
            Fault::Timeout(_) => "timeout",
            Fault::ResetPeer(_) => "reset_peer",
            Fault::Slicer(_) => "slicer",
            Fault::LimitData(_) => "limit_data",
            Fault::Blackhole(_) => "blackhole",
            Fault::Refuse(_) => "refuse",
            Fault::QueryLatency(_) => "query_latency",
            Fault::QueryError(_) => "query_error",
            Fault::Terminate(_) => "terminate",
            Fault::RejectConnections(_) => "reject_connections",
            Fault::StartupLatency(_) => "startup_latency",
            Fault::HttpAbort(_) => "http_abort",
            Fault::HttpLatency(_) => "http_latency",
            Fault::HttpThrottle(_) => "http_throttle",
            Fault::HttpReset(_) => "http_reset",
        }
    }

    /// The kind's position in [`KINDS`] (for per-kind counters).
    pub fn kind_index(&self) -> usize {
        let kind = self.kind();
        KINDS.iter().position(|(k, _)| *k == kind).unwrap_or(0)
    }

    /// The attribute names a kind accepts, or `None` for an unknown kind.
    pub fn attribute_names(kind: &str) -> Option<&'static [&'static str]> {
        KINDS.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// Builds a fault from its kind and an attributes object (JSON form).
    ///
    /// Missing attributes take their defaults and, as in Toxiproxy, unknown
    /// ones are ignored; the TOML loader checks names itself so that a typo
    /// in a file is an error.
    pub fn from_parts(kind: &str, attributes: serde_json::Value) -> Result<Fault, String> {
        if Self::attribute_names(kind).is_none() {
            return Err(format!(
                "unknown fault kind `{kind}`; known kinds: {}",
                kind_list()
            ));
        }
        let attributes = if attributes.is_null() {
            serde_json::Value::Object(Default::default())
        } else {
            attributes
        };
        let envelope = serde_json::json!({ "type": kind, "attributes": attributes });
        let fault: Fault = serde_json::from_value(envelope).map_err(|e| e.to_string())?;
        fault.check()?;
        Ok(fault)
    }

    /// The attributes as a JSON object, in Toxiproxy's shape.
    pub fn attributes(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => m
                .remove("attributes")
                .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
            _ => serde_json::Value::Object(Default::default()),
        }
    }

    /// Whether the fault acts on new connections rather than on bytes.
    pub fn is_connect_fault(&self) -> bool {
        matches!(self, Fault::Refuse(_))
    }

    /// Whether the fault acts on the byte stream (a chain stage), as
    /// opposed to connections, PostgreSQL queries and sessions, or HTTP
    /// requests.
    pub fn is_byte_fault(&self) -> bool {
        !self.is_connect_fault() && !self.is_postgres() && !self.is_http()
    }

    /// Whether the fault needs a `protocol = "http"` proxy.
    pub fn is_http(&self) -> bool {
        matches!(
            self,
            Fault::HttpAbort(_)
                | Fault::HttpLatency(_)
                | Fault::HttpThrottle(_)
                | Fault::HttpReset(_)
        )
    }

    /// Whether an HTTP proxy can apply the fault: its request faults,
    /// `refuse` (new connections) and `noop`. Byte faults act beneath the
    /// HTTP layer only on TCP and PostgreSQL proxies.
    pub fn applies_to_http(&self) -> bool {
        self.is_http() || matches!(self, Fault::Refuse(_) | Fault::Noop(_))
    }

    /// The matching rules of an HTTP fault.
    pub fn http_match(&self) -> Option<&http::HttpMatch> {
        match self {
            Fault::HttpAbort(f) => Some(&f.matching),
            Fault::HttpLatency(f) => Some(&f.matching),
            Fault::HttpThrottle(f) => Some(&f.matching),
            Fault::HttpReset(f) => Some(&f.matching),
            _ => None,
        }
    }

    /// Whether the fault needs a `protocol = "postgres"` proxy.
    pub fn is_postgres(&self) -> bool {
        matches!(
            self,
            Fault::QueryLatency(_)
                | Fault::QueryError(_)
                | Fault::Terminate(_)
                | Fault::RejectConnections(_)
                | Fault::StartupLatency(_)
        )
    }

    /// The matching rules of a PostgreSQL fault.
    pub fn query_match(&self) -> Option<&query::QueryMatch> {
        match self {
            Fault::QueryLatency(f) => Some(&f.matching),
            Fault::QueryError(f) => Some(&f.matching),
            Fault::Terminate(f) => Some(&f.matching),
            Fault::RejectConnections(f) => Some(&f.matching),
            Fault::StartupLatency(f) => Some(&f.matching),
            _ => None,
        }
    }

    /// Checks rules that cross attributes (serde checks each on its own).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Fault::RejectConnections(_) | Fault::StartupLatency(_)
                if self.query_match().is_some_and(|m| m.has_query_fields()) =>
            {
                Err(format!(
                    "{} acts on new sessions, before any query: `sql` and `statement` do not apply (use user, database or application_name)",
                    self.kind()
                ))
            }
            Fault::Terminate(t) if t.after_queries > 0 && t.matching.has_query_fields() => Err(
                "terminate takes either `after_queries` or query matching (`sql`, `statement`), not both"
                    .into(),
            ),
            _ => Ok(()),
        }
    }
}

/// The comma-separated list of known kinds, for error messages.
pub fn kind_list() -> String {
    KINDS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

/// A named fault on one direction of a proxy.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpec {
    /// Unique within its proxy, across both directions.
    pub name: String,
    /// Which way of the connection it acts on.
    pub direction: Direction,
    /// Share of connections affected, drawn once per connection direction.
    pub toxicity: f32,
    /// The kind and its attributes.
    pub fault: Fault,
}

impl FaultSpec {
    /// A fault with Toxiproxy's defaults: named `<kind>_<direction>`, toxicity 1.
    pub fn new(fault: Fault, direction: Direction) -> Self {
        Self {
            name: default_name(fault.kind(), direction.as_str()),
            direction,
            toxicity: 1.0,
            fault,
        }
    }
}

/// Toxiproxy's default toxic name: `<type>_<stream>`.
pub fn default_name(kind: &str, direction: &str) -> String {
    format!("{kind}_{direction}")
}

/// Checks a toxicity value: a share of connections, so within `0..=1`.
pub fn check_toxicity(t: f64) -> Result<f32, String> {
    if (0.0..=1.0).contains(&t) {
        Ok(t as f32)
    } else {
        Err(format!(
            "toxicity {t} is out of range; it must be between 0 and 1"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_matches_toxiproxy() {
        let f = Fault::from_parts("latency", serde_json::json!({"latency": 1000})).unwrap();
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"latency","attributes":{"latency":1000,"jitter":0}}"#
        );
        assert_eq!(
            f.attributes(),
            serde_json::json!({"latency": 1000, "jitter": 0})
        );
        let n = Fault::from_parts("noop", serde_json::Value::Null).unwrap();
        assert_eq!(n.attributes(), serde_json::json!({}));
        assert!(Fault::from_parts("latency", serde_json::json!({"latency": 1.5})).is_err());
        assert!(Fault::from_parts("bogus", serde_json::Value::Null).is_err());
        // Unknown attributes are ignored, as in Toxiproxy.
        assert!(Fault::from_parts("timeout", serde_json::json!({"nope": 1})).is_ok());
    }

    #[test]
    fn every_kind_round_trips_with_its_attribute_names() {
        for (kind, names) in KINDS {
            let f = Fault::from_parts(kind, serde_json::Value::Null).unwrap();
            assert_eq!(f.kind(), *kind);
            let attrs = f.attributes();
            let keys: Vec<&str> = attrs
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            if f.is_postgres() || f.is_http() {
                // Matching attributes are shown only when set.
                for k in &keys {
                    assert!(names.contains(k), "{kind} shows unknown attribute {k}");
                }
                continue;
            }
            let mut want: Vec<&str> = names.to_vec();
            let mut got = keys.clone();
            want.sort();
            got.sort();
            assert_eq!(got, want, "attributes of {kind}");
        }
    }
}
