//! A `protocol = "postgres"` proxy with no fault is invisible: real clients
//! (tokio-postgres, psql, pgbench) get what they get from the server
//! directly; COPY, cancellation and TLS negotiation work; malformed frames
//! from either side end only their own session.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Harness;
use futures_util::{SinkExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

const PG: &str = "127.0.0.1:5432";

async fn connect_db(addr: SocketAddr, db: &str) -> Client {
    let dsn = format!(
        "host={} port={} user=postgres dbname={db} connect_timeout=10",
        addr.ip(),
        addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

async fn connect(addr: SocketAddr) -> Client {
    connect_db(addr, "postgres").await
}

fn pg_addr() -> SocketAddr {
    PG.parse().unwrap()
}

/// Everything a simple query returns, as text, for comparison.
async fn simple_text(c: &Client, sql: &str) -> Vec<String> {
    c.simple_query(sql)
        .await
        .unwrap()
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::Row(r) => (0..r.len())
                .map(|i| r.get(i).unwrap_or("NULL").to_string())
                .collect::<Vec<_>>()
                .join("|"),
            SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
            _ => "other".into(),
        })
        .collect()
}

#[tokio::test]
async fn tokio_postgres_results_match_direct() {
    let h = Harness::new(1);
    let (p, addr) = h.pg_proxy("pg", PG, vec![]);
    let proxied = connect(addr).await;
    let direct = connect(pg_addr()).await;

    let script = "SELECT g, md5(g::text), repeat('x', g % 50) FROM generate_series(1, 3000) g; \
                  SELECT 'a'::text, NULL::int, 3.5::float8; SELECT 1 WHERE false";
    assert_eq!(
        simple_text(&proxied, script).await,
        simple_text(&direct, script).await
    );

    // Extended protocol with parameters and a large result.
    let q = "SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, $1::int) g";
    let a: Vec<(i32, String)> = proxied
        .query(q, &[&5000i32])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let b: Vec<(i32, String)> = direct
        .query(q, &[&5000i32])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(a, b);

    // Pipelined: many queries in flight on one connection.
    let stmt = proxied.prepare("SELECT $1::int * 2").await.unwrap();
    let futures = (0..200i32).map(|i| {
        let (c, s) = (&proxied, &stmt);
        async move { c.query_one(s, &[&i]).await.map(|r| r.get::<_, i32>(0)) }
    });
    let got: Vec<i32> = futures_util::future::try_join_all(futures).await.unwrap();
    assert_eq!(got, (0..200).map(|i| i * 2).collect::<Vec<_>>());

    // A server error passes unchanged, and is counted as the server's.
    let e = proxied.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DIVISION_BY_ZERO));
    let s = p.pg_stats().snapshot();
    assert_eq!(s.counts.errors.server, 1);
    assert_eq!(s.counts.errors.injected, 0);
}

#[tokio::test]
async fn copy_in_and_out_are_byte_identical() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy("pg", PG, vec![]);
    let c = connect(addr).await;
    let d = connect(pg_addr()).await;
    let t = format!("shakedown_copy_{}", std::process::id());
    d.batch_execute(&format!(
        "DROP TABLE IF EXISTS {t}; CREATE TABLE {t} (id int, body text)"
    ))
    .await
    .unwrap();

    // ~4 MB in through the proxy, in uneven pieces.
    let mut data = Vec::new();
    for i in 0..40_000 {
        data.extend_from_slice(format!("{i}\t{}\n", "y".repeat(i % 180)).as_bytes());
    }
    let sink = c.copy_in(&format!("COPY {t} FROM STDIN")).await.unwrap();
    futures_util::pin_mut!(sink);
    for piece in data.chunks(7777) {
        sink.send(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 40_000);

    async fn copy_out(c: &Client, t: &str) -> Vec<u8> {
        let stream = c
            .copy_out(&format!("COPY (SELECT * FROM {t} ORDER BY id) TO STDOUT"))
            .await
            .unwrap();
        let parts: Vec<Bytes> = stream.try_collect().await.unwrap();
        parts.concat()
    }
    let through = copy_out(&c, &t).await;
    assert_eq!(through, data, "COPY out through the proxy");
    assert_eq!(through, copy_out(&d, &t).await);
    d.batch_execute(&format!("DROP TABLE {t}")).await.unwrap();
}

#[tokio::test]
async fn cancel_request_through_the_proxy_cancels_the_query() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy("pg", PG, vec![]);
    let c = connect(addr).await;
    let token = c.cancel_token();
    let started = Instant::now();
    let sleeper = tokio::spawn(async move { c.batch_execute("SELECT pg_sleep(20)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token
        .cancel_query(NoTls)
        .await
        .expect("send the cancel request");
    let e = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("cancelled well before pg_sleep ends")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn psql(port: u16, db: &str, args: &[&str]) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "postgres", "-d", db])
        .args(args)
        .env("PGSSLMODE", "prefer")
        .output()
        .expect("run psql")
}

#[tokio::test]
async fn psql_output_matches_direct() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy("pg", PG, vec![]);
    let script = [
        "-v",
        "ON_ERROR_STOP=0",
        "-c",
        "SELECT g, g * g AS sq FROM generate_series(1, 50) g",
        "-c",
        "BEGIN",
        "-c",
        "SELECT 1/0",
        "-c",
        "COMMIT",
        "-c",
        "COPY (SELECT g FROM generate_series(1, 5) g) TO STDOUT",
        "-c",
        "\\conninfo",
    ];
    let port = addr.port();
    let (a, b) = tokio::task::spawn_blocking(move || {
        (
            psql(port, "postgres", &script),
            psql(5432, "postgres", &script),
        )
    })
    .await
    .unwrap();
    let clean = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            // The server offers TLS; the proxy answers `N` (tls = "refuse").
            .filter(|l| !l.contains("You are connected") && !l.starts_with("SSL connection"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(clean(&a), clean(&b));
    assert_eq!(
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert!(String::from_utf8_lossy(&a.stdout).contains("ROLLBACK"));
}

/// pgbench in every protocol mode, and with a new connection per
/// transaction, through the proxy: every transaction succeeds.
#[tokio::test]
async fn pgbench_runs_clean_in_every_mode() {
    let h = Harness::new(1);
    let (p, addr) = h.pg_proxy("pg", PG, vec![]);
    let db = format!("shakedown_pgbench_{}", std::process::id());
    let admin = connect(pg_addr()).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let port = addr.port().to_string();
    let db2 = db.clone();
    let outputs = tokio::task::spawn_blocking(move || {
        let init = Command::new("pgbench")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-i",
                "-q",
                "-s",
                "1",
                &db2,
            ])
            .output()
            .expect("run pgbench -i");
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let mut outs = Vec::new();
        for mode in [
            vec!["-M", "simple"],
            vec!["-M", "extended"],
            vec!["-M", "prepared"],
            vec!["-C", "-S"],
            vec!["-M", "prepared", "-S"],
        ] {
            let out = Command::new("pgbench")
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-n"])
                .args(["-c", "4", "-j", "2", "-t", "50"])
                .args(&mode)
                .arg(&db2)
                .output()
                .expect("run pgbench");
            outs.push((mode.join(" "), out));
        }
        outs
    })
    .await
    .unwrap();
    for (mode, out) in &outputs {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pgbench {mode}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("number of transactions actually processed: 200/200"),
            "pgbench {mode}: {text}"
        );
        assert!(
            text.contains("number of failed transactions: 0"),
            "pgbench {mode}: {text}"
        );
    }
    let s = p.pg_stats().snapshot();
    assert!(s.counts.queries_total >= 5 * 200, "{:?}", s.counts.queries);
    assert!(s.counts.transactions_committed >= 3 * 200, "{s:?}");
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}

/// Startup as a raw client: SSLRequest and GSSENCRequest are answered `N`,
/// then StartupMessage; returns the stream once ReadyForQuery arrived.
async fn raw_session(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    for code in [80877103i32, 80877104] {
        let mut req = Vec::new();
        req.extend_from_slice(&8i32.to_be_bytes());
        req.extend_from_slice(&code.to_be_bytes());
        s.write_all(&req).await.unwrap();
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"N");
    }
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for (k, v) in [("user", "postgres"), ("database", "postgres")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    s.write_all(&msg).await.unwrap();
    // Read frames until ReadyForQuery.
    loop {
        let (tag, _) = read_frame(&mut s).await.expect("a frame");
        if tag == b'Z' {
            return s;
        }
    }
}

async fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.ok()?;
    Some((head[0], body))
}

/// Reads to the end and returns the ErrorResponse fields seen.
async fn read_until_eof(s: &mut TcpStream) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    while let Some((tag, body)) = read_frame(s).await {
        if tag == b'E' {
            for f in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
                fields.push((f[0], String::from_utf8_lossy(&f[1..]).into_owned()));
            }
        }
    }
    fields
}

#[tokio::test]
async fn garbage_from_a_client_ends_only_that_session() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy("pg", PG, vec![]);
    let healthy = connect(addr).await;

    // An unknown message type: FATAL 08P01 as the server words it.
    let mut s = raw_session(addr).await;
    s.write_all(b"!\x00\x00\x00\x08junk").await.unwrap();
    let fields = read_until_eof(&mut s).await;
    assert!(fields.contains(&(b'C', "08P01".into())), "{fields:?}");
    assert!(
        fields.contains(&(b'M', "invalid frontend message type 33".into())),
        "{fields:?}"
    );

    // A length that cannot be.
    let mut s = raw_session(addr).await;
    s.write_all(b"Q\x7f\xff\xff\xff").await.unwrap();
    let fields = read_until_eof(&mut s).await;
    assert!(
        fields.contains(&(b'M', "invalid message length".into())),
        "{fields:?}"
    );

    // A truncated Query, then the client goes away.
    let mut s = raw_session(addr).await;
    s.write_all(b"Q\x00\x00\x00\x64SELECT").await.unwrap();
    drop(s);

    // Random bytes right after startup.
    let mut s = raw_session(addr).await;
    let junk: Vec<u8> = common::payload(9, 4096);
    let _ = s.write_all(&junk).await;
    let _ = read_until_eof(&mut s).await;

    let row = healthy.query_one("SELECT $1::int", &[&7i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);
    let again = connect(addr).await;
    again.batch_execute("SELECT 1").await.unwrap();
}

/// A "server" that completes startup, then answers anything with garbage.
async fn garbage_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                // AuthenticationOk, ReadyForQuery(I).
                let _ = s
                    .write_all(b"R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I")
                    .await;
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"\x01\x02garbage garbage").await;
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn garbage_from_a_server_ends_only_that_session() {
    let h = Harness::new(1);
    let bad = garbage_server().await.to_string();
    let (_bp, bad_addr) = h.pg_proxy("bad", &bad, vec![]);
    let (_p, addr) = h.pg_proxy("pg", PG, vec![]);
    let healthy = connect(addr).await;

    let mut s = TcpStream::connect(bad_addr).await.unwrap();
    let mut startup = Vec::new();
    let body = b"\x00\x03\x00\x00user\x00postgres\x00\x00";
    startup.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    startup.extend_from_slice(body);
    s.write_all(&startup).await.unwrap();
    let (tag, _) = read_frame(&mut s).await.unwrap();
    assert_eq!(tag, b'R');
    let (tag, _) = read_frame(&mut s).await.unwrap();
    assert_eq!(tag, b'Z');
    s.write_all(b"Q\x00\x00\x00\x0dSELECT 1\x00").await.unwrap();
    // The session ends (EOF), without the garbage reaching the client.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("the session is closed")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    healthy.batch_execute("SELECT 1").await.unwrap();
}

#[tokio::test]
async fn clients_that_prefer_tls_fall_back_to_plain() {
    let h = Harness::new(1);
    let (_p, addr) = h.pg_proxy("pg", PG, vec![]);
    let port = addr.port();
    let out =
        tokio::task::spawn_blocking(move || psql(port, "postgres", &["-tAc", "SELECT 41 + 1"]))
            .await
            .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    // raw_session checks the `N` answers byte by byte.
    let _ = raw_session(addr).await;
}

/// `tls = "passthrough"`: the server's TLS goes through untouched (the
/// server here has ssl = on); with the default, a client that requires TLS
/// is told the server has none.
#[tokio::test]
async fn tls_passthrough_relays_the_servers_tls() {
    let h = Harness::new(1);
    let mut cfg = shakedown::config::ProxyConfig::new("tls", "127.0.0.1:0", PG);
    cfg.protocol = shakedown::config::Protocol::Postgres;
    cfg.tls = shakedown::config::TlsMode::Passthrough;
    let p = h.registry.add_proxy(&cfg).unwrap();
    let tls_port = p.local_addr().unwrap().port();
    let (_q, plain) = h.pg_proxy("plain", PG, vec![]);
    let plain_port = plain.port();

    let server_has_tls =
        tokio::task::spawn_blocking(|| psql(5432, "postgres", &["-tAc", "SHOW ssl"]))
            .await
            .unwrap();
    if String::from_utf8_lossy(&server_has_tls.stdout).trim() != "on" {
        eprintln!("the server has ssl = off; only the refusal is checked");
    } else {
        let out = tokio::task::spawn_blocking(move || {
            Command::new("psql")
                .args(["-X", "-h", "127.0.0.1", "-p", &tls_port.to_string()])
                .args(["-U", "postgres", "-d", "postgres", "-tA"])
                .args([
                    "-c",
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                ])
                .env("PGSSLMODE", "require")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "t",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new("psql")
            .args(["-X", "-h", "127.0.0.1", "-p", &plain_port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-c", "SELECT 1"])
            .env("PGSSLMODE", "require")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server does not support SSL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
