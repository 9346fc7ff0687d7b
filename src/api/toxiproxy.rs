//! Toxiproxy 2.12's routes, with its status codes, shapes and messages.

use std::time::Duration;

use hyper::{Method, Response, StatusCode};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::warn;

use super::json::{self, ProxyJson, ToxicJson};
use super::{ApiState, Body, Call, TOXIPROXY_VERSION, empty, error, json_response, only};
use crate::config::{Protocol, ProxyConfig};
use crate::faults::{self, Direction, Fault, FaultSpec};
use crate::registry::{Proxy, RegistryError};

/// Dispatches a Toxiproxy route; unknown paths get Go's 404 page.
pub fn route(call: &Call, segs: &[&str], state: &ApiState) -> Response<Body> {
    use Method as M;
    match segs {
        ["proxies"] => match call.method {
            M::GET => proxy_index(state),
            M::POST => proxy_create(call, state),
            _ => empty(StatusCode::METHOD_NOT_ALLOWED),
        },
        ["populate"] => only(call, &[M::POST], || populate(call, state)),
        ["reset"] => only(call, &[M::POST], || reset(state)),
        ["version"] => only(call, &[M::GET], version),
        ["proxies", p] => match call.method {
            M::GET => with_proxy(state, p, |proxy| {
                json_response(StatusCode::OK, &proxy_json(&proxy))
            }),
            M::POST | M::PATCH => {
                if call.method == M::POST {
                    warn!("ProxyUpdate: HTTP method POST is deprecated. Use HTTP PATCH instead.");
                }
                with_proxy(state, p, |proxy| proxy_update(call, &proxy))
            }
            M::DELETE => match state.registry.remove_proxy(p) {
                Ok(()) => empty(StatusCode::NO_CONTENT),
                Err(e) => registry_error(e),
            },
            _ => empty(StatusCode::METHOD_NOT_ALLOWED),
        },
        ["proxies", p, "toxics"] => match call.method {
            M::GET => with_proxy(state, p, |proxy| {
                json_response(StatusCode::OK, &toxics_json(&proxy))
            }),
            M::POST => with_proxy(state, p, |proxy| toxic_create(call, state, &proxy)),
            _ => empty(StatusCode::METHOD_NOT_ALLOWED),
        },
        ["proxies", p, "toxics", t] => match call.method {
            M::GET => with_proxy(state, p, |proxy| match toxic_json(&proxy, t) {
                Some(tj) => json_response(StatusCode::OK, &tj),
                None => registry_error(RegistryError::FaultNotFound),
            }),
            M::POST | M::PATCH => {
                if call.method == M::POST {
                    warn!("ToxicUpdate: HTTP method POST is deprecated. Use HTTP PATCH instead.");
                }
                with_proxy(state, p, |proxy| toxic_update(call, &proxy, t))
            }
            M::DELETE => with_proxy(state, p, |proxy| match proxy.remove_fault(t) {
                Ok(_) => empty(StatusCode::NO_CONTENT),
                Err(e) => registry_error(e),
            }),
            _ => empty(StatusCode::METHOD_NOT_ALLOWED),
        },
        _ => super::text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

fn with_proxy(
    state: &ApiState,
    name: &str,
    f: impl FnOnce(std::sync::Arc<Proxy>) -> Response<Body>,
) -> Response<Body> {
    match state.registry.get(name) {
        Some(p) => f(p),
        None => registry_error(RegistryError::ProxyNotFound),
    }
}

/// Maps a registry error to Toxiproxy's status and message.
pub fn registry_error(e: RegistryError) -> Response<Body> {
    let status = match e {
        RegistryError::ProxyNotFound | RegistryError::FaultNotFound => StatusCode::NOT_FOUND,
        RegistryError::ProxyExists | RegistryError::FaultExists => StatusCode::CONFLICT,
        RegistryError::Bind { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        RegistryError::NeedsPostgres { .. }
        | RegistryError::NeedsHttp { .. }
        | RegistryError::NotForHttp { .. } => StatusCode::BAD_REQUEST,
    };
    error(status, &e.to_string())
}

fn bad_body(msg: &str) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, &format!("bad request body: {msg}"))
}

/// The toxics of a proxy in Toxiproxy's order, with TTLs left.
pub fn toxics_json(proxy: &Proxy) -> Vec<ToxicJson> {
    let now = Instant::now();
    proxy
        .faults_with_expiry()
        .iter()
        .map(|(spec, expires)| {
            let ttl = expires.map(|at| at.saturating_duration_since(now).as_millis() as u64);
            ToxicJson::new(spec, ttl)
        })
        .collect()
}

fn toxic_json(proxy: &Proxy, name: &str) -> Option<ToxicJson> {
    toxics_json(proxy).into_iter().find(|t| t.name == name)
}

/// A proxy and its toxics.
pub fn proxy_json(proxy: &Proxy) -> ProxyJson {
    ProxyJson::new(proxy.info(), toxics_json(proxy))
}

fn proxy_index(state: &ApiState) -> Response<Body> {
    let all: serde_json::Map<String, Value> = state
        .registry
        .list()
        .iter()
        .filter_map(|p| {
            serde_json::to_value(proxy_json(p))
                .ok()
                .map(|v| (p.name().to_string(), v))
        })
        .collect();
    json_response(StatusCode::OK, &all)
}

/// Name, listen, upstream and enabled of a proxy body (`enabled` defaults
/// to true, as in Toxiproxy).
struct ProxyInput {
    name: String,
    listen: String,
    upstream: String,
    enabled: bool,
    /// shakedown's extension: `"tcp"` (default), `"postgres"` or `"http"`.
    protocol: Protocol,
    /// Extensions for http proxies, as in the config file:
    /// `"request_timeout"` (ms) and `"header_faults"`.
    request_timeout: Option<std::time::Duration>,
    header_faults: bool,
}

fn proxy_input(obj: &Map<String, Value>) -> Result<ProxyInput, String> {
    let protocol = match json::string(obj, "protocol", "Proxy")?.as_deref() {
        None | Some("tcp") => Protocol::Tcp,
        Some("postgres") => Protocol::Postgres,
        Some("http") => Protocol::Http,
        Some(other) => {
            return Err(format!(
                "unknown protocol {other:?}; it is \"tcp\", \"postgres\" or \"http\""
            ));
        }
    };
    let request_timeout = json::integer(obj, "request_timeout", "Proxy")?;
    let header_faults = json::boolean(obj, "header_faults", "Proxy")?;
    if (request_timeout.is_some() || header_faults.is_some()) && protocol != Protocol::Http {
        return Err(
            "request_timeout and header_faults apply to http proxies only (add \"protocol\":\"http\")"
                .into(),
        );
    }
    if request_timeout == Some(0) {
        return Err("request_timeout must be above 0 (milliseconds)".into());
    }
    Ok(ProxyInput {
        name: json::string(obj, "name", "Proxy")?.unwrap_or_default(),
        listen: json::string(obj, "listen", "Proxy")?.unwrap_or_default(),
        upstream: json::string(obj, "upstream", "Proxy")?.unwrap_or_default(),
        enabled: json::boolean(obj, "enabled", "Proxy")?.unwrap_or(true),
        protocol,
        request_timeout: request_timeout.map(std::time::Duration::from_millis),
        header_faults: header_faults.unwrap_or(false),
    })
}

fn proxy_config(input: &ProxyInput) -> ProxyConfig {
    let mut cfg = ProxyConfig::new(&input.name, &input.listen, &input.upstream);
    cfg.enabled = input.enabled;
    cfg.protocol = input.protocol;
    if let Some(t) = input.request_timeout {
        cfg.request_timeout = t;
    }
    cfg.header_faults = input.header_faults;
    cfg
}

fn proxy_create(call: &Call, state: &ApiState) -> Response<Body> {
    let input = match json::object(&call.body, "toxiproxy.Proxy").and_then(|o| proxy_input(&o)) {
        Ok(i) => i,
        Err(e) => return bad_body(&e),
    };
    if input.name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "missing required field: name");
    }
    if input.upstream.is_empty() {
        return error(StatusCode::BAD_REQUEST, "missing required field: upstream");
    }
    match state.registry.add_proxy(&proxy_config(&input)) {
        Ok(proxy) => json_response(StatusCode::CREATED, &proxy_json(&proxy)),
        Err(e) => registry_error(e),
    }
}

fn proxy_update(call: &Call, proxy: &Proxy) -> Response<Body> {
    let obj = match json::object(&call.body, "toxiproxy.Proxy") {
        Ok(o) => o,
        Err(e) => return bad_body(&e),
    };
    let fields = (|| {
        Ok::<_, String>((
            json::string(&obj, "listen", "Proxy")?,
            json::string(&obj, "upstream", "Proxy")?,
            json::boolean(&obj, "enabled", "Proxy")?,
        ))
    })();
    let (listen, upstream, enabled) = match fields {
        Ok(f) => f,
        Err(e) => return bad_body(&e),
    };
    match proxy.update(listen, upstream, enabled) {
        Ok(_) => json_response(StatusCode::OK, &proxy_json(proxy)),
        Err(e) => registry_error(e),
    }
}

fn populate(call: &Call, state: &ApiState) -> Response<Body> {
    #[derive(serde::Serialize)]
    struct Populated {
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        proxies: Option<Vec<ProxyJson>>,
    }
    let respond = |status: StatusCode, err: Option<String>, done: Vec<ProxyJson>| {
        let body = Populated {
            status: err.as_ref().map(|_| status.as_u16()),
            error: err,
            proxies: (!done.is_empty()).then_some(done),
        };
        json_response(status, &body)
    };
    let entries = match json::array(&call.body, "toxiproxy.Proxy") {
        Ok(e) => e,
        Err(e) => {
            return respond(
                StatusCode::BAD_REQUEST,
                Some(format!("bad request body: {e}")),
                vec![],
            );
        }
    };
    let mut inputs = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let input = match proxy_input(entry) {
            Ok(x) => x,
            Err(e) => {
                return respond(
                    StatusCode::BAD_REQUEST,
                    Some(format!("bad request body: {e}")),
                    vec![],
                );
            }
        };
        for (field, value) in [("name", &input.name), ("upstream", &input.upstream)] {
            if value.is_empty() {
                return respond(
                    StatusCode::BAD_REQUEST,
                    Some(format!(
                        "missing required field: {field} at proxy {}",
                        i + 1
                    )),
                    vec![],
                );
            }
        }
        inputs.push(input);
    }
    let mut done = Vec::new();
    for input in &inputs {
        match state.registry.add_or_replace(&proxy_config(input)) {
            Ok(proxy) => done.push(proxy_json(&proxy)),
            Err(e) => {
                let status = match e {
                    RegistryError::ProxyExists => StatusCode::CONFLICT,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                return respond(status, Some(e.to_string()), done);
            }
        }
    }
    respond(StatusCode::CREATED, None, done)
}

fn reset(state: &ApiState) -> Response<Body> {
    match state.registry.reset() {
        Ok(()) => empty(StatusCode::NO_CONTENT),
        Err(e) => registry_error(e),
    }
}

fn version() -> Response<Body> {
    let mut r = super::text(
        StatusCode::OK,
        &format!("{{\"version\": \"{TOXIPROXY_VERSION}\"}}\n"),
    );
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json;charset=utf-8"),
    );
    r
}

/// Reads a toxicity and checks its range (Toxiproxy does not; a value
/// outside 0..1 is a mistake worth reporting).
fn toxicity(obj: &Map<String, Value>) -> Result<Option<f32>, String> {
    match json::number(obj, "toxicity", "ToxicWrapper")? {
        None => Ok(None),
        Some(t) => faults::check_toxicity(t).map(Some),
    }
}

fn ttl(obj: &Map<String, Value>) -> Result<Option<Duration>, String> {
    Ok(json::integer(obj, "ttl", "ToxicWrapper")?.map(Duration::from_millis))
}

fn toxic_create(call: &Call, state: &ApiState, proxy: &Proxy) -> Response<Body> {
    let obj = match json::object(&call.body, "toxics.ToxicWrapper") {
        Ok(o) => o,
        Err(e) => return bad_body(&e),
    };
    let parsed = (|| {
        Ok::<_, String>((
            json::string(&obj, "name", "ToxicWrapper")?,
            json::string(&obj, "type", "ToxicWrapper")?,
            json::string(&obj, "stream", "ToxicWrapper")?,
            toxicity(&obj)?,
            json::sub_object(&obj, "attributes", "ToxicWrapper")?.cloned(),
            ttl(&obj)?,
        ))
    })();
    let (name, kind, stream, toxicity, attributes, ttl) = match parsed {
        Ok(p) => p,
        Err(e) => return bad_body(&e),
    };
    let stream = stream.unwrap_or_else(|| "downstream".into());
    let direction: Direction = match stream.parse() {
        Ok(d) => d,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "stream was invalid, can be either upstream or downstream",
            );
        }
    };
    let kind = kind.unwrap_or_default();
    if Fault::attribute_names(&kind).is_none() {
        return error(StatusCode::BAD_REQUEST, "invalid toxic type");
    }
    let attrs = Value::Object(attributes.unwrap_or_default());
    let fault = match Fault::from_parts(&kind, attrs) {
        Ok(f) => f,
        Err(e) => return bad_body(&e),
    };
    let spec = FaultSpec {
        name: name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| faults::default_name(&kind, direction.as_str())),
        direction,
        toxicity: toxicity.unwrap_or(1.0),
        fault,
    };
    let name = spec.name.clone();
    match state.registry.add_fault_with_ttl(proxy.name(), spec, ttl) {
        Ok(()) => match toxic_json(proxy, &name) {
            Some(t) => json_response(StatusCode::OK, &t),
            None => registry_error(RegistryError::FaultNotFound),
        },
        Err(e) => registry_error(e),
    }
}

fn toxic_update(call: &Call, proxy: &Proxy, name: &str) -> Response<Body> {
    let Some(current) = proxy.fault(name) else {
        return registry_error(RegistryError::FaultNotFound);
    };
    let obj = match json::object(&call.body, "toxics.ToxicWrapper") {
        Ok(o) => o,
        Err(e) => return bad_body(&e),
    };
    let parsed = (|| {
        Ok::<_, String>((
            toxicity(&obj)?,
            json::sub_object(&obj, "attributes", "ToxicWrapper")?.cloned(),
            ttl(&obj)?,
        ))
    })();
    let (toxicity, attributes, ttl) = match parsed {
        Ok(p) => p,
        Err(e) => return bad_body(&e),
    };
    // Attributes are merged onto the current ones (a partial update).
    let mut merged = match current.fault.attributes() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in attributes.unwrap_or_default() {
        merged.insert(k, v);
    }
    let fault = match Fault::from_parts(current.fault.kind(), Value::Object(merged)) {
        Ok(f) => f,
        Err(e) => return bad_body(&e),
    };
    let updated = proxy.update_fault(name, |spec| {
        spec.fault = fault;
        if let Some(t) = toxicity {
            spec.toxicity = t;
        }
    });
    if let Err(e) = updated {
        return registry_error(e);
    }
    if let Some(ttl) = ttl
        && let Err(e) = proxy.set_fault_ttl(name, Some(ttl))
    {
        return registry_error(e);
    }
    match toxic_json(proxy, name) {
        Some(t) => json_response(StatusCode::OK, &t),
        None => registry_error(RegistryError::FaultNotFound),
    }
}
