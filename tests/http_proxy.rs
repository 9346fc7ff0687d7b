//! A `protocol = "http"` proxy with no fault passes requests and responses
//! through exactly (status, headers, streamed bodies, keep-alive, h2c),
//! adds only the forwarding headers, maps upstream failures to 502/504,
//! survives malformed requests, and counts what it sees.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Harness;
use common::http_upstream::{self as up, Generated, client, collect, get, get_with};
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use shakedown::config::RouteConfig;
use shakedown::faults::http::PathPattern;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn passthrough_is_exact_but_for_the_forwarding_headers() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let (_p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![], |_| {});
    let c = client();
    let got = get_with(
        &c,
        &format!("http://{addr}/multi?q=1&r=%20x"),
        &[
            ("x-multi-req", "a"),
            ("x-forwarded-for", "203.0.113.9"),
            ("connection", "x-secret"),
            ("x-secret", "must not pass"),
            ("keep-alive", "timeout=5"),
        ],
    )
    .await;
    assert_eq!(got.status, 201);
    assert_eq!(got.text(), "multi");
    let cookies: Vec<&str> = got
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; Path=/"]);
    let multi: Vec<&str> = got
        .headers
        .get_all("x-multi")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(got.header("x-upstream"), Some("yes"));
    assert_eq!(got.header("via"), Some("1.1 shakedown"));
    assert_eq!(got.header("content-length"), Some("5"));

    // The upstream got the request as sent, plus the forwarding headers.
    let seen = upstream.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/multi");
    let hv = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        hv("host"),
        Some(addr.to_string()),
        "the client's Host is kept"
    );
    assert_eq!(hv("x-multi-req").as_deref(), Some("a"));
    assert_eq!(
        hv("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(hv("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(hv("via").as_deref(), Some("1.1 shakedown"));
    assert_eq!(hv("x-secret"), None, "named by Connection: hop-by-hop");
    assert_eq!(hv("keep-alive"), None);
    assert_eq!(hv("connection"), None);

    // The query string is passed byte for byte.
    let got = get(&c, &format!("http://{addr}/status/204")).await;
    assert_eq!(got.status, 204);
    assert!(got.body.is_empty());
    let got = get(&c, &format!("http://{addr}/status/418")).await;
    assert_eq!(got.status, 418);
}

#[tokio::test]
async fn five_megabytes_stream_both_ways_chunked() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let (_p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![], |_| {});
    const N: u64 = 5 * 1024 * 1024 + 17;

    // Upload: a chunked 5 MB body, echoed back as it streams.
    let c = client::<Generated>();
    let req = Request::post(format!("http://{addr}/echo"))
        .body(Generated::new(N, 7_919))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("transfer-encoding").unwrap(),
        "chunked",
        "no length known: chunked, as from the upstream"
    );
    let got = collect(resp).await.unwrap();
    assert_eq!(got.body.len() as u64, N);
    assert!(up::is_generated(&got.body), "bytes differ");
    let seen = upstream.last();
    assert_eq!(seen.headers.get("transfer-encoding").unwrap(), "chunked");
    assert!(seen.headers.get("content-length").is_none());

    // Download: 5 MB generated upstream in 64 KiB frames.
    let c = client::<Full<Bytes>>();
    let got = get(&c, &format!("http://{addr}/big?n={N}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("transfer-encoding"), Some("chunked"));
    assert_eq!(got.body.len() as u64, N);
    assert!(up::is_generated(&got.body));

    // A body with a length keeps it.
    let body = vec![7u8; 3 * 1024 * 1024];
    let req = Request::post(format!("http://{addr}/echo"))
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let got = collect(c.request(req).await.unwrap()).await.unwrap();
    assert_eq!(got.body, body);
    let seen = upstream.last();
    assert_eq!(
        seen.headers.get("content-length").unwrap(),
        &body.len().to_string()
    );
}

#[tokio::test]
async fn keep_alive_connections_are_reused_on_both_legs() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let (p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![], |_| {});
    let c = client();
    for i in 0..20 {
        let got = get(&c, &format!("http://{addr}/n/{i}")).await;
        assert_eq!(got.status, 200);
    }
    assert_eq!(upstream.count("/n/3"), 1);
    assert_eq!(
        p.stats()
            .connections_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one client connection for 20 requests"
    );
    assert!(
        upstream.connections() < 20,
        "the upstream saw {} connections for 20 requests",
        upstream.connections()
    );
    assert_eq!(upstream.connections(), 1, "sequential requests: one pooled");

    // A second client connection reuses the pooled upstream connection.
    let c2 = client();
    get(&c2, &format!("http://{addr}/again")).await;
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn h2c_clients_are_served_and_upstreams_can_speak_h2c() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    for upstream_http2 in [false, true] {
        let name = format!("h2-{upstream_http2}");
        let (_p, addr) = h.http_proxy(&name, &upstream.addr.to_string(), vec![], |c| {
            c.upstream_http2 = upstream_http2;
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2c prior knowledge accepted");
        tokio::spawn(conn);
        let req = Request::get(format!("http://{addr}/multi"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let got = collect(send.send_request(req).await.unwrap())
            .await
            .unwrap();
        assert_eq!(got.status, 201);
        assert_eq!(got.text(), "multi");
        assert_eq!(got.headers.get_all("set-cookie").iter().count(), 2);
        let seen = upstream.last();
        assert_eq!(seen.headers.get("via").unwrap(), "2 shakedown");
        assert_eq!(
            seen.headers.get("host").unwrap().to_str().unwrap(),
            addr.to_string(),
            ":authority becomes Host"
        );
        let want = if upstream_http2 {
            hyper::Version::HTTP_2
        } else {
            hyper::Version::HTTP_11
        };
        assert_eq!(seen.version, want);

        // Streams run concurrently on the one connection.
        let mut tasks = Vec::new();
        for i in 0..8u64 {
            let mut send = send.clone();
            tasks.push(tokio::spawn(async move {
                let req = Request::post(format!("http://{addr}/echo"))
                    .body(Full::new(Bytes::from(vec![i as u8; 100_000])))
                    .unwrap();
                let got = collect(send.send_request(req).await.unwrap())
                    .await
                    .unwrap();
                assert_eq!(got.body, vec![i as u8; 100_000]);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

#[tokio::test]
async fn upstream_down_is_a_502_naming_the_upstream() {
    let h = Harness::new(1);
    let dead = up::closed_port().await;
    let (p, addr) = h.http_proxy("web", &dead.to_string(), vec![], |_| {});
    let c = client();
    let got = get(&c, &format!("http://{addr}/x")).await;
    assert_eq!(got.status, 502);
    let text = got.text();
    assert!(text.contains(&dead.to_string()), "{text}");
    assert!(text.to_lowercase().contains("connect"), "{text}");
    let (code, out) = up::curl(&["-si", &format!("http://{addr}/x")]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    let snap = p.http_stats().unwrap().snapshot();
    assert_eq!(snap.counts.all.by_class["error"], 2);
    assert_eq!(snap.counts.all.errors, 2);
}

#[tokio::test]
async fn a_hanging_upstream_is_a_504_within_the_request_timeout() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let (_p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![], |c| {
        c.request_timeout = Duration::from_millis(300);
    });
    let c = client();
    let t = Instant::now();
    let got = get(&c, &format!("http://{addr}/hang")).await;
    let took = t.elapsed();
    assert_eq!(got.status, 504);
    assert!(got.text().contains("300ms"), "{}", got.text());
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // The connection is still good for the next request.
    assert_eq!(get(&c, &format!("http://{addr}/ok")).await.status, 200);
}

#[tokio::test]
async fn a_malformed_request_gets_400_and_others_carry_on() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let (_p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![], |_| {});
    let c = client();
    // A keep-alive client in the middle of its work.
    assert_eq!(get(&c, &format!("http://{addr}/before")).await.status, 200);
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), bad.read_to_end(&mut out))
        .await
        .expect("answered and closed")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(get(&c, &format!("http://{addr}/after")).await.status, 200);
    assert_eq!(upstream.count("/x"), 0);
}

#[tokio::test]
async fn observations_count_by_class_and_route_in_a_window() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let (p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![], |c| {
        c.routes = vec![
            RouteConfig {
                name: "checkout".into(),
                path: PathPattern::new("/api/checkout*").unwrap(),
            },
            RouteConfig {
                name: "status".into(),
                path: PathPattern::new("/status/").unwrap(),
            },
        ];
    });
    let from = Instant::now();
    let c = client();
    for path in [
        "/api/checkout",
        "/api/checkouts",
        "/status/404",
        "/status/503",
        "/elsewhere",
    ] {
        get(&c, &format!("http://{addr}{path}")).await;
    }
    let stats = p.http_stats().expect("an http proxy has http stats");
    let w = stats.window(from, Instant::now() + Duration::from_secs(2));
    let counts = &w.counts;
    assert_eq!(counts.all.requests, 5);
    assert_eq!(counts.all.errors, 1, "the 503");
    assert_eq!(counts.all.by_class["2xx"], 3);
    assert_eq!(counts.all.by_class["4xx"], 1);
    assert_eq!(counts.all.by_class["5xx"], 1);
    assert_eq!(counts.route("checkout").unwrap().requests, 2);
    assert_eq!(counts.route("status").unwrap().errors, 1);
    assert_eq!(counts.route("other").unwrap().requests, 1);
    assert!(counts.all.latency.p95_seconds.unwrap() > 0.0);
    assert_eq!(counts.response_time.count, 5);
    assert_eq!(stats.snapshot().requests_active, 0);
    // A TCP proxy has none.
    let (tcp, _) = h.proxy("tcp", &upstream.addr.to_string(), vec![]);
    assert!(tcp.http_stats().is_none());
}

#[tokio::test]
async fn metrics_and_the_api_know_http_proxies() {
    let api = common::ApiHarness::start(None).await;
    let upstream = up::start().await;
    let body = format!(
        r#"{{"name":"web","listen":"127.0.0.1:0","upstream":"{}","protocol":"http"}}"#,
        upstream.addr
    );
    let r = common::http::post(api.addr, "/proxies", &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["protocol"], "http");
    let listen: std::net::SocketAddr = r.json()["listen"].as_str().unwrap().parse().unwrap();

    // Byte faults are refused on an http proxy, http faults on a tcp one.
    let r = common::http::post(
        api.addr,
        "/proxies/web/toxics",
        r#"{"type":"latency","attributes":{"latency":100}}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("http_latency"), "{}", r.body);
    let tcp = format!(
        r#"{{"name":"tcp","listen":"127.0.0.1:0","upstream":"{}"}}"#,
        upstream.addr
    );
    assert_eq!(
        common::http::post(api.addr, "/proxies", &tcp).await.status,
        201
    );
    let r = common::http::post(
        api.addr,
        "/proxies/tcp/toxics",
        r#"{"type":"http_abort","attributes":{"status":503}}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("protocol http"), "{}", r.body);

    let r = common::http::post(
        api.addr,
        "/proxies/web/toxics",
        r#"{"type":"http_abort","name":"down","attributes":{"status":503,"path":"/down"}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["attributes"],
        serde_json::json!({"status": 503, "path": "/down"})
    );
    let c = client();
    assert_eq!(get(&c, &format!("http://{listen}/down")).await.status, 503);
    assert_eq!(get(&c, &format!("http://{listen}/up")).await.status, 200);

    let m = common::http::get(api.addr, "/metrics").await;
    for line in [
        "shakedown_http_requests_total{proxy=\"web\",route=\"other\",class=\"injected\"} 1",
        "shakedown_http_requests_total{proxy=\"web\",route=\"other\",class=\"2xx\"} 1",
        "shakedown_http_request_duration_seconds_count{proxy=\"web\",route=\"other\"} 2",
        "shakedown_http_requests_active{proxy=\"web\"} 0",
        "shakedown_http_injected_total{proxy=\"web\",kind=\"http_abort\"} 1",
    ] {
        assert!(
            m.body.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            m.body
        );
    }
    assert!(
        !m.body
            .contains("shakedown_http_requests_total{proxy=\"tcp\"")
    );
}

#[tokio::test]
async fn disabling_the_proxy_closes_its_connections() {
    let h = Harness::new(1);
    let upstream = up::start().await;
    let (p, addr) = h.http_proxy("web", &upstream.addr.to_string(), vec![], |_| {});
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    p.set_enabled(false).unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "the idle keep-alive connection is closed");
}

#[tokio::test]
async fn the_api_sets_request_timeout_on_http_proxies_only() {
    let api = common::ApiHarness::start(None).await;
    let upstream = up::start().await;
    let body = format!(
        r#"{{"name":"web","listen":"127.0.0.1:0","upstream":"{}","protocol":"http","request_timeout":300}}"#,
        upstream.addr
    );
    let r = common::http::post(api.addr, "/proxies", &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let listen = r.json()["listen"].as_str().unwrap().to_string();
    let c = client();
    let t = Instant::now();
    let got = get(&c, &format!("http://{listen}/hang")).await;
    assert_eq!(got.status, 504);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let tcp = format!(
        r#"{{"name":"tcp","listen":"127.0.0.1:0","upstream":"{}","request_timeout":300}}"#,
        upstream.addr
    );
    let r = common::http::post(api.addr, "/proxies", &tcp).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("http proxies only"), "{}", r.body);
}
