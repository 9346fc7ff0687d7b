//! PostgreSQL faults as a real client (tokio-postgres, psql) sees them,
//! through a `protocol = "postgres"` proxy to the real server at
//! 127.0.0.1:5432. Every test uses tables of its own (named after the test
//! and the process) and drops them.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Harness, fault};
use serde_json::json;
use shakedown::faults::Direction::Downstream;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

const PG: &str = "127.0.0.1:5432";

async fn connect_as(addr: SocketAddr, app: &str) -> Result<Client, tokio_postgres::Error> {
    let dsn = format!(
        "host={} port={} user=postgres dbname=postgres connect_timeout=10 application_name={app}",
        addr.ip(),
        addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&dsn, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn connect(addr: SocketAddr) -> Client {
    connect_as(addr, "shakedown-test")
        .await
        .expect("connect through the proxy")
}

/// Connects straight to the server (to check what really happened).
async fn direct() -> Client {
    connect(PG.parse().unwrap()).await
}

/// A table of the test's own, created fresh.
async fn table(c: &Client, test: &str) -> String {
    let name = format!("shakedown_{test}_{}", std::process::id());
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int primary key, v int)"
    ))
    .await
    .unwrap();
    name
}

async fn drop_table(c: &Client, name: &str) {
    c.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
        .await
        .unwrap();
}

fn code(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.code()
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

#[tokio::test]
async fn query_error_fails_with_the_real_servers_error_and_state_agrees() {
    let h = Harness::new(1);
    let d = direct().await;
    let t = table(&d, "qerr").await;
    d.batch_execute(&format!("INSERT INTO {t} VALUES (0, 0)"))
        .await
        .unwrap();
    let (_p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault(
            "query_error",
            Downstream,
            json!({"sqlstate": "40001", "sql": format!("(?i)insert into {t}")}),
        )],
    );
    let c = connect(addr).await;

    // Autocommit, simple protocol: the statement fails, nothing is written.
    let e = c
        .batch_execute(&format!("INSERT INTO {t} VALUES (1, 1)"))
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE),
        "{e:?}"
    );
    assert_eq!(
        db_message(&e),
        "could not serialize access due to concurrent update"
    );
    // The PL/pgSQL context of the raise is not shown.
    assert!(e.as_db_error().unwrap().where_().is_none(), "{e:?}");
    // Non-matching statements pass.
    c.batch_execute(&format!("UPDATE {t} SET v = 1 WHERE id = 0"))
        .await
        .unwrap();

    // Inside a block: 25P02 afterwards, and the COMMIT does not commit.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE {t} SET v = 2 WHERE id = 0"))
        .await
        .unwrap();
    let e = c
        .batch_execute(&format!("INSERT INTO {t} VALUES (2, 2)"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::T_R_SERIALIZATION_FAILURE));
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(
        code(&e),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        "{e:?}"
    );
    c.batch_execute("COMMIT").await.unwrap();

    // Extended protocol (parameters), inside a block too.
    c.batch_execute("BEGIN").await.unwrap();
    c.execute(&format!("UPDATE {t} SET v = 3 WHERE id = $1"), &[&0i32])
        .await
        .unwrap();
    let e = c
        .execute(&format!("INSERT INTO {t} VALUES ($1, $2)"), &[&3i32, &3i32])
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE),
        "{e:?}"
    );
    assert!(e.as_db_error().unwrap().where_().is_none(), "{e:?}");
    let e = c.query("SELECT $1::int", &[&1i32]).await.unwrap_err();
    assert_eq!(
        code(&e),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        "{e:?}"
    );
    c.batch_execute("COMMIT").await.unwrap();
    // The session is healthy afterwards, both protocols.
    let row = c.query_one("SELECT $1::int + 1", &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    c.batch_execute("SELECT 1").await.unwrap();

    // What the server holds: only the autocommit update.
    let rows = d
        .query(&format!("SELECT id, v FROM {t} ORDER BY id"), &[])
        .await
        .unwrap();
    let got: Vec<(i32, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(0, 1)], "no failed transaction may have committed");
    drop_table(&d, &t).await;
}

/// psql, as a user runs it: the real server's message, and COMMIT of the
/// failed block answered ROLLBACK.
#[tokio::test]
async fn psql_prints_the_servers_message_and_rollback() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault(
            "query_error",
            Downstream,
            json!({"sqlstate": "23505", "statement": "select", "sql": "shakedown_marker"}),
        )],
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args([
                "-X",
                "-h",
                "127.0.0.1",
                "-p",
                &addr.port().to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                "BEGIN",
                "-c",
                "SELECT 'shakedown_marker'",
                "-c",
                "COMMIT",
            ])
            .output()
            .expect("run psql")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ERROR:  duplicate key value violates unique constraint"),
        "{stderr}"
    );
    assert!(!stderr.contains("PL/pgSQL"), "{stderr}");
    assert!(stdout.contains("BEGIN"), "{stdout}");
    assert!(stdout.trim_end().ends_with("ROLLBACK"), "{stdout}");
}

#[tokio::test]
async fn fatal_query_error_ends_the_session() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault(
            "query_error",
            Downstream,
            json!({"sqlstate": "57P01", "severity": "FATAL", "sql": "boom"}),
        )],
    );
    let c = connect(addr).await;
    let e = c.batch_execute("SELECT 'boom'").await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::ADMIN_SHUTDOWN), "{e:?}");
    assert_eq!(
        db_message(&e),
        "terminating connection due to administrator command"
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while !c.is_closed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the client sees the session closed");
}

#[tokio::test]
async fn terminate_before_rolls_the_open_transaction_back() {
    let h = Harness::new(1);
    let d = direct().await;
    let t = table(&d, "termb").await;
    d.batch_execute(&format!("INSERT INTO {t} VALUES (1, 1)"))
        .await
        .unwrap();
    let (p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault(
            "terminate",
            Downstream,
            json!({"sql": "pg_sleep", "when": "before"}),
        )],
    );
    let c = connect(addr).await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE {t} SET v = 100 WHERE id = 1"))
        .await
        .unwrap();
    let e = c.batch_execute("SELECT pg_sleep(0)").await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::ADMIN_SHUTDOWN), "{e:?}");
    assert_eq!(
        db_message(&e),
        "terminating connection due to administrator command"
    );
    let v: i32 = d
        .query_one(&format!("SELECT v FROM {t} WHERE id = 1"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 1, "the open transaction must be rolled back");
    assert_eq!(p.pg_stats().snapshot().counts.errors.injected, 1);
    drop_table(&d, &t).await;
}

/// `when = "after"` on a COMMIT: the server commits, the client never
/// learns it ("commit outcome unknown").
#[tokio::test]
async fn terminate_after_commit_leaves_the_outcome_unknown() {
    let h = Harness::new(1);
    let d = direct().await;
    let t = table(&d, "terma").await;
    let (_p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault(
            "terminate",
            Downstream,
            json!({"statement": "commit", "when": "after"}),
        )],
    );
    let c = connect(addr).await;
    c.batch_execute("BEGIN").await.unwrap();
    c.execute(&format!("INSERT INTO {t} VALUES ($1, $2)"), &[&7i32, &7i32])
        .await
        .unwrap();
    let e = c.batch_execute("COMMIT").await.unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::ADMIN_SHUTDOWN), "{e:?}");
    let n: i64 = d
        .query_one(&format!("SELECT count(*) FROM {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the server committed");
    drop_table(&d, &t).await;
}

#[tokio::test]
async fn terminate_after_queries_ends_each_session_after_n_answers() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault("terminate", Downstream, json!({"after_queries": 3}))],
    );
    let c = connect(addr).await;
    for i in 0..3 {
        c.batch_execute("SELECT 1")
            .await
            .unwrap_or_else(|e| panic!("query {i}: {e}"));
    }
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert!(
        c.is_closed() || code(&e) == Some(&SqlState::ADMIN_SHUTDOWN),
        "{e:?}"
    );
}

#[tokio::test]
async fn reject_connections_refuses_new_sessions_only() {
    let h = Harness::new(1);
    let (p, addr) = h.pg_proxy("pg", PG, vec![]);
    let live = connect(addr).await;
    live.batch_execute("SELECT 1").await.unwrap();
    h.registry
        .add_fault("pg", fault("reject_connections", Downstream, json!({})))
        .unwrap();

    let Err(e) = connect_as(addr, "new").await else {
        panic!("the new session must be rejected")
    };
    assert_eq!(code(&e), Some(&SqlState::TOO_MANY_CONNECTIONS), "{e:?}");
    assert_eq!(db_message(&e), "sorry, too many clients already");
    // The live session carries on.
    let row = live.query_one("SELECT $1::int", &[&5i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 5);

    // 57P03, for one application only.
    p.remove_fault("reject_connections_downstream").unwrap();
    h.registry
        .add_fault(
            "pg",
            fault(
                "reject_connections",
                Downstream,
                json!({"sqlstate": "57P03", "application_name": "batch"}),
            ),
        )
        .unwrap();
    let Err(e) = connect_as(addr, "batch").await else {
        panic!("the new session must be rejected")
    };
    assert_eq!(code(&e), Some(&SqlState::CANNOT_CONNECT_NOW), "{e:?}");
    assert_eq!(db_message(&e), "the database system is shutting down");
    connect_as(addr, "web")
        .await
        .expect("other applications connect");
}

#[tokio::test]
async fn query_latency_delays_matching_queries_only() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault(
            "query_latency",
            Downstream,
            json!({"latency": 300, "statement": "select", "sql": "slow_me"}),
        )],
    );
    let c = connect(addr).await;
    let other = connect(addr).await;
    let t0 = Instant::now();
    c.batch_execute("SELECT 'slow_me'").await.unwrap();
    let simple = t0.elapsed();
    let t0 = Instant::now();
    c.query("SELECT 'slow_me', $1::int", &[&1i32])
        .await
        .unwrap();
    let extended = t0.elapsed();
    let t0 = Instant::now();
    other.batch_execute("SELECT 'fast'").await.unwrap();
    let fast = t0.elapsed();
    assert!(simple >= Duration::from_millis(300), "{simple:?}");
    assert!(extended >= Duration::from_millis(300), "{extended:?}");
    assert!(fast < Duration::from_millis(250), "{fast:?}");

    // While one session waits on a delayed query, another is not held up.
    let slow = tokio::spawn(async move {
        let t0 = Instant::now();
        c.batch_execute("SELECT 'slow_me'").await.unwrap();
        t0.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    other.batch_execute("SELECT 2").await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
    assert!(slow.await.unwrap() >= Duration::from_millis(300));
}

#[tokio::test]
async fn startup_latency_slows_connection_establishment() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault(
            "startup_latency",
            Downstream,
            json!({"latency": "400ms"}),
        )],
    );
    let t0 = Instant::now();
    let c = connect(addr).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );
    let t0 = Instant::now();
    c.batch_execute("SELECT 1").await.unwrap();
    assert!(t0.elapsed() < Duration::from_millis(300));
}

/// `after`, `count` and a seeded toxicity pick exactly the queries they
/// should, the same way every time.
#[tokio::test]
async fn after_count_and_seeded_toxicity_pick_exact_queries() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault(
            "query_error",
            Downstream,
            json!({"sqlstate": "40P01", "sql": "pick", "after": 2, "count": 3}),
        )],
    );
    let c = connect(addr).await;
    let mut failed = Vec::new();
    for i in 0..10 {
        c.batch_execute("SELECT 1").await.unwrap();
        if let Err(e) = c.batch_execute("SELECT 'pick'").await {
            assert_eq!(code(&e), Some(&SqlState::T_R_DEADLOCK_DETECTED));
            assert_eq!(db_message(&e), "deadlock detected");
            failed.push(i);
        }
    }
    assert_eq!(failed, [2, 3, 4]);

    async fn pattern(seed: u64) -> Vec<bool> {
        let h = Harness::new(seed);
        let mut f = fault(
            "query_error",
            Downstream,
            json!({"sqlstate": "40001", "sql": "coin"}),
        );
        f.toxicity = 0.5;
        let (_p, addr) = h.pg_proxy("pg", PG, vec![f]);
        let c = connect(addr).await;
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(c.batch_execute("SELECT 'coin'").await.is_err());
        }
        out
    }
    let a = pattern(7).await;
    assert_eq!(a, pattern(7).await, "same seed, same decisions");
    let hits = a.iter().filter(|x| **x).count();
    assert!((8..=32).contains(&hits), "{hits} of 40 at toxicity 0.5");
    assert_ne!(a, pattern(8).await, "another seed decides otherwise");
}

#[tokio::test]
async fn observations_count_queries_errors_and_transactions() {
    let h = Harness::new(1);
    let (p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault(
            "query_error",
            Downstream,
            json!({"sqlstate": "40001", "sql": "injected_here"}),
        )],
    );
    let c = connect(addr).await;
    c.batch_execute("SELECT 1").await.unwrap();
    c.query("SELECT $1::int", &[&1i32]).await.unwrap();
    let _ = c.batch_execute("SELECT 'injected_here'").await.unwrap_err();
    let _ = c.batch_execute("SELECT 1/0").await.unwrap_err();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    let s = p.pg_stats().snapshot();
    assert_eq!(s.sessions_active, 1);
    assert!(s.counts.queries["select"] >= 4, "{:?}", s.counts.queries);
    assert_eq!(s.counts.transactions_committed, 1);
    assert_eq!(s.counts.transactions_rolled_back, 1);
    assert_eq!(s.counts.errors.injected, 1);
    assert!(s.counts.errors.server >= 1);
}

/// The whole path as a test suite drives it: a postgres proxy and a
/// `query_error` toxic created through the Toxiproxy API, the client sees
/// the error, `/metrics` counts it; the same toxic on a TCP proxy is a 400.
#[tokio::test]
async fn api_creates_postgres_proxies_and_query_faults() {
    use common::http::{get, post};
    let a = common::ApiHarness::start(None).await;
    let r = post(
        a.addr,
        "/proxies",
        &json!({"name": "db", "listen": "127.0.0.1:0", "upstream": PG, "protocol": "postgres"})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["protocol"], "postgres");
    let addr: SocketAddr = r.json()["listen"].as_str().unwrap().parse().unwrap();
    let r = post(
        a.addr,
        "/proxies/db/toxics",
        r#"{"type":"query_error","name":"deadlock","attributes":{"sqlstate":"40P01","statement":"update"}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["attributes"],
        json!({"sqlstate": "40P01", "severity": "ERROR", "statement": "update"})
    );

    let c = connect(addr).await;
    let e = c
        .batch_execute("UPDATE pg_class SET relname = relname WHERE false")
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(&SqlState::T_R_DEADLOCK_DETECTED));
    c.batch_execute("SELECT 1").await.unwrap();

    let m = get(a.addr, "/metrics").await.body;
    for line in [
        r#"shakedown_pg_errors_total{proxy="db",sqlstate="40P01",source="injected"} 1"#,
        r#"shakedown_pg_queries_total{proxy="db",statement="select"} 1"#,
        r#"shakedown_pg_sessions_active{proxy="db"} 1"#,
        r#"shakedown_fault_activations_total{proxy="db",kind="query_error"} 1"#,
    ] {
        assert!(m.contains(line), "{line} missing from:\n{m}");
    }

    // Bad attributes and the wrong proxy are clear 400s.
    let r = post(
        a.addr,
        "/proxies/db/toxics",
        r#"{"type":"query_error","attributes":{"sqlstate":"4000"}}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("is not an SQLSTATE"), "{}", r.body);
    let r = post(
        a.addr,
        "/proxies",
        &json!({"name": "tcp", "listen": "127.0.0.1:0", "upstream": PG}).to_string(),
    )
    .await;
    assert_eq!(r.status, 201);
    assert!(
        r.json().get("protocol").is_none(),
        "a TCP proxy's JSON is Toxiproxy's"
    );
    let r = post(
        a.addr,
        "/proxies/tcp/toxics",
        r#"{"type":"terminate","attributes":{}}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("needs a proxy with protocol postgres"),
        "{}",
        r.body
    );
}

/// Byte faults still act beneath the protocol layer, and removing a
/// `query_latency` releases the query it holds at once.
#[tokio::test]
async fn byte_faults_apply_beneath_and_removal_releases_held_queries() {
    let h = Harness::new(1);
    let (p, addr) = h.pg_proxy(
        "pg",
        PG,
        vec![fault("latency", Downstream, json!({"latency": 200}))],
    );
    let c = connect(addr).await;
    let t0 = Instant::now();
    c.batch_execute("SELECT 1").await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
    p.remove_fault("latency_downstream").unwrap();
    let t0 = Instant::now();
    c.batch_execute("SELECT 1").await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );

    h.registry
        .add_fault(
            "pg",
            fault("query_latency", Downstream, json!({"latency": "30s"})),
        )
        .unwrap();
    let held = tokio::spawn(async move {
        let t0 = Instant::now();
        c.batch_execute("SELECT 2").await.unwrap();
        t0.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "the query is held");
    p.remove_fault("query_latency_downstream").unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("released when the fault is removed")
        .unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}
