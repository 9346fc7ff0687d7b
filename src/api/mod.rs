//! The control API: Toxiproxy 2.12's HTTP API, exactly, plus shakedown's
//! own routes under `/shakedown/v1/`, `/healthz` and `/metrics`.
//!
//! Every request gets an `X-Toxiproxy-Request-Id`; browsers are refused
//! (a page must not be able to inject faults through a developer's
//! loopback); mutating requests need the bearer token when one is set;
//! bodies are capped; a handler that overruns its time answers 503 instead
//! of hanging. Handlers only touch the registry, whose changes never wait
//! on the data path, so removing a fault under load answers at once (unlike
//! Toxiproxy's #558).

pub mod json;
pub mod metrics;
pub mod native;
pub mod toxiproxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::registry::Registry;

/// Largest request body accepted: a `/populate` of thousands of proxies
/// fits; anything bigger is a mistake or an attack.
const MAX_BODY: usize = 1024 * 1024;
/// A handler that runs longer answers 503 with an empty body, as
/// Toxiproxy's `http.TimeoutHandler(25s)` does.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(25);
/// Time allowed to send request headers (Toxiproxy: read timeout 15 s).
const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// The Toxiproxy version reported by `/version`: clients compare it to pick
/// their modern code paths (PATCH, and so on).
pub const TOXIPROXY_VERSION: &str = "2.12.0";

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// Constant-time comparison with what a client sent.
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MASKED")
    }
}

/// What every handler can reach.
#[derive(Debug)]
pub struct ApiState {
    /// The live proxies.
    pub registry: Arc<Registry>,
    /// When set, mutating requests need `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// Leases held by remote controllers (see [`native`]).
    pub leases: native::Leases,
    /// Prometheus text appended to `/metrics`: the experiment runner's
    /// live figures (phase, SLO values, verdict) while `shakedown run`
    /// serves the API. Empty under `serve`.
    pub extra_metrics: std::sync::RwLock<String>,
}

impl ApiState {
    /// State for a server over `registry`.
    pub fn new(registry: Arc<Registry>, token: Option<Secret>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            token,
            leases: native::Leases::default(),
            extra_metrics: std::sync::RwLock::new(String::new()),
        })
    }
}

/// A response body.
pub type Body = Full<Bytes>;

/// Serves the API on `listener` until `shutdown`, then lets requests in
/// flight finish (bounded).
pub async fn serve(listener: TcpListener, state: Arc<ApiState>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    if let Ok(addr) = listener.local_addr() {
        info!(address = %addr, "control API listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(req, &state, peer).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                debug!(error = %e, "API connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        warn!("API connections still open after 5 s; closing");
    }
}

async fn handle(req: Request<Incoming>, state: &ApiState, peer: SocketAddr) -> Response<Body> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut resp = match tokio::time::timeout(HANDLER_TIMEOUT, route(req, state)).await {
        Ok(r) => r,
        Err(_) => {
            warn!(%method, %uri, "API request timed out");
            empty(StatusCode::SERVICE_UNAVAILABLE)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        resp.headers_mut().insert("X-Toxiproxy-Request-Id", v);
    }
    debug!(client = %peer, %method, url = %uri, status = resp.status().as_u16(), "API request");
    resp
}

/// A request as the handlers see it: method, decoded path segments, body.
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// Path segments, percent-decoded.
    pub segments: Vec<String>,
    /// The whole body (capped).
    pub body: Bytes,
}

async fn route(req: Request<Incoming>, state: &ApiState) -> Response<Body> {
    let ua = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ua.starts_with("Mozilla/") {
        return text(StatusCode::FORBIDDEN, "User agent not allowed\n");
    }
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if mutating && let Some(token) = &state.token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !token.matches(given) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert("WWW-Authenticate", HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let method = req.method().clone();
    let segments: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body is larger than {MAX_BODY} bytes"),
                );
            }
            return error(StatusCode::BAD_REQUEST, &format!("bad request body: {e}"));
        }
    };
    let call = Call {
        method,
        segments,
        body,
    };
    let segs: Vec<&str> = call.segments.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["metrics"] => metrics::handle(state),
        ["healthz"] => only(&call, &[Method::GET, Method::HEAD], || {
            native::healthz(state)
        }),
        ["shakedown", "v1", rest @ ..] => native::route(&call, rest, state).await,
        _ => toxiproxy::route(&call, &segs, state),
    }
}

/// Runs `f` if the method is one of `allowed`, else 405.
pub fn only(call: &Call, allowed: &[Method], f: impl FnOnce() -> Response<Body>) -> Response<Body> {
    if allowed.contains(&call.method) {
        f()
    } else {
        empty(StatusCode::METHOD_NOT_ALLOWED)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// A JSON response.
pub fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// An error as Toxiproxy writes it: `http.Error` with a JSON body, so the
/// content type is text/plain and the body ends with a newline.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": message, "status": status.as_u16()});
    let mut r = text(status, &format!("{body}\n"));
    r.headers_mut().insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A response with no body.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// A request id in the format Toxiproxy's xid produces: 20 characters of
/// base32hex over time, machine, process and a counter.
fn request_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() as u16;
    let machine = crate::faults::random::hash_name(&hostname()) as u32;
    let mut raw = [0u8; 12];
    raw[..4].copy_from_slice(&secs.to_be_bytes());
    raw[4..7].copy_from_slice(&machine.to_be_bytes()[1..]);
    raw[7..9].copy_from_slice(&pid.to_be_bytes());
    raw[9..].copy_from_slice(&n.to_be_bytes()[1..]);
    base32hex(&raw)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn base32hex(raw: &[u8; 12]) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut bits: u128 = 0;
    for b in raw {
        bits = (bits << 8) | u128::from(*b);
    }
    // 96 bits -> 20 symbols of 5 bits (the last padded with zeros).
    bits <<= 4;
    (0..20)
        .rev()
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_xids() {
        let a = request_id();
        let b = request_id();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='v').contains(&c))
        );
    }

    #[test]
    fn secrets_compare_and_hide() {
        let s = Secret::new("abc".into());
        assert!(s.matches("abc"));
        assert!(!s.matches("abd"));
        assert!(!s.matches("ab"));
        assert_eq!(format!("{s:?}"), "MASKED");
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
