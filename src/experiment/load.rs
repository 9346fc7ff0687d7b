//! Load generators: synthetic traffic at a fixed rate, every operation
//! measured.
//!
//! The model is *open*: operations start on a schedule (`t = n / rate`)
//! whether or not earlier ones finished, because real clients do not slow
//! down when the system does. A closed loop would hide an outage as a
//! lower rate of fine-looking operations. At most `concurrency` operations
//! are in flight; a start that finds every slot busy is recorded at once
//! as a failed operation of class `overloaded`, so the offered rate stays
//! visible in the figures.
//!
//! Each operation is bounded by the load's timeout and counts toward its
//! latency everything a client would wait for: connecting (SQL connections
//! are opened lazily, inside an operation), the query or request, reading
//! the whole response. Failures are recorded by class ([`OpError::class`]),
//! never as messages, so the recorder's label set stays small.
//!
//! The helpers here (connections, requests, commands) are shared with the
//! probes.

use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_postgres::{Config, NoTls};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

use super::recorder::Recorder;
use super::spec::{Load, LoadKind};

/// Bytes of a command's stdout and stderr kept (the end of each): enough
/// for a number, a last line or an error message in a debug log.
pub const COMMAND_TAIL: usize = 4096;
/// How long a dropped PostgreSQL connection may take to say goodbye
/// (Terminate) before its socket is simply closed: a blackholed connection
/// must not linger.
const PG_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Longest message kept in an error (connect failures carry the OS's or
/// the server's text, for logs only).
const MAX_MESSAGE: usize = 256;

/// Why an operation (or a probe reading) failed. Each variant maps to one
/// short class ([`OpError::class`]) the recorder counts.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum OpError {
    /// Slower than the timeout.
    #[error("timed out")]
    Timeout,
    /// The load or probe is misconfigured (bad DSN, URL or method).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Could not connect to the upstream (client side saw it fail).
    #[error("connect failed: {0}")]
    Connect(String),
    /// The upstream refused the TCP connection.
    #[error("connection refused by the upstream")]
    Refused,
    /// The upstream reset the connection.
    #[error("connection reset by the upstream")]
    Reset,
    /// An established connection was lost.
    #[error("connection closed")]
    Closed,
    /// The server answered with a SQLSTATE.
    #[error("server error, SQLSTATE {0}")]
    SqlState(String),
    /// An HTTP status other than the one expected.
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    /// The command exited nonzero.
    #[error("command exited with {0}")]
    Exit(i32),
    /// The command was killed by a signal.
    #[error("command killed by a signal")]
    Signal,
    /// The command could not be started.
    #[error("cannot spawn the command: {0}")]
    Spawn(String),
    /// A probe's query returned nothing.
    #[error("empty result")]
    Empty,
    /// A probe read NaN.
    #[error("value is NaN")]
    Nan,
    /// A probe's answer was not what was expected (not JSON, wrong shape,
    /// too large, an API error).
    #[error("unexpected answer: {0}")]
    Parse(String),
    /// Anything else (a protocol or I/O error mid-operation).
    #[error("{0}")]
    Other(String),
}

impl OpError {
    /// The short class recorded: `timeout`, `config`, `connect`, `refused`,
    /// `reset`, `closed`, `sqlstate XXXXX`, `status NNN`, `exit N`,
    /// `signal`, `spawn`, `empty`, `nan`, `parse`, `error`.
    pub fn class(&self) -> String {
        match self {
            OpError::Timeout => "timeout".into(),
            OpError::Config(_) => "config".into(),
            OpError::Connect(_) => "connect".into(),
            OpError::Refused => "refused".into(),
            OpError::Reset => "reset".into(),
            OpError::Closed => "closed".into(),
            OpError::SqlState(s) => format!("sqlstate {s}"),
            OpError::Status(s) => format!("status {s}"),
            OpError::Exit(n) => format!("exit {n}"),
            OpError::Signal => "signal".into(),
            OpError::Spawn(_) => "spawn".into(),
            OpError::Empty => "empty".into(),
            OpError::Nan => "nan".into(),
            OpError::Parse(_) => "parse".into(),
            OpError::Other(_) => "error".into(),
        }
    }
}

/// A message cut to [`MAX_MESSAGE`] bytes.
fn msg(e: impl std::fmt::Display) -> String {
    let mut s = e.to_string();
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Runs `f` bounded by `limit`; returns the time waited and the outcome
/// ([`OpError::Timeout`] when the limit passed, the time waited then being
/// at least `limit`).
pub(super) async fn timed<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, OpError>>,
) -> (Duration, Result<T, OpError>) {
    let start = Instant::now();
    let r = match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(OpError::Timeout),
    };
    (start.elapsed(), r)
}

// ---------------------------------------------------------------- SQL

/// A PostgreSQL connection whose driver task ends when it is dropped.
pub(super) struct PgConn {
    /// Dropped first: the driver then sends Terminate and ends.
    pub(super) client: tokio_postgres::Client,
    /// Then the driver is told; it gets [`PG_CLOSE_GRACE`] to finish.
    _close: DropGuard,
}

/// Parses a DSN, URL (`postgres://…`) or key=value.
pub(super) fn pg_config(dsn: &str) -> Result<Config, OpError> {
    let config = Config::from_str(dsn).map_err(|e| OpError::Config(format!("dsn: {}", msg(e))))?;
    if config.get_hosts().is_empty() {
        return Err(OpError::Config("dsn: no host".into()));
    }
    Ok(config)
}

/// Connects (no TLS) and spawns the connection's driver.
pub(super) async fn pg_connect(config: &Config) -> Result<PgConn, OpError> {
    let (client, conn) = config
        .connect(NoTls)
        .await
        .map_err(|e| pg_error(&e, true))?;
    let close = CancellationToken::new();
    let closed = close.clone();
    tokio::spawn(async move {
        let mut conn = conn;
        tokio::select! {
            r = &mut conn => {
                if let Err(e) = r {
                    debug!(error = %e, "postgres connection ended");
                }
            }
            _ = closed.cancelled() => {
                if tokio::time::timeout(PG_CLOSE_GRACE, conn).await.is_err() {
                    debug!("postgres connection did not close in time; dropped");
                }
            }
        }
    });
    Ok(PgConn {
        client,
        _close: close.drop_guard(),
    })
}

/// The class of a driver error: the SQLSTATE when the server sent one
/// (also while connecting: `sqlstate 53300` says more than `connect`).
pub(super) fn pg_error(e: &tokio_postgres::Error, connecting: bool) -> OpError {
    if let Some(code) = e.code() {
        OpError::SqlState(code.code().to_string())
    } else if connecting {
        OpError::Connect(msg(e))
    } else if e.is_closed() {
        OpError::Closed
    } else {
        OpError::Other(msg(e))
    }
}

/// Cancel requests in flight at once, process-wide: enough for every
/// load's timeouts in a burst, bounded so a blackholed server cannot pile
/// up tasks (a cancel beyond it is skipped; the backend then ends when it
/// next writes to its closed socket).
static CANCELS: Semaphore = Semaphore::const_new(32);
/// A cancel request is a connect and a 16-byte packet; a server that takes
/// longer is unreachable anyway.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends a cancel request for the query in flight if dropped while armed
/// (the operation timed out or the load stopped): without it the server
/// would run an abandoned `pg_sleep(60)` to its end, holding a backend per
/// timed-out operation until `max_connections` is reached.
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(token) = self.0.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(permit) = CANCELS.try_acquire() else {
            debug!("too many cancel requests in flight; this one is skipped");
            return;
        };
        rt.spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(NoTls)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "cancel request failed"),
                Err(_) => debug!("cancel request timed out"),
            }
        });
    }
}

/// Runs `query` with the simple protocol (any SQL text, several statements
/// included); cancels it on the server if dropped before it completes.
pub(super) async fn pg_query(
    c: &PgConn,
    query: &str,
) -> Result<Vec<tokio_postgres::SimpleQueryMessage>, OpError> {
    let mut armed = CancelOnDrop(Some(c.client.cancel_token()));
    let r = c.client.simple_query(query).await;
    armed.0 = None;
    r.map_err(|e| pg_error(&e, false))
}

/// Whether a connection survives this error: a server error leaves it
/// usable, as in any pool; anything else may have broken it.
pub(super) fn pg_keeps(e: &OpError) -> bool {
    matches!(e, OpError::SqlState(_))
}

struct SqlOp {
    config: Config,
    /// The statements of one operation.
    query: Vec<String>,
    /// Run on each new connection first.
    setup: Option<String>,
    /// Never reuse a connection.
    per_operation: bool,
    /// Idle connections; at most one per slot, since each operation holds
    /// one slot and returns at most one connection.
    idle: Mutex<Vec<PgConn>>,
}

impl SqlOp {
    fn take(&self) -> Option<PgConn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if !c.client.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn put(&self, c: PgConn) {
        if self.per_operation {
            return;
        }
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    async fn once(&self) -> Result<(), OpError> {
        let conn = match self.take() {
            Some(c) => c,
            None => {
                let c = pg_connect(&self.config).await?;
                if let Some(setup) = &self.setup {
                    pg_query(&c, setup).await?;
                }
                c
            }
        };
        let mut result = Ok(());
        for step in &self.query {
            if let Err(e) = pg_query(&conn, step).await {
                result = Err(e);
                break;
            }
        }
        match result {
            Ok(()) => {
                self.put(conn);
                Ok(())
            }
            Err(err) => {
                // A server error leaves the connection usable, but perhaps
                // inside a failed transaction: end it before reuse (outside
                // one, ROLLBACK is a harmless warning).
                if pg_keeps(&err) && pg_query(&conn, "ROLLBACK").await.is_ok() {
                    self.put(conn);
                }
                Err(err)
            }
        }
    }
}

// ---------------------------------------------------------------- HTTP

/// The HTTP client of loads and probes: keep-alive pool, no Nagle.
pub(super) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client keeping up to `idle` connections per host.
pub(super) fn http_client(idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .build(connector)
}

/// Parses an `http://` URL.
pub(super) fn http_uri(url: &str) -> Result<Uri, OpError> {
    crate::http::client_uri(url).map_err(|e| OpError::Config(format!("url `{url}`: {e}")))
}

/// Sends a request and reads the whole response body, keeping at most
/// `keep` bytes of it (a longer body is an error when `keep > 0`, drained
/// and discarded otherwise). Returns the status and the kept bytes.
pub(super) async fn http_call(
    client: &HttpClient,
    method: Method,
    uri: Uri,
    body: Bytes,
    keep: usize,
) -> Result<(u16, Vec<u8>), OpError> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(body))
        .map_err(|e| OpError::Config(msg(e)))?;
    let resp = client.request(req).await.map_err(|e| {
        if e.is_connect() {
            OpError::Connect(msg(&e))
        } else {
            OpError::Other(msg(&e))
        }
    })?;
    let status = resp.status().as_u16();
    let kept = read_body(resp.into_body(), keep).await?;
    Ok((status, kept))
}

async fn read_body(mut body: Incoming, keep: usize) -> Result<Vec<u8>, OpError> {
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| OpError::Other(msg(e)))?;
        if keep == 0 {
            continue;
        }
        if let Ok(data) = frame.into_data() {
            if kept.len() + data.len() > keep {
                return Err(OpError::Parse(format!("response body over {keep} bytes")));
            }
            kept.extend_from_slice(&data);
        }
    }
    Ok(kept)
}

/// Success by status: `expect`, or any 2xx.
pub(super) fn status_ok(status: u16, expect: &[u16]) -> Result<(), OpError> {
    let ok = if expect.is_empty() {
        (200..300).contains(&status)
    } else {
        expect.contains(&status)
    };
    if ok {
        Ok(())
    } else {
        Err(OpError::Status(status))
    }
}

struct HttpOp {
    client: HttpClient,
    method: Method,
    uri: Uri,
    body: Bytes,
    expect: Vec<u16>,
}

impl HttpOp {
    async fn once(&self) -> Result<(), OpError> {
        let (status, _) = http_call(
            &self.client,
            self.method.clone(),
            self.uri.clone(),
            self.body.clone(),
            0,
        )
        .await?;
        status_ok(status, &self.expect)
    }
}

// ---------------------------------------------------------------- TCP

fn io_error(e: &std::io::Error) -> OpError {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => OpError::Refused,
        std::io::ErrorKind::ConnectionReset => OpError::Reset,
        _ => OpError::Connect(msg(e)),
    }
}

async fn tcp_once(addr: &str) -> Result<(), OpError> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| io_error(&e))?;
    match s.shutdown().await {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(OpError::Reset),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------- command

/// What a finished command left.
pub(super) struct CommandOutput {
    /// The last [`COMMAND_TAIL`] bytes of stdout (stderr's end goes to
    /// the debug log when the command fails).
    pub(super) stdout: Vec<u8>,
}

/// Kills a command's whole process group when dropped: `sh -c` may leave
/// children (a pipeline, a background job) that `kill_on_drop`, which only
/// kills the shell, would orphan at every timeout.
struct KillGroup(Option<i32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.filter(|p| *p > 0) {
            // SAFETY: kill(2) has no memory effects; the group is the one
            // created for this command (process_group(0) below).
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Runs `sh -c cmd` (stdin null, outputs drained and their ends kept).
/// Success is exit 0. When the shell exits, or when this future is dropped
/// (a timeout, a stop), whatever is left of its process group is killed.
pub(super) async fn run_command(cmd: &str) -> Result<CommandOutput, OpError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| OpError::Spawn(msg(e)))?;
    let group = KillGroup(child.id().and_then(|p| i32::try_from(p).ok()));
    let out = child.stdout.take();
    let err = child.stderr.take();
    let wait = async {
        let status = child.wait().await;
        // Left-over children would keep the pipes open: end them now.
        drop(group);
        status
    };
    let (stdout, stderr, status) = tokio::join!(tail(out), tail(err), wait);
    let status = status.map_err(|e| OpError::Other(msg(e)))?;
    match status.code() {
        Some(0) => Ok(CommandOutput { stdout }),
        Some(n) => {
            debug!(command = cmd, exit = n, stderr = %String::from_utf8_lossy(&stderr), "command failed");
            Err(OpError::Exit(n))
        }
        None => Err(OpError::Signal),
    }
}

/// Reads `r` to its end, keeping the last [`COMMAND_TAIL`] bytes.
async fn tail<R: AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    let Some(mut r) = r else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; COMMAND_TAIL];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > COMMAND_TAIL {
                    kept.drain(..kept.len() - COMMAND_TAIL);
                }
            }
        }
    }
    kept
}

// ---------------------------------------------------------------- the load

/// One kind of operation, set up once per load.
enum Operation {
    Sql(SqlOp),
    Http(HttpOp),
    Tcp(String),
    Command(String),
    /// The load's configuration is unusable: every operation fails.
    Broken(OpError),
}

impl Operation {
    fn new(load: &Load) -> Self {
        let built = match &load.kind {
            LoadKind::Sql {
                dsn,
                query,
                setup,
                per_operation,
            } => pg_config(dsn).map(|config| {
                Operation::Sql(SqlOp {
                    config,
                    query: query.clone(),
                    setup: setup.clone(),
                    per_operation: *per_operation,
                    idle: Mutex::new(Vec::new()),
                })
            }),
            LoadKind::Http {
                url,
                method,
                body,
                expect_status,
            } => http_uri(url).and_then(|uri| {
                let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| OpError::Config(format!("method `{method}`")))?;
                Ok(Operation::Http(HttpOp {
                    client: http_client(load.concurrency),
                    method,
                    uri,
                    body: body.clone().map(Bytes::from).unwrap_or_default(),
                    expect: expect_status.clone(),
                }))
            }),
            LoadKind::Tcp { addr } => Ok(Operation::Tcp(addr.clone())),
            LoadKind::Command { run } => Ok(Operation::Command(run.clone())),
        };
        built.unwrap_or_else(|e| {
            warn!(load = %load.name, error = %e, "every operation of this load will fail (class `config`)");
            Operation::Broken(e)
        })
    }

    async fn once(&self) -> Result<(), OpError> {
        match self {
            Operation::Sql(op) => op.once().await,
            Operation::Http(op) => op.once().await,
            Operation::Tcp(addr) => tcp_once(addr).await,
            Operation::Command(cmd) => run_command(cmd).await.map(|_| ()),
            Operation::Broken(e) => Err(e.clone()),
        }
    }
}

/// Runs a load until `stop` is cancelled, recording every operation in
/// `rec`. Never returns before `stop` (the runner takes an early end for a
/// crash) and never panics on I/O or bad input: a misconfigured load fails
/// every operation with class `config`. On `stop`, no new operation
/// starts and those in flight are dropped (cancelled, not recorded).
pub async fn run(load: Load, rec: Arc<Recorder>, stop: CancellationToken) {
    let op = Arc::new(Operation::new(&load));
    let slots = Arc::new(Semaphore::new(
        load.concurrency.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut inflight: JoinSet<()> = JoinSet::new();
    let begin = Instant::now();
    let mut n: u64 = 0;
    loop {
        // Start times from the schedule, not from the previous start, so
        // neither timer slack nor a slow system lowers the offered rate.
        let Some(at) = Duration::try_from_secs_f64(n as f64 / load.rate)
            .ok()
            .filter(|_| load.rate.is_finite() && load.rate > 0.0)
            .and_then(|d| begin.checked_add(d))
        else {
            warn!(load = %load.name, rate = load.rate, "no further operation can be scheduled");
            break;
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(at) => {}
        }
        n += 1;
        while inflight.try_join_next().is_some() {}
        let start = Instant::now();
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            rec.error(start, None, "overloaded");
            continue;
        };
        let (op, rec, limit) = (op.clone(), rec.clone(), load.timeout);
        inflight.spawn(async move {
            let _slot = permit;
            let (latency, r) = timed(limit, op.once()).await;
            match r {
                Ok(()) => rec.ok(start, latency, None),
                Err(e) => {
                    debug!(error = %e, "operation failed");
                    rec.error(start, Some(latency), &e.class());
                }
            }
        });
    }
    // Only reached when the schedule cannot go on (a rate of 0 or NaN):
    // idle until told to stop, as the runner expects.
    stop.cancelled().await;
}

#[cfg(test)]
pub(crate) mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use hyper::Response;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;
    use crate::experiment::recorder::Summary;

    const PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// A tiny HTTP server on port 0: `answer(path and query)` gives the
    /// status and body. Listening when this returns.
    pub(crate) async fn http_server(
        answer: impl Fn(&str) -> (u16, String) + Send + Sync + 'static,
    ) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let pq = req
                            .uri()
                            .path_and_query()
                            .map_or(String::new(), |p| p.to_string());
                        let (status, body) = answer(&pq);
                        async move {
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn load(kind: LoadKind, rate: f64, concurrency: usize, timeout: Duration) -> Load {
        Load {
            name: "test".into(),
            kind,
            rate,
            concurrency,
            timeout,
        }
    }

    fn sql(query: &str) -> LoadKind {
        LoadKind::Sql {
            dsn: PG.into(),
            query: vec![query.into()],
            setup: None,
            per_operation: false,
        }
    }

    /// Runs `load` for `for_`, checks it had not ended by itself, lets the
    /// operations started in that time finish (polling, up to the load's
    /// timeout), stops it and checks it ends promptly; returns the summary
    /// of the operations started in that time.
    async fn drive(load: Load, for_: Duration) -> Summary {
        let t0 = Instant::now();
        let rec = Recorder::new(t0);
        let stop = CancellationToken::new();
        let expected = ((for_.as_secs_f64() * load.rate).floor() as u64).saturating_sub(1);
        let deadline = load.timeout + Duration::from_secs(1);
        let task = tokio::spawn(run(load, rec.clone(), stop.clone()));
        tokio::time::sleep(for_).await;
        assert!(!task.is_finished(), "a load must run until stopped");
        let end = Instant::now();
        let _ = tokio::time::timeout(deadline, async {
            while rec.summary(t0, end).ops < expected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("a stopped load ends promptly")
            .expect("no panic");
        rec.summary(t0, end)
    }

    /// Polls `f` until true, at most 5 s.
    pub(crate) async fn wait_until(mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "condition not met in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn class(s: &Summary, c: &str) -> u64 {
        s.errors_by_class
            .iter()
            .find(|(k, _)| k == c)
            .map_or(0, |(_, n)| *n)
    }

    fn script(query: &[&str], setup: Option<&str>, per_operation: bool) -> LoadKind {
        LoadKind::Sql {
            dsn: PG.into(),
            query: query.iter().map(|q| q.to_string()).collect(),
            setup: setup.map(String::from),
            per_operation,
        }
    }

    #[tokio::test]
    async fn setup_runs_once_per_connection_and_per_operation_reconnects() {
        // `setup` makes a temp table on each new connection; each operation
        // creates another temp table of a fixed name, which only works on
        // a fresh connection: pooled, the second use fails with 42P07.
        let q = ["CREATE TEMP TABLE shakedown_once (x int)"];
        let setup = Some("CREATE TEMP TABLE shakedown_setup (x int)");
        let fresh = drive(
            load(script(&q, setup, true), 20.0, 8, Duration::from_secs(2)),
            Duration::from_millis(500),
        )
        .await;
        assert!(fresh.ops >= 8 && fresh.errors == 0, "{fresh:?}");
        assert_eq!(class(&fresh, "sqlstate 42P07"), 0, "{fresh:?}");
        let pooled = drive(
            load(script(&q, setup, false), 20.0, 1, Duration::from_secs(2)),
            Duration::from_millis(500),
        )
        .await;
        assert!(class(&pooled, "sqlstate 42P07") >= 5, "{pooled:?}");
    }

    #[tokio::test]
    async fn a_failed_step_rolls_the_transaction_back() {
        // Every operation fails at its second step; the next one starts
        // clean (22012 each time, never 25P02 "current transaction is
        // aborted"), on the same pooled connection.
        let q = ["BEGIN", "SELECT 1/0", "COMMIT"];
        let s = drive(
            load(script(&q, None, false), 20.0, 1, Duration::from_secs(2)),
            Duration::from_millis(500),
        )
        .await;
        assert!(s.ops >= 8, "{s:?}");
        // A start that finds the one slot still busy (the first operation
        // also connects) is `overloaded`; every other one is 22012.
        assert!(class(&s, "sqlstate 22012") >= 5, "{s:?}");
        assert_eq!(
            class(&s, "sqlstate 22012") + class(&s, "overloaded"),
            s.ops,
            "never 25P02: {s:?}"
        );
    }

    #[tokio::test]
    async fn misconfigured_load_still_offers_its_rate() {
        // Each start fails at once as `config`; the schedule holds: 200/s
        // for half a second is 100 starts.
        let kind = LoadKind::Http {
            url: "https://example.invalid/".into(),
            method: "GET".into(),
            body: None,
            expect_status: vec![],
        };
        let s = drive(
            load(kind, 200.0, 4, Duration::from_secs(1)),
            Duration::from_millis(500),
        )
        .await;
        assert!((90..=102).contains(&s.ops), "{s:?}");
        assert_eq!(class(&s, "config"), s.ops, "{s:?}");
    }

    #[tokio::test]
    async fn sql_rate_is_kept_and_ops_succeed() {
        let s = drive(
            load(sql("SELECT 1; SELECT 2"), 50.0, 4, Duration::from_secs(1)),
            Duration::from_secs(1),
        )
        .await;
        assert!((45..=52).contains(&s.ops), "{s:?}");
        assert_eq!(s.errors, 0, "{s:?}");
        assert!(s.p99.is_some_and(|p| p < 0.5), "{s:?}");
    }

    #[tokio::test]
    async fn sql_slower_than_timeout_times_out() {
        let s = drive(
            load(
                sql("SELECT pg_sleep(0.2)"),
                20.0,
                4,
                Duration::from_millis(50),
            ),
            Duration::from_millis(500),
        )
        .await;
        assert!(s.ops >= 8, "{s:?}");
        assert_eq!(class(&s, "timeout"), s.ops, "{s:?}");
        let p50 = s.p50.expect("timeouts have a latency");
        assert!(
            (0.05..0.2).contains(&p50),
            "latency is the time waited: {p50}"
        );
    }

    #[tokio::test]
    async fn timed_out_query_is_cancelled_on_the_server() {
        let marker = format!("cancel-test-{}", std::process::id());
        let s = drive(
            load(
                sql(&format!("SELECT pg_sleep(30) /* {marker} */")),
                20.0,
                4,
                Duration::from_millis(100),
            ),
            Duration::from_millis(300),
        )
        .await;
        assert!(s.ops >= 3, "{s:?}");
        assert_eq!(class(&s, "timeout"), s.ops, "{s:?}");
        let config = pg_config(PG).expect("dsn");
        let watcher = pg_connect(&config).await.expect("connect");
        let count = format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let rows = pg_query(&watcher, &count).await.expect("count");
            let n = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            });
            if n.as_deref() == Some("0") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "abandoned queries still run: {n:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn sql_error_is_its_sqlstate() {
        let s = drive(
            load(
                sql("SELECT * FROM no_such_table_here"),
                20.0,
                2,
                Duration::from_secs(1),
            ),
            Duration::from_millis(300),
        )
        .await;
        assert!(s.ops >= 4, "{s:?}");
        assert_eq!(class(&s, "sqlstate 42P01"), s.ops, "{s:?}");
    }

    #[tokio::test]
    async fn open_model_records_overload() {
        // One slot, operations of 0.5 s, 20 starts a second: most starts
        // find the slot busy, and the offered rate is still 20/s.
        let s = drive(
            load(sql("SELECT pg_sleep(0.5)"), 20.0, 1, Duration::from_secs(2)),
            Duration::from_millis(800),
        )
        .await;
        assert!((14..=17).contains(&s.ops), "offered rate kept: {s:?}");
        let over = class(&s, "overloaded");
        assert!(over >= s.ops - 2, "{s:?}");
        assert_eq!(s.errors, over, "{s:?}");
    }

    #[tokio::test]
    async fn bad_dsn_fails_every_op_as_config() {
        assert!(pg_config("user=postgres").is_err(), "no host");
        let kind = LoadKind::Sql {
            dsn: "host=127.0.0.1 port=notaport".into(),
            query: vec!["SELECT 1".into()],
            setup: None,
            per_operation: false,
        };
        let s = drive(
            load(kind, 50.0, 4, Duration::from_secs(1)),
            Duration::from_millis(200),
        )
        .await;
        assert!(s.ops >= 5, "{s:?}");
        assert_eq!(class(&s, "config"), s.ops, "{s:?}");
    }

    #[tokio::test]
    async fn sql_refused_is_connect() {
        let port = closed_port().await;
        let kind = LoadKind::Sql {
            dsn: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            query: vec!["SELECT 1".into()],
            setup: None,
            per_operation: false,
        };
        let s = drive(
            load(kind, 50.0, 4, Duration::from_secs(1)),
            Duration::from_millis(200),
        )
        .await;
        assert!(s.ops >= 5, "{s:?}");
        assert_eq!(class(&s, "connect"), s.ops, "{s:?}");
    }

    /// A port nothing listens on (bound, then released).
    async fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn tcp_connects_or_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { while listener.accept().await.is_ok() {} });
        let s = drive(
            load(
                LoadKind::Tcp {
                    addr: addr.to_string(),
                },
                100.0,
                4,
                Duration::from_secs(1),
            ),
            Duration::from_millis(300),
        )
        .await;
        assert!(s.ops >= 20 && s.errors == 0, "{s:?}");

        let port = closed_port().await;
        let s = drive(
            load(
                LoadKind::Tcp {
                    addr: format!("127.0.0.1:{port}"),
                },
                100.0,
                4,
                Duration::from_secs(1),
            ),
            Duration::from_millis(300),
        )
        .await;
        assert!(s.ops >= 20, "{s:?}");
        assert_eq!(class(&s, "refused"), s.ops, "{s:?}");
    }

    #[tokio::test]
    async fn http_status_decides() {
        let addr = http_server(|pq| match pq {
            "/ok" => (200, "fine".into()),
            _ => (503, "down".into()),
        })
        .await;
        let http = |path: &str, expect: Option<u16>| LoadKind::Http {
            url: format!("http://{addr}{path}"),
            method: "post".into(),
            body: Some("{}".into()),
            expect_status: expect.into_iter().collect(),
        };
        let t = Duration::from_secs(1);
        let d = Duration::from_millis(300);
        let s = drive(load(http("/ok", None), 100.0, 4, t), d).await;
        assert!(s.ops >= 20 && s.errors == 0, "{s:?}");
        let s = drive(load(http("/down", None), 100.0, 4, t), d).await;
        assert!(s.ops >= 20, "{s:?}");
        assert_eq!(class(&s, "status 503"), s.ops, "{s:?}");
        let s = drive(load(http("/down", Some(503)), 100.0, 4, t), d).await;
        assert!(
            s.ops >= 20 && s.errors == 0,
            "expected 503 is success: {s:?}"
        );
        let s = drive(load(http("/ok", Some(201)), 100.0, 4, t), d).await;
        assert_eq!(class(&s, "status 200"), s.ops, "{s:?}");

        let port = closed_port().await;
        let kind = LoadKind::Http {
            url: format!("http://127.0.0.1:{port}/"),
            method: "GET".into(),
            body: None,
            expect_status: vec![],
        };
        let s = drive(load(kind, 50.0, 4, t), d).await;
        assert_eq!(class(&s, "connect"), s.ops, "{s:?}");
    }

    #[tokio::test]
    async fn command_exit_status_decides() {
        let cmd = |run: &str| LoadKind::Command { run: run.into() };
        let t = Duration::from_secs(2);
        let d = Duration::from_millis(300);
        let s = drive(load(cmd("true"), 30.0, 4, t), d).await;
        assert!(s.ops >= 5 && s.errors == 0, "{s:?}");
        let s = drive(load(cmd("exit 3"), 30.0, 4, t), d).await;
        assert!(s.ops >= 5, "{s:?}");
        assert_eq!(class(&s, "exit 3"), s.ops, "{s:?}");
        let s = drive(load(cmd("kill -9 $$"), 30.0, 4, t), d).await;
        assert_eq!(class(&s, "signal"), s.ops, "{s:?}");
    }

    #[tokio::test]
    async fn command_slower_than_timeout_is_killed() {
        let kind = LoadKind::Command {
            run: "sleep 5 | cat".into(),
        };
        let s = drive(
            load(kind, 20.0, 8, Duration::from_millis(100)),
            Duration::from_millis(300),
        )
        .await;
        assert!(s.ops >= 4, "{s:?}");
        assert_eq!(class(&s, "timeout"), s.ops, "{s:?}");
        assert!(s.max.is_some_and(|m| m < 1.0), "{s:?}");
    }

    #[tokio::test]
    async fn stop_cancels_operations_in_flight() {
        let t0 = Instant::now();
        let rec = Recorder::new(t0);
        let stop = CancellationToken::new();
        let kind = LoadKind::Command {
            run: "sleep 5".into(),
        };
        let task = tokio::spawn(run(
            load(kind, 10.0, 2, Duration::from_secs(10)),
            rec.clone(),
            stop.clone(),
        ));
        wait_until(|| rec.summary(t0, Instant::now()).ops >= 1).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("ends at once, not after the sleeps")
            .expect("no panic");
    }

    #[tokio::test]
    async fn sql_connections_are_reused() {
        let kind = sql("SELECT pg_backend_pid()");
        let l = load(kind, 100.0, 2, Duration::from_secs(1));
        let op = Operation::new(&l);
        for _ in 0..10 {
            op.once().await.expect("query");
        }
        let Operation::Sql(sql) = &op else {
            panic!("sql operation expected");
        };
        assert_eq!(
            sql.idle.lock().expect("lock").len(),
            1,
            "one connection, reused"
        );
    }

    #[test]
    fn classes() {
        assert_eq!(OpError::SqlState("57014".into()).class(), "sqlstate 57014");
        assert_eq!(OpError::Status(503).class(), "status 503");
        assert_eq!(OpError::Exit(2).class(), "exit 2");
        assert_eq!(OpError::Timeout.class(), "timeout");
        assert!(msg("é".repeat(400)).len() <= MAX_MESSAGE);
    }
}
