//! One client connection: refuse check, then by protocol: a postgres or
//! http session, or the upstream dial and two pumps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

use super::ProxyShared;
use super::pump::{self, Outcome, PumpCtx, Side};
use crate::config::Protocol;
use crate::faults::Direction;
use crate::faults::chain::ChainKey;

/// Serves one accepted client until both directions end, a fault ends the
/// connection, or the proxy stops (`token`).
pub async fn run(
    client: TcpStream,
    peer: SocketAddr,
    proxy: Arc<ProxyShared>,
    conn: u64,
    token: CancellationToken,
) {
    let span = debug_span!("conn", proxy = %proxy.name, id = conn, client = %peer);
    let stats = &proxy.stats;
    stats.connections_total.fetch_add(1, Ordering::Relaxed);
    stats.connections_active.fetch_add(1, Ordering::Relaxed);
    serve(client, peer, &proxy, conn, token)
        .instrument(span)
        .await;
    proxy
        .stats
        .connections_active
        .fetch_sub(1, Ordering::Relaxed);
}

async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    proxy: &Arc<ProxyShared>,
    conn: u64,
    token: CancellationToken,
) {
    if let Some(kind) = proxy.board.snapshot().refuses(proxy.seed, conn) {
        proxy.stats.refused.fetch_add(1, Ordering::Relaxed);
        proxy.stats.activated(kind);
        debug!("refused by fault");
        reset(&client);
        return;
    }
    let _ = client.set_nodelay(true);
    if proxy.protocol == Protocol::Http {
        crate::http::session::serve(client, peer, proxy.clone(), conn, token).await;
        return;
    }
    if proxy.protocol == Protocol::Postgres {
        crate::postgres::session::serve(client, proxy, conn, token).await;
        return;
    }
    let Some(upstream) = dial(proxy, &token).await else {
        return;
    };
    relay(client, upstream, proxy, conn, token).await;
}

/// Dials the proxy's upstream under its connect timeout, counting failures.
/// `None` when it fails or the proxy stops first.
pub(crate) async fn dial(proxy: &ProxyShared, token: &CancellationToken) -> Option<TcpStream> {
    let target = proxy.upstream.load_full();
    let started = tokio::time::Instant::now();
    let dial = tokio::time::timeout(proxy.connect_timeout, TcpStream::connect(target.as_str()));
    let upstream = tokio::select! {
        _ = token.cancelled() => return None,
        r = dial => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                proxy.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                warn!(upstream = %target, error = %e, "unable to open connection to upstream");
                return None;
            }
            Err(_) => {
                proxy.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                warn!(upstream = %target, timeout = ?proxy.connect_timeout, "upstream connect timed out");
                return None;
            }
        }
    };
    proxy.stats.connect_time.observe(started.elapsed());
    let _ = upstream.set_nodelay(true);
    debug!(upstream = %target, "connected");
    Some(upstream)
}

/// Pumps bytes both ways between a client and its upstream, through the
/// proxy's byte faults, until both directions end or a fault ends them.
pub(crate) async fn relay(
    mut client: TcpStream,
    mut upstream: TcpStream,
    proxy: &ProxyShared,
    conn: u64,
    token: CancellationToken,
) {
    let outcome = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        let key = |dir| ChainKey {
            proxy_seed: proxy.seed,
            conn,
            dir,
        };
        let up = pump::pump(
            &mut cr,
            &mut uw,
            PumpCtx {
                board: &proxy.board,
                key: key(Direction::Upstream),
                stats: &proxy.stats,
            },
        );
        let down = pump::pump(
            &mut ur,
            &mut cw,
            PumpCtx {
                board: &proxy.board,
                key: key(Direction::Downstream),
                stats: &proxy.stats,
            },
        );
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let (dir, outcome) = tokio::select! {
                _ = token.cancelled() => break None,
                o = &mut up, if !up_done => (Direction::Upstream, o),
                o = &mut down, if !down_done => (Direction::Downstream, o),
            };
            match outcome {
                Outcome::Finished => {
                    match dir {
                        Direction::Upstream => up_done = true,
                        Direction::Downstream => down_done = true,
                    }
                    if up_done && down_done {
                        break None;
                    }
                }
                other => break Some((dir, other)),
            }
        }
    };
    match outcome {
        None => debug!("closed"),
        Some((_, Outcome::Reset)) => {
            debug!("reset by fault");
            reset(&client);
            reset(&upstream);
        }
        Some((dir, Outcome::Close)) => debug!(%dir, "closed by fault"),
        Some((dir, Outcome::Failed(side, e))) => {
            let side = match side {
                Side::Client => "client",
                Side::Upstream => "upstream",
            };
            debug!(%dir, side, error = %e, "connection failed");
        }
        Some((_, Outcome::Finished)) => {}
    }
}

/// Closes with SO_LINGER 0 so the peer gets an RST rather than a FIN.
pub(crate) fn reset(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
