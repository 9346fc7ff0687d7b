//! The data path: listeners, per-connection sessions and the byte pump.
//!
//! A [`Listener`] only accepts and spawns; each connection's [`session`]
//! dials the upstream inside its own task under a connect timeout, so a dead
//! upstream never stalls other clients. The data path knows nothing of the
//! API or the runner: it reads the live fault set from its proxy's
//! [`FaultBoard`] and reports bytes through counters.

pub mod pump;
pub mod session;
pub mod splice;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::faults::Direction;
use crate::faults::chain::FaultBoard;

/// Default time allowed to connect to the upstream before the client is
/// dropped: long enough for a loaded server, short enough that a black-holed
/// upstream is noticed.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the accept loop pauses when the process is out of file
/// descriptors (EMFILE/ENFILE) or memory: enough for connections to close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The part of a proxy that every connection shares.
#[derive(Debug)]
pub struct ProxyShared {
    /// The proxy's name.
    pub name: String,
    /// Seed of every random decision on this proxy.
    pub seed: u64,
    /// Where connections go (may change while running).
    pub upstream: ArcSwap<String>,
    /// Time allowed to dial the upstream.
    pub connect_timeout: Duration,
    /// The live faults.
    pub board: FaultBoard,
    /// Live counters.
    pub stats: ProxyStats,
    conn_seq: AtomicU64,
}

/// Counters kept by the data path, readable at any time.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections_total: AtomicU64,
    /// Connections open now.
    pub connections_active: AtomicU64,
    /// Bytes forwarded client to server.
    pub bytes_upstream: AtomicU64,
    /// Bytes forwarded server to client.
    pub bytes_downstream: AtomicU64,
    /// Failed upstream dials (refused, unreachable or timed out).
    pub connect_errors: AtomicU64,
    /// Connections refused by a `refuse` fault.
    pub refused: AtomicU64,
    /// Directions that moved to the zero-copy bulk path.
    pub spliced: AtomicU64,
}

impl ProxyStats {
    /// The byte counter of one direction.
    pub fn bytes(&self, dir: Direction) -> &AtomicU64 {
        match dir {
            Direction::Upstream => &self.bytes_upstream,
            Direction::Downstream => &self.bytes_downstream,
        }
    }
}

impl ProxyShared {
    /// A proxy's shared state.
    pub fn new(name: &str, seed: u64, upstream: &str, connect_timeout: Duration) -> Self {
        Self {
            name: name.to_string(),
            seed,
            upstream: ArcSwap::from_pointee(upstream.to_string()),
            connect_timeout,
            board: FaultBoard::default(),
            stats: ProxyStats::default(),
            conn_seq: AtomicU64::new(0),
        }
    }

    fn next_conn(&self) -> u64 {
        self.conn_seq.fetch_add(1, Ordering::Relaxed)
    }
}

/// Binds a listen address such as `127.0.0.1:6432` or `localhost:0`.
///
/// Binding is synchronous (std) so that the caller learns of an address in
/// use before it reports the proxy as started.
pub fn bind(listen: &str) -> io::Result<TcpListener> {
    let std_listener = std::net::TcpListener::bind(listen)?;
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}

/// A running listener of one proxy.
pub struct Listener {
    /// The address actually bound (port 0 resolved).
    pub local_addr: SocketAddr,
    /// Cancelling it stops the accept loop and closes every connection.
    pub token: CancellationToken,
}

/// Starts accepting on `listener` for `proxy`; connections run on `tracker`.
pub fn start(
    listener: TcpListener,
    proxy: Arc<ProxyShared>,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> io::Result<Listener> {
    let local_addr = listener.local_addr()?;
    let t = tracker.clone();
    tracker.spawn(accept_loop(listener, proxy, t, token.clone()));
    Ok(Listener { local_addr, token })
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<ProxyShared>,
    tracker: TaskTracker,
    token: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = token.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((socket, peer)) => {
                let id = proxy.next_conn();
                tracker.spawn(session::run(socket, peer, proxy.clone(), id, token.clone()));
            }
            Err(e) if is_exhaustion(&e) => {
                warn!(proxy = %proxy.name, error = %e, "accept failed: out of resources; backing off");
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
            Err(e) => {
                // ECONNABORTED and friends: the client gave up before accept.
                debug!(proxy = %proxy.name, error = %e, "accept failed");
            }
        }
    }
    debug!(proxy = %proxy.name, "listener stopped");
}

fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}
