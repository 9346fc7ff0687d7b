//! HTTP faults: they act on requests of a `protocol = "http"` proxy, not on
//! bytes.
//!
//! Every kind carries an [`HttpMatch`] (which requests it picks) flattened
//! into its attributes, so a toxic reads `{"type": "http_abort",
//! "attributes": {"status": 503, "path": "/api/checkout", "count": 3}}`.
//! The session code in `crate::http` applies them; this file holds their
//! attributes, the matching rules and the per-request toxicity draw.
//!
//! Patterns are compiled once, when the fault is read (from TOML or the
//! API), never per request: matching a request costs a prefix comparison or
//! one regex search per given field.

use std::fmt;
use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method};
use rand::RngExt;
use rand::SeedableRng;
use regex::Regex;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::random::{self, FaultRng};
use super::units::Millis;

/// A path pattern: a prefix (`/api/`), or, when it contains `*`, a glob
/// over the whole path: `*` matches within one segment (no `/`), `**`
/// matches across segments. Compared and printed by its source text.
#[derive(Clone, Debug)]
pub struct PathPattern {
    text: String,
    glob: Option<Arc<Regex>>,
}

impl PathPattern {
    /// Compiles a pattern; it must start with `/`.
    pub fn new(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "path pattern `{text}` must start with `/` (a prefix such as \"/api/\" or a glob such as \"/api/*/items\")"
            ));
        }
        if !text.contains('*') {
            return Ok(Self {
                text: text.to_string(),
                glob: None,
            });
        }
        let mut re = String::with_capacity(text.len() * 2 + 2);
        re.push('^');
        let mut rest = text;
        while let Some(i) = rest.find('*') {
            re.push_str(&regex::escape(&rest[..i]));
            if rest[i..].starts_with("**") {
                re.push_str(".*");
                rest = &rest[i + 2..];
            } else {
                re.push_str("[^/]*");
                rest = &rest[i + 1..];
            }
        }
        re.push_str(&regex::escape(rest));
        re.push('$');
        let glob = Regex::new(&re).map_err(|e| format!("bad path glob `{text}`: {e}"))?;
        Ok(Self {
            text: text.to_string(),
            glob: Some(Arc::new(glob)),
        })
    }

    /// Whether `path` (without the query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match &self.glob {
            None => path.starts_with(&self.text),
            Some(re) => re.is_match(path),
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for PathPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for PathPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        PathPattern::new(&text).map_err(serde::de::Error::custom)
    }
}

/// A header condition, written `name=regex` (the regular expression is
/// searched in each value of the header; any one matching is enough), or
/// just `name` (the header is present). Names compare case-insensitively.
#[derive(Clone, Debug)]
pub struct HeaderPattern {
    text: String,
    name: HeaderName,
    value: Option<Arc<Regex>>,
}

impl HeaderPattern {
    /// Parses `name=regex` or `name`.
    pub fn new(text: &str) -> Result<Self, String> {
        let (name, value) = match text.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v)),
            None => (text.trim(), None),
        };
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("`{name}` is not a header name (write `name=regex`)"))?;
        let value = value
            .map(|v| {
                Regex::new(v)
                    .map(Arc::new)
                    .map_err(|e| format!("bad regular expression in `header`: {e}"))
            })
            .transpose()?;
        Ok(Self {
            text: text.to_string(),
            name,
            value,
        })
    }

    /// Whether the headers satisfy the condition.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter().peekable();
        match &self.value {
            None => values.peek().is_some(),
            Some(re) => values.any(|v| v.to_str().is_ok_and(|s| re.is_match(s))),
        }
    }
}

impl PartialEq for HeaderPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Serialize for HeaderPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for HeaderPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HeaderPattern::new(&text).map_err(serde::de::Error::custom)
    }
}

fn method<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Method>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    Method::from_bytes(text.to_ascii_uppercase().as_bytes())
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("`{text}` is not an HTTP method")))
}

fn method_ser<S: Serializer>(m: &Option<Method>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_str(m.as_str()),
        None => s.serialize_none(),
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Which requests an HTTP fault acts on. Every field given must match;
/// none given matches every request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpMatch {
    /// The request method, exactly (written in any case).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "method",
        serialize_with = "method_ser"
    )]
    pub method: Option<Method>,
    /// The path: a prefix, or a glob when it contains `*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathPattern>,
    /// A request header: `name=regex`, or `name` for presence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderPattern>,
    /// Let the first `after` matches through (counted across all
    /// connections of the proxy, while the fault exists).
    #[serde(skip_serializing_if = "is_zero")]
    pub after: u64,
    /// Stop after this many injections (0: no limit).
    #[serde(skip_serializing_if = "is_zero")]
    pub count: u64,
}

impl HttpMatch {
    /// Whether a request matches (before toxicity, `after` and `count`).
    pub fn matches(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self.path.as_ref().is_none_or(|p| p.matches(path))
            && self.header.as_ref().is_none_or(|h| h.matches(headers))
    }
}

/// Attribute names shared by every HTTP fault.
pub const MATCH_ATTRIBUTES: &[&str] = &["method", "path", "header", "after", "count"];

/// The toxicity draw of an HTTP fault for one request, in `[0, 1)`:
/// keyed by the connection (accept order), the request's number on that
/// connection and the fault's name, so the same seed and the same sequence
/// of requests give the same decisions.
pub fn request_draw(proxy_seed: u64, conn: u64, request: u64, fault: &str) -> f32 {
    let mut rng = FaultRng::seed_from_u64(random::derive(
        proxy_seed,
        &[conn, 4, request, random::hash_name(fault)],
    ));
    rng.random::<f32>()
}

/// Headers of an injected answer: a table of name → value, validated when
/// read; kept in the order written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderList(pub Vec<(HeaderName, HeaderValue)>);

/// Headers an injected answer may not set: hyper frames the body itself.
const FRAMING_HEADERS: &[&str] = &["content-length", "transfer-encoding", "connection"];

impl Serialize for HeaderList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.as_str(), v.to_str().unwrap_or(""))?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of header name to value, e.g. {\"Retry-After\" = \"5\"}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderList, A::Error> {
                use serde::de::Error;
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    let name = HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| A::Error::custom(format!("`{k}` is not a header name")))?;
                    if FRAMING_HEADERS.contains(&name.as_str()) {
                        return Err(A::Error::custom(format!(
                            "header `{k}` is set by shakedown from the body; leave it out"
                        )));
                    }
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Number(n) => n.to_string(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        _ => {
                            return Err(A::Error::custom(format!(
                                "the value of header `{k}` must be a string"
                            )));
                        }
                    };
                    let value = HeaderValue::from_str(&text).map_err(|_| {
                        A::Error::custom(format!("the value of header `{k}` is not a header value"))
                    })?;
                    out.push((name, value));
                }
                if out.len() > MAX_ABORT_HEADERS {
                    return Err(A::Error::custom(format!(
                        "at most {MAX_ABORT_HEADERS} headers"
                    )));
                }
                Ok(HeaderList(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Headers an `http_abort` may set: a real error answer carries a handful.
pub const MAX_ABORT_HEADERS: usize = 32;

/// Largest body an `http_abort` may send: an error document, not a payload.
pub const MAX_ABORT_BODY: usize = 64 * 1024;

fn abort_status<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let n = u64::deserialize(d)?;
    if (200..=599).contains(&n) {
        Ok(n as u16)
    } else {
        Err(serde::de::Error::custom(format!(
            "status {n} is out of range; an answer's status is 200..599"
        )))
    }
}

fn abort_body<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.len() > MAX_ABORT_BODY {
        return Err(serde::de::Error::custom(format!(
            "body is {} bytes; at most {MAX_ABORT_BODY}",
            s.len()
        )));
    }
    Ok(s)
}

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

fn no_headers(h: &HeaderList) -> bool {
    h.0.is_empty()
}

/// Attributes of `http_abort`: matching requests are answered by shakedown
/// without reaching the upstream (the partition case).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpAbort {
    /// The status (default 503).
    #[serde(deserialize_with = "abort_status")]
    pub status: u16,
    /// The body; `Content-Type` defaults to `application/json` when it
    /// starts with `{` or `[`, else `text/plain; charset=utf-8`.
    #[serde(skip_serializing_if = "is_empty", deserialize_with = "abort_body")]
    pub body: String,
    /// Headers of the answer (e.g. `Retry-After`).
    #[serde(skip_serializing_if = "no_headers")]
    pub headers: HeaderList,
    /// Which requests.
    #[serde(flatten)]
    pub matching: HttpMatch,
}

impl Default for HttpAbort {
    fn default() -> Self {
        Self {
            status: 503,
            body: String::new(),
            headers: HeaderList::default(),
            matching: HttpMatch::default(),
        }
    }
}

/// When `http_latency` waits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencyOn {
    /// Before the request is sent upstream.
    #[default]
    Request,
    /// After the upstream answered, before its headers reach the client.
    Response,
}

/// Attributes of `http_latency`: matching requests wait `latency ±
/// jitter`, before going upstream (`on = "request"`) or before their answer
/// goes back (`on = "response"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpLatency {
    /// Added delay (ms).
    pub latency: Millis,
    /// Uniform variation either way (ms).
    pub jitter: Millis,
    /// Where the wait happens.
    pub on: LatencyOn,
    /// Which requests.
    #[serde(flatten)]
    pub matching: HttpMatch,
}

/// Attributes of `http_throttle`: the response body of matching requests
/// flows at `rate` KB/s (1 KB = 1000 B, as `bandwidth`); `rate <= 0` is
/// unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpThrottle {
    /// KB/s (1 KB = 1000 bytes).
    pub rate: i64,
    /// Which requests.
    #[serde(flatten)]
    pub matching: HttpMatch,
}

/// Attributes of `http_reset`: the response of a matching request starts
/// (status and headers go out), `after_bytes` bytes of its body follow, and
/// then the client connection is reset (RST; on HTTP/2 the stream is reset).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpReset {
    /// Body bytes delivered before the reset.
    pub after_bytes: u64,
    /// Which requests.
    #[serde(flatten)]
    pub matching: HttpMatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn paths_match_by_prefix_or_glob() {
        let p = PathPattern::new("/api/").unwrap();
        assert!(p.matches("/api/checkout"));
        assert!(!p.matches("/apix"));
        let g = PathPattern::new("/api/*/items").unwrap();
        assert!(g.matches("/api/7/items"));
        assert!(!g.matches("/api/7/8/items"));
        assert!(!g.matches("/api/7/items/x"));
        let gg = PathPattern::new("/api/**").unwrap();
        assert!(gg.matches("/api/a/b/c"));
        assert!(!gg.matches("/other"));
        let s = PathPattern::new("/api/checkout*").unwrap();
        assert!(s.matches("/api/checkout"));
        assert!(s.matches("/api/checkouts"));
        assert!(!s.matches("/api/checkout/1"));
        let dots = PathPattern::new("/a.b/*").unwrap();
        assert!(!dots.matches("/axb/c"), "regex characters are literal");
        assert!(PathPattern::new("api").is_err());
    }

    #[test]
    fn every_given_field_must_match() {
        let m: HttpMatch = serde_json::from_value(serde_json::json!({
            "method": "post", "path": "/api/", "header": "x-user=^(alice|bob)$"
        }))
        .unwrap();
        let h = headers(&[("X-User", "bob")]);
        assert!(m.matches(&Method::POST, "/api/pay", &h));
        assert!(!m.matches(&Method::GET, "/api/pay", &h));
        assert!(!m.matches(&Method::POST, "/web", &h));
        assert!(!m.matches(&Method::POST, "/api/pay", &headers(&[("x-user", "eve")])));
        let any = headers(&[("x-user", "eve"), ("x-user", "alice")]);
        assert!(m.matches(&Method::POST, "/api/pay", &any), "any value");
        let present: HttpMatch =
            serde_json::from_value(serde_json::json!({"header": "X-Canary"})).unwrap();
        assert!(present.matches(&Method::GET, "/", &headers(&[("x-canary", "")])));
        assert!(!present.matches(&Method::GET, "/", &HeaderMap::new()));
        assert!(HttpMatch::default().matches(&Method::DELETE, "/", &HeaderMap::new()));
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            serde_json::json!({"status": 99}),
            serde_json::json!({"status": 600}),
            serde_json::json!({"headers": {"content-length": "3"}}),
            serde_json::json!({"headers": {"bad name": "x"}}),
            serde_json::json!({"headers": {"x": "a\nb"}}),
            serde_json::json!({"path": "nope"}),
            serde_json::json!({"header": "x=("}),
            serde_json::json!({"method": "GE T"}),
        ] {
            assert!(
                serde_json::from_value::<HttpAbort>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let a: HttpAbort = serde_json::from_value(serde_json::json!({
            "body": "{}", "headers": {"Retry-After": 5}
        }))
        .unwrap();
        assert_eq!(a.status, 503);
        assert_eq!(a.headers.0[0].1, "5");
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"status": 503, "body": "{}", "headers": {"retry-after": "5"}})
        );
    }

    #[test]
    fn draws_are_stable_per_request() {
        let a = request_draw(9, 1, 2, "f");
        assert_eq!(a, request_draw(9, 1, 2, "f"));
        assert_ne!(a, request_draw(9, 1, 3, "f"));
        assert_ne!(a, request_draw(9, 2, 2, "f"));
        assert_ne!(a, random::query_draw(9, 1, 2, "f"));
    }
}
