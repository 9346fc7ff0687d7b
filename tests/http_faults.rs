//! Each HTTP fault as a real client (hyper's client, h2c, curl) sees it,
//! and matching picks exactly the requests it should.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::http_upstream::{self as up, client, collect, get, get_with};
use common::{Harness, fault};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use shakedown::faults::Direction::Downstream;
use shakedown::faults::FaultSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn http_fault(kind: &str, name: &str, attrs: serde_json::Value) -> FaultSpec {
    let mut f = fault(kind, Downstream, attrs);
    f.name = name.into();
    f
}

#[tokio::test]
async fn abort_answers_without_reaching_the_upstream() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let abort = http_fault(
        "http_abort",
        "partition",
        json!({
            "status": 503,
            "headers": {"Retry-After": "5"},
            "body": "{\"error\":\"inventory unavailable\"}",
            "path": "/api/checkout"
        }),
    );
    let (p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![abort], |_| {});
    let c = client();
    let got = get(&c, &format!("http://{addr}/api/checkout")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.header("retry-after"), Some("5"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.text(), r#"{"error":"inventory unavailable"}"#);
    let (code, out) = up::curl(&["-si", &format!("http://{addr}/api/checkout/1")]).await;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{out}"
    );
    assert!(out.contains("\r\nretry-after: 5\r\n"), "{out}");
    assert!(
        out.ends_with(r#"{"error":"inventory unavailable"}"#),
        "{out}"
    );
    assert_eq!(upstream.count("/api/checkout"), 0, "never forwarded");
    // Other paths pass, on the same keep-alive connection.
    assert_eq!(
        get(&c, &format!("http://{addr}/api/cart")).await.status,
        200
    );
    let snap = p.http_stats().unwrap().snapshot();
    assert_eq!(snap.counts.all.injected, 2);
    assert_eq!(snap.counts.all.by_class["injected"], 2);
    assert_eq!(snap.counts.all.errors, 2, "injected 503s are errors");

    // Removing the fault applies to the live connection at once.
    p.remove_fault("partition").unwrap();
    assert_eq!(
        get(&c, &format!("http://{addr}/api/checkout")).await.status,
        200
    );
    // Adding one too.
    h.registry
        .add_fault(
            "web",
            http_fault("http_abort", "teapot", json!({"status": 418})),
        )
        .unwrap();
    let got = get(&c, &format!("http://{addr}/api/checkout")).await;
    assert_eq!(got.status, 418);
    assert!(got.body.is_empty());
}

#[tokio::test]
async fn latency_on_the_request_and_on_the_response() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let faults = vec![
        http_fault(
            "http_latency",
            "slow-req",
            json!({"latency": "200ms", "path": "/req"}),
        ),
        http_fault(
            "http_latency",
            "slow-resp",
            json!({"latency": 200, "on": "response", "path": "/resp"}),
        ),
    ];
    let (_p, addr) = h.http_proxy("web", &upstream.addr.to_string(), faults, |_| {});
    let c = client();
    for path in ["/req", "/resp"] {
        let t = Instant::now();
        let got = get(&c, &format!("http://{addr}{path}")).await;
        let took = t.elapsed();
        assert_eq!(got.status, 200);
        assert!(took >= Duration::from_millis(200), "{path}: {took:?}");
        assert!(took < Duration::from_millis(700), "{path}: {took:?}");
        let reached = upstream.last().at - t;
        if path == "/req" {
            assert!(
                reached >= Duration::from_millis(200),
                "held before: {reached:?}"
            );
        } else {
            assert!(
                reached < Duration::from_millis(150),
                "sent at once: {reached:?}"
            );
        }
    }
    let fast = Instant::now();
    get(&c, &format!("http://{addr}/fast")).await;
    assert!(fast.elapsed() < Duration::from_millis(150));
    // curl sees it too.
    let (code, out) = up::curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{time_total}",
        &format!("http://{addr}/req"),
    ])
    .await;
    assert_eq!(code, 0);
    let (status, secs) = out.split_once(' ').unwrap();
    assert_eq!(status, "200");
    let secs: f64 = secs.parse().unwrap();
    assert!((0.2..0.7).contains(&secs), "curl total {secs}");
}

#[tokio::test]
async fn throttle_limits_the_response_body_rate() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let f = http_fault(
        "http_throttle",
        "slow",
        json!({"rate": 200, "path": "/big"}),
    );
    let (_p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![f], |_| {});
    let c = client();
    let t = Instant::now();
    // 200 KB/s: 300 kB take 1.5 s.
    let got = get(&c, &format!("http://{addr}/big?n=300000")).await;
    let took = t.elapsed().as_secs_f64();
    assert_eq!(got.body.len(), 300_000);
    assert!(up::is_generated(&got.body));
    assert!((1.35..2.2).contains(&took), "took {took}");
    let t = Instant::now();
    get(&c, &format!("http://{addr}/small")).await;
    assert!(t.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn reset_cuts_the_response_after_n_bytes() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let f = http_fault(
        "http_reset",
        "cut",
        json!({"after_bytes": 1000, "path": "/big"}),
    );
    let (p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![f], |_| {});

    // hyper's client: the status and headers arrive, the body fails.
    let c = client();
    let req = Request::get(format!("http://{addr}/big?n=100000"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = 0usize;
    let err = loop {
        match body.frame().await {
            Some(Ok(f)) => got += f.data_ref().map_or(0, |d| d.len()),
            Some(Err(e)) => break e,
            None => panic!("the body ended normally after {got} bytes"),
        }
    };
    assert_eq!(got, 1000, "then: {err}");

    // A raw socket sees exactly the bytes, then ECONNRESET.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /big?n=100000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("ends");
    let e = end.expect_err("reset, not a clean close");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (_, chunked) = text.split_once("\r\n\r\n").unwrap();
    // One chunk of 1000 (0x3e8) bytes, and no final chunk.
    assert!(
        chunked
            .get(..5)
            .is_some_and(|c| c.eq_ignore_ascii_case("3e8\r\n")),
        "{:?}",
        chunked.get(..8)
    );
    assert_eq!(raw.len() - text.find("\r\n\r\n").unwrap() - 4, 5 + 1000 + 2);

    // curl reports the broken transfer.
    let (code, _) = up::curl(&[
        "-s",
        "-o",
        "/dev/null",
        &format!("http://{addr}/big?n=100000"),
    ])
    .await;
    assert_eq!(code, 56, "curl: failure receiving data");

    // h2c: the stream is reset, the connection serves the next request.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{addr}/big?n=100000"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    // RST_STREAM discards frames still queued, so the reset may come
    // before the head or during the body; either way the stream fails.
    match send.send_request(req).await {
        Ok(resp) => assert!(collect(resp).await.is_err(), "stream reset"),
        Err(e) => assert!(
            e.to_string().contains("INTERNAL_ERROR") || format!("{e:?}").contains("INTERNAL_ERROR"),
            "{e:?}"
        ),
    }
    let req = Request::get(format!("http://{addr}/ok"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);

    // Other paths are untouched; resets are counted as errors.
    assert_eq!(get(&c, &format!("http://{addr}/ok")).await.status, 200);
    let snap = p.http_stats().unwrap().snapshot();
    assert_eq!(snap.counts.all.resets, 4);
}

#[tokio::test]
async fn matching_picks_exactly_the_requests_it_should() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let faults = vec![
        http_fault(
            "http_abort",
            "post-only",
            json!({"status": 501, "method": "post"}),
        ),
        http_fault(
            "http_abort",
            "glob",
            json!({"status": 502, "path": "/shop/*/items"}),
        ),
        http_fault(
            "http_abort",
            "deep",
            json!({"status": 503, "path": "/deep/**/end"}),
        ),
        http_fault(
            "http_abort",
            "header",
            json!({"status": 504, "header": "x-tenant=^(acme|globex)$"}),
        ),
        http_fault(
            "http_abort",
            "after-count",
            json!({"status": 429, "path": "/limited", "after": 2, "count": 3}),
        ),
    ];
    let (_p, addr) = h.http_proxy("web", &upstream.addr.to_string(), faults, |_| {});
    let c = client();
    let status = |path: &str, headers: &[(&str, &str)]| {
        let c = c.clone();
        let url = format!("http://{addr}{path}");
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            get_with(&c, &url, &h).await.status
        }
    };
    let req = Request::post(format!("http://{addr}/anything"))
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    assert_eq!(c.request(req).await.unwrap().status(), 501);
    assert_eq!(status("/anything", &[]).await, 200);
    assert_eq!(status("/shop/7/items", &[]).await, 502);
    assert_eq!(status("/shop/7/8/items", &[]).await, 200);
    assert_eq!(status("/shop/7/items/x", &[]).await, 200);
    assert_eq!(status("/deep/a/b/end", &[]).await, 503);
    assert_eq!(
        status("/deep/end", &[]).await,
        200,
        "** between two slashes"
    );
    assert_eq!(status("/t", &[("x-tenant", "acme")]).await, 504);
    assert_eq!(status("/t", &[("X-Tenant", "globex")]).await, 504);
    assert_eq!(status("/t", &[("x-tenant", "acme-2")]).await, 200);
    assert_eq!(status("/t", &[]).await, 200);
    let mut limited = Vec::new();
    for _ in 0..7 {
        limited.push(status("/limited", &[]).await);
    }
    assert_eq!(limited, [200, 200, 429, 429, 429, 200, 200]);
}

/// The statuses of `n` requests through a proxy with a 50 % abort, with a
/// given seed.
async fn toxic_run(seed: u64, n: usize) -> Vec<u16> {
    let h = Harness::new(seed);
    let upstream = up::start().await;
    let mut f = http_fault("http_abort", "half", json!({"status": 503}));
    f.toxicity = 0.5;
    let (_p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![f], |_| {});
    let c = client();
    let mut out = Vec::new();
    for i in 0..n {
        out.push(get(&c, &format!("http://{addr}/r/{i}")).await.status);
    }
    out
}

#[tokio::test]
async fn toxicity_is_drawn_per_request_from_the_seed() {
    let a = toxic_run(42, 60).await;
    let b = toxic_run(42, 60).await;
    assert_eq!(a, b, "same seed, same decisions");
    let hit = a.iter().filter(|s| **s == 503).count();
    // Binomial(60, 0.5): sd ≈ 3.9.
    assert!((12..=48).contains(&hit), "{hit} of 60");
    let c = toxic_run(43, 60).await;
    assert_ne!(a, c, "another seed, other decisions");
}

#[tokio::test]
async fn envoy_fault_headers_only_when_enabled() {
    let upstream = up::start().await;
    let h = Harness::new(1);
    let (_off, off) = h.http_proxy("off", &upstream.addr.to_string(), vec![], |_| {});
    let (p, on) = h.http_proxy("on", &upstream.addr.to_string(), vec![], |c| {
        c.header_faults = true;
    });
    let c = client();
    let abort = [("x-envoy-fault-abort-request", "429")];
    // Disabled: the header is just a header, passed on untouched.
    let got = get_with(&c, &format!("http://{off}/x"), &abort).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        upstream
            .last()
            .headers
            .get("x-envoy-fault-abort-request")
            .unwrap(),
        "429"
    );
    // Enabled: Envoy's behaviour.
    let got = get_with(&c, &format!("http://{on}/x"), &abort).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.text(), "fault filter abort");
    let (code, out) = up::curl(&[
        "-si",
        "-H",
        "x-envoy-fault-abort-request: 503",
        &format!("http://{on}/y"),
    ])
    .await;
    assert_eq!(code, 0);
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");

    let t = Instant::now();
    let got = get_with(
        &c,
        &format!("http://{on}/delayed"),
        &[("x-envoy-fault-delay-request", "150"), ("x-keep", "1")],
    )
    .await;
    assert_eq!(got.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150));
    let seen = upstream.last();
    assert_eq!(seen.path, "/delayed");
    assert!(
        seen.headers.get("x-envoy-fault-delay-request").is_none(),
        "stripped"
    );
    assert_eq!(seen.headers.get("x-keep").unwrap(), "1");

    // Throughput in KiB/s: 100 KiB at 100 KiB/s take about 1 s.
    let t = Instant::now();
    let got = get_with(
        &c,
        &format!("http://{on}/big?n=102400"),
        &[("x-envoy-fault-throughput-response", "100")],
    )
    .await;
    assert_eq!(got.body.len(), 102_400);
    let took = t.elapsed().as_secs_f64();
    assert!((0.9..1.6).contains(&took), "took {took}");
    let injected = p
        .stats()
        .activations
        .iter()
        .map(|a| a.load(std::sync::atomic::Ordering::Relaxed))
        .sum::<u64>();
    assert_eq!(injected, 4);
}

#[tokio::test]
async fn protocol_rules_are_enforced_by_the_registry() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let (_t, _) = h.proxy("tcp", &upstream.addr.to_string(), vec![]);
    let (_w, web) = h.http_proxy("web", &upstream.addr.to_string(), vec![], |_| {});
    let e = h
        .registry
        .add_fault("tcp", http_fault("http_abort", "a", json!({})))
        .unwrap_err();
    assert!(
        e.to_string().contains("needs a proxy with protocol http"),
        "{e}"
    );
    let e = h
        .registry
        .add_fault("web", fault("latency", Downstream, json!({"latency": 1})))
        .unwrap_err();
    assert!(e.to_string().contains("does not apply"), "{e}");
    let c = client();
    let url = format!("http://{web}/x");
    assert_eq!(get(&c, &url).await.status, 200);
    h.registry
        .add_fault("web", fault("refuse", Downstream, json!({})))
        .expect("refuse applies to http proxies");
    // New connections are reset; the client's pooled one carries on.
    let fresh = client::<Full<Bytes>>();
    let req = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
    assert!(fresh.request(req).await.is_err(), "refused");
    assert_eq!(get(&c, &url).await.status, 200);
}

/// The demo services' binary (`examples/checkout_demo.rs`), built if
/// `cargo test` has not built it yet.
fn demo_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("examples").join("checkout_demo");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--example", "checkout_demo"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.ends_with("release") {
            cmd.arg("--release");
        }
        assert!(cmd.status().expect("cargo runs").success());
    }
    bin
}

/// Starts a demo service and reads the address it prints.
async fn spawn_demo(args: &[&str]) -> (tokio::process::Child, std::net::SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(demo_bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("demo starts");
    let stdout = child.stdout.take().expect("piped");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("the demo prints its address")
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, addr)
}

#[tokio::test]
async fn checkout_degrades_to_503_with_retry_after_under_partition() {
    let (_inventory, inventory) = spawn_demo(&["inventory", "--listen", "127.0.0.1:0"]).await;
    let h = Harness::new(1);
    let (p, proxy) = h.http_proxy("inventory", &inventory.to_string(), vec![], |c| {
        c.routes = vec![shakedown::config::RouteConfig {
            name: "stock".into(),
            path: shakedown::faults::http::PathPattern::new("/inventory/").unwrap(),
        }];
    });
    let inventory_url = format!("http://{proxy}");
    let (_checkout, checkout) = spawn_demo(&[
        "checkout",
        "--listen",
        "127.0.0.1:0",
        "--inventory",
        &inventory_url,
        "--timeout",
        "500ms",
    ])
    .await;
    let c = client();
    let buy = || {
        let c = c.clone();
        async move {
            let req = Request::post(format!("http://{checkout}/checkout"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(br#"{"sku":"tea"}"#)))
                .unwrap();
            let t = Instant::now();
            let got = collect(c.request(req).await.unwrap()).await.unwrap();
            (got, t.elapsed())
        }
    };
    let (got, _) = buy().await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.text().contains("confirmed"), "{}", got.text());

    // Partition: inventory answers 503 through the proxy.
    h.registry
        .add_fault(
            "inventory",
            http_fault(
                "http_abort",
                "partition",
                json!({"status": 503, "path": "/inventory/"}),
            ),
        )
        .unwrap();
    let (got, took) = buy().await;
    assert_eq!(got.status, 503, "{}", got.text());
    assert_eq!(got.header("retry-after"), Some("5"));
    assert!(
        got.text().contains("inventory unavailable"),
        "{}",
        got.text()
    );
    assert!(took < Duration::from_millis(400), "fails fast: {took:?}");
    p.remove_fault("partition").unwrap();

    // A hang: inventory is slower than checkout's timeout.
    h.registry
        .add_fault(
            "inventory",
            http_fault("http_latency", "hang", json!({"latency": "3s"})),
        )
        .unwrap();
    let (got, took) = buy().await;
    assert_eq!(got.status, 503, "{}", got.text());
    assert_eq!(got.header("retry-after"), Some("5"));
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(1500)).contains(&took),
        "degrades at its timeout, not inventory's: {took:?}"
    );
    p.remove_fault("hang").unwrap();
    assert_eq!(buy().await.0.status, 200);

    let counts = p.http_stats().unwrap().snapshot().counts;
    assert_eq!(counts.route("stock").unwrap().injected, 1);
    assert!(counts.route("stock").unwrap().requests >= 3);
}

#[tokio::test]
async fn a_client_that_leaves_mid_wait_is_no_longer_active() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let f = http_fault("http_latency", "slow", json!({"latency": "2s"}));
    let (p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![f], |_| {});
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let stats = p.http_stats().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.active() == 0 {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::task::yield_now().await;
    }
    drop(s);
    while stats.active() != 0 {
        assert!(
            Instant::now() < deadline,
            "still active after the client left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.snapshot().counts.all.requests, 0, "never answered");
    assert_eq!(upstream.count("/x"), 0);
}
