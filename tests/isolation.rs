//! A proxy whose upstream refuses or hangs must not delay other clients:
//! the upstream is dialled inside each connection's task, under a timeout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Harness, connect, echo_server, read_all};
use shakedown::config::ProxyConfig;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A listener whose accept queue is full: further SYNs are dropped by the
/// kernel, so a connect to it hangs, as to a black-holed host. Returns the
/// address and the sockets that keep it full.
fn hanging_upstream() -> (SocketAddr, Vec<std::net::TcpStream>, Socket) {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    // Fill the queue (backlog 0 still admits one or two).
    for _ in 0..4 {
        let f = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        f.set_nonblocking(true).unwrap();
        let _ = f.connect(&addr.into());
        fillers.push(std::net::TcpStream::from(f));
    }
    std::thread::sleep(Duration::from_millis(50));
    (addr, fillers, s)
}

/// A closed port: connects are refused at once.
fn refusing_upstream() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn hanging_upstream_does_not_stall_the_same_proxy_or_others() {
    let h = Harness::new(1);
    let (hang_addr, _fillers, _l) = hanging_upstream();
    let mut cfg = ProxyConfig::new("hang", "127.0.0.1:0", &hang_addr.to_string());
    cfg.connect_timeout = Duration::from_millis(600);
    let hang = h.registry.add_proxy(&cfg).unwrap();
    let hang_addr = hang.local_addr().unwrap();
    let echo = echo_server().await;
    let (_g, good_addr) = h.proxy("good", &echo.to_string(), vec![]);

    // Twenty clients of the hanging proxy, all waiting on their dials.
    let t = Instant::now();
    let mut waiting = Vec::new();
    for _ in 0..20 {
        waiting.push(tokio::spawn(async move {
            let mut s = connect(hang_addr).await;
            let (got, _) = read_all(&mut s, Duration::from_secs(10)).await;
            (got, Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Meanwhile the other proxy answers at once.
    let mut s = connect(good_addr).await;
    let t_good = Instant::now();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert!(
        t_good.elapsed() < Duration::from_millis(300),
        "other proxy stalled"
    );

    // Every waiting client is dropped at the connect timeout, together:
    // dials run in parallel, not one after another.
    for w in waiting {
        let (got, done) = w.await.unwrap();
        assert!(got.is_empty());
        let after = done - t;
        assert!(
            after >= Duration::from_millis(550),
            "dropped early: {after:?}"
        );
        assert!(
            after < Duration::from_millis(3000),
            "dials were serialised: {after:?}"
        );
    }
    assert!(
        hang.stats()
            .connect_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 20,
        "connect errors counted"
    );
}

#[tokio::test]
async fn refusing_upstream_closes_the_client_at_once() {
    let h = Harness::new(1);
    let dead = refusing_upstream();
    let (_p, addr) = h.proxy("dead", &dead.to_string(), vec![]);
    let echo = echo_server().await;
    let (_g, good) = h.proxy("alive", &echo.to_string(), vec![]);
    for _ in 0..10 {
        let t = Instant::now();
        let mut s = connect(addr).await;
        let (got, _) = read_all(&mut s, Duration::from_secs(5)).await;
        assert!(got.is_empty());
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    let mut s = connect(good).await;
    s.write_all(b"ok").await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
}
