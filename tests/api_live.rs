//! The API acting on live traffic: toxics added, updated and removed while
//! bytes flow; `/metrics` counting as they flow; prompt answers under load.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::{delete, get, patch, post};
use common::{ApiHarness, connect, echo_server, payload};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn proxy_to(api: SocketAddr, name: &str, upstream: SocketAddr) -> SocketAddr {
    let r = post(
        api,
        "/proxies",
        &json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string()})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 201);
    r.json()["listen"].as_str().unwrap().parse().unwrap()
}

async fn rtt(s: &mut tokio::net::TcpStream, msg: &[u8]) -> Duration {
    let t = Instant::now();
    s.write_all(msg).await.unwrap();
    let mut b = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
        .await
        .expect("echo")
        .unwrap();
    assert_eq!(b, msg, "bytes changed or lost");
    t.elapsed()
}

#[tokio::test]
async fn toxics_changed_through_the_api_act_at_once_and_lose_nothing() {
    let a = ApiHarness::start(None).await;
    let echo = echo_server().await;
    let addr = proxy_to(a.addr, "live", echo).await;
    let mut s = connect(addr).await;
    let data = payload(3, 200_000);
    let mut sent = 0usize;
    let mut chunk = |n: usize| {
        let c = &data[sent..sent + n];
        sent += n;
        c.to_vec()
    };

    assert!(rtt(&mut s, &chunk(1000)).await < Duration::from_millis(100));
    let r = post(
        a.addr,
        "/proxies/live/toxics",
        r#"{"type":"latency","name":"lag","attributes":{"latency":200}}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(rtt(&mut s, &chunk(1000)).await >= Duration::from_millis(200));
    patch(
        a.addr,
        "/proxies/live/toxics/lag",
        r#"{"attributes":{"latency":50}}"#,
    )
    .await;
    let d = rtt(&mut s, &chunk(1000)).await;
    assert!(
        d >= Duration::from_millis(50) && d < Duration::from_millis(200),
        "{d:?}"
    );

    // Sliced and delayed downstream, then removed mid-stream: every byte
    // arrives in order.
    post(
        a.addr,
        "/proxies/live/toxics",
        r#"{"type":"slicer","name":"cut","attributes":{"average_size":100,"delay":10}}"#,
    )
    .await;
    let big = chunk(50_000);
    s.write_all(&big).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(delete(a.addr, "/proxies/live/toxics/cut").await.status, 204);
    assert_eq!(delete(a.addr, "/proxies/live/toxics/lag").await.status, 204);
    let mut back = vec![0u8; big.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert!(back == big, "bytes lost or reordered across toxic removal");
    assert!(rtt(&mut s, &chunk(1000)).await < Duration::from_millis(100));
}

/// Reads one sample from Prometheus text: `name{labels} value`, with every
/// line checked against the text format on the way.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (metric, label_text) = match series.split_once('{') {
            Some((m, l)) => (
                m,
                l.strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}")),
            ),
            None => (series, ""),
        };
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if metric == name
            && labels
                .iter()
                .all(|(k, val)| label_text.contains(&format!("{k}=\"{val}\"")))
        {
            found = Some(v);
        }
    }
    found
}

#[tokio::test]
async fn metrics_parse_and_count_bytes_on_an_open_connection() {
    let a = ApiHarness::start(None).await;
    let echo = echo_server().await;
    let addr = proxy_to(a.addr, "m", echo).await;
    let mut s = connect(addr).await;
    rtt(&mut s, &[7u8; 1000]).await;
    let r = get(a.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let up1 = sample(
        &r.body,
        "shakedown_bytes_total",
        &[("proxy", "m"), ("direction", "upstream")],
    )
    .unwrap();
    assert_eq!(up1, 1000.0);
    assert_eq!(
        sample(
            &r.body,
            "toxiproxy_proxy_sent_bytes_total",
            &[("proxy", "m"), ("direction", "downstream")]
        ),
        Some(1000.0)
    );
    assert_eq!(
        sample(&r.body, "shakedown_connections_active", &[("proxy", "m")]),
        Some(1.0)
    );
    // The process-wide slots: sized from the open-file limit, and this
    // open connection holds one (other tests in this process may hold more).
    let slots = sample(&r.body, "shakedown_connection_slots", &[]).unwrap();
    let used = sample(&r.body, "shakedown_connection_slots_in_use", &[]).unwrap();
    assert!(slots >= 100.0, "{slots} slots");
    assert!((1.0..=slots).contains(&used), "{used} of {slots} in use");
    assert!(
        !r.body.contains("127.0.0.1:") || !r.body.contains(&s.local_addr().unwrap().to_string()),
        "client address leaked into labels"
    );

    // Same connection, still open: the counters have moved.
    rtt(&mut s, &[8u8; 2500]).await;
    let body = get(a.addr, "/metrics").await.body;
    assert_eq!(
        sample(
            &body,
            "shakedown_bytes_total",
            &[("proxy", "m"), ("direction", "upstream")]
        ),
        Some(3500.0)
    );
    assert_eq!(
        sample(
            &body,
            "shakedown_upstream_connect_seconds_count",
            &[("proxy", "m")]
        ),
        Some(1.0)
    );

    // Faults show as active and count activations by kind.
    post(
        a.addr,
        "/proxies/m/toxics",
        r#"{"type":"latency","attributes":{"latency":1}}"#,
    )
    .await;
    rtt(&mut s, b"x").await;
    let body = get(a.addr, "/metrics").await.body;
    assert_eq!(
        sample(
            &body,
            "shakedown_faults_active",
            &[("proxy", "m"), ("kind", "latency")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "shakedown_fault_activations_total",
            &[("proxy", "m"), ("kind", "latency")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn under_load_removing_and_re_adding_toxics_answers_promptly() {
    let a = ApiHarness::start(None).await;
    let echo = echo_server().await;
    let addr = proxy_to(a.addr, "busy", echo).await;
    post(
        a.addr,
        "/proxies/busy/toxics",
        r#"{"type":"latency","name":"lag","attributes":{"latency":20}}"#,
    )
    .await;

    // 300 connections, each sending continuously until told to stop.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut clients = Vec::new();
    for i in 0..300u32 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut s = connect(addr).await;
            let msg = i.to_be_bytes();
            let mut rounds = 0u32;
            while !stop.is_cancelled() {
                s.write_all(&msg).await.unwrap();
                let mut b = [0u8; 4];
                s.read_exact(&mut b).await.unwrap();
                assert_eq!(b, msg);
                rounds += 1;
            }
            rounds
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(delete(a.addr, "/proxies/busy/toxics/lag").await.status, 204);
        let r = post(
            a.addr,
            "/proxies/busy/toxics",
            r#"{"type":"latency","name":"lag","attributes":{"latency":20}}"#,
        )
        .await;
        assert_eq!(r.status, 200);
        slowest = slowest.max(t.elapsed());
    }
    stop.cancel();
    let mut total = 0;
    for c in clients {
        total += tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .expect("client finishes")
            .unwrap();
    }
    assert!(total > 300, "traffic flowed: {total} round trips");
    assert!(
        slowest < Duration::from_secs(1),
        "API took {slowest:?} under load"
    );
}
