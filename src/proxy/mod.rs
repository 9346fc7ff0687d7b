//! The data path: listeners, per-connection sessions and the byte pump.
//!
//! A [`Listener`] only accepts and spawns; each connection's [`session`]
//! dials the upstream inside its own task under a connect timeout, so a dead
//! upstream never stalls other clients. The data path knows nothing of the
//! API or the runner: it reads the live fault set from its proxy's
//! [`FaultBoard`] and reports bytes through counters.

pub mod pump;
pub mod session;
pub mod slots;
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

use crate::config::{Protocol, ProxyConfig, TlsMode};
use crate::faults::chain::FaultBoard;
use crate::faults::{Direction, KINDS};
use crate::observe::Histogram;
use crate::observe::pg::PgStats;

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
    /// How sessions read the stream.
    pub protocol: Protocol,
    /// TLS handling of a postgres proxy.
    pub tls: TlsMode,
    /// Observations of a postgres proxy (empty for others).
    pub pg: PgStats,
    /// The HTTP layer of an http proxy: client pool, settings,
    /// observations (`None` for other protocols).
    pub http: Option<Box<crate::http::HttpShared>>,
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
    /// Client to server traffic.
    pub upstream: DirStats,
    /// Server to client traffic.
    pub downstream: DirStats,
    /// Failed upstream dials (refused, unreachable or timed out).
    pub connect_errors: AtomicU64,
    /// Time to establish upstream connections.
    pub connect_time: Histogram,
    /// Connections refused by a `refuse` fault.
    pub refused: AtomicU64,
    /// Directions that moved to the zero-copy bulk path.
    pub spliced: AtomicU64,
    /// Times a fault became active on a connection direction (or refused
    /// one), per kind, indexed like [`crate::faults::KINDS`].
    pub activations: [AtomicU64; KINDS.len()],
}

/// Byte counters of one direction.
#[derive(Debug, Default)]
pub struct DirStats {
    /// Bytes read from the source.
    pub received: AtomicU64,
    /// Bytes written to the destination.
    pub sent: AtomicU64,
}

impl ProxyStats {
    /// The counters of one direction.
    pub fn dir(&self, dir: Direction) -> &DirStats {
        match dir {
            Direction::Upstream => &self.upstream,
            Direction::Downstream => &self.downstream,
        }
    }

    /// Counts a fault activation of the kind at `kind_index` in `KINDS`.
    pub fn activated(&self, kind_index: usize) {
        if let Some(c) = self.activations.get(kind_index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl ProxyShared {
    /// A proxy's shared state.
    pub fn new(cfg: &ProxyConfig, seed: u64) -> Self {
        Self {
            name: cfg.name.clone(),
            seed,
            upstream: ArcSwap::from_pointee(cfg.upstream.clone()),
            connect_timeout: cfg.connect_timeout,
            protocol: cfg.protocol,
            tls: cfg.tls,
            pg: PgStats::default(),
            http: (cfg.protocol == Protocol::Http)
                .then(|| Box::new(crate::http::HttpShared::new(cfg))),
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
/// use before it reports the proxy as started. As Go does (and so
/// Toxiproxy), an empty host or `0.0.0.0` listens on every interface, IPv6
/// and IPv4 alike, and reports itself as `[::]:port`; an empty address
/// picks a free port on every interface.
pub fn bind(listen: &str) -> io::Result<TcpListener> {
    let std_listener = match listen.rsplit_once(':') {
        Some(("" | "0.0.0.0", port)) => bind_any(port)?,
        None if listen.is_empty() => bind_any("0")?,
        _ => bind_resolved(listen)?,
    };
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}

/// The listen backlog asked for; the kernel caps it at
/// `net.core.somaxconn`, which is what Go's listeners (and so Toxiproxy's)
/// use. Clients past the connection slots wait here.
const LISTEN_BACKLOG: i32 = 4096;

fn listen_socket(addr: SocketAddr, dual_stack: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if dual_stack {
        s.set_only_v6(false)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(LISTEN_BACKLOG)?;
    Ok(s.into())
}

/// Binds the first address `listen` resolves to that can be bound.
fn bind_resolved(listen: &str) -> io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let mut last = None;
    for addr in listen.to_socket_addrs()? {
        match listen_socket(addr, false) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{listen:?} resolves to no address"),
        )
    }))
}

fn bind_any(port: &str) -> io::Result<std::net::TcpListener> {
    let port: u16 = port.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid port {port:?}"),
        )
    })?;
    match listen_socket((std::net::Ipv6Addr::UNSPECIFIED, port).into(), true) {
        Ok(l) => Ok(l),
        // No IPv6 on this host: every IPv4 interface.
        Err(e) if e.kind() != io::ErrorKind::AddrInUse => {
            listen_socket((std::net::Ipv4Addr::UNSPECIFIED, port).into(), false)
        }
        Err(e) => Err(e),
    }
}

/// A running listener of one proxy.
#[derive(Debug)]
pub struct Listener {
    /// The address actually bound (port 0 resolved).
    pub local_addr: SocketAddr,
    /// Cancelling it stops the accept loop and closes every connection.
    pub token: CancellationToken,
    /// A second handle on the listening socket, so [`Listener::close`] can
    /// stop it listening at once, not when the accept loop next runs.
    socket: socket2::Socket,
}

impl Listener {
    /// Stops listening before it returns, as Toxiproxy's disable does: a
    /// client that connects next is refused, and the same address can be
    /// bound again at once. Then stops the accept loop and closes every
    /// connection of the listener.
    pub fn close(self) {
        // shutdown(2) on a listening socket takes it out of LISTEN (the
        // accept loop's own handle then fails with EINVAL); the duplicate
        // keeps the descriptor valid until here.
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        self.token.cancel();
    }
}

/// Starts accepting on `listener` for `proxy`; connections run on `tracker`.
pub fn start(
    listener: TcpListener,
    proxy: Arc<ProxyShared>,
    tracker: &TaskTracker,
    token: CancellationToken,
) -> io::Result<Listener> {
    let local_addr = listener.local_addr()?;
    let socket = socket2::SockRef::from(&listener).try_clone()?;
    let t = tracker.clone();
    tracker.spawn(accept_loop(listener, proxy, t, token.clone()));
    Ok(Listener {
        local_addr,
        token,
        socket,
    })
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
                // A slot before the upstream socket is made: with none free,
                // this client waits here and the rest in the listen backlog.
                let slot = match slots::try_take() {
                    Some(slot) => slot,
                    None => {
                        warn!(
                            proxy = %proxy.name,
                            limit = slots::total(),
                            "connection limit reached (sized from the open-file limit); new clients wait in the listen backlog"
                        );
                        tokio::select! {
                            _ = token.cancelled() => break,
                            slot = slots::take() => slot,
                        }
                    }
                };
                let id = proxy.next_conn();
                let session = session::run(socket, peer, proxy.clone(), id, token.clone());
                tracker.spawn(async move {
                    session.await;
                    drop(slot);
                });
            }
            Err(e) if is_exhaustion(&e) => {
                warn!(proxy = %proxy.name, error = %e, "accept failed: out of resources; backing off");
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
            // The listener was shut down by `Listener::close`.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
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
