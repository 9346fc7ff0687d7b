//! JSON as Toxiproxy's Go server reads and writes it.
//!
//! Requests are decoded the way Go's `encoding/json` decodes into a struct:
//! unknown fields are ignored, keys match case-insensitively, and a value of
//! the wrong type is an error worded as Go words it. Responses keep Go's
//! field order (`attributes, name, type, stream, toxicity` for a toxic) and
//! its number formatting (`1`, not `1.0`).

use serde::Serialize;
use serde::ser::Serializer;
use serde_json::{Map, Value};

use crate::config::Protocol;
use crate::faults::FaultSpec;
use crate::registry::ProxyInfo;

/// A toxic as Toxiproxy serialises it.
#[derive(Debug, Serialize)]
pub struct ToxicJson {
    /// The fault's attributes, in declaration order.
    pub attributes: Value,
    /// Unique name within the proxy.
    pub name: String,
    /// The kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// `upstream` or `downstream`.
    pub stream: String,
    /// Share of connections affected.
    #[serde(serialize_with = "go_float32")]
    pub toxicity: f32,
    /// shakedown: milliseconds left before the toxic removes itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

impl ToxicJson {
    /// The JSON form of a fault; `ttl_ms` when it expires.
    pub fn new(spec: &FaultSpec, ttl_ms: Option<u64>) -> Self {
        Self {
            attributes: spec.fault.attributes(),
            name: spec.name.clone(),
            kind: spec.fault.kind().to_string(),
            stream: spec.direction.as_str().to_string(),
            toxicity: spec.toxicity,
            ttl: ttl_ms,
        }
    }
}

/// Go's encoding of a float32: integral values without a fraction.
fn go_float32<S: Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f32(*v)
    }
}

/// An empty object: Toxiproxy 2.12 serialises its proxy's logger as `{}`.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// A proxy with its toxics, as Toxiproxy serialises it (stray `Logger`
/// field included: recorded client tests expect that exact shape).
#[derive(Debug, Serialize)]
pub struct ProxyJson {
    /// Unique name.
    pub name: String,
    /// Listen address (resolved once started).
    pub listen: String,
    /// Upstream address.
    pub upstream: String,
    /// Whether it accepts connections.
    pub enabled: bool,
    /// shakedown's extension, shown for non-TCP proxies only (a TCP
    /// proxy's JSON is exactly Toxiproxy's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    /// Always `{}`.
    #[serde(rename = "Logger")]
    pub logger: Empty,
    /// Upstream toxics then downstream toxics, each in creation order.
    pub toxics: Vec<ToxicJson>,
}

impl ProxyJson {
    /// The JSON form of a proxy and its toxics.
    pub fn new(info: ProxyInfo, toxics: Vec<ToxicJson>) -> Self {
        Self {
            name: info.name,
            listen: info.listen,
            upstream: info.upstream,
            enabled: info.enabled,
            protocol: (info.protocol != Protocol::Tcp).then(|| info.protocol.as_str()),
            logger: Empty {},
            toxics,
        }
    }
}

/// A request body that is a JSON object, or Go's decode error for it.
pub fn object(body: &[u8], go_type: &str) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("EOF".into());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "json: cannot unmarshal {} into Go value of type {go_type}",
            json_kind(&other)
        )),
        Err(e) => Err(syntax(&e)),
    }
}

/// A request body that is a JSON array of objects (`/populate`).
pub fn array(body: &[u8], go_type: &str) -> Result<Vec<Map<String, Value>>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("EOF".into());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::Object(m) => Ok(m),
                other => Err(format!(
                    "json: cannot unmarshal {} into Go value of type {go_type}",
                    json_kind(&other)
                )),
            })
            .collect(),
        Ok(other) => Err(format!(
            "json: cannot unmarshal {} into Go value of type []{go_type}",
            json_kind(&other)
        )),
        Err(e) => Err(syntax(&e)),
    }
}

fn syntax(e: &serde_json::Error) -> String {
    if e.is_eof() {
        "unexpected EOF".into()
    } else {
        format!("invalid character in JSON: {e}")
    }
}

/// The JSON type name as Go's decoder words it.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Looks a field up as Go does: exact name first, then case-insensitively.
pub fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn mismatch(v: &Value, go_struct: &str, name: &str, go_type: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go struct field {go_struct}.{name} of type {go_type}",
        json_kind(v)
    )
}

/// A string field; `null` and absence are `None`.
pub fn string(
    obj: &Map<String, Value>,
    name: &str,
    go_struct: &str,
) -> Result<Option<String>, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(mismatch(v, go_struct, name, "string")),
    }
}

/// A boolean field.
pub fn boolean(
    obj: &Map<String, Value>,
    name: &str,
    go_struct: &str,
) -> Result<Option<bool>, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(mismatch(v, go_struct, name, "bool")),
    }
}

/// A float field.
pub fn number(
    obj: &Map<String, Value>,
    name: &str,
    go_struct: &str,
) -> Result<Option<f64>, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(v) => Err(mismatch(v, go_struct, name, "float32")),
    }
}

/// A non-negative integer field.
pub fn integer(
    obj: &Map<String, Value>,
    name: &str,
    go_struct: &str,
) -> Result<Option<u64>, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("json: cannot unmarshal number {n} into Go struct field {go_struct}.{name} of type uint64")),
        Some(v) => Err(mismatch(v, go_struct, name, "uint64")),
    }
}

/// An object field (`attributes`); `null` and absence are `None`.
pub fn sub_object<'a>(
    obj: &'a Map<String, Value>,
    name: &str,
    go_struct: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(v) => Err(mismatch(v, go_struct, name, "map[string]interface {}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{Direction, Fault};

    #[test]
    fn toxic_json_matches_toxiproxy_byte_for_byte() {
        let f = Fault::from_parts("latency", serde_json::json!({"latency": 1000})).unwrap();
        let spec = FaultSpec::new(f, Direction::Downstream);
        assert_eq!(
            serde_json::to_string(&ToxicJson::new(&spec, None)).unwrap(),
            r#"{"attributes":{"latency":1000,"jitter":0},"name":"latency_downstream","type":"latency","stream":"downstream","toxicity":1}"#
        );
        let mut half = spec.clone();
        half.toxicity = 0.2;
        assert!(
            serde_json::to_string(&ToxicJson::new(&half, None))
                .unwrap()
                .ends_with(r#""toxicity":0.2}"#)
        );
        let s = Fault::from_parts("slicer", serde_json::Value::Null).unwrap();
        let json = serde_json::to_string(&s.attributes()).unwrap();
        assert_eq!(json, r#"{"average_size":0,"size_variation":0,"delay":0}"#);
    }

    #[test]
    fn decoding_follows_go() {
        let o = object(br#"{"NAME": "x", "enabled": "yes"}"#, "toxiproxy.Proxy").unwrap();
        assert_eq!(string(&o, "name", "Proxy").unwrap().as_deref(), Some("x"));
        assert_eq!(
            boolean(&o, "enabled", "Proxy").unwrap_err(),
            "json: cannot unmarshal string into Go struct field Proxy.enabled of type bool"
        );
        assert!(object(b"[]", "toxiproxy.Proxy").is_err());
        assert_eq!(object(b"", "x").unwrap_err(), "EOF");
    }
}
