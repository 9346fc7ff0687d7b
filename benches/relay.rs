//! In-process relay overhead: a shakedown proxy with no fault active against
//! a direct connection, with no external service.
//!
//! Why: `benches/relay.sh` measures the same thing with real clients
//! (pgbench, iperf3) but needs PostgreSQL and iperf3; this one runs anywhere
//! `cargo bench` does, so a regression of the fast path shows up on any
//! machine. Two workloads, each run direct and proxied, interleaved (the
//! order alternates every round so drift hits both sides alike):
//!
//! - ping-pong: one byte out, one byte back, [`PINGS`] times on one
//!   connection; the mean round trip is the relay's added latency.
//! - bulk: [`BULK_BYTES`] one way to a sink that acknowledges the last byte;
//!   the throughput is the relay's copying cost.
//!
//! The servers and the proxy run on one tokio runtime; the client is a plain
//! blocking socket on the main thread, so the timed loop is not scheduled
//! by the runtime it measures. Run with `cargo bench --bench relay`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shakedown::config::ProxyConfig;
use shakedown::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Rounds per workload and side: the median of five shrugs off one
/// disturbed round on a busy machine without making the bench slow.
const ROUNDS: usize = 5;
/// Round trips per ping-pong round: enough for the mean to settle; loopback
/// round trips take 20-150 µs depending on the machine (a VM's wake-ups are
/// slow), so a round stays under two seconds.
const PINGS: usize = 10_000;
/// Round trips before timing, so connection setup and cold caches are not
/// part of the figure.
const WARMUP_PINGS: usize = 500;
/// Bytes per bulk round: large enough that connection setup and the final
/// acknowledgement are noise, small enough for a fraction of a second.
const BULK_BYTES: u64 = 256 * 1024 * 1024;
/// Size of each write and read in the bulk client and sink: the proxy's own
/// fast-path buffer size, so neither end is the bottleneck.
const IO_CHUNK: usize = 64 * 1024;
/// Time allowed for the runtime to stop its tasks at the end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let shutdown = CancellationToken::new();

    let (echo, sink, registry) = rt.block_on(async {
        let echo = spawn_server(serve_echo).await?;
        let sink = spawn_server(serve_sink).await?;
        let registry = Registry::new(1, shutdown.clone());
        anyhow::Ok((echo, sink, registry))
    })?;
    // add_proxy binds and spawns its accept loop on the current runtime.
    let entered = rt.enter();
    let proxied_addr = |name: &str, upstream: SocketAddr| -> anyhow::Result<SocketAddr> {
        let proxy = registry
            .add_proxy(&ProxyConfig::new(
                name,
                "127.0.0.1:0",
                &upstream.to_string(),
            ))
            .with_context(|| format!("starting proxy {name}"))?;
        proxy.local_addr().context("proxy has no bound address")
    };
    let echo_proxy = proxied_addr("bench-echo", echo)?;
    let sink_proxy = proxied_addr("bench-sink", sink)?;

    println!(
        "relay bench: {ROUNDS} rounds per side, {} CPUs, no fault active",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let (direct, proxied) = interleaved(ping_pong, echo, echo_proxy)?;
    let (d_us, p_us) = (direct * 1e6, proxied * 1e6);
    println!(
        "ping-pong 1 B x {PINGS}: mean round trip direct {d_us:.1} µs, shakedown {p_us:.1} µs; \
         added {:.1} µs; ratio (direct/shakedown, as a rate) {:.2}",
        p_us - d_us,
        direct / proxied
    );

    let (direct, proxied) = interleaved(bulk, sink, sink_proxy)?;
    println!(
        "bulk {} MiB one way: direct {:.2} Gbit/s, shakedown {:.2} Gbit/s; \
         ratio (shakedown/direct) {:.2}",
        BULK_BYTES >> 20,
        direct * 8.0 / 1e9,
        proxied * 8.0 / 1e9,
        proxied / direct
    );

    registry.shutdown();
    shutdown.cancel();
    drop(entered);
    rt.shutdown_timeout(SHUTDOWN_GRACE);
    Ok(())
}

/// Runs `measure` [`ROUNDS`] times against each address, alternating which
/// goes first, and returns the medians (direct, proxied).
fn interleaved(
    measure: impl Fn(SocketAddr) -> anyhow::Result<f64>,
    direct: SocketAddr,
    proxied: SocketAddr,
) -> anyhow::Result<(f64, f64)> {
    let (mut d, mut p) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            d.push(measure(direct)?);
            p.push(measure(proxied)?);
        } else {
            p.push(measure(proxied)?);
            d.push(measure(direct)?);
        }
    }
    Ok((median(d), median(p)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Mean seconds per 1-byte round trip through `addr` (an echo server).
fn ping_pong(addr: SocketAddr) -> anyhow::Result<f64> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("client: connect {addr}"))?;
    s.set_nodelay(true).context("client: set_nodelay")?;
    let mut byte = [0u8; 1];
    let mut once = |s: &mut TcpStream| -> anyhow::Result<()> {
        s.write_all(&byte).context("client: write ping")?;
        s.read_exact(&mut byte).context("client: read pong")?;
        Ok(())
    };
    for _ in 0..WARMUP_PINGS {
        once(&mut s)?;
    }
    let start = Instant::now();
    for _ in 0..PINGS {
        once(&mut s)?;
    }
    Ok(start.elapsed().as_secs_f64() / PINGS as f64)
}

/// Bytes per second of [`BULK_BYTES`] sent to `addr` (a sink), timed from
/// the first byte to the sink's acknowledgement of the last.
fn bulk(addr: SocketAddr) -> anyhow::Result<f64> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("client: connect {addr}"))?;
    let chunk = vec![0xA5u8; IO_CHUNK];
    let start = Instant::now();
    s.write_all(&BULK_BYTES.to_be_bytes())
        .context("client: write length")?;
    let mut left = BULK_BYTES;
    while left > 0 {
        let n = left.min(IO_CHUNK as u64) as usize;
        s.write_all(&chunk[..n]).context("client: write data")?;
        left -= n as u64;
    }
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).context("client: read ack")?;
    let secs = start.elapsed().as_secs_f64();
    if ack[0] != 1 {
        bail!("sink: bad acknowledgement {}", ack[0]);
    }
    Ok(BULK_BYTES as f64 / secs)
}

/// Binds 127.0.0.1:0 and serves every connection with `serve` in its own
/// task; returns the bound address.
async fn spawn_server<F, Fut>(serve: F) -> anyhow::Result<SocketAddr>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("server: bind")?;
    let addr = listener.local_addr().context("server: local_addr")?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let conn = serve(socket);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    eprintln!("relay bench: server connection failed: {e}");
                }
            });
        }
    });
    Ok(addr)
}

/// Writes back every byte it reads, until EOF.
async fn serve_echo(mut socket: tokio::net::TcpStream) -> std::io::Result<()> {
    let (mut r, mut w) = socket.split();
    tokio::io::copy(&mut r, &mut w).await.map(|_| ())
}

/// Reads a big-endian u64 length, then that many bytes (discarded), then
/// answers one byte. Counting instead of waiting for EOF keeps the bench
/// independent of how the proxy relays a half-close.
async fn serve_sink(mut socket: tokio::net::TcpStream) -> std::io::Result<()> {
    let mut left = socket.read_u64().await?;
    let mut buf = vec![0u8; IO_CHUNK];
    while left > 0 {
        let want = left.min(IO_CHUNK as u64) as usize;
        let n = socket.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= n as u64;
    }
    socket.write_all(&[1]).await
}
