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
    exchange_with(faults, seed, up_len, down_len, 50_000).await;
}

/// Like [`exchange`], writing chunks of up to `max_chunk` bytes; returns the
/// proxy's stats.
async fn exchange_with(
    faults: Vec<FaultSpec>,
    seed: u64,
    up_len: usize,
    down_len: usize,
    max_chunk: usize,
) -> u64 {
    let h = Harness::new(seed);
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (p, addr) = h.proxy("exact", &server.local_addr().unwrap().to_string(), faults);

    let up = payload(seed, up_len);
    let down = payload(seed + 1000, down_len);
    let down_for_server = down.clone();
    let server_task = tokio::spawn(async move {
        let (s, _) = server.accept().await.unwrap();
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            write_chunked(&mut w, &down_for_server, seed + 7, max_chunk).await;
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
        write_chunked(&mut w, &up_clone, seed + 3, max_chunk).await;
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
    p.stats().spliced.load(std::sync::atomic::Ordering::Relaxed)
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
async fn bulk_takes_the_zero_copy_path_and_stays_byte_exact() {
    let spliced = exchange_with(vec![], 41, 24 << 20, 16 << 20, 1 << 20).await;
    assert!(spliced > 0, "bulk transfer never switched to splice");
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

#[tokio::test]
async fn a_fault_added_during_a_bulk_transfer_applies_and_loses_nothing() {
    let h = Harness::new(5);
    let data = std::sync::Arc::new(payload(77, 32 << 20));
    let server = common::sender_server(data.clone()).await;
    let (p, addr) = h.proxy("bulk-live", &server.to_string(), vec![]);
    let mut client = common::connect(addr).await;
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 256 * 1024];
    let mut added = false;
    let mut removed = false;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), client.read(&mut buf))
            .await
            .expect("data keeps flowing")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if !added && got.len() > 8 << 20 {
            h.registry
                .add_fault(
                    "bulk-live",
                    fault(
                        "slicer",
                        Direction::Downstream,
                        serde_json::json!({"average_size": 4096}),
                    ),
                )
                .unwrap();
            added = true;
        }
        if !removed && got.len() > 16 << 20 {
            p.remove_fault("slicer_downstream").unwrap();
            removed = true;
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == *data, "bytes differ");
    assert!(p.stats().spliced.load(std::sync::atomic::Ordering::Relaxed) > 0);
}
