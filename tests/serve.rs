//! The real binary: `serve` starts from a config, relays, holds clients past
//! its descriptor limit in the backlog instead of resetting them, and shuts down cleanly on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{connect, echo_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    child: Killed,
    lines: mpsc::Receiver<String>,
    _dir: TempDir,
}

/// A child process killed and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `shakedown serve` on a config with one proxy to `upstream`,
/// optionally under a file-descriptor limit; returns once the proxy is
/// bound, with its address (read from the log, not slept on).
fn serve(upstream: SocketAddr, nofile: Option<u32>) -> (Server, SocketAddr) {
    let dir = std::env::temp_dir().join(format!(
        "shakedown-serve-{}-{}",
        std::process::id(),
        upstream.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[proxy]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\n"
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_shakedown");
    let script = match nofile {
        Some(n) => format!("ulimit -n {n} && exec \"$0\" serve --config \"$1\" --seed 1 --port 0"),
        None => "exec \"$0\" serve --config \"$1\" --seed 1 --port 0".to_string(),
    };
    let mut child = Command::new("bash")
        .args(["-c", &script, bin, cfg.to_str().unwrap()])
        .env("RUST_LOG", "shakedown=debug")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Killed(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("serve logs `started proxy`");
        if line.contains("started proxy") {
            let listen = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("listen="))
                .expect("listen= in the log line");
            break listen.parse().unwrap();
        }
    };
    let server = Server {
        child,
        lines: rx,
        _dir: TempDir(dir),
    };
    (server, addr)
}

async fn echo_once(addr: SocketAddr, msg: &[u8]) {
    let mut s = connect(addr).await;
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("echo")
        .unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test]
async fn serve_relays_and_stops_cleanly_on_sigterm() {
    let echo = echo_server().await;
    let (mut server, addr) = serve(echo, None);
    echo_once(addr, b"through the binary").await;
    let mut open = connect(addr).await;

    let pid = server.child.0.id() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = server.child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "serve did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    // The open connection was closed and the port no longer listens.
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf))
        .await
        .expect("connection closed at shutdown")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let log: Vec<String> = server.lines.try_iter().collect();
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:?}");
}

#[tokio::test]
async fn clients_past_the_descriptor_limit_wait_and_are_served_not_reset() {
    let echo = echo_server().await;
    // 48 descriptors: 14 connection slots (see proxy::slots::capacity).
    let (server, addr) = serve(echo, Some(48));
    // Hold far more connections than the limit allows (two fds each).
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(connect(addr).await);
    }
    // One more, past the limit, that has already sent its bytes.
    let mut waiter = connect(addr).await;
    waiter.write_all(b"waited in the backlog").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log: Vec<String> = server.lines.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("connection limit reached")),
        "the slot limit was never reached; raise the connection count. Log: {log:?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("unable to open connection")),
        "a client was accepted without a descriptor for its upstream: {log:?}"
    );
    drop(held);
    // Served in order as slots free up: echoed, not reset.
    let mut buf = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(10), waiter.read_exact(&mut buf))
        .await
        .expect("the waiting client is served")
        .expect("the waiting client is not reset");
    assert_eq!(&buf, b"waited in the backlog");
    echo_once(addr, b"still accepting").await;
}

#[tokio::test]
async fn starts_unchanged_from_a_toxiproxy_server_command_line() {
    let echo = echo_server().await;
    let dir = std::env::temp_dir().join(format!("shakedown-tps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = dir.join("toxiproxy.json");
    std::fs::write(
        &json,
        format!(
            r#"[{{"name":"echo","listen":"127.0.0.1:{port}","upstream":"{echo}","enabled":true}}]"#
        ),
    )
    .unwrap();
    // Exactly as a toxiproxy-server launch script passes them.
    let child = Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .arg("-host=127.0.0.1")
        .arg(format!("-port={api_port}"))
        .arg(format!("-config={}", json.display()))
        .arg("-proxy-metrics")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed however the test ends, so a failure leaves no server behind.
    let _child = Killed(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", api_port))
        .await
        .is_err()
    {
        assert!(t.elapsed() < Duration::from_secs(20), "API never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    echo_once(addr, b"populated from -config").await;
    let r = common::http::get(
        format!("127.0.0.1:{api_port}").parse().unwrap(),
        "/proxies/echo",
    )
    .await;
    assert_eq!(r.status, 200);
}
