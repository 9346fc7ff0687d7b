//! Each fault measured on loopback against real sockets.

mod common;

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, connect, echo_server, fault, read_all, sender_server};
use serde_json::json;
use shakedown::faults::Direction::{Downstream, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `msg` and waits for the echo; returns the round-trip time.
async fn ping(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let t = Instant::now();
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("echo within 10s")
        .unwrap();
    assert_eq!(buf, msg);
    t.elapsed()
}

#[tokio::test]
async fn latency_adds_the_asked_delay() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let (_p, addr) = h.proxy(
        "lat",
        &echo.to_string(),
        vec![fault("latency", Downstream, json!({"latency": 100}))],
    );
    let mut s = connect(addr).await;
    for _ in 0..5 {
        let rtt = ping(&mut s, b"hello").await;
        assert!(rtt >= Duration::from_millis(100), "rtt {rtt:?} < 100ms");
        assert!(
            rtt < Duration::from_millis(100 + 150),
            "rtt {rtt:?} far above 100ms"
        );
    }
}

#[tokio::test]
async fn chained_latencies_add_up() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let mut a = fault("latency", Upstream, json!({"latency": 60}));
    a.name = "a".into();
    let mut b = fault("latency", Upstream, json!({"latency": 40}));
    b.name = "b".into();
    let (_p, addr) = h.proxy("lat2", &echo.to_string(), vec![a, b]);
    let mut s = connect(addr).await;
    let rtt = ping(&mut s, b"x").await;
    assert!(rtt >= Duration::from_millis(100), "rtt {rtt:?}");
}

#[tokio::test]
async fn bandwidth_holds_the_rate_within_ten_percent() {
    let h = Harness::new(1);
    let data = Arc::new(common::payload(5, 1_000_000));
    let server = sender_server(data.clone()).await;
    // 500 KB/s: 1 MB takes 2 s.
    let (_p, addr) = h.proxy(
        "bw",
        &server.to_string(),
        vec![fault("bandwidth", Downstream, json!({"rate": 500}))],
    );
    let mut s = connect(addr).await;
    let t = Instant::now();
    let (got, end) = read_all(&mut s, Duration::from_secs(10)).await;
    let elapsed = t.elapsed().as_secs_f64();
    end.unwrap();
    assert!(got == *data, "bytes differ");
    let rate = got.len() as f64 / elapsed / 1000.0;
    assert!(
        (450.0..=550.0).contains(&rate),
        "rate {rate:.1} KB/s, wanted 500 ± 10%"
    );
}

#[tokio::test]
async fn timeout_drops_data_and_closes_after_the_quiet_period() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let (_p, addr) = h.proxy(
        "to",
        &echo.to_string(),
        vec![fault("timeout", Upstream, json!({"timeout": 300}))],
    );
    let mut s = connect(addr).await;
    let t = Instant::now();
    s.write_all(b"lost").await.unwrap();
    let (got, end) = read_all(&mut s, Duration::from_secs(5)).await;
    let elapsed = t.elapsed();
    assert!(got.is_empty(), "data passed a timeout fault: {got:?}");
    assert!(end.is_ok(), "closed, not timed out: {end:?}");
    assert!(
        elapsed >= Duration::from_millis(300),
        "closed after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "closed after {elapsed:?}"
    );
}

#[tokio::test]
async fn removing_a_timeout_closes_the_connections_it_affected() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let (p, addr) = h.proxy(
        "to0",
        &echo.to_string(),
        vec![fault("timeout", Upstream, json!({"timeout": 0}))],
    );
    let mut s = connect(addr).await;
    s.write_all(b"lost").await.unwrap();
    let mut buf = [0u8; 16];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf))
            .await
            .is_err(),
        "timeout 0 never closes by itself"
    );
    p.remove_fault("timeout_upstream").unwrap();
    let (got, end) = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(got.is_empty());
    assert!(end.is_ok(), "{end:?}");
}

#[tokio::test]
async fn blackhole_stops_data_without_an_error_and_heals_without_loss() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let (p, addr) = h.proxy(
        "bh",
        &echo.to_string(),
        vec![fault("blackhole", Downstream, json!({}))],
    );
    let mut s = connect(addr).await;
    s.write_all(b"are you there").await.unwrap();
    let mut buf = [0u8; 13];
    // A hang: neither data nor EOF nor an error.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf))
            .await
            .is_err(),
        "data or close passed a blackhole"
    );
    // Healing the partition delivers what was held.
    p.remove_fault("blackhole_downstream").unwrap();
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("held data delivered")
        .unwrap();
    assert_eq!(&buf, b"are you there");
    assert!(ping(&mut s, b"and now").await < Duration::from_secs(1));
}

#[tokio::test]
async fn blackhole_with_drop_discards() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let (p, addr) = h.proxy(
        "bhd",
        &echo.to_string(),
        vec![fault("blackhole", Upstream, json!({"drop": true}))],
    );
    let mut s = connect(addr).await;
    s.write_all(b"gone").await.unwrap();
    let mut buf = [0u8; 4];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf))
            .await
            .is_err()
    );
    p.remove_fault("blackhole_upstream").unwrap();
    // The dropped bytes never arrive; new bytes do.
    assert!(ping(&mut s, b"next").await < Duration::from_secs(1));
}

#[tokio::test]
async fn reset_peer_gives_the_client_econnreset() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let (_p, addr) = h.proxy(
        "rst",
        &echo.to_string(),
        vec![fault("reset_peer", Upstream, json!({"timeout": 50}))],
    );
    let mut s = connect(addr).await;
    s.write_all(b"boom").await.unwrap();
    let (got, end) = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(got.is_empty());
    let err = end.expect_err("a reset, not a clean close");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err:?}");
}

#[tokio::test]
async fn limit_data_closes_after_exactly_n_bytes() {
    let h = Harness::new(1);
    let data = Arc::new(common::payload(9, 100_000));
    let server = sender_server(data.clone()).await;
    let (_p, addr) = h.proxy(
        "lim",
        &server.to_string(),
        vec![fault("limit_data", Downstream, json!({"bytes": 12345}))],
    );
    let mut s = connect(addr).await;
    let (got, end) = read_all(&mut s, Duration::from_secs(5)).await;
    end.unwrap();
    assert_eq!(got.len(), 12345);
    assert_eq!(&got[..], &data[..12345]);
}

#[tokio::test]
async fn slow_close_delays_only_the_close() {
    let h = Harness::new(1);
    let data = Arc::new(b"payload".to_vec());
    let server = sender_server(data).await;
    let (_p, addr) = h.proxy(
        "sc",
        &server.to_string(),
        vec![fault("slow_close", Downstream, json!({"delay": 400}))],
    );
    let mut s = connect(addr).await;
    let t = Instant::now();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(300), "data was delayed");
    let (rest, end) = read_all(&mut s, Duration::from_secs(5)).await;
    end.unwrap();
    assert!(rest.is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "close after {:?}",
        t.elapsed()
    );
}

/// Runs `n` sequential connections through a proxy whose downstream
/// `limit_data` of 1 byte has toxicity 0.5; returns which were affected.
async fn toxicity_pattern(seed: u64, n: usize) -> Vec<bool> {
    let h = Harness::new(seed);
    let echo = echo_server().await;
    let mut f = fault("limit_data", Downstream, json!({"bytes": 1}));
    f.toxicity = 0.5;
    let (_p, addr) = h.proxy("tox", &echo.to_string(), vec![f]);
    let mut pattern = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = connect(addr).await;
        s.write_all(b"ab").await.unwrap();
        s.shutdown().await.unwrap();
        let (got, _) = read_all(&mut s, Duration::from_secs(5)).await;
        match got.as_slice() {
            b"a" => pattern.push(true),
            b"ab" => pattern.push(false),
            other => panic!("unexpected reply {other:?}"),
        }
    }
    pattern
}

#[tokio::test]
async fn toxicity_is_binomial_and_repeats_with_the_same_seed() {
    let n = 300;
    let first = toxicity_pattern(42, n).await;
    let hits = first.iter().filter(|b| **b).count();
    // Binomial(300, 0.5): mean 150, sd 8.7; allow 4.5 sd.
    assert!((111..=189).contains(&hits), "{hits} of {n} affected");
    let again = toxicity_pattern(42, n).await;
    assert_eq!(first, again, "same seed, different decisions");
    let other = toxicity_pattern(43, n).await;
    assert_ne!(first, other, "different seed, same decisions");
}

#[tokio::test]
async fn faults_added_and_removed_change_a_live_connection() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let (p, addr) = h.proxy("live", &echo.to_string(), vec![]);
    let mut s = connect(addr).await;
    assert!(ping(&mut s, b"1").await < Duration::from_millis(100));

    h.registry
        .add_fault(
            "live",
            fault("latency", Downstream, json!({"latency": 200})),
        )
        .unwrap();
    let slow = ping(&mut s, b"2").await;
    assert!(slow >= Duration::from_millis(200), "{slow:?}");

    p.remove_fault("latency_downstream").unwrap();
    assert!(ping(&mut s, b"3").await < Duration::from_millis(100));

    // Removing a fault flushes what it holds: a reply delayed by 5 s
    // arrives as soon as the fault goes.
    h.registry
        .add_fault(
            "live",
            fault("latency", Downstream, json!({"latency": 5000})),
        )
        .unwrap();
    let t = Instant::now();
    s.write_all(b"4").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.remove_fault("latency_downstream").unwrap();
    let mut b = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut b))
        .await
        .expect("flushed on removal")
        .unwrap();
    assert_eq!(&b, b"4");
    assert!(t.elapsed() < Duration::from_secs(2));

    // An update applies at once too.
    h.registry
        .add_fault("live", fault("latency", Downstream, json!({"latency": 10})))
        .unwrap();
    p.update_fault("latency_downstream", |f| {
        f.fault = shakedown::faults::Fault::from_parts("latency", json!({"latency": 150})).unwrap();
    })
    .unwrap();
    assert!(ping(&mut s, b"5").await >= Duration::from_millis(150));
}

#[tokio::test]
async fn refuse_resets_new_connections_and_spares_live_ones() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let (p, addr) = h.proxy("ref", &echo.to_string(), vec![]);
    let mut live = connect(addr).await;
    ping(&mut live, b"before").await;

    h.registry
        .add_fault("ref", fault("refuse", Upstream, json!({})))
        .unwrap();
    let mut fresh = connect(addr).await;
    let _ = fresh.write_all(b"x").await;
    let (_, end) = read_all(&mut fresh, Duration::from_secs(5)).await;
    let err = end.expect_err("refused connection must fail");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err:?}");
    ping(&mut live, b"still here").await;

    p.remove_fault("refuse_upstream").unwrap();
    let mut again = connect(addr).await;
    ping(&mut again, b"back").await;
    assert!(p.stats().refused.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn disabling_refuses_and_closes_and_enabling_restores() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let (p, addr) = h.proxy("dis", &echo.to_string(), vec![]);
    let mut live = connect(addr).await;
    ping(&mut live, b"on").await;

    p.set_enabled(false).unwrap();
    let (_, end) = read_all(&mut live, Duration::from_secs(5)).await;
    end.expect("live connection closed cleanly");
    let err = TcpStream::connect(addr).await.expect_err("listener closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);

    p.set_enabled(true).unwrap();
    assert_eq!(p.local_addr(), Some(addr), "same port after re-enabling");
    let mut s = connect(addr).await;
    ping(&mut s, b"on again").await;
}

/// Disabling answers only once the port is closed, and re-enabling binds the
/// same port at once: checked with no await in between, so the accept loop
/// (on this single-threaded test runtime) has no chance to run first.
#[tokio::test]
async fn disable_closes_the_port_before_it_returns_and_the_port_rebinds_at_once() {
    let h = Harness::new(1);
    let echo = echo_server().await;
    let (p, addr) = h.proxy("flip", &echo.to_string(), vec![]);
    for round in 0..20 {
        p.set_enabled(false).unwrap();
        let err = std::net::TcpStream::connect(addr).expect_err("refused right after disable");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "round {round}");
        p.set_enabled(true)
            .unwrap_or_else(|e| panic!("round {round}: rebinding {addr}: {e}"));
        assert_eq!(p.local_addr(), Some(addr));
    }
    let mut s = connect(addr).await;
    ping(&mut s, b"after twenty flips").await;
    // A new upstream restarts the listener on the same port, also at once.
    let echo2 = echo_server().await;
    p.update(None, Some(echo2.to_string()), None).unwrap();
    let mut s = connect(addr).await;
    ping(&mut s, b"new upstream").await;
}
