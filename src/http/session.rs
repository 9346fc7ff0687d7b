//! One client connection of an HTTP proxy, and the handling of each of its
//! requests.
//!
//! hyper serves the connection (HTTP/1.1 keep-alive or h2c, detected from
//! the first bytes); a request malformed at the HTTP level gets hyper's
//! 400 and ends only its own connection. Each request then goes through:
//!
//! 1. the route it is counted under (the first configured route whose path
//!    matches, else `other`);
//! 2. Envoy's fault headers, when the proxy enables them (removed before
//!    forwarding either way they are read);
//! 3. the proxy's HTTP faults, in the order they were added: each given
//!    matching field must match, then the request's toxicity draw, then
//!    `after` and `count` decide;
//! 4. `http_latency` on the request, then `http_abort` answers — or the
//!    request is forwarded, its upstream answer waits for `http_latency` on
//!    the response, and its body streams back through `http_throttle` and
//!    `http_reset`.
//!
//! An upstream that cannot be reached gets the client a 502 naming the
//! error; one that sends no response headers within `request_timeout` a
//! 504. Both are counted as class `error`, fault answers as `injected`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{self, PathAndQuery, Scheme};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use rand::SeedableRng;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::HttpShared;
use super::body::{ProxyBody, ResetMode};
use super::headers;
use super::io::ConnIo;
use crate::faults::chain::{ActiveFault, FaultSet};
use crate::faults::http::{LatencyOn, request_draw};
use crate::faults::random::{self, FaultRng};
use crate::faults::{Fault, Latency};
use crate::observe::http::Answer;
use crate::proxy::ProxyShared;

/// How long a stopping proxy lets in-flight requests finish before it
/// closes their connections: enough for a normal answer, short enough
/// that a hung upstream cannot hold a disabled proxy open.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The longest delay an Envoy delay header may ask for (an hour): a typo
/// must not park a request for days.
const MAX_HEADER_DELAY_MS: u64 = 3_600_000;

/// Envoy's fault headers (`x-envoy-fault-*`), removed before forwarding
/// when header faults are enabled.
static ENVOY_ABORT: HeaderName = HeaderName::from_static("x-envoy-fault-abort-request");
static ENVOY_DELAY: HeaderName = HeaderName::from_static("x-envoy-fault-delay-request");
static ENVOY_THROUGHPUT: HeaderName = HeaderName::from_static("x-envoy-fault-throughput-response");
static ENVOY_HEADERS: [HeaderName; 7] = [
    HeaderName::from_static("x-envoy-fault-abort-request"),
    HeaderName::from_static("x-envoy-fault-abort-grpc-request"),
    HeaderName::from_static("x-envoy-fault-abort-request-percentage"),
    HeaderName::from_static("x-envoy-fault-delay-request"),
    HeaderName::from_static("x-envoy-fault-delay-request-percentage"),
    HeaderName::from_static("x-envoy-fault-throughput-response"),
    HeaderName::from_static("x-envoy-fault-throughput-response-percentage"),
];

/// What one connection's requests share.
struct Conn {
    proxy: Arc<ProxyShared>,
    conn: u64,
    requests: AtomicU64,
    client_ip: HeaderValue,
    reset: Arc<AtomicBool>,
    token: CancellationToken,
}

/// Serves one accepted client of an HTTP proxy until the connection ends
/// or the proxy stops (`token`; in-flight requests get [`SHUTDOWN_GRACE`]).
pub async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    proxy: Arc<ProxyShared>,
    conn: u64,
    token: CancellationToken,
) {
    let Some(http) = proxy.http.as_deref() else {
        return;
    };
    let reset = Arc::new(AtomicBool::new(false));
    let client_ip = HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let ctx = Arc::new(Conn {
        proxy: proxy.clone(),
        conn,
        requests: AtomicU64::new(0),
        client_ip,
        reset: reset.clone(),
        token: token.clone(),
    });
    let io = TokioIo::new(ConnIo::new(client, reset));
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
    });
    let connection = http.server.serve_connection(io, svc);
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        _ = token.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await {
                Ok(r) => r,
                Err(_) => {
                    debug!("closed after the shutdown grace");
                    return;
                }
            }
        }
    };
    match result {
        Ok(()) => debug!("closed"),
        Err(e) => debug!(error = %e, "connection ended"),
    }
}

/// Where an injected answer comes from.
enum AbortFrom {
    Fault(Arc<ActiveFault>),
    Envoy(u16),
}

/// What the faults decided for one request.
#[derive(Default)]
struct Plan {
    abort: Option<AbortFrom>,
    request_delay: Duration,
    response_delay: Duration,
    /// Bytes per second; 0: not throttled.
    throttle: u64,
    reset: Option<u64>,
}

async fn handle(c: Arc<Conn>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let Some(http) = c.proxy.http.as_deref() else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "not an http proxy");
    };
    let stats = &http.stats;
    stats.started();
    // Dropped unanswered (the client left mid-wait): no longer active.
    let mut pending = Unanswered(Some(stats));
    let n = c.requests.fetch_add(1, Ordering::Relaxed);
    let route = http.route_of(req.uri().path());
    let mut observed = |resp: Response<ProxyBody>, answer: Answer| {
        pending.0 = None;
        stats.answered(route, answer, started.elapsed());
        resp.map(|b| b.observed(c.proxy.clone(), route, started))
    };

    let mut plan = Plan::default();
    if http.header_faults {
        envoy(req.headers_mut(), &mut plan, &c, http);
    }
    let set = c.proxy.board.snapshot();
    if !set.is_empty() {
        decide(&c, &set, &req, n, &mut plan);
    }

    if !plan.request_delay.is_zero() && !wait(plan.request_delay, &c.token).await {
        return observed(stopping(), Answer::ProxyError(503));
    }
    if let Some(abort) = plan.abort {
        let resp = match abort {
            AbortFrom::Fault(f) => match &f.spec.fault {
                Fault::HttpAbort(a) => answer(a.status, &a.headers.0, &a.body),
                _ => plain(StatusCode::INTERNAL_SERVER_ERROR, "bad abort"),
            },
            AbortFrom::Envoy(status) => answer(status, &[], "fault filter abort"),
        };
        let status = resp.status().as_u16();
        return observed(resp, Answer::Injected(status));
    }

    // Forward.
    let target = c.proxy.upstream.load();
    let authority = match http.authority(&target) {
        Ok(a) => a,
        Err(e) => return observed(plain(StatusCode::BAD_GATEWAY, &e), Answer::ProxyError(502)),
    };
    let client_version = req.version();
    let (mut parts, body) = req.into_parts();
    let mut up = uri::Parts::default();
    up.scheme = Some(Scheme::HTTP);
    up.authority = Some(authority);
    up.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    let upstream_uri = match Uri::from_parts(up) {
        Ok(u) => u,
        Err(e) => {
            return observed(
                plain(StatusCode::BAD_REQUEST, &format!("bad request target: {e}")),
                Answer::ProxyError(400),
            );
        }
    };
    headers::to_upstream(
        &mut parts.headers,
        client_version,
        &parts.uri,
        &c.client_ip,
        http.upstream_http2,
    );
    parts.uri = upstream_uri;
    parts.version = if http.upstream_http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let sent = tokio::time::timeout(
        http.request_timeout,
        http.client.request(Request::from_parts(parts, body)),
    );
    let result = tokio::select! {
        r = sent => r,
        _ = c.token.cancelled() => return observed(stopping(), Answer::ProxyError(503)),
    };
    let resp = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let why = error_chain(&e);
            debug!(upstream = %target, error = %why, "upstream request failed");
            let text = format!("shakedown: upstream {target} failed: {why}");
            return observed(
                plain(StatusCode::BAD_GATEWAY, &text),
                Answer::ProxyError(502),
            );
        }
        Err(_) => {
            debug!(upstream = %target, timeout = ?http.request_timeout, "upstream timed out");
            let text = format!(
                "shakedown: upstream {target} sent no response within {}",
                humantime::format_duration(http.request_timeout)
            );
            return observed(
                plain(StatusCode::GATEWAY_TIMEOUT, &text),
                Answer::ProxyError(504),
            );
        }
    };
    let (mut parts, body) = resp.into_parts();
    headers::to_client(&mut parts.headers, parts.version);
    if !plan.response_delay.is_zero() && !wait(plan.response_delay, &c.token).await {
        return observed(stopping(), Answer::ProxyError(503));
    }
    let mut body = ProxyBody::upstream(body).throttle(plan.throttle);
    if let Some(after) = plan.reset {
        let mode = if client_version == Version::HTTP_2 {
            ResetMode::Stream
        } else {
            ResetMode::Connection(c.reset.clone())
        };
        body = body.reset_after(after, mode);
    }
    let status = parts.status.as_u16();
    observed(Response::from_parts(parts, body), Answer::Upstream(status))
}

/// Marks a request abandoned unless it was answered.
struct Unanswered<'a>(Option<&'a crate::observe::http::HttpStats>);

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(stats) = self.0 {
            stats.abandoned();
        }
    }
}

/// Applies the proxy's HTTP faults to one request, in the order added.
fn decide(c: &Conn, set: &FaultSet, req: &Request<Incoming>, n: u64, plan: &mut Plan) {
    let mut rng: Option<FaultRng> = None;
    let path = req.uri().path();
    for f in set.iter() {
        let Some(m) = f.spec.fault.http_match() else {
            continue;
        };
        let wanted = match &f.spec.fault {
            Fault::HttpAbort(_) => plan.abort.is_none(),
            Fault::HttpThrottle(t) => plan.throttle == 0 && t.rate > 0,
            Fault::HttpReset(_) => plan.reset.is_none(),
            _ => true,
        };
        if !wanted
            || !m.matches(req.method(), path, req.headers())
            || request_draw(c.proxy.seed, c.conn, n, &f.spec.name) >= f.spec.toxicity
            || !f.hits.take_within(m.after, m.count)
        {
            continue;
        }
        c.proxy.stats.activated(f.spec.fault.kind_index());
        match &f.spec.fault {
            Fault::HttpAbort(_) => plan.abort = Some(AbortFrom::Fault(f.clone())),
            Fault::HttpLatency(l) => {
                let rng = rng.get_or_insert_with(|| {
                    FaultRng::seed_from_u64(random::derive(c.proxy.seed, &[c.conn, 6, n]))
                });
                let d = Latency {
                    latency: l.latency,
                    jitter: l.jitter,
                }
                .sample(rng);
                match l.on {
                    LatencyOn::Request => plan.request_delay += d,
                    LatencyOn::Response => plan.response_delay += d,
                }
            }
            Fault::HttpThrottle(t) => plan.throttle = (t.rate as u64).saturating_mul(1000),
            Fault::HttpReset(r) => plan.reset = Some(r.after_bytes),
            _ => {}
        }
    }
}

/// Reads Envoy's fault headers (Envoy's names and units: status, delay
/// in ms, throughput in KiB/s), then removes every `x-envoy-fault-*`
/// header so the upstream never sees them.
fn envoy(headers: &mut HeaderMap, plan: &mut Plan, c: &Conn, http: &HttpShared) {
    let number = |name: &HeaderName| -> Option<u64> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    if let Some(status) = number(&ENVOY_ABORT).filter(|s| (200..=599).contains(s)) {
        plan.abort = Some(AbortFrom::Envoy(status as u16));
        c.proxy.stats.activated(http.kinds.abort);
    }
    if let Some(ms) = number(&ENVOY_DELAY).filter(|ms| *ms > 0) {
        plan.request_delay += Duration::from_millis(ms.min(MAX_HEADER_DELAY_MS));
        c.proxy.stats.activated(http.kinds.latency);
    }
    if let Some(kib) = number(&ENVOY_THROUGHPUT).filter(|k| *k > 0) {
        plan.throttle = kib.saturating_mul(1024);
        c.proxy.stats.activated(http.kinds.throttle);
    }
    for name in &ENVOY_HEADERS {
        headers.remove(name);
    }
}

/// Sleeps, unless the proxy stops first (false).
async fn wait(d: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = token.cancelled() => false,
    }
}

/// An answer made by a fault.
fn answer(status: u16, extra: &[(HeaderName, HeaderValue)], body: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::copy_from_slice(body.as_bytes())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let h = resp.headers_mut();
    for (k, v) in extra {
        h.append(k, v.clone());
    }
    if !body.is_empty() && !h.contains_key(CONTENT_TYPE) {
        let json = body.trim_start().starts_with(['{', '[']);
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            }),
        );
    }
    resp
}

/// A short text answer of shakedown's own.
fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut body = String::with_capacity(text.len() + 1);
    body.push_str(text);
    body.push('\n');
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn stopping() -> Response<ProxyBody> {
    plain(StatusCode::SERVICE_UNAVAILABLE, "shakedown: proxy stopping")
}

/// An error and its causes, `outer: inner: innermost`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cur = s.source();
    }
    text
}
