//! The control API against Toxiproxy 2.12's expectations (ported from its
//! `api_test.go` and the compatibility reference): status codes, shapes,
//! messages, populate and reset semantics, partial updates, duplicates.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::{delete, get, patch, post, request};
use common::{ApiHarness, connect, echo_server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn create(api: SocketAddr, name: &str, listen: &str, upstream: &str) -> Value {
    let r = post(
        api,
        "/proxies",
        &json!({"name": name, "listen": listen, "upstream": upstream}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn is_up(listen: &str) -> bool {
    std::net::TcpStream::connect(listen).is_ok()
}

#[tokio::test]
async fn index_is_an_empty_object_then_lists_proxies_by_name() {
    let a = ApiHarness::start(None).await;
    let r = get(a.addr, "/proxies").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, "{}");
    create(a.addr, "b", "127.0.0.1:0", "localhost:20001").await;
    create(a.addr, "a", "127.0.0.1:0", "localhost:20002").await;
    let keys: Vec<String> = r_keys(&get(a.addr, "/proxies").await.json());
    assert_eq!(keys, ["a", "b"]);
}

fn r_keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn create_proxy_shape_and_listen_normalisation() {
    let a = ApiHarness::start(None).await;
    let r = post(
        a.addr,
        "/proxies",
        r#"{"name":"mysql_master","listen":"localhost:0","upstream":"localhost:20001"}"#,
    )
    .await;
    assert_eq!(r.status, 201);
    let v = r.json();
    let listen = v["listen"].as_str().unwrap().to_string();
    assert!(
        listen.starts_with("127.0.0.1:") && !listen.ends_with(":0"),
        "{listen}"
    );
    // Exact shape and field order, as Toxiproxy 2.12 writes it.
    assert_eq!(
        r.body,
        format!(
            r#"{{"name":"mysql_master","listen":"{listen}","upstream":"localhost:20001","enabled":true,"Logger":{{}},"toxics":[]}}"#
        )
    );
    assert!(is_up(&listen));
    let shown = get(a.addr, "/proxies/mysql_master").await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body, r.body);
}

#[tokio::test]
async fn missing_fields_and_duplicates_and_conflicts() {
    let a = ApiHarness::start(None).await;
    let r = post(a.addr, "/proxies", "{}").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        "{\"error\":\"missing required field: name\",\"status\":400}\n"
    );
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let r = post(a.addr, "/proxies", r#"{"name":"test"}"#).await;
    assert_eq!(
        r.body,
        "{\"error\":\"missing required field: upstream\",\"status\":400}\n"
    );

    let port = free_port();
    let listen = format!("localhost:{port}");
    create(a.addr, "mysql_master", &listen, "localhost:20001").await;
    let r = post(
        a.addr,
        "/proxies",
        &json!({"name": "mysql_master", "listen": "localhost:0", "upstream": "x:1"}).to_string(),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (409, json!("proxy already exists"))
    );
    let r = post(
        a.addr,
        "/proxies",
        &json!({"name": "test", "listen": listen, "upstream": "localhost:20001"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json()["error"],
        json!(format!(
            "listen tcp 127.0.0.1:{port}: bind: address already in use"
        ))
    );
    // Once the first is deleted the port is free again.
    assert_eq!(delete(a.addr, "/proxies/mysql_master").await.status, 204);
    create(a.addr, "test", &listen, "localhost:20001").await;
}

#[tokio::test]
async fn bad_bodies_are_400_with_go_wording() {
    let a = ApiHarness::start(None).await;
    let r = post(a.addr, "/proxies", "{not json").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("bad request body: ")
    );
    let r = post(
        a.addr,
        "/proxies",
        r#"{"name":"x","upstream":"y:1","enabled":"yes"}"#,
    )
    .await;
    assert_eq!(
        r.json()["error"],
        json!(
            "bad request body: json: cannot unmarshal string into Go struct field Proxy.enabled of type bool"
        )
    );
    // Keys match case-insensitively and unknown keys are ignored, as in Go.
    let r = post(
        a.addr,
        "/proxies",
        r#"{"Name":"ci","Upstream":"localhost:1","Listen":"127.0.0.1:0","extra":1}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // A float attribute is refused.
    let r = post(
        a.addr,
        "/proxies/ci/toxics",
        r#"{"type":"latency","attributes":{"latency":100.5}}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .starts_with("bad request body")
    );
}

#[tokio::test]
async fn disabled_proxy_keeps_its_listen_and_enables_and_disables() {
    let a = ApiHarness::start(None).await;
    let listen = format!("localhost:{}", free_port());
    let r = post(
        a.addr,
        "/proxies",
        &json!({"name": "m", "listen": listen, "upstream": "localhost:20001", "enabled": false})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 201);
    let v = r.json();
    assert_eq!(v["listen"], json!(listen), "not normalised until started");
    assert_eq!(v["enabled"], json!(false));
    assert!(!is_up(&listen));
    // The Go client's Save() still sends POST for proxy updates.
    let r = post(a.addr, "/proxies/m", r#"{"enabled":true}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["enabled"], json!(true));
    assert!(is_up(&listen));
    let r = patch(a.addr, "/proxies/m", r#"{"enabled":false}"#).await;
    assert_eq!(r.json()["enabled"], json!(false));
    assert!(!is_up(&listen));
    // Missing fields keep their values.
    let r = patch(a.addr, "/proxies/m", r#"{"upstream":"localhost:20002"}"#).await;
    assert_eq!(r.json()["upstream"], json!("localhost:20002"));
    assert_eq!(r.json()["enabled"], json!(false));
}

#[tokio::test]
async fn delete_then_404() {
    let a = ApiHarness::start(None).await;
    let v = create(a.addr, "mysql_master", "localhost:0", "localhost:20001").await;
    let listen = v["listen"].as_str().unwrap().to_string();
    assert!(is_up(&listen));
    let r = delete(a.addr, "/proxies/mysql_master").await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    assert!(!is_up(&listen));
    let r = delete(a.addr, "/proxies/mysql_master").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "{\"error\":\"proxy not found\",\"status\":404}\n");
    assert_eq!(get(a.addr, "/proxies").await.body, "{}");
}

#[tokio::test]
async fn toxics_create_list_defaults_conflicts_update_remove() {
    let a = ApiHarness::start(None).await;
    create(a.addr, "mysql_master", "localhost:0", "localhost:20001").await;
    let base = "/proxies/mysql_master/toxics";

    let r = post(a.addr, base, r#"{"name":"foobar","type":"latency","stream":"downstream","toxicity":1,"attributes":{"latency":100,"jitter":10}}"#).await;
    assert_eq!(r.status, 200, "create answers 200, not 201");
    assert_eq!(
        r.body,
        r#"{"attributes":{"latency":100,"jitter":10},"name":"foobar","type":"latency","stream":"downstream","toxicity":1}"#
    );
    // Same name, any stream: 409.
    for stream in ["downstream", "upstream"] {
        let r = post(
            a.addr,
            base,
            &json!({"name": "foobar", "type": "slow_close", "stream": stream}).to_string(),
        )
        .await;
        assert_eq!(r.status, 409);
        assert_eq!(r.json()["error"], json!("toxic already exists"));
    }
    // Defaults: stream downstream, toxicity 1, name <type>_<stream>.
    let r = post(a.addr, base, r#"{"type":"latency","stream":"upstream"}"#).await;
    assert_eq!(r.json()["name"], json!("latency_upstream"));
    let r = post(a.addr, base, r#"{"type":"latency"}"#).await;
    let v = r.json();
    assert_eq!(
        (
            v["name"].clone(),
            v["stream"].clone(),
            v["toxicity"].clone()
        ),
        (json!("latency_downstream"), json!("downstream"), json!(1))
    );
    assert_eq!(v["attributes"], json!({"latency": 0, "jitter": 0}));
    let r = post(a.addr, base, r#"{"type":"noop","name":"nop","stream":""}"#).await;
    assert_eq!(r.status, 400, "an empty stream string is invalid");
    let r = post(a.addr, base, r#"{"type":"noop","name":"nop"}"#).await;
    assert_eq!((r.status, r.json()["attributes"].clone()), (200, json!({})));
    let r = post(
        a.addr,
        base,
        r#"{"type":"bandwidth","name":"bw","toxicity":0.2,"attributes":{"rate":100}}"#,
    )
    .await;
    assert!(r.body.ends_with(r#""toxicity":0.2}"#), "{}", r.body);

    // Listing: upstream chain first, then downstream, in creation order.
    let names: Vec<Value> = get(a.addr, base)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(
        names,
        vec![
            json!("latency_upstream"),
            json!("foobar"),
            json!("latency_downstream"),
            json!("nop"),
            json!("bw")
        ]
    );

    // Invalid stream and type, in that order of checks.
    let r = post(a.addr, base, r#"{"type":"latency","stream":"walrustream"}"#).await;
    assert_eq!(
        r.json()["error"],
        json!("stream was invalid, can be either upstream or downstream")
    );
    let r = post(a.addr, base, r#"{"type":"walrus"}"#).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("invalid toxic type"))
    );
    let r = post(a.addr, "/proxies/nope/toxics", r#"{"type":"latency"}"#).await;
    assert_eq!(r.status, 404);

    // Partial update: latency changes, jitter stays; toxicity kept if absent.
    let r = patch(
        a.addr,
        &format!("{base}/foobar"),
        r#"{"attributes":{"latency":1000},"toxicity":0.5}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["attributes"],
        json!({"latency": 1000, "jitter": 10})
    );
    assert_eq!(r.json()["toxicity"], json!(0.5));
    let r = post(
        a.addr,
        &format!("{base}/foobar"),
        r#"{"attributes":{"latency":500},"name":"renamed","stream":"upstream"}"#,
    )
    .await;
    let v = r.json();
    assert_eq!(
        (
            v["toxicity"].clone(),
            v["name"].clone(),
            v["stream"].clone()
        ),
        (json!(0.5), json!("foobar"), json!("downstream"))
    );
    assert_eq!(
        get(a.addr, &format!("{base}/foobar")).await.json()["attributes"]["latency"],
        json!(500)
    );

    // Remove, then 404.
    assert_eq!(delete(a.addr, &format!("{base}/foobar")).await.status, 204);
    let r = get(a.addr, &format!("{base}/foobar")).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (404, json!("toxic not found"))
    );
    assert_eq!(delete(a.addr, &format!("{base}/foobar")).await.status, 404);
    assert_eq!(
        patch(a.addr, &format!("{base}/foobar"), "{}").await.status,
        404
    );
}

#[tokio::test]
async fn reset_re_enables_and_clears_toxics() {
    let a = ApiHarness::start(None).await;
    let listen = format!("127.0.0.1:{}", free_port());
    post(
        a.addr,
        "/proxies",
        &json!({"name": "m", "listen": listen, "upstream": "localhost:20001", "enabled": false})
            .to_string(),
    )
    .await;
    post(
        a.addr,
        "/proxies/m/toxics",
        r#"{"type":"latency","attributes":{"latency":100}}"#,
    )
    .await;
    let r = post(a.addr, "/reset", "").await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let v = get(a.addr, "/proxies/m").await.json();
    assert_eq!(v["enabled"], json!(true));
    assert_eq!(v["toxics"], json!([]));
    assert!(is_up(&listen));
}

#[tokio::test]
async fn populate_creates_keeps_unchanged_and_replaces_changed() {
    let a = ApiHarness::start(None).await;
    let p1 = format!("127.0.0.1:{}", free_port());
    let p2 = format!("127.0.0.1:{}", free_port());
    let body = json!([
        {"name": "one", "listen": p1, "upstream": "localhost:1"},
        {"name": "two", "listen": p2, "upstream": "localhost:2", "enabled": false},
    ]);
    let r = post(a.addr, "/populate", &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(v["proxies"].as_array().unwrap().len(), 2);
    assert!(v.get("error").is_none());
    assert_eq!(v["proxies"][1]["enabled"], json!(false));

    // Unchanged entries keep their toxics (and ignore the new `enabled`).
    post(a.addr, "/proxies/one/toxics", r#"{"type":"latency"}"#).await;
    post(a.addr, "/proxies/two/toxics", r#"{"type":"latency"}"#).await;
    let body = json!([
        {"name": "one", "listen": p1.replace("127.0.0.1", "localhost"), "upstream": "localhost:1", "enabled": false},
        {"name": "two", "listen": p2, "upstream": "localhost:22"},
    ]);
    let v = post(a.addr, "/populate", &body.to_string()).await.json();
    assert_eq!(
        v["proxies"][0]["toxics"].as_array().unwrap().len(),
        1,
        "kept"
    );
    assert_eq!(v["proxies"][0]["enabled"], json!(true));
    assert_eq!(
        v["proxies"][1]["toxics"],
        json!([]),
        "replaced: toxics lost"
    );
    assert_eq!(v["proxies"][1]["upstream"], json!("localhost:22"));

    // A missing field fails the whole request before anything is created.
    let body =
        json!([{"name": "three", "upstream": "x:1", "listen": "127.0.0.1:0"}, {"upstream": "y:1"}]);
    let r = post(a.addr, "/populate", &body.to_string()).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"],
        json!("missing required field: name at proxy 2")
    );
    assert_eq!(get(a.addr, "/proxies/three").await.status, 404);

    // Empty array: 201 with null.
    let r = post(a.addr, "/populate", "[]").await;
    assert_eq!((r.status, r.body.as_str()), (201, r#"{"proxies":null}"#));

    // Stops at the first error and lists what it created.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let body = json!([
        {"name": "four", "listen": "127.0.0.1:0", "upstream": "x:1"},
        {"name": "five", "listen": taken.local_addr().unwrap().to_string(), "upstream": "x:1"},
    ]);
    let r = post(a.addr, "/populate", &body.to_string()).await;
    assert_eq!(r.status, 500);
    let v = r.json();
    assert_eq!(v["status"], json!(500));
    assert_eq!(v["proxies"].as_array().unwrap().len(), 1);
    assert_eq!(v["proxies"][0]["name"], json!("four"));
}

#[tokio::test]
async fn version_request_id_browsers_and_unknown_routes() {
    let a = ApiHarness::start(None).await;
    let r = get(a.addr, "/version").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "{\"version\": \"2.12.0\"}\n");
    assert_eq!(
        r.header("content-type"),
        Some("application/json;charset=utf-8")
    );
    let id = r
        .header("x-toxiproxy-request-id")
        .expect("request id header");
    assert_eq!(id.len(), 20);

    let r = request(
        a.addr,
        "GET",
        "/proxies",
        None,
        &[("User-Agent", "Mozilla/5.0 (X11)")],
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "User agent not allowed\n")
    );

    let r = get(a.addr, "/nope").await;
    assert_eq!((r.status, r.body.as_str()), (404, "404 page not found\n"));
    let r = request(a.addr, "PUT", "/proxies", Some("{}"), &[]).await;
    assert_eq!(r.status, 405);
    let r = delete(a.addr, "/version").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn shakedown_fault_types_and_ttl_through_the_toxic_endpoint() {
    let a = ApiHarness::start(None).await;
    create(a.addr, "p", "127.0.0.1:0", "localhost:1").await;
    let r = post(
        a.addr,
        "/proxies/p/toxics",
        r#"{"type":"blackhole","stream":"upstream","attributes":{"drop":1}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["attributes"], json!({"drop": true}));
    let r = post(
        a.addr,
        "/proxies/p/toxics",
        r#"{"type":"refuse","toxicity":0.5}"#,
    )
    .await;
    assert_eq!(r.status, 200);

    let r = post(
        a.addr,
        "/proxies/p/toxics",
        r#"{"type":"latency","name":"brief","ttl":300}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let ttl = r.json()["ttl"].as_u64().expect("ttl shown");
    assert!(ttl <= 300 && ttl > 100, "{ttl}");
    let t = Instant::now();
    loop {
        if get(a.addr, "/proxies/p/toxics/brief").await.status == 404 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "ttl never removed the toxic"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn token_guards_mutations_only() {
    let a = ApiHarness::start(Some("s3cret")).await;
    let r = post(
        a.addr,
        "/proxies",
        r#"{"name":"p","upstream":"x:1","listen":"127.0.0.1:0"}"#,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let wrong = request(
        a.addr,
        "POST",
        "/reset",
        Some(""),
        &[("Authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(get(a.addr, "/proxies").await.status, 200, "reads are open");
    let ok = request(
        a.addr,
        "POST",
        "/proxies",
        Some(r#"{"name":"p","upstream":"x:1","listen":"127.0.0.1:0"}"#),
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(ok.status, 201);
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let a = ApiHarness::start(None).await;
    let big = format!("[{}]", vec!["{}"; 400_000].join(","));
    let r = post(a.addr, "/populate", &big).await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn native_routes_info_stats_clear_and_lease() {
    let a = ApiHarness::start(None).await;
    let r = get(a.addr, "/healthz").await;
    assert_eq!((r.status, r.json()["status"].clone()), (200, json!("ok")));
    let info = get(a.addr, "/shakedown/v1/info").await.json();
    assert_eq!(info["toxiproxy_version"], json!("2.12.0"));
    assert_eq!(info["seed"], json!(7));
    assert!(
        info["fault_kinds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kind"] == "blackhole")
    );

    let echo = echo_server().await;
    let v = create(a.addr, "e", "127.0.0.1:0", &echo.to_string()).await;
    let proxy_addr: SocketAddr = v["listen"].as_str().unwrap().parse().unwrap();
    let mut s = connect(proxy_addr).await;
    s.write_all(b"12345").await.unwrap();
    let mut b = [0u8; 5];
    s.read_exact(&mut b).await.unwrap();
    let st = get(a.addr, "/shakedown/v1/proxies/e/stats").await.json();
    assert_eq!(st["upstream"]["sent_bytes"], json!(5));
    assert_eq!(st["downstream"]["sent_bytes"], json!(5));
    assert_eq!(st["connections_active"], json!(1));
    assert_eq!(
        get(a.addr, "/shakedown/v1/proxies/zz/stats").await.status,
        404
    );

    // faults/clear removes faults but leaves a disabled proxy disabled.
    post(a.addr, "/proxies/e/toxics", r#"{"type":"latency"}"#).await;
    create(a.addr, "off", "127.0.0.1:0", "x:1").await;
    patch(a.addr, "/proxies/off", r#"{"enabled":false}"#).await;
    post(a.addr, "/proxies/off/toxics", r#"{"type":"timeout"}"#).await;
    assert_eq!(
        post(a.addr, "/shakedown/v1/faults/clear", "").await.status,
        204
    );
    assert_eq!(get(a.addr, "/proxies/e/toxics").await.body, "[]");
    assert_eq!(
        get(a.addr, "/proxies/off").await.json()["enabled"],
        json!(false)
    );

    // A lease that is not renewed removes every fault.
    post(a.addr, "/proxies/e/toxics", r#"{"type":"latency"}"#).await;
    let r = request(
        a.addr,
        "PUT",
        "/shakedown/v1/lease",
        Some(r#"{"holder":"runner-1","ttl":300}"#),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let other = request(
        a.addr,
        "PUT",
        "/shakedown/v1/lease",
        Some(r#"{"holder":"runner-2","ttl":300}"#),
        &[],
    )
    .await;
    assert_eq!(other.status, 409);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Renewal keeps it alive past the first deadline.
    request(
        a.addr,
        "PUT",
        "/shakedown/v1/lease",
        Some(r#"{"holder":"runner-1","ttl":300}"#),
        &[],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        get(a.addr, "/proxies/e/toxics")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let t = Instant::now();
    while get(a.addr, "/proxies/e/toxics").await.body != "[]" {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "expired lease left faults behind"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(get(a.addr, "/shakedown/v1/lease").await.status, 404);
}

#[tokio::test]
async fn all_interfaces_and_empty_listen_normalise_as_go_does() {
    let a = ApiHarness::start(None).await;
    let v = create(a.addr, "any", "0.0.0.0:0", "localhost:1").await;
    let listen = v["listen"].as_str().unwrap();
    assert!(
        listen.starts_with("[::]:") || listen.starts_with("0.0.0.0:"),
        "{listen}"
    );
    assert!(!listen.ends_with(":0"));
    let port = listen.rsplit(':').next().unwrap();
    assert!(is_up(&format!("127.0.0.1:{port}")), "reachable over IPv4");
    let v = create(a.addr, "empty", "", "localhost:1").await;
    assert!(!v["listen"].as_str().unwrap().ends_with(":0"));
}
