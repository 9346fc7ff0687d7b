//! Probes: periodic readings from outside the traffic (a Prometheus query,
//! a health endpoint, a SQL query, a command), so an experiment can judge
//! what the load cannot see, such as replication lag or a queue depth.
//!
//! A probe reads every `interval` (the first reading at once), one reading
//! at a time, each bounded by the probe's timeout. Every reading is
//! recorded as an operation (latency, success or an error class) and, when
//! it yields a number, with that value (`metric = "value"`). A slow reading
//! delays the next one rather than piling readings up: probes observe, they
//! must not load what they observe.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Uri};
use serde_json::Value;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_postgres::{Config, SimpleQueryMessage};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::load::{
    HttpClient, OpError, PgConn, http_call, http_client, http_uri, pg_config, pg_connect, pg_keeps,
    pg_query, run_command, status_ok, timed,
};
use super::recorder::Recorder;
use super::spec::{Probe, ProbeKind};

/// Largest Prometheus answer read: an instant query's first sample is at
/// the start, and a query matching thousands of series is a mistake.
pub const MAX_PROMETHEUS_BODY: usize = 1024 * 1024;
/// Shortest interval between readings: `tokio::time::interval` needs a
/// nonzero period, and a probe reading more often would be load.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// What a probe reads, set up once.
enum Reader {
    Prometheus {
        client: HttpClient,
        uri: Uri,
    },
    Http {
        client: HttpClient,
        uri: Uri,
        expect: Vec<u16>,
    },
    Sql {
        config: Config,
        query: String,
        /// Kept between readings; dropped on any error but a server one.
        conn: Option<PgConn>,
    },
    Command(String),
    /// Misconfigured: every reading fails (class `config`).
    Broken(OpError),
}

impl Reader {
    fn new(probe: &Probe) -> Self {
        let built = match &probe.kind {
            ProbeKind::Prometheus { url, query } => {
                http_uri(&prometheus_url(url, query)).map(|uri| Reader::Prometheus {
                    client: http_client(1),
                    uri,
                })
            }
            ProbeKind::Http { url, expect_status } => http_uri(url).map(|uri| Reader::Http {
                client: http_client(1),
                uri,
                expect: expect_status.clone(),
            }),
            ProbeKind::Sql { dsn, query } => pg_config(dsn).map(|config| Reader::Sql {
                config,
                query: query.clone(),
                conn: None,
            }),
            ProbeKind::Command { run } => Ok(Reader::Command(run.clone())),
        };
        built.unwrap_or_else(|e| {
            warn!(probe = %probe.name, error = %e, "every reading of this probe will fail (class `config`)");
            Reader::Broken(e)
        })
    }

    /// One reading: its value, if it has one.
    async fn read(&mut self) -> Result<Option<f64>, OpError> {
        match self {
            Reader::Prometheus { client, uri } => {
                let (status, body) = http_call(
                    client,
                    Method::GET,
                    uri.clone(),
                    Bytes::new(),
                    MAX_PROMETHEUS_BODY,
                )
                .await?;
                status_ok(status, &[])?;
                prometheus_value(&body).map(Some)
            }
            Reader::Http {
                client,
                uri,
                expect,
            } => {
                let (status, _) =
                    http_call(client, Method::GET, uri.clone(), Bytes::new(), 0).await?;
                status_ok(status, expect).map(|()| None)
            }
            Reader::Sql {
                config,
                query,
                conn,
            } => {
                // Taken out: a reading cut by its timeout drops it, and the
                // next one reconnects.
                let c = match conn.take() {
                    Some(c) if !c.client.is_closed() => c,
                    _ => pg_connect(config).await?,
                };
                match pg_query(&c, query).await {
                    Ok(msgs) => {
                        *conn = Some(c);
                        Ok(first_value(&msgs))
                    }
                    Err(err) => {
                        if pg_keeps(&err) {
                            *conn = Some(c);
                        }
                        Err(err)
                    }
                }
            }
            Reader::Command(cmd) => {
                let out = run_command(cmd).await?;
                Ok(last_number(&out.stdout))
            }
            Reader::Broken(e) => Err(e.clone()),
        }
    }
}

/// `{url}/api/v1/query?query=…`, the query percent-encoded.
fn prometheus_url(base: &str, query: &str) -> String {
    format!(
        "{}/api/v1/query?query={}",
        base.trim_end_matches('/'),
        percent_encode(query)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so any
/// PromQL (`{`, `"`, `+`, spaces, non-ASCII) survives as a query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The value of an instant query's answer (Prometheus HTTP API): a
/// vector's first sample, a scalar, or a matrix's first series' last
/// sample.
fn prometheus_value(body: &[u8]) -> Result<f64, OpError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| OpError::Parse(format!("not JSON: {e}")))?;
    if v["status"] != "success" {
        let why = v["error"].as_str().unwrap_or("no error message");
        return Err(OpError::Parse(format!("status {}: {why}", v["status"])));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => {
            let first = data["result"].as_array().and_then(|r| r.first());
            &first.ok_or(OpError::Empty)?["value"]
        }
        Some("matrix") => {
            let first = data["result"].as_array().and_then(|r| r.first());
            let values = first.ok_or(OpError::Empty)?["values"].as_array();
            values.and_then(|v| v.last()).ok_or(OpError::Empty)?
        }
        Some("scalar") | Some("string") => &data["result"],
        other => {
            return Err(OpError::Parse(format!("result type {other:?}")));
        }
    };
    let text = sample
        .get(1)
        .and_then(Value::as_str)
        .ok_or_else(|| OpError::Parse("sample is not [time, \"value\"]".into()))?;
    // Prometheus writes NaN, +Inf and -Inf; Rust parses all three.
    let x: f64 = text
        .parse()
        .map_err(|_| OpError::Parse(format!("value `{text}`")))?;
    if x.is_nan() {
        return Err(OpError::Nan);
    }
    Ok(x)
}

/// The first column of the first row, as a number, if it is one.
fn first_value(msgs: &[SimpleQueryMessage]) -> Option<f64> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r.get(0).and_then(parse_number)),
        _ => None,
    })?
}

/// The last non-empty line of `out`, as a number, if it is one.
fn last_number(out: &[u8]) -> Option<f64> {
    let text = String::from_utf8_lossy(out);
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .and_then(parse_number)
}

fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|x| !x.is_nan())
}

/// Runs a probe until `stop` is cancelled, recording every reading in
/// `rec`. Never returns before `stop` and never panics on I/O or bad
/// input: a misconfigured probe fails every reading with class `config`.
pub async fn run(probe: Probe, rec: Arc<Recorder>, stop: CancellationToken) {
    let mut reader = Reader::new(&probe);
    let mut tick = tokio::time::interval(probe.interval.max(MIN_INTERVAL));
    // A reading that overran its interval delays the next; no catch-up burst.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let start = Instant::now();
        let (latency, r) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            r = timed(probe.timeout, reader.read()) => r,
        };
        match r {
            Ok(v) => rec.ok(start, latency, v),
            Err(e) => {
                debug!(probe = %probe.name, error = %e, "reading failed");
                rec.error(start, Some(latency), &e.class());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::experiment::load::tests::{http_server, wait_until};
    use crate::experiment::recorder::Summary;

    const PROM_OK: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000.0,"0.97"]}]}}"#;

    fn probe(kind: ProbeKind, interval_ms: u64, timeout_ms: u64) -> Probe {
        Probe {
            name: "p".into(),
            kind,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    /// Runs `probe` until it has recorded `n` readings (polling, 5 s at
    /// most), stops it, and returns the summary of all its readings.
    async fn readings(p: Probe, n: u64) -> Summary {
        let t0 = Instant::now();
        let rec = Recorder::new(t0);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(p, rec.clone(), stop.clone()));
        wait_until(|| rec.summary(t0, Instant::now()).ops >= n).await;
        assert!(!task.is_finished(), "a probe must run until stopped");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("a stopped probe ends promptly")
            .expect("no panic");
        rec.summary(t0, Instant::now())
    }

    #[tokio::test]
    async fn command_value_is_last_number_printed() {
        let kind = ProbeKind::Command {
            run: "echo starting; echo 42; echo".into(),
        };
        let s = readings(probe(kind, 20, 2000), 3).await;
        assert_eq!(s.errors, 0, "{s:?}");
        assert_eq!(s.value, Some(42.0), "{s:?}");
        assert_eq!(s.values, s.ops);
    }

    #[tokio::test]
    async fn first_reading_at_once_then_every_interval() {
        let kind = ProbeKind::Command {
            run: "echo 1".into(),
        };
        let s = readings(probe(kind, 60_000, 2000), 1).await;
        assert_eq!(s.ops, 1, "one reading at once, the next a minute later");
    }

    #[tokio::test]
    async fn command_failure_and_timeout() {
        let s = readings(
            probe(
                ProbeKind::Command {
                    run: "false".into(),
                },
                10,
                2000,
            ),
            2,
        )
        .await;
        assert_eq!(s.errors_by_class, vec![("exit 1".into(), s.ops)]);
        let kind = ProbeKind::Command {
            run: "sleep 5".into(),
        };
        let s = readings(probe(kind, 10, 50), 2).await;
        assert_eq!(s.errors_by_class, vec![("timeout".into(), s.ops)]);
        assert!(s.max.is_some_and(|m| (0.05..1.0).contains(&m)), "{s:?}");
        let s = readings(
            probe(
                ProbeKind::Command {
                    run: "echo hi".into(),
                },
                10,
                2000,
            ),
            2,
        )
        .await;
        assert_eq!((s.errors, s.value), (0, None), "success without a value");
    }

    #[tokio::test]
    async fn prometheus_vector_value() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let addr = http_server(move |pq| {
            log.lock().expect("lock").push(pq.to_string());
            (200, PROM_OK.into())
        })
        .await;
        let query = r#"sum(rate(http_requests_total{code=~"5.."}[1m])) / 2"#;
        let kind = ProbeKind::Prometheus {
            url: format!("http://{addr}/"),
            query: query.into(),
        };
        let s = readings(probe(kind, 20, 2000), 2).await;
        assert_eq!(s.errors, 0, "{s:?}");
        assert_eq!(s.value, Some(0.97), "{s:?}");
        let first = seen.lock().expect("lock")[0].clone();
        let (path, q) = first.split_once("?query=").expect("query parameter");
        assert_eq!(path, "/api/v1/query");
        assert_eq!(percent_decode(q), query, "the query arrives intact");
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("hex");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[tokio::test]
    async fn prometheus_failures_by_class() {
        let addr = http_server(|pq| {
            let body = |b: &str| (200, b.to_string());
            if pq.ends_with("empty") {
                body(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
            } else if pq.ends_with("nan") {
                body(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#)
            } else if pq.ends_with("garbage") {
                body("<html>")
            } else {
                (
                    400,
                    r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#.into(),
                )
            }
        })
        .await;
        for (q, class) in [
            ("empty", "empty"),
            ("nan", "nan"),
            ("garbage", "parse"),
            ("bad", "status 400"),
        ] {
            let kind = ProbeKind::Prometheus {
                url: format!("http://{addr}"),
                query: q.into(),
            };
            let s = readings(probe(kind, 10, 2000), 2).await;
            assert_eq!(s.errors_by_class, vec![(class.into(), s.ops)], "{q}");
            assert_eq!(s.value, None);
        }
    }

    #[test]
    fn prometheus_shapes() {
        assert_eq!(prometheus_value(PROM_OK.as_bytes()), Ok(0.97));
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"3"]}}"#;
        assert_eq!(prometheus_value(scalar.as_bytes()), Ok(3.0));
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"2.5"]]}]}}"#;
        assert_eq!(prometheus_value(matrix.as_bytes()), Ok(2.5));
        let inf = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        assert_eq!(prometheus_value(inf.as_bytes()), Ok(f64::INFINITY));
        let err = r#"{"status":"error","error":"bad"}"#;
        assert!(matches!(
            prometheus_value(err.as_bytes()),
            Err(OpError::Parse(_))
        ));
    }

    #[test]
    fn encoding() {
        assert_eq!(
            percent_encode("up{job=\"a b\"}"),
            "up%7Bjob%3D%22a%20b%22%7D"
        );
        assert_eq!(percent_encode("a-b_c.d~1+"), "a-b_c.d~1%2B");
        assert_eq!(
            prometheus_url("http://p:9090/", "up"),
            "http://p:9090/api/v1/query?query=up"
        );
    }

    #[tokio::test]
    async fn http_probe_by_status() {
        let addr = http_server(|pq| {
            if pq == "/healthz" {
                (200, "ok".into())
            } else {
                (503, "no".into())
            }
        })
        .await;
        let kind = |path: &str, expect: Option<u16>| ProbeKind::Http {
            url: format!("http://{addr}{path}"),
            expect_status: expect.into_iter().collect(),
        };
        let s = readings(probe(kind("/healthz", None), 10, 2000), 2).await;
        assert_eq!((s.errors, s.value), (0, None), "{s:?}");
        let s = readings(probe(kind("/other", None), 10, 2000), 2).await;
        assert_eq!(s.errors_by_class, vec![("status 503".into(), s.ops)]);
        let s = readings(probe(kind("/other", Some(503)), 10, 2000), 2).await;
        assert_eq!(s.errors, 0, "{s:?}");
    }

    #[tokio::test]
    async fn sql_probe_value_and_connection_kept() {
        let pg = "postgres://postgres@127.0.0.1:5432/postgres";
        let kind = ProbeKind::Sql {
            dsn: pg.into(),
            query: "SELECT 7.5::float8, 'x'".into(),
        };
        let s = readings(probe(kind, 10, 2000), 3).await;
        assert_eq!(s.errors, 0, "{s:?}");
        assert_eq!(s.value, Some(7.5));

        let kind = ProbeKind::Sql {
            dsn: pg.into(),
            query: "SELECT 'not a number'".into(),
        };
        let s = readings(probe(kind, 10, 2000), 2).await;
        assert_eq!((s.errors, s.value), (0, None), "success without a value");

        let kind = ProbeKind::Sql {
            dsn: pg.into(),
            query: "SELECT pg_sleep(1)".into(),
        };
        let s = readings(probe(kind, 10, 50), 2).await;
        assert_eq!(s.errors_by_class, vec![("timeout".into(), s.ops)]);

        // One connection across readings.
        let mut reader = Reader::new(&probe(
            ProbeKind::Sql {
                dsn: pg.into(),
                query: "SELECT pg_backend_pid()".into(),
            },
            10,
            2000,
        ));
        let a = reader.read().await.expect("reading");
        let b = reader.read().await.expect("reading");
        assert!(a.is_some() && a == b, "same backend: {a:?} {b:?}");
        // A server error keeps it, too.
        if let Reader::Sql { query, .. } = &mut reader {
            *query = "SELECT * FROM no_such_table_here".into();
        }
        assert_eq!(reader.read().await, Err(OpError::SqlState("42P01".into())));
        if let Reader::Sql { query, .. } = &mut reader {
            *query = "SELECT pg_backend_pid()".into();
        }
        assert_eq!(reader.read().await.expect("reading"), a);
    }

    #[tokio::test]
    async fn broken_config_fails_every_reading() {
        let kind = ProbeKind::Prometheus {
            url: "https://prom:9090".into(),
            query: "up".into(),
        };
        let s = readings(probe(kind, 10, 2000), 2).await;
        assert_eq!(s.errors_by_class, vec![("config".into(), s.ops)]);
    }
}
