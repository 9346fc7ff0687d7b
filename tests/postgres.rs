//! Through the real PostgreSQL at 127.0.0.1:5432 with real clients.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Harness, fault};
use serde_json::json;
use shakedown::faults::Direction::Downstream;
use tokio_postgres::NoTls;

const PG: &str = "127.0.0.1:5432";

async fn pg_connect(
    addr: std::net::SocketAddr,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let dsn = format!(
        "host={} port={} user=postgres dbname=postgres connect_timeout=5",
        addr.ip(),
        addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&dsn, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[tokio::test]
async fn tokio_postgres_queries_work_through_the_proxy() {
    let h = Harness::new(1);
    let (_p, addr) = h.proxy("pg", PG, vec![]);
    let client = pg_connect(addr).await.expect("connect through proxy");

    // Simple protocol, several statements, a temp table of our own.
    client
        .batch_execute(
            "CREATE TEMP TABLE shakedown_t (id int primary key, body text);
             INSERT INTO shakedown_t SELECT g, repeat('x', g) FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();
    // Extended protocol with parameters, and a large result.
    let rows = client
        .query(
            "SELECT id, body FROM shakedown_t WHERE id > $1 ORDER BY id",
            &[&1000i32],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1000);
    let last: String = rows[999].get(1);
    assert_eq!(last.len(), 2000);
    // Pipelined queries: issued concurrently on one connection.
    let client = std::sync::Arc::new(client);
    let stmt = client.prepare("SELECT $1::int + 1").await.unwrap();
    let tasks: Vec<_> = (0..20i32)
        .map(|i| {
            let (c, st) = (client.clone(), stmt.clone());
            tokio::spawn(async move { c.query_one(&st, &[&i]).await.map(|r| r.get::<_, i32>(0)) })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), i as i32 + 1);
    }
    // A server error passes through untouched.
    let err = client.simple_query("SELECT 1/0").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"));
}

#[tokio::test]
async fn psql_works_through_the_proxy() {
    let h = Harness::new(1);
    let (_p, addr) = h.proxy("pg", PG, vec![]);
    let port = addr.port().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-X", "-A", "-t", "-c", "SELECT 6 * 7"])
            .output()
            .expect("psql runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}

#[tokio::test]
async fn downstream_latency_slows_every_round_trip() {
    let h = Harness::new(1);
    let (_p, addr) = h.proxy(
        "pg",
        PG,
        vec![fault("latency", Downstream, json!({"latency": 100}))],
    );
    let client = pg_connect(addr).await.unwrap();
    for _ in 0..5 {
        let t = Instant::now();
        client.simple_query("SELECT 1").await.unwrap();
        let rtt = t.elapsed();
        assert!(
            rtt >= Duration::from_millis(100),
            "round trip {rtt:?} < 100ms"
        );
    }
    // Direct, for comparison, is far faster.
    let direct = pg_connect(PG.parse().unwrap()).await.unwrap();
    let t = Instant::now();
    direct.simple_query("SELECT 1").await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(100));
}

#[tokio::test]
async fn disabled_or_refusing_proxy_fails_new_clients_until_restored() {
    let h = Harness::new(1);
    let (p, addr) = h.proxy("pg", PG, vec![]);
    pg_connect(addr).await.expect("enabled: connects");

    p.set_enabled(false).unwrap();
    assert!(
        pg_connect(addr).await.is_err(),
        "disabled proxy accepted a client"
    );
    p.set_enabled(true).unwrap();
    let c = pg_connect(addr).await.expect("re-enabled: connects");
    c.simple_query("SELECT 1").await.unwrap();

    h.registry
        .add_fault("pg", fault("refuse", Downstream, json!({})))
        .unwrap();
    assert!(pg_connect(addr).await.is_err(), "refuse let a client in");
    // The live session carries on.
    c.simple_query("SELECT 1")
        .await
        .expect("live session survives refuse");
    p.remove_fault("refuse_downstream").unwrap();
    pg_connect(addr).await.expect("refuse removed: connects");
}
