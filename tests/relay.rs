//! Byte exactness: random payloads in random chunks, both ways at once,
//! with half-close, through the proxy with no fault, with `slicer` and with
//! `latency`. What each side receives must be exactly what the other sent.

mod common;

use std::time::Duration;

use common::{Harness, fault, payload, write_chunked};
use shakedown::faults::{Direction, FaultSpec};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// One exchange: the client sends `up_len` bytes and half-closes while the
/// server sends `down_len` bytes and half-closes; each reads to EOF.
async fn exchange(faults: Vec<FaultSpec>, seed: u64, up_len: usize, down_len: usize) {
    let h = Harness::new(seed);
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_p, addr) = h.proxy("exact", &server.local_addr().unwrap().to_string(), faults);

    let up = payload(seed, up_len);
    let down = payload(seed + 1000, down_len);
    let down_for_server = down.clone();
    let server_task = tokio::spawn(async move {
        let (s, _) = server.accept().await.unwrap();
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            write_chunked(&mut w, &down_for_server, seed + 7, 70_000).await;
            w
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        let _w = writer.await.unwrap();
        got
    });

    let client = common::connect(addr).await;
    let (mut r, mut w) = client.into_split();
    let up_clone = up.clone();
    let writer = tokio::spawn(async move {
        write_chunked(&mut w, &up_clone, seed + 3, 50_000).await;
        w
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), r.read_to_end(&mut got))
        .await
        .expect("downstream finishes")
        .unwrap();
    let _w = writer.await.unwrap();
    let server_got = tokio::time::timeout(Duration::from_secs(30), server_task)
        .await
        .expect("upstream finishes")
        .unwrap();
    assert_eq!(got.len(), down.len(), "downstream length");
    assert!(got == down, "downstream bytes differ");
    assert_eq!(server_got.len(), up.len(), "upstream length");
    assert!(server_got == up, "upstream bytes differ");
}

#[tokio::test]
async fn no_fault_is_byte_exact_both_ways() {
    for seed in 0..4 {
        exchange(vec![], seed, 3_000_000 + seed as usize * 7919, 2_000_000).await;
    }
    // Empty streams and one-way streams close cleanly too.
    exchange(vec![], 11, 0, 1000).await;
    exchange(vec![], 12, 1000, 0).await;
    exchange(vec![], 13, 0, 0).await;
}

#[tokio::test]
async fn slicer_is_byte_exact() {
    let faults = vec![
        fault(
            "slicer",
            Direction::Upstream,
            serde_json::json!({"average_size": 64, "size_variation": 32, "delay": 0}),
        ),
        fault(
            "slicer",
            Direction::Downstream,
            serde_json::json!({"average_size": 100, "size_variation": 50, "delay": 0}),
        ),
    ];
    exchange(faults, 21, 400_000, 300_000).await;
}

#[tokio::test]
async fn latency_is_byte_exact() {
    let faults = vec![
        fault(
            "latency",
            Direction::Upstream,
            serde_json::json!({"latency": 5, "jitter": 3}),
        ),
        fault(
            "latency",
            Direction::Downstream,
            serde_json::json!({"latency": 10, "jitter": 5}),
        ),
    ];
    exchange(faults, 31, 2_000_000, 1_500_000).await;
}

#[tokio::test]
async fn half_close_keeps_the_other_direction_open() {
    let h = Harness::new(1);
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_p, addr) = h.proxy("half", &server.local_addr().unwrap().to_string(), vec![]);
    let mut client = common::connect(addr).await;
    let (mut s, _) = server.accept().await.unwrap();

    use tokio::io::AsyncWriteExt;
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap(); // FIN upstream
    let mut req = Vec::new();
    s.read_to_end(&mut req).await.unwrap(); // server sees EOF ...
    assert_eq!(req, b"request");
    // ... and can still answer, after a pause, on the open direction.
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"late reply").await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"late reply");
}
