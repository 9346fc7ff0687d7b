//! The HTTP-aware layer: `protocol = "http"` proxies.
//!
//! A reverse proxy on hyper: each client connection is served by hyper's
//! server (HTTP/1.1 with keep-alive, or h2c with prior knowledge, detected
//! per connection), and every request is forwarded through one pooled
//! client per proxy, so keep-alive connections to the upstream are reused
//! across client connections. Bodies stream both ways as hyper hands them
//! over; nothing is collected.
//!
//! Request faults (`http_abort`, `http_latency`, `http_throttle`,
//! `http_reset`) are decided per request from the proxy's live fault board,
//! so a fault added through the API applies to the next request of every
//! live connection. Byte faults do not apply beneath (hyper owns the
//! client socket, and re-framing bytes under it would break the very
//! requests the faults are meant to pick); connection faults (`refuse`)
//! do. Envoy's fault headers are honoured when the proxy enables them.
//!
//! - [`session`]: serving one client connection, the per-request handler;
//! - [`headers`]: hop-by-hop removal and the forwarding headers;
//! - [`body`]: the response body (throttling, reset, completion);
//! - [`io`]: the client socket, with the reset switch `http_reset` uses.

pub mod body;
pub mod headers;
pub mod io;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::http::uri::Authority;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;

use crate::config::{ProxyConfig, RouteConfig};
use crate::faults::KINDS;
use crate::observe::http::HttpStats;

/// Idle upstream connections kept per proxy: more than a service's usual
/// concurrency, so a keep-alive load never redials, yet bounded.
const MAX_IDLE_UPSTREAM: usize = 256;

/// How long an idle pooled upstream connection is kept (below the 60-75 s
/// keep-alive timeouts of common servers, so the proxy closes first).
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Concurrent streams an h2c client may open on one connection.
const MAX_STREAMS: u32 = 256;

/// Largest request head and read buffer an HTTP/1 client may send:
/// hyper's default (~400 KB) is kept but written down, since it bounds
/// memory per connection.
const MAX_BUF: usize = 400 * 1024;

/// Time a client has to send a request's head; also closes keep-alive
/// connections idle that long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection of an HTTP proxy shares.
pub struct HttpShared {
    /// Observations, per route.
    pub stats: HttpStats,
    /// The configured routes (observations only).
    pub routes: Vec<RouteConfig>,
    /// Time the upstream has to send response headers (then 504).
    pub request_timeout: Duration,
    /// Whether Envoy's `x-envoy-fault-*` request headers are honoured.
    pub header_faults: bool,
    /// Whether the upstream is spoken to in h2c.
    pub upstream_http2: bool,
    client: Client<HttpConnector, Incoming>,
    server: auto::Builder<TokioExecutor>,
    target: ArcSwap<Target>,
    kinds: KindIndex,
}

impl std::fmt::Debug for HttpShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpShared")
            .field("routes", &self.routes)
            .field("request_timeout", &self.request_timeout)
            .field("header_faults", &self.header_faults)
            .field("upstream_http2", &self.upstream_http2)
            .finish_non_exhaustive()
    }
}

/// The upstream address as parsed for URIs, with the text it came from.
struct Target {
    text: Arc<String>,
    authority: Result<Authority, String>,
}

impl Target {
    fn new(text: Arc<String>) -> Self {
        let authority = text
            .parse::<Authority>()
            .map_err(|e| format!("upstream `{text}` is not host:port: {e}"));
        Self { text, authority }
    }
}

/// Positions of the HTTP kinds in [`KINDS`], for activation counters.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KindIndex {
    pub(crate) abort: usize,
    pub(crate) latency: usize,
    pub(crate) throttle: usize,
}

fn kind_index(name: &str) -> usize {
    KINDS.iter().position(|(k, _)| *k == name).unwrap_or(0)
}

impl HttpShared {
    /// The shared state of an HTTP proxy: its client pool, server settings
    /// and observation store.
    pub fn new(cfg: &ProxyConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(UPSTREAM_IDLE_TIMEOUT)
            .pool_max_idle_per_host(MAX_IDLE_UPSTREAM)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(cfg.upstream_http2)
            .build(connector);
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .max_buf_size(MAX_BUF)
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_STREAMS);
        let names: Vec<&str> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
        Self {
            stats: HttpStats::new(&names),
            routes: cfg.routes.clone(),
            request_timeout: cfg.request_timeout,
            header_faults: cfg.header_faults,
            upstream_http2: cfg.upstream_http2,
            client,
            server,
            target: ArcSwap::from_pointee(Target::new(Arc::new(cfg.upstream.clone()))),
            kinds: KindIndex {
                abort: kind_index("http_abort"),
                latency: kind_index("http_latency"),
                throttle: kind_index("http_throttle"),
            },
        }
    }

    /// The route index of a path: the first configured route that matches,
    /// else `other`.
    pub fn route_of(&self, path: &str) -> usize {
        self.routes
            .iter()
            .position(|r| r.path.matches(path))
            .unwrap_or(self.routes.len())
    }

    /// The upstream's authority for `current` (the proxy's live upstream
    /// address), parsed once per change of address.
    fn authority(&self, current: &Arc<String>) -> Result<Authority, String> {
        let t = self.target.load();
        if Arc::ptr_eq(&t.text, current) {
            return t.authority.clone();
        }
        let fresh = Target::new(current.clone());
        let out = fresh.authority.clone();
        self.target.store(Arc::new(fresh));
        out
    }
}

/// Parses a URL shakedown itself calls (an http load or probe, the control
/// API, a Pushgateway): `http://` with a host. This build has no TLS client,
/// so `https://` is refused by name. The error says why, without the URL
/// (callers name it with their own context).
pub fn client_uri(url: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("https is not supported; use http://".into()),
        _ => return Err("expected an http:// URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::client_uri;

    #[test]
    fn client_urls_are_plain_http_with_a_host() {
        assert_eq!(
            client_uri("http://127.0.0.1:8474/x?y=1").unwrap().path(),
            "/x"
        );
        let https = client_uri("https://example.com").unwrap_err();
        assert!(https.contains("https is not supported"), "{https}");
        assert!(client_uri("127.0.0.1:80").unwrap_err().contains("http://"));
        assert!(client_uri("/metrics").unwrap_err().contains("http://"));
        assert!(
            client_uri("http://a b")
                .unwrap_err()
                .contains("not a valid URL")
        );
    }
}
