//! One session of a `protocol = "postgres"` proxy.
//!
//! The startup phase is read first: SSLRequest and GSSENCRequest are
//! answered `N` (or, with `tls = "passthrough"`, SSLRequest goes to the
//! server and an accepted TLS session is relayed as bytes); a CancelRequest
//! is relayed to the server on a connection of its own; the StartupMessage
//! gives the user, database and application name, and is where
//! `reject_connections` and `startup_latency` act.
//!
//! Then both directions are read frame by frame in one task. Frames no
//! fault touches are forwarded as slices of the read buffer (one write per
//! read in the common case; rows and COPY data are streamed, never
//! buffered whole). The session tracks what the server owes the client —
//! one expected reply per Parse, Bind, Describe, Execute, Close, and a
//! ReadyForQuery per Sync or Query — so it knows which query an
//! ErrorResponse or a ReadyForQuery belongs to: that gives the latency of
//! each query, and lets faults act at the right message.
//!
//! `query_error` makes the server raise the error itself: the matching
//! Query (or, in the extended protocol, the matching Execute) is replaced
//! by `DO … RAISE … USING ERRCODE`, so the transaction state on both sides
//! agrees afterwards (ReadyForQuery `E` inside a block, 25P02 for later
//! statements, a COMMIT answered ROLLBACK). The PL/pgSQL context fields the
//! server adds (`W`, `F`, `L`, `R`) are removed from that error, and the
//! replies to the helper Parse and Bind are not passed on.
//!
//! The bytes each way still go through the proxy's byte faults.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::Shutdown;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rand::SeedableRng;
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::protocol::{self, Frame, Startup};
use super::statement::{self, StatementKind};
use crate::config::TlsMode;
use crate::faults::chain::{Chain, ChainKey, Item, Payload};
use crate::faults::query::{QueryError, SessionInfo, Severity, When};
use crate::faults::random::{self, FaultRng};
use crate::faults::{Direction, Fault, Latency};
use crate::proxy::ProxyShared;
use crate::proxy::session::{dial, relay, reset};

/// How long a client may take over its startup packets: PostgreSQL's
/// default `authentication_timeout`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server gets to take a relayed CancelRequest and close.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes reserved for each read.
const READ_CHUNK: usize = 32 * 1024;
/// A direction stops reading when this much waits to be written (a slow
/// peer or a delaying fault): back-pressure, not unbounded memory.
const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;
/// The same bound in queued items.
const MAX_ITEMS: usize = 1024;
/// Frame header: type byte and length.
const HEADER: usize = 5;

/// The message a real server sends when it ends a session.
const TERMINATED: &str = "terminating connection due to administrator command";

/// Serves one client of a postgres proxy until the session ends.
pub async fn serve(client: TcpStream, proxy: &ProxyShared, conn: u64, token: CancellationToken) {
    proxy.pg.session_started();
    let _active = ActiveSession(proxy);
    match startup(client, proxy, conn, &token).await {
        Opened::Done => {}
        Opened::Raw { client, upstream } => {
            debug!("TLS accepted by the server; relaying bytes");
            relay(client, upstream, proxy, conn, token).await;
        }
        Opened::Session {
            client,
            upstream,
            info,
            leftover,
        } => {
            let session = Session::new(proxy, conn, info, leftover);
            let end = session.run(&client, &upstream, &token).await;
            match end {
                End::Finished => debug!("closed"),
                End::Cancelled => {}
                End::Close(why) => debug!(why, "session closed"),
                End::Reset => {
                    debug!("reset by fault");
                    reset(&client);
                    reset(&upstream);
                }
                End::Failed(side, e) => debug!(side, error = %e, "connection failed"),
            }
        }
    }
}

/// Counts the session as active while it lives.
struct ActiveSession<'a>(&'a ProxyShared);

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        self.0.pg.session_ended();
    }
}

enum Opened {
    /// Nothing more to do (refused, cancelled, failed, or a cancel request).
    Done,
    /// TLS passthrough: relay bytes.
    Raw {
        client: TcpStream,
        upstream: TcpStream,
    },
    /// The StartupMessage went to the server: read frames from here on.
    Session {
        client: TcpStream,
        upstream: TcpStream,
        info: SessionInfo,
        leftover: BytesMut,
    },
}

async fn startup(
    mut client: TcpStream,
    proxy: &ProxyShared,
    conn: u64,
    token: &CancellationToken,
) -> Opened {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut buf = BytesMut::with_capacity(1024);
    let mut upstream: Option<TcpStream> = None;
    loop {
        let packet = match protocol::read_startup(&mut buf) {
            Ok(Some(p)) => p,
            Ok(None) => {
                let read = tokio::time::timeout_at(deadline, client.read_buf(&mut buf));
                tokio::select! {
                    _ = token.cancelled() => return Opened::Done,
                    r = read => match r {
                        Ok(Ok(0)) => return Opened::Done,
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => {
                            debug!(error = %e, "client failed during startup");
                            return Opened::Done;
                        }
                        Err(_) => {
                            debug!("startup timed out");
                            return Opened::Done;
                        }
                    },
                }
            }
            Err(e) => {
                warn!(proxy = %proxy.name, error = %e, "malformed startup packet; closing the session");
                let fatal = protocol::server_error("FATAL", "08P01", &e.to_string(), None, None);
                let _ = client.write_all(&fatal).await;
                return Opened::Done;
            }
        };
        match packet {
            Startup::Ssl if proxy.tls == TlsMode::Passthrough => {
                let up = match upstream.take() {
                    Some(u) => u,
                    None => match dial(proxy, token).await {
                        Some(u) => u,
                        None => return Opened::Done,
                    },
                };
                match ssl_passthrough(&mut client, up, &buf).await {
                    Ok((true, up)) => {
                        return Opened::Raw {
                            client,
                            upstream: up,
                        };
                    }
                    Ok((false, up)) => upstream = Some(up),
                    Err(e) => {
                        debug!(error = %e, "TLS negotiation failed");
                        return Opened::Done;
                    }
                }
            }
            Startup::Ssl | Startup::GssEnc => {
                if client.write_all(b"N").await.is_err() {
                    return Opened::Done;
                }
            }
            Startup::Cancel { raw, .. } => {
                let up = match upstream.take() {
                    Some(u) => Some(u),
                    None => dial(proxy, token).await,
                };
                if let Some(up) = up {
                    relay_cancel(up, &raw).await;
                }
                debug!("cancel request relayed");
                return Opened::Done;
            }
            Startup::Message { raw, params, .. } => {
                let param = |k: &str| {
                    params
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let user = param("user");
                let database = match param("database") {
                    d if d.is_empty() => user.clone(),
                    d => d,
                };
                let info = SessionInfo {
                    user,
                    database,
                    application_name: param("application_name"),
                };
                let set = proxy.board.snapshot();
                if let Some(fatal) = rejection(proxy, conn, &info, &set) {
                    debug!(user = %info.user, database = %info.database, "session rejected by fault");
                    let _ = client.write_all(&fatal).await;
                    return Opened::Done;
                }
                let delay = startup_delay(proxy, conn, &info, &set);
                if !delay.is_zero() {
                    tokio::select! {
                        _ = token.cancelled() => return Opened::Done,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                let mut up = match upstream.take() {
                    Some(u) => u,
                    None => match dial(proxy, token).await {
                        Some(u) => u,
                        None => return Opened::Done,
                    },
                };
                if let Err(e) = up.write_all(&raw).await {
                    debug!(error = %e, "server failed during startup");
                    return Opened::Done;
                }
                proxy
                    .stats
                    .upstream
                    .sent
                    .fetch_add(raw.len() as u64, std::sync::atomic::Ordering::Relaxed);
                return Opened::Session {
                    client,
                    upstream: up,
                    info,
                    leftover: buf,
                };
            }
        }
    }
}

/// Asks the server for TLS on the client's behalf and passes its one-byte
/// answer on. Returns whether TLS was accepted.
async fn ssl_passthrough(
    client: &mut TcpStream,
    mut up: TcpStream,
    pending: &BytesMut,
) -> io::Result<(bool, TcpStream)> {
    if !pending.is_empty() {
        // Bytes after SSLRequest before the answer: a client must wait for
        // it (CVE-2021-23222); refuse rather than pass them into TLS.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "data sent after SSLRequest before its answer",
        ));
    }
    let mut request = Vec::with_capacity(8);
    request.extend_from_slice(&8i32.to_be_bytes());
    request.extend_from_slice(&protocol::SSL_REQUEST.to_be_bytes());
    up.write_all(&request).await?;
    let mut answer = [0u8; 1];
    tokio::time::timeout(STARTUP_TIMEOUT, up.read_exact(&mut answer))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer to SSLRequest"))??;
    client.write_all(&answer).await?;
    Ok((answer[0] == b'S', up))
}

/// Sends a CancelRequest to the server and waits (briefly) for it to close
/// the connection, as it does once it has taken the request.
async fn relay_cancel(mut up: TcpStream, raw: &[u8]) {
    if up.write_all(raw).await.is_err() {
        return;
    }
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(CANCEL_TIMEOUT, async {
        while let Ok(n) = up.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// The FATAL a matching `reject_connections` fault sends, if one takes
/// this session.
fn rejection(
    proxy: &ProxyShared,
    conn: u64,
    info: &SessionInfo,
    set: &crate::faults::chain::FaultSet,
) -> Option<Bytes> {
    for f in set.iter() {
        let Fault::RejectConnections(r) = &f.spec.fault else {
            continue;
        };
        if !r.matching.session_matches(info)
            || random::toxicity_draw(proxy.seed, conn, f.spec.direction, &f.spec.name)
                >= f.spec.toxicity
            || !f.hits.take(&r.matching)
        {
            continue;
        }
        let code = r.sqlstate.0.as_str();
        let message = r
            .message
            .clone()
            .unwrap_or_else(|| super::sqlstate::default_message(code));
        proxy.stats.activated(f.spec.fault.kind_index());
        proxy.pg.session_rejected(true);
        proxy.pg.error(code, true, true);
        return Some(protocol::server_error("FATAL", code, &message, None, None));
    }
    None
}

/// The sum of the matching `startup_latency` faults' delays.
fn startup_delay(
    proxy: &ProxyShared,
    conn: u64,
    info: &SessionInfo,
    set: &crate::faults::chain::FaultSet,
) -> Duration {
    let mut rng = FaultRng::seed_from_u64(random::derive(proxy.seed, &[conn, 5]));
    let mut total = Duration::ZERO;
    for f in set.iter() {
        let Fault::StartupLatency(s) = &f.spec.fault else {
            continue;
        };
        if s.matching.session_matches(info)
            && random::toxicity_draw(proxy.seed, conn, f.spec.direction, &f.spec.name)
                < f.spec.toxicity
            && f.hits.take(&s.matching)
        {
            proxy.stats.activated(f.spec.fault.kind_index());
            total += Latency {
                latency: s.latency,
                jitter: s.jitter,
            }
            .sample(&mut rng);
        }
    }
    total
}

/// How a session ended.
enum End {
    /// Both directions closed.
    Finished,
    /// The proxy stopped.
    Cancelled,
    /// Closed on purpose (a fault, a malformed frame).
    Close(&'static str),
    /// A fault resets both legs.
    Reset,
    /// A peer failed.
    Failed(&'static str, io::Error),
}

/// What the server owes the client for a frame sent to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// ParseComplete; `hidden`: ours, not passed on.
    Parse { hidden: bool },
    /// BindComplete.
    Bind { hidden: bool },
    /// ParameterDescription and/or RowDescription or NoData.
    Describe,
    /// Rows, then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute { injected: bool },
    /// CloseComplete.
    Close,
    /// ReadyForQuery: ends a unit (a Query, or a batch up to Sync).
    Ready,
}

/// A query as measured: a simple Query, or an extended batch up to its
/// Sync; it ends with its ReadyForQuery.
#[derive(Debug)]
struct Unit {
    start: Instant,
    /// The statement kind, if the unit runs one (a batch that only
    /// prepares a statement does not count as a query).
    kind: Option<StatementKind>,
    /// A simple Query replaced by an injected error.
    injected: bool,
    /// The server's answer is swallowed and the session ended at its
    /// ReadyForQuery (`terminate` with `when = "after"`).
    terminate_after: bool,
}

/// Bytes of a frame still to pass (or drop) without looking at them.
#[derive(Default)]
struct Skip {
    left: usize,
    drop: bool,
}

/// One direction's output: bytes wait here for their time and for the
/// destination to take them, after the byte faults.
struct Lane {
    dir: Direction,
    chain: Chain,
    queue: VecDeque<Item>,
    queued: usize,
    /// Frames are not delivered before this (query_latency); order kept.
    hold_until: Option<Instant>,
    /// The destination would block.
    blocked: bool,
    /// The end of stream was delivered.
    done: bool,
}

enum Flushed {
    Idle,
    Eof,
    Close,
    Reset,
}

impl Lane {
    fn new(key: ChainKey) -> Self {
        Self {
            dir: key.dir,
            chain: Chain::new(key),
            queue: VecDeque::new(),
            queued: 0,
            hold_until: None,
            blocked: false,
            done: false,
        }
    }

    fn room(&self) -> bool {
        self.queue.len() < MAX_ITEMS && self.queued < MAX_QUEUED_BYTES
    }

    fn push(&mut self, data: Bytes, now: Instant) {
        if data.is_empty() {
            return;
        }
        let at = self.hold_until.map_or(now, |h| h.max(now));
        let before = self.queue.len();
        self.chain.feed(
            Item {
                at,
                payload: Payload::Data(data),
            },
            now,
            &mut self.queue,
        );
        self.queued += self
            .queue
            .iter()
            .skip(before)
            .map(|i| match &i.payload {
                Payload::Data(d) => d.len(),
                _ => 0,
            })
            .sum::<usize>();
    }

    fn push_eof(&mut self, now: Instant) {
        let at = self.hold_until.map_or(now, |h| h.max(now));
        self.chain.feed(
            Item {
                at,
                payload: Payload::Eof,
            },
            now,
            &mut self.queue,
        );
    }

    /// Writes what is due without waiting.
    fn flush(
        &mut self,
        dst: &TcpStream,
        now: Instant,
        sent: &std::sync::atomic::AtomicU64,
    ) -> io::Result<Flushed> {
        self.blocked = false;
        if self.chain.holds() {
            return Ok(Flushed::Idle);
        }
        while let Some(front) = self.queue.front_mut() {
            if front.at > now {
                break;
            }
            match &mut front.payload {
                Payload::Data(b) => match dst.try_write(b) {
                    Ok(n) => {
                        sent.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                        self.queued -= n;
                        if n == b.len() {
                            self.queue.pop_front();
                        } else {
                            b.advance(n);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.blocked = true;
                        break;
                    }
                    Err(e) => return Err(e),
                },
                Payload::Eof => {
                    self.queue.pop_front();
                    return Ok(Flushed::Eof);
                }
                Payload::Close => return Ok(Flushed::Close),
                Payload::Reset => return Ok(Flushed::Reset),
            }
        }
        Ok(Flushed::Idle)
    }

    /// When this lane next needs attention by the clock.
    fn wake(&self) -> Option<Instant> {
        let next = if self.chain.holds() || self.blocked {
            None
        } else {
            self.queue.front().map(|i| i.at)
        };
        match (next, self.chain.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What the faults decided for one query.
#[derive(Default)]
struct Decision {
    latency: Duration,
    error: Option<QueryError>,
    terminate: Option<When>,
}

struct Session<'a> {
    proxy: &'a ProxyShared,
    conn: u64,
    info: SessionInfo,
    rng: FaultRng,
    up: Lane,
    down: Lane,
    cbuf: BytesMut,
    sbuf: BytesMut,
    c_skip: Skip,
    s_skip: Skip,
    c_eof: bool,
    s_eof: bool,
    /// Prepared statement name -> query text.
    statements: HashMap<String, String>,
    /// Portal name -> statement name.
    portals: HashMap<String, String>,
    expects: VecDeque<Expect>,
    units: VecDeque<Unit>,
    batch_open: bool,
    /// The server has sent its first ReadyForQuery (startup done).
    ready: bool,
    /// The transaction status of the last ReadyForQuery.
    tx_status: u8,
    /// Queries seen (numbers the toxicity draws).
    queries: u64,
    /// Units answered.
    answered: u64,
    /// Names the helper statements of injected errors.
    injected_seq: u64,
    /// The session is being ended: nothing more is read, the server is gone.
    ending: bool,
    server_closed: bool,
}

impl<'a> Session<'a> {
    fn new(proxy: &'a ProxyShared, conn: u64, info: SessionInfo, leftover: BytesMut) -> Self {
        let key = |dir| ChainKey {
            proxy_seed: proxy.seed,
            conn,
            dir,
        };
        Self {
            proxy,
            conn,
            info,
            rng: FaultRng::seed_from_u64(random::derive(proxy.seed, &[conn, 4])),
            up: Lane::new(key(Direction::Upstream)),
            down: Lane::new(key(Direction::Downstream)),
            cbuf: leftover,
            sbuf: BytesMut::with_capacity(READ_CHUNK),
            c_skip: Skip::default(),
            s_skip: Skip::default(),
            c_eof: false,
            s_eof: false,
            statements: HashMap::new(),
            portals: HashMap::new(),
            expects: VecDeque::new(),
            units: VecDeque::new(),
            batch_open: false,
            ready: false,
            tx_status: b'I',
            queries: 0,
            answered: 0,
            injected_seq: 0,
            ending: false,
            server_closed: false,
        }
    }

    fn rebuild(&mut self, now: Instant) -> Option<End> {
        let proxy = self.proxy;
        let set = proxy.board.snapshot();
        let activated = |i: usize| proxy.stats.activated(i);
        // A removed query_latency releases the queries it held.
        if !set
            .iter()
            .any(|f| matches!(f.spec.fault, Fault::QueryLatency(_)))
        {
            self.up.hold_until = None;
        }
        for lane in [&mut self.up, &mut self.down] {
            if let Some(item) = lane.chain.rebuild(set.direction(lane.dir), now, &activated) {
                return Some(match item.payload {
                    Payload::Reset => End::Reset,
                    _ => End::Close("a removed fault ends the connection"),
                });
            }
            for item in lane.queue.iter_mut().filter(|i| i.is_stream()) {
                item.at = item.at.min(now.max(lane.hold_until.unwrap_or(now)));
            }
        }
        None
    }

    async fn run(
        mut self,
        client: &TcpStream,
        server: &TcpStream,
        token: &CancellationToken,
    ) -> End {
        let mut changes = self.proxy.board.subscribe();
        changes.mark_unchanged();
        if let Some(end) = self.rebuild(Instant::now()) {
            return end;
        }
        let proxy = self.proxy;
        let stats = &proxy.stats;
        if !self.cbuf.is_empty()
            && let Err(end) = self.on_client(Instant::now())
        {
            return end;
        }
        loop {
            let now = Instant::now();
            if self.ending && !self.server_closed {
                self.server_closed = true;
                let _ = SockRef::from(server).shutdown(Shutdown::Both);
                self.up.done = true;
            }
            for (lane, dst, sent, name) in [
                (&mut self.up, server, &stats.upstream.sent, "server"),
                (&mut self.down, client, &stats.downstream.sent, "client"),
            ] {
                if lane.done {
                    continue;
                }
                match lane.flush(dst, now, sent) {
                    Ok(Flushed::Idle) => {}
                    Ok(Flushed::Eof) => {
                        lane.done = true;
                        let _ = SockRef::from(dst).shutdown(Shutdown::Write);
                    }
                    Ok(Flushed::Close) => return End::Close("closed by fault"),
                    Ok(Flushed::Reset) => return End::Reset,
                    Err(e) => return End::Failed(name, e),
                }
            }
            if self.down.done && (self.up.done || self.ending) {
                return if self.ending {
                    End::Close("terminated by fault")
                } else {
                    End::Finished
                };
            }
            let wake = match (self.up.wake(), self.down.wake()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let read_client = !self.c_eof && !self.ending && self.up.room();
            let read_server = !self.s_eof && !self.ending && self.down.room();
            let (up_blocked, down_blocked) = (self.up.blocked, self.down.blocked);
            tokio::select! {
                biased;
                _ = token.cancelled() => return End::Cancelled,
                r = changes.changed() => {
                    if r.is_err() {
                        return End::Cancelled;
                    }
                    if let Some(end) = self.rebuild(Instant::now()) {
                        return end;
                    }
                }
                r = server.readable(), if read_server => {
                    if let Err(e) = r {
                        return End::Failed("server", e);
                    }
                    reserve(&mut self.sbuf);
                    match server.try_read_buf(&mut self.sbuf) {
                        Ok(0) => {
                            self.s_eof = true;
                            let now = Instant::now();
                            let rest = self.sbuf.split().freeze();
                            self.down.push(rest, now);
                            self.down.push_eof(now);
                        }
                        Ok(n) => {
                            stats.downstream.received.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            if let Err(end) = self.on_server(Instant::now()) {
                                return end;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return End::Failed("server", e),
                    }
                }
                r = client.readable(), if read_client => {
                    if let Err(e) = r {
                        return End::Failed("client", e);
                    }
                    reserve(&mut self.cbuf);
                    match client.try_read_buf(&mut self.cbuf) {
                        Ok(0) => {
                            self.c_eof = true;
                            let now = Instant::now();
                            let rest = self.cbuf.split().freeze();
                            self.up.push(rest, now);
                            self.up.push_eof(now);
                        }
                        Ok(n) => {
                            stats.upstream.received.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            if let Err(end) = self.on_client(Instant::now()) {
                                return end;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return End::Failed("client", e),
                    }
                }
                r = server.writable(), if up_blocked => {
                    if let Err(e) = r {
                        return End::Failed("server", e);
                    }
                }
                r = client.writable(), if down_blocked => {
                    if let Err(e) = r {
                        return End::Failed("client", e);
                    }
                }
                _ = sleep_until(wake), if wake.is_some() => {
                    let now = Instant::now();
                    for lane in [&mut self.up, &mut self.down] {
                        if lane.chain.on_timer(now).is_some() {
                            return End::Close("closed by fault");
                        }
                    }
                }
            }
        }
    }

    // ---- client to server ------------------------------------------------

    /// Handles what the client sent: every whole frame is inspected,
    /// forwarded, replaced or answered.
    fn on_client(&mut self, now: Instant) -> Result<(), End> {
        let mut pos = 0usize;
        loop {
            if self.c_skip.left > 0 {
                let n = self.c_skip.left.min(self.cbuf.len() - pos);
                if n == 0 {
                    break;
                }
                pos += n;
                self.c_skip.left -= n;
                continue;
            }
            if self.cbuf.len() - pos < HEADER {
                break;
            }
            let tag = self.cbuf[pos];
            let len = u32::from_be_bytes([
                self.cbuf[pos + 1],
                self.cbuf[pos + 2],
                self.cbuf[pos + 3],
                self.cbuf[pos + 4],
            ]) as usize;
            if let Err(message) = check_header(tag, len, true) {
                self.client_protocol_error(tag, &message, now);
                return Ok(());
            }
            let total = 1 + len;
            if !frontend_inspected(tag) {
                // Streamed: CopyData, password messages, Flush, Terminate...
                let n = total.min(self.cbuf.len() - pos);
                pos += n;
                self.c_skip.left = total - n;
                continue;
            }
            if self.cbuf.len() - pos < total {
                break;
            }
            let frame = Frame {
                tag,
                raw: Bytes::copy_from_slice(&self.cbuf[pos..pos + total]),
            };
            match self.client_frame(&frame, now) {
                Ok(None) => pos += total,
                Ok(Some(replacement)) => {
                    // Deliver what came before unchanged, then the stand-in.
                    let before = self.cbuf.split_to(pos).freeze();
                    self.up.push(before, now);
                    self.cbuf.advance(total);
                    pos = 0;
                    if let Some(r) = replacement {
                        self.up.push(r, now);
                    }
                }
                Err(end) => return Err(end),
            }
            if self.ending {
                return Ok(());
            }
        }
        if pos > 0 {
            let run = self.cbuf.split_to(pos).freeze();
            self.up.push(run, now);
        }
        Ok(())
    }

    /// A malformed frame from the client: answered as a server answers it,
    /// then the session ends.
    fn client_protocol_error(&mut self, tag: u8, message: &str, now: Instant) {
        warn!(proxy = %self.proxy.name, conn = self.conn, tag = %printable(tag), error = message, "malformed frame from client; ending the session");
        self.proxy.pg.error("08P01", true, false);
        let fatal = protocol::server_error("FATAL", "08P01", message, None, None);
        self.finish_with(fatal, now);
    }

    /// Handles one whole inspected frame from the client. `Ok(None)`:
    /// forward it; `Ok(Some(x))`: drop it and send `x` (if any) instead.
    #[allow(clippy::option_option)]
    fn client_frame(&mut self, frame: &Frame, now: Instant) -> Result<Option<Option<Bytes>>, End> {
        let bad = |s: &mut Self, e: protocol::ProtocolError| {
            s.client_protocol_error(frame.tag, &e.to_string(), now);
            Ok(Some(None))
        };
        match frame.tag {
            b'Q' => {
                let sql = match protocol::query_text(frame) {
                    Ok(s) => s.to_string(),
                    Err(e) => return bad(self, e),
                };
                let kind = statement::classify(&sql);
                self.units.push_back(Unit {
                    start: now,
                    kind: Some(kind),
                    injected: false,
                    terminate_after: false,
                });
                self.expects.push_back(Expect::Ready);
                let d = self.decide(&sql, kind);
                self.hold(d.latency, now);
                if let Some(when) = d.terminate {
                    if when == When::Before {
                        self.terminate(now);
                        return Ok(Some(None));
                    }
                    if let Some(u) = self.units.back_mut() {
                        u.terminate_after = true;
                    }
                }
                if let Some(e) = d.error {
                    if e.severity == Severity::Fatal {
                        self.fatal_error(&e, now);
                        return Ok(Some(None));
                    }
                    if let Some(u) = self.units.back_mut() {
                        u.injected = true;
                    }
                    return Ok(Some(Some(protocol::query(&raise_sql(&e)))));
                }
                Ok(None)
            }
            b'P' => {
                let p = match protocol::parse_msg(frame) {
                    Ok(p) => p,
                    Err(e) => return bad(self, e),
                };
                self.statements
                    .insert(p.statement.to_string(), p.query.to_string());
                self.open_batch(now);
                self.expects.push_back(Expect::Parse { hidden: false });
                Ok(None)
            }
            b'B' => {
                let b = match protocol::bind_msg(frame) {
                    Ok(b) => b,
                    Err(e) => return bad(self, e),
                };
                self.portals
                    .insert(b.portal.to_string(), b.statement.to_string());
                self.open_batch(now);
                self.expects.push_back(Expect::Bind { hidden: false });
                Ok(None)
            }
            b'D' => {
                self.open_batch(now);
                self.expects.push_back(Expect::Describe);
                Ok(None)
            }
            b'C' => {
                if let Ok((target, name)) = protocol::describe_or_close(frame) {
                    match target {
                        protocol::Target::Statement => self.statements.remove(name),
                        protocol::Target::Portal => self.portals.remove(name),
                    };
                }
                self.open_batch(now);
                self.expects.push_back(Expect::Close);
                Ok(None)
            }
            b'E' => {
                let portal = match protocol::execute_portal(frame) {
                    Ok(p) => p.to_string(),
                    Err(e) => return bad(self, e),
                };
                self.open_batch(now);
                let sql = self
                    .portals
                    .get(&portal)
                    .and_then(|s| self.statements.get(s))
                    .cloned()
                    .unwrap_or_default();
                let kind = statement::classify(&sql);
                if let Some(u) = self.units.back_mut()
                    && u.kind.is_none()
                {
                    u.kind = Some(kind);
                }
                let d = self.decide(&sql, kind);
                self.hold(d.latency, now);
                if let Some(when) = d.terminate {
                    if when == When::Before {
                        self.terminate(now);
                        return Ok(Some(None));
                    }
                    if let Some(u) = self.units.back_mut() {
                        u.terminate_after = true;
                    }
                }
                if let Some(e) = d.error {
                    if e.severity == Severity::Fatal {
                        self.fatal_error(&e, now);
                        return Ok(Some(None));
                    }
                    // In place of this Execute: run the raise through a
                    // statement and portal of our own; the server fails
                    // there and skips the rest of the batch to its Sync.
                    self.injected_seq += 1;
                    let name = format!("shakedown_fault_{}", self.injected_seq);
                    let mut out = BytesMut::new();
                    out.extend_from_slice(&protocol::parse(&name, &raise_sql(&e)));
                    out.extend_from_slice(&protocol::bind(&name, &name));
                    out.extend_from_slice(&protocol::execute(&name, 0));
                    self.expects.push_back(Expect::Parse { hidden: true });
                    self.expects.push_back(Expect::Bind { hidden: true });
                    self.expects.push_back(Expect::Execute { injected: true });
                    return Ok(Some(Some(out.freeze())));
                }
                self.expects.push_back(Expect::Execute { injected: false });
                Ok(None)
            }
            b'S' => {
                if !self.batch_open {
                    self.units.push_back(Unit {
                        start: now,
                        kind: None,
                        injected: false,
                        terminate_after: false,
                    });
                }
                self.batch_open = false;
                self.expects.push_back(Expect::Ready);
                Ok(None)
            }
            b'F' => {
                // FunctionCall: answered by FunctionCallResponse and
                // ReadyForQuery.
                self.units.push_back(Unit {
                    start: now,
                    kind: Some(StatementKind::Other),
                    injected: false,
                    terminate_after: false,
                });
                self.expects.push_back(Expect::Ready);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn open_batch(&mut self, now: Instant) {
        if !self.batch_open {
            self.batch_open = true;
            self.units.push_back(Unit {
                start: now,
                kind: None,
                injected: false,
                terminate_after: false,
            });
        }
    }

    /// Holds this frame and everything after it until `latency` from now.
    fn hold(&mut self, latency: Duration, now: Instant) {
        if !latency.is_zero() {
            let until = now + latency;
            self.up.hold_until = Some(self.up.hold_until.map_or(until, |h| h.max(until)));
        }
    }

    /// Applies the query faults to one query, in the order they were added.
    fn decide(&mut self, sql: &str, kind: StatementKind) -> Decision {
        let n = self.queries;
        self.queries += 1;
        let mut d = Decision::default();
        let set = self.proxy.board.snapshot();
        for f in set.iter() {
            let Some(m) = f.spec.fault.query_match() else {
                continue;
            };
            let applies = |s: &Self| {
                m.query_matches(&s.info, sql, kind)
                    && random::query_draw(s.proxy.seed, s.conn, n, &f.spec.name) < f.spec.toxicity
            };
            match &f.spec.fault {
                Fault::QueryLatency(q) if applies(self) && f.hits.take(m) => {
                    d.latency += Latency {
                        latency: q.latency,
                        jitter: q.jitter,
                    }
                    .sample(&mut self.rng);
                    self.proxy.stats.activated(f.spec.fault.kind_index());
                }
                // In a failed block a real server rejects the statement
                // before running it (25P02); so does the injection.
                Fault::QueryError(e)
                    if d.error.is_none()
                        && d.terminate.is_none()
                        && self.tx_status != b'E'
                        && applies(self)
                        && f.hits.take(m) =>
                {
                    d.error = Some(e.clone());
                    self.proxy.stats.activated(f.spec.fault.kind_index());
                }
                Fault::Terminate(t)
                    if t.after_queries == 0
                        && d.error.is_none()
                        && d.terminate.is_none()
                        && applies(self)
                        && f.hits.take(m) =>
                {
                    d.terminate = Some(t.when);
                    self.proxy.stats.activated(f.spec.fault.kind_index());
                }
                _ => {}
            }
        }
        d
    }

    /// Ends the session the way `pg_terminate_backend` does.
    fn terminate(&mut self, now: Instant) {
        self.proxy.pg.error("57P01", true, true);
        let fatal = protocol::server_error("FATAL", "57P01", TERMINATED, None, None);
        self.finish_with(fatal, now);
    }

    /// An injected error with severity FATAL: sent, then the session ends.
    fn fatal_error(&mut self, e: &QueryError, now: Instant) {
        self.proxy.pg.error(&e.sqlstate.0, true, true);
        let fatal = protocol::server_error(
            "FATAL",
            &e.sqlstate.0,
            &e.message_text(),
            e.detail_text().as_deref(),
            e.hint_text().as_deref(),
        );
        self.finish_with(fatal, now);
    }

    /// Drops the server leg at once (it rolls an open transaction back),
    /// sends `last` to the client after what it is owed, then closes.
    fn finish_with(&mut self, last: Bytes, now: Instant) {
        self.up.queue.clear();
        self.up.queued = 0;
        // The FATAL is not held behind delayed query output.
        self.down.push(last, now);
        self.down.push_eof(now);
        self.ending = true;
    }

    // ---- server to client ------------------------------------------------

    /// Handles what the server sent.
    fn on_server(&mut self, now: Instant) -> Result<(), End> {
        let mut pos = 0usize;
        loop {
            if self.s_skip.left > 0 {
                let n = self.s_skip.left.min(self.sbuf.len() - pos);
                if n == 0 {
                    break;
                }
                if self.s_skip.drop {
                    self.drop_server_bytes(&mut pos, n, now);
                } else {
                    pos += n;
                }
                self.s_skip.left -= n;
                continue;
            }
            if self.sbuf.len() - pos < HEADER {
                break;
            }
            let tag = self.sbuf[pos];
            let len = u32::from_be_bytes([
                self.sbuf[pos + 1],
                self.sbuf[pos + 2],
                self.sbuf[pos + 3],
                self.sbuf[pos + 4],
            ]) as usize;
            if let Err(message) = check_header(tag, len, false) {
                warn!(proxy = %self.proxy.name, conn = self.conn, tag = %printable(tag), error = %message, "malformed frame from server; ending the session");
                return Err(End::Close("malformed frame from server"));
            }
            let total = 1 + len;
            let swallow = self.units.front().is_some_and(|u| u.terminate_after);
            if !backend_inspected(tag) {
                self.on_reply_header(tag);
                let n = total.min(self.sbuf.len() - pos);
                if swallow {
                    self.drop_server_bytes(&mut pos, n, now);
                } else {
                    pos += n;
                }
                self.s_skip = Skip {
                    left: total - n,
                    drop: swallow,
                };
                continue;
            }
            if self.sbuf.len() - pos < total {
                break;
            }
            let frame = Frame {
                tag,
                raw: Bytes::copy_from_slice(&self.sbuf[pos..pos + total]),
            };
            let action = self.server_frame(&frame, now);
            let action = if swallow && !matches!(action, Reply::Terminate) {
                Reply::Drop
            } else {
                action
            };
            match action {
                Reply::Forward => pos += total,
                Reply::Drop | Reply::Replace(_) | Reply::Terminate => {
                    let before = self.sbuf.split_to(pos).freeze();
                    self.down.push(before, now);
                    self.sbuf.advance(total);
                    pos = 0;
                    match action {
                        Reply::Replace(b) => self.down.push(b, now),
                        Reply::Terminate => {
                            self.terminate(now);
                            return Ok(());
                        }
                        _ => {}
                    }
                }
                Reply::ForwardThenTerminate => {
                    pos += total;
                    let run = self.sbuf.split_to(pos).freeze();
                    self.down.push(run, now);
                    self.terminate(now);
                    return Ok(());
                }
            }
        }
        if pos > 0 {
            let run = self.sbuf.split_to(pos).freeze();
            self.down.push(run, now);
        }
        Ok(())
    }

    /// Drops `n` bytes at `pos` of the server buffer, delivering what came
    /// before them.
    fn drop_server_bytes(&mut self, pos: &mut usize, n: usize, now: Instant) {
        let before = self.sbuf.split_to(*pos).freeze();
        self.down.push(before, now);
        self.sbuf.advance(n);
        *pos = 0;
    }

    /// Bookkeeping for a streamed (not inspected) reply.
    fn on_reply_header(&mut self, tag: u8) {
        if tag == b'T' && self.expects.front() == Some(&Expect::Describe) {
            self.expects.pop_front();
        }
    }

    /// Handles one whole inspected frame from the server.
    fn server_frame(&mut self, frame: &Frame, now: Instant) -> Reply {
        match frame.tag {
            b'1' => {
                if let Some(Expect::Parse { hidden }) = self.expects.front().copied() {
                    self.expects.pop_front();
                    if hidden {
                        return Reply::Drop;
                    }
                }
                Reply::Forward
            }
            b'2' => {
                if let Some(Expect::Bind { hidden }) = self.expects.front().copied() {
                    self.expects.pop_front();
                    if hidden {
                        return Reply::Drop;
                    }
                }
                Reply::Forward
            }
            b'n' => {
                if self.expects.front() == Some(&Expect::Describe) {
                    self.expects.pop_front();
                }
                Reply::Forward
            }
            b'3' => {
                if self.expects.front() == Some(&Expect::Close) {
                    self.expects.pop_front();
                }
                Reply::Forward
            }
            b'I' | b's' => {
                if matches!(self.expects.front(), Some(Expect::Execute { .. })) {
                    self.expects.pop_front();
                }
                Reply::Forward
            }
            b'C' => {
                if matches!(self.expects.front(), Some(Expect::Execute { .. })) {
                    self.expects.pop_front();
                }
                if let Ok(tag) = protocol::command_tag(frame) {
                    match tag {
                        "COMMIT" => self.proxy.pg.transaction(true),
                        "ROLLBACK" => self.proxy.pg.transaction(false),
                        _ => {}
                    }
                }
                Reply::Forward
            }
            b'E' => self.on_error(frame),
            b'Z' => self.on_ready(frame, now),
            _ => Reply::Forward,
        }
    }

    fn on_error(&mut self, frame: &Frame) -> Reply {
        let injected = match self.expects.front() {
            Some(Expect::Execute { injected }) => *injected,
            Some(Expect::Ready) => self.units.front().is_some_and(|u| u.injected),
            _ => false,
        };
        // The server skips to the Sync (or ends the Query): so do we.
        while let Some(e) = self.expects.front() {
            if *e == Expect::Ready {
                break;
            }
            self.expects.pop_front();
        }
        let fields = protocol::error_fields(frame).unwrap_or_default();
        let field = |c: u8| {
            fields
                .iter()
                .find(|(k, _)| *k == c)
                .map(|(_, v)| v.as_str())
        };
        let code = field(b'C').unwrap_or("XX000").to_string();
        let severity = field(b'V').or(field(b'S')).unwrap_or("ERROR");
        let fatal = matches!(severity, "FATAL" | "PANIC");
        self.proxy.pg.error(&code, fatal, injected);
        if !self.ready && fatal {
            // Refused at startup by the server itself (too many clients,
            // shutting down, bad password...).
            self.proxy.pg.session_rejected(false);
        }
        if injected {
            if let Some(u) = self.units.front_mut() {
                u.injected = true;
            }
            return match protocol::strip_error_fields(frame, b"WFLR") {
                Ok(b) => Reply::Replace(b),
                Err(_) => Reply::Forward,
            };
        }
        Reply::Forward
    }

    fn on_ready(&mut self, frame: &Frame, now: Instant) -> Reply {
        if let Ok(status) = protocol::ready_status(frame) {
            self.tx_status = status;
        }
        if !self.ready {
            self.ready = true;
            return Reply::Forward;
        }
        while let Some(e) = self.expects.pop_front() {
            if e == Expect::Ready {
                break;
            }
        }
        let Some(unit) = self.units.pop_front() else {
            return Reply::Forward;
        };
        if let Some(kind) = unit.kind {
            self.proxy.pg.query(kind.index(), now - unit.start);
            self.answered += 1;
        }
        if unit.terminate_after {
            return Reply::Terminate;
        }
        if self.after_queries_reached() {
            return Reply::ForwardThenTerminate;
        }
        Reply::Forward
    }

    /// Whether a `terminate` fault with `after_queries` ends the session
    /// now that one more query has been answered.
    fn after_queries_reached(&mut self) -> bool {
        let set = self.proxy.board.snapshot();
        for f in set.iter() {
            let Fault::Terminate(t) = &f.spec.fault else {
                continue;
            };
            if t.after_queries > 0
                && self.answered >= t.after_queries
                && t.matching.session_matches(&self.info)
                && random::toxicity_draw(self.proxy.seed, self.conn, f.spec.direction, &f.spec.name)
                    < f.spec.toxicity
                && f.hits.take(&t.matching)
            {
                self.proxy.stats.activated(f.spec.fault.kind_index());
                return true;
            }
        }
        false
    }
}

/// What to do with a server frame.
enum Reply {
    Forward,
    Drop,
    Replace(Bytes),
    /// Drop it and end the session (`terminate` after the answer).
    Terminate,
    /// Pass it on, then end the session (`after_queries`).
    ForwardThenTerminate,
}

/// Frontend frames whose body the session reads (all small in practice);
/// the others are streamed.
fn frontend_inspected(tag: u8) -> bool {
    matches!(tag, b'Q' | b'P' | b'B' | b'D' | b'C' | b'E' | b'S' | b'F')
}

/// Backend frames the session must see whole.
fn backend_inspected(tag: u8) -> bool {
    matches!(
        tag,
        b'1' | b'2' | b'3' | b'n' | b'I' | b's' | b'C' | b'E' | b'Z'
    )
}

/// Checks a frame header; the error is worded as the server words it.
fn check_header(tag: u8, len: usize, frontend: bool) -> Result<(), String> {
    let known = if frontend {
        b"BCdcfDEHFPpQSX".contains(&tag)
    } else {
        b"R K23CdcGHWDIEVvnNAtS1sZT".contains(&tag)
    };
    if !known {
        return Err(if frontend {
            format!("invalid frontend message type {tag}")
        } else {
            format!("unexpected message type 0x{tag:02X} from the server")
        });
    }
    if !(4..=protocol::MAX_FRAME_LEN).contains(&len) {
        return Err("invalid message length".to_string());
    }
    Ok(())
}

fn printable(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        (tag as char).to_string()
    } else {
        format!("0x{tag:02X}")
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// A dollar-quoted literal whose tag does not occur in `text`.
fn dollar_quote(text: &str) -> String {
    let mut n = 0u32;
    loop {
        let tag = if n == 0 {
            "$sd$".to_string()
        } else {
            format!("$sd{n}$")
        };
        if !text.contains(&tag) {
            return format!("{tag}{text}{tag}");
        }
        n += 1;
    }
}

/// The statement that makes the server raise the injected error itself.
fn raise_sql(e: &QueryError) -> String {
    let mut using = vec![
        format!("ERRCODE = '{}'", e.sqlstate.0),
        format!("MESSAGE = {}", dollar_quote(&e.message_text())),
    ];
    if let Some(d) = e.detail_text() {
        using.push(format!("DETAIL = {}", dollar_quote(&d)));
    }
    if let Some(h) = e.hint_text() {
        using.push(format!("HINT = {}", dollar_quote(&h)));
    }
    let body = format!("BEGIN RAISE EXCEPTION USING {}; END", using.join(", "));
    format!("DO {}", dollar_quote(&body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_statement_quotes_anything() {
        let e = QueryError {
            message: Some("it's $sd$ here".into()),
            hint: Some("retry".into()),
            ..QueryError::default()
        };
        let sql = raise_sql(&e);
        assert_eq!(
            sql,
            "DO $sd2$BEGIN RAISE EXCEPTION USING ERRCODE = '40001', \
             MESSAGE = $sd1$it's $sd$ here$sd1$, HINT = $sd$retry$sd$; END$sd2$"
        );
    }

    #[test]
    fn headers_are_checked() {
        assert!(check_header(b'Q', 4, true).is_ok());
        assert!(check_header(b'Q', 3, true).is_err());
        assert!(check_header(b'Z', 5, true).is_err());
        assert!(check_header(b'Z', 5, false).is_ok());
        assert!(check_header(0, 5, false).is_err());
        assert_eq!(
            check_header(b'!', 8, true).unwrap_err(),
            "invalid frontend message type 33"
        );
    }
}
