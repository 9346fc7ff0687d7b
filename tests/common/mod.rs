//! Helpers shared by the integration tests: in-process proxies on port 0,
//! small real TCP peers, and fault builders.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shakedown::config::ProxyConfig;
use shakedown::faults::{Direction, Fault, FaultSpec};
use shakedown::registry::{Proxy, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A registry with its own shutdown token; dropped registries stop.
pub struct Harness {
    pub registry: Arc<Registry>,
    pub token: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.registry.shutdown();
        self.token.cancel();
    }
}

impl Harness {
    pub fn new(seed: u64) -> Self {
        let token = CancellationToken::new();
        Self {
            registry: Registry::new(seed, token.clone()),
            token,
        }
    }

    /// A proxy on 127.0.0.1:0 to `upstream`, with `faults`.
    pub fn proxy(
        &self,
        name: &str,
        upstream: &str,
        faults: Vec<FaultSpec>,
    ) -> (Arc<Proxy>, SocketAddr) {
        let mut cfg = ProxyConfig::new(name, "127.0.0.1:0", upstream);
        cfg.faults = faults;
        let p = self.registry.add_proxy(&cfg).expect("proxy starts");
        let addr = p.local_addr().expect("bound");
        (p, addr)
    }

    /// A `protocol = "postgres"` proxy on 127.0.0.1:0 to `upstream`.
    pub fn pg_proxy(
        &self,
        name: &str,
        upstream: &str,
        faults: Vec<FaultSpec>,
    ) -> (Arc<Proxy>, SocketAddr) {
        let mut cfg = ProxyConfig::new(name, "127.0.0.1:0", upstream);
        cfg.protocol = shakedown::config::Protocol::Postgres;
        cfg.faults = faults;
        let p = self.registry.add_proxy(&cfg).expect("proxy starts");
        let addr = p.local_addr().expect("bound");
        (p, addr)
    }
}

/// A fault from its kind, direction and Toxiproxy-style JSON attributes.
pub fn fault(kind: &str, dir: Direction, attrs: serde_json::Value) -> FaultSpec {
    FaultSpec::new(Fault::from_parts(kind, attrs).expect("valid fault"), dir)
}

/// Random bytes from a seed.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

/// Writes `data` in random-sized chunks (1..=max), then half-closes.
pub async fn write_chunked<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    seed: u64,
    max: usize,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut off = 0;
    while off < data.len() {
        let n = rng.random_range(1..=max).min(data.len() - off);
        w.write_all(&data[off..off + n]).await.expect("write");
        off += n;
        if rng.random_range(0..8) == 0 {
            tokio::task::yield_now().await;
        }
    }
    w.shutdown().await.expect("half-close");
}

/// An echo server: every connection gets back what it sends; EOF is echoed
/// as a half-close.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A server that sends `data` on every connection, then closes.
pub async fn sender_server(data: Arc<Vec<u8>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let data = data.clone();
            tokio::spawn(async move {
                let _ = s.write_all(&data).await;
                let _ = s.shutdown().await;
                // Drain until the client closes, so no RST is sent.
                let mut sink = [0u8; 1024];
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Connects, retrying briefly (never needed on loopback once bound, but
/// keeps a slow CI machine from flaking).
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Reads to EOF with a deadline; returns what arrived and how it ended.
pub async fn read_all(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Result<(), std::io::Error>) {
    let mut out = Vec::new();
    let r = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    match r {
        Ok(Ok(_)) => (out, Ok(())),
        Ok(Err(e)) => (out, Err(e)),
        Err(_) => (
            out,
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "deadline",
            )),
        ),
    }
}

pub mod http;

/// A registry with the control API on 127.0.0.1:0.
pub struct ApiHarness {
    pub h: Harness,
    pub addr: SocketAddr,
    pub state: Arc<shakedown::api::ApiState>,
}

impl ApiHarness {
    pub async fn start(token: Option<&str>) -> Self {
        let h = Harness::new(7);
        let state = shakedown::api::ApiState::new(
            h.registry.clone(),
            token.map(|t| shakedown::api::Secret::new(t.to_string())),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(shakedown::api::serve(
            listener,
            state.clone(),
            h.token.clone(),
        ));
        Self { h, addr, state }
    }
}

pub mod http_upstream;

impl Harness {
    /// A `protocol = "http"` proxy on 127.0.0.1:0 to `upstream`; `tune`
    /// sets the HTTP keys (routes, request_timeout, header_faults).
    pub fn http_proxy(
        &self,
        name: &str,
        upstream: &str,
        faults: Vec<FaultSpec>,
        tune: impl FnOnce(&mut ProxyConfig),
    ) -> (Arc<Proxy>, SocketAddr) {
        let mut cfg = ProxyConfig::new(name, "127.0.0.1:0", upstream);
        cfg.protocol = shakedown::config::Protocol::Http;
        cfg.faults = faults;
        tune(&mut cfg);
        let p = self.registry.add_proxy(&cfg).expect("proxy starts");
        let addr = p.local_addr().expect("bound");
        (p, addr)
    }
}
