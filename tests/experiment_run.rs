//! `shakedown run` end to end: real runs of the binary against the local
//! PostgreSQL, with short phases, reaching every exit code; SIGINT during
//! injection leaves no fault behind on a remote agent; the reports parse.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shakedown::experiment::result::{RunResult, Verdict};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shakedown"));
    c.env("RUST_LOG", "warn");
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory of the test's own.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shakedown-run-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes an experiment whose `{port}` and `{dir}` placeholders are filled
/// in; returns its path.
fn experiment(dir: &Path, body: &str, port: u16) -> PathBuf {
    let text = body
        .replace("{port}", &port.to_string())
        .replace("{dir}", &dir.join("report").display().to_string());
    let f = dir.join("experiment.toml");
    std::fs::write(&f, text).unwrap();
    f
}

fn run(file: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("run")
        .arg(file)
        .args(extra)
        .output()
        .expect("run shakedown")
}

fn journal(dir: &Path) -> RunResult {
    let text = std::fs::read_to_string(dir.join("report/journal.json")).expect("journal.json");
    serde_json::from_str(&text).expect("journal.json round-trips into RunResult")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The common head: a postgres target on `{port}` and a SQL load through it.
const HEAD: &str = r#"
[experiment]
name = "test"
seed = 7

[[target]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
upstream = "127.0.0.1:5432"

[[load]]
name = "orders"
kind = "sql"
dsn = "postgres://postgres@127.0.0.1:{port}/postgres"
query = "SELECT count(*) FROM pg_class"
rate = 40
concurrency = 4
timeout = "1s"

[report]
dir = "{dir}"
"#;

#[test]
fn passed_exit_0_and_reports_parse() {
    let d = scratch("pass");
    let body = format!(
        r#"{HEAD}
[phases]
baseline = "2s"
injection = "3s"
recovery = "2s"

[[fault]]
target = "pg"
kind = "query_latency"
latency = "20ms"
statement = "select"

[[slo]]
name = "orders p95"
source = "orders"
metric = "latency_p95"
max = "1s"

[[slo]]
name = "orders errors"
source = "orders"
metric = "error_rate"
max = 0.01

[[slo]]
name = "db p95 as the proxy sees it"
source = "pg"
metric = "latency_p95"
max_ratio = 100.0

[recovery]
within = "2s"
"#
    );
    let f = experiment(&d, &body, free_port());
    let o = run(&f, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let j = journal(&d);
    assert_eq!(j.verdict, Verdict::Passed);
    assert_eq!(j.seed, 7);
    assert_eq!(j.recovery_seconds, Some(0.0));
    assert!(
        j.faults[0].applied && j.faults[0].activations > 0,
        "{:?}",
        j.faults
    );
    // The injection was measured: p95 of the load rose by about 20 ms.
    let p95 = |phase: &str| {
        j.sources
            .iter()
            .find(|s| s.source == "orders" && format!("{:?}", s.phase).eq_ignore_ascii_case(phase))
            .and_then(|s| s.p95)
            .unwrap()
    };
    assert!(p95("injection") >= 0.02, "{}", p95("injection"));
    assert!(p95("baseline") < 0.02, "{}", p95("baseline"));
    let junit = std::fs::read_to_string(d.join("report/junit.xml")).unwrap();
    assert!(junit.contains("<testsuite"), "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");
    let md = std::fs::read_to_string(d.join("report/report.md")).unwrap();
    assert!(md.contains("orders p95"), "{md}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("PASSED"), "{out}");
}

#[test]
fn violated_exit_1() {
    let d = scratch("violated");
    let body = format!(
        r#"{HEAD}
[phases]
baseline = "2s"
injection = "3s"
recovery = "2s"

[[fault]]
target = "pg"
kind = "query_latency"
latency = "300ms"

[[slo]]
name = "orders p95"
source = "orders"
metric = "latency_p95"
max = "150ms"
"#
    );
    let o = run(&experiment(&d, &body, free_port()), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let j = journal(&d);
    assert_eq!(j.verdict, Verdict::Violated);
    let inj = j
        .slos
        .iter()
        .find(|s| format!("{:?}", s.phase) == "Injection")
        .unwrap();
    assert_eq!(inj.passed, Some(false));
    assert!(inj.value.unwrap() >= 0.3, "{inj:?}");
    let junit = std::fs::read_to_string(d.join("report/junit.xml")).unwrap();
    assert!(junit.contains("<failure"), "{junit}");
}

#[test]
fn not_recovered_exit_2() {
    let d = scratch("notrecovered");
    // The SLO is checked in recovery only, and cannot hold there: pg_sleep
    // takes 20 ms, the bound is 1 ms.
    let body = format!(
        r#"{HEAD}
[[load]]
name = "sleepy"
kind = "sql"
dsn = "postgres://postgres@127.0.0.1:5432/postgres"
query = "SELECT pg_sleep(0.02)"
rate = 10

[phases]
baseline = "1s"
injection = "2s"
recovery = "2s"

[[fault]]
target = "pg"
kind = "query_latency"
latency = "5ms"

[[slo]]
name = "sleepy p95"
source = "sleepy"
metric = "latency_p95"
max = "1ms"
phases = ["recovery"]
"#
    );
    let o = run(&experiment(&d, &body, free_port()), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert_eq!(journal(&d).recovery_seconds, None);
}

#[test]
fn precheck_failed_exit_3_injects_nothing() {
    let d = scratch("precheck");
    let body = format!(
        r#"{HEAD}
[phases]
baseline = "2s"
injection = "2s"
recovery = "1s"

[[fault]]
target = "pg"
kind = "query_error"
sqlstate = "40001"

[[slo]]
name = "impossible"
source = "orders"
metric = "throughput"
min = 1000
"#
    );
    let o = run(&experiment(&d, &body, free_port()), &[]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let j = journal(&d);
    assert!(
        !j.timeline.iter().any(|e| e.kind == "fault_applied"),
        "{:?}",
        j.timeline
    );
    assert!(!j.faults[0].applied);
    // Nothing injected: the load saw no error at all.
    assert!(j.sources.iter().all(|s| s.errors == 0), "{:?}", j.sources);
}

#[test]
fn guardrail_exit_4_rolls_back() {
    let d = scratch("guardrail");
    let body = format!(
        r#"{HEAD}
[phases]
baseline = "1s"
injection = "20s"
recovery = "5s"

[[fault]]
target = "pg"
kind = "query_error"
sqlstate = "57014"

[[abort]]
source = "orders"
metric = "error_rate"
max = 0.5
for = "1s"
"#
    );
    let started = Instant::now();
    let o = run(&experiment(&d, &body, free_port()), &[]);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(started.elapsed() < Duration::from_secs(15), "stopped early");
    let j = journal(&d);
    assert_eq!(j.verdict, Verdict::Aborted);
    assert!(j.reason.contains("guardrail"), "{}", j.reason);
    let kinds: Vec<&str> = j.timeline.iter().map(|e| e.kind.as_str()).collect();
    let applied = kinds.iter().position(|k| *k == "fault_applied").unwrap();
    let removed = kinds.iter().position(|k| *k == "fault_removed").unwrap();
    assert!(applied < removed, "{kinds:?}");
}

#[test]
fn inconclusive_exit_5_when_a_fault_never_fires() {
    let d = scratch("inconclusive");
    let body = format!(
        r#"{HEAD}
[phases]
baseline = "1s"
injection = "2s"
recovery = "1s"

[[fault]]
target = "pg"
kind = "query_error"
sql = "no query looks like this"

[[slo]]
name = "errors"
source = "orders"
metric = "error_rate"
max = 0.1
"#
    );
    let o = run(&experiment(&d, &body, free_port()), &[]);
    assert_eq!(o.status.code(), Some(5), "{}", show(&o));
    assert!(journal(&d).reason.contains("never fired"));
}

#[test]
fn bad_input_exit_64_with_position() {
    let d = scratch("bad");
    let f = d.join("bad.toml");
    std::fs::write(
        &f,
        "[experiment]\nname = \"x\"\n[phases]\nbaseline = \"1s\"\ninjection = \"1s\"\nrecovery = \"1s\"\n[[slo]]\nname = \"a\"\nsource = \"nobody\"\nmetric = \"error_rate\"\nmax = 0.1\n",
    )
    .unwrap();
    let o = run(&f, &[]);
    assert_eq!(o.status.code(), Some(64), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("{}:9:", f.display())), "{err}");
}

#[test]
fn dry_run_prints_the_plan_with_times() {
    let d = scratch("dry");
    let body = format!(
        r#"{HEAD}
[phases]
baseline = "10s"
injection = "20s"
recovery = "10s"

[[fault]]
target = "pg"
kind = "query_latency"
latency = "100ms"
start = "5s"
duration = "10s"
"#
    );
    let o = run(&experiment(&d, &body, free_port()), &["--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("15.0s apply query_latency"), "{out}");
    assert!(out.contains("25.0s remove"), "{out}");
    assert!(out.contains("30.0s rollback"), "{out}");
    assert!(!d.join("report").exists(), "a dry run writes nothing");
}

/// Starts `shakedown serve` on a free API port; returns it and the port.
fn agent() -> (Child, u16) {
    let mut child = bin()
        .args(["serve", "--port", "0", "--seed", "1"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("serve logs").unwrap();
        if line.contains("control API listening")
            && let Some(p) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("address="))
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| p.parse().ok())
        {
            break p;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, port)
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// SIGINT during injection on a remote agent: exit 4, and the agent holds
/// no fault (and no proxy) afterwards.
#[test]
fn sigint_during_injection_exit_4_and_no_fault_left_on_the_agent() {
    let (mut agent, api) = agent();
    let d = scratch("sigint");
    let port = free_port();
    let body = format!(
        r#"
[experiment]
name = "interrupted"

[[target]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
upstream = "127.0.0.1:5432"
agent = "http://127.0.0.1:{api}"

[[load]]
name = "orders"
kind = "sql"
dsn = "postgres://postgres@127.0.0.1:{port}/postgres"
query = "SELECT 1"
rate = 20

[phases]
baseline = "1s"
injection = "60s"
recovery = "5s"

[[fault]]
target = "pg"
kind = "query_latency"
latency = "10ms"

[report]
dir = "{{dir}}"
"#
    );
    let f = experiment(&d, &body, port);
    let mut child = bin()
        .arg("run")
        .arg(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the fault is on the agent.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http_get(api, "/proxies/pg/toxics");
        if r.contains("query_latency") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fault never reached the agent: {r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let toxic = http_get(api, "/proxies/pg/toxics/query_latency_downstream");
    assert!(toxic.contains("query_latency"), "{toxic}");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(4), "{err}");
    let proxies = http_get(api, "/proxies");
    assert!(proxies.ends_with("{}"), "the agent still holds: {proxies}");
    let j = journal(&d);
    assert_eq!(j.verdict, Verdict::Aborted);
    assert!(j.reason.contains("interrupted"), "{}", j.reason);
    let _ = agent.kill();
}

/// Runs an experiment with one `query_error` at toxicity 0.5 and no load,
/// serving its API on a free port; once the fault is on, sends 40 queries
/// through the proxy and returns which failed. Also checks that the run's
/// `/metrics` shows it in its injection phase.
fn decisions(seed: u64) -> Vec<bool> {
    let d = scratch(&format!("seed-{seed}"));
    let port = free_port();
    let api = free_port();
    let body = r#"
[experiment]
name = "seeded"

[[target]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
upstream = "127.0.0.1:5432"

[phases]
baseline = "0s"
injection = "60s"
recovery = "0s"

[[fault]]
target = "pg"
kind = "query_error"
sqlstate = "40001"
sql = "seed-probe"
toxicity = 0.5

[report]
dir = "{dir}"
"#;
    let f = experiment(&d, body, port);
    let mut child = bin()
        .arg("run")
        .arg(&f)
        .args([
            "--seed",
            &seed.to_string(),
            "--api",
            &format!("127.0.0.1:{api}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = std::net::TcpStream::connect(("127.0.0.1", api))
            .ok()
            .map(|_| http_get(api, "/proxies/pg/toxics"));
        if r.as_deref().is_some_and(|r| r.contains("query_error")) {
            break;
        }
        assert!(Instant::now() < deadline, "the fault never came on: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let failed = rt.block_on(async {
        let dsn = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
        let (client, conn) = tokio_postgres::connect(&dsn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut failed = Vec::new();
        for _ in 0..40 {
            match client.simple_query("SELECT 'seed-probe'").await {
                Ok(_) => failed.push(false),
                Err(e) => {
                    assert_eq!(e.code().map(|c| c.code()), Some("40001"), "{e}");
                    failed.push(true);
                }
            }
        }
        failed
    });
    // While it runs, /metrics shows the run and its phase.
    let metrics = http_get(api, "/metrics");
    assert!(
        metrics.contains(r#"shakedown_experiment_phase{experiment="seeded",phase="injection"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"shakedown_experiment_faults_active{experiment="seeded"} 1"#),
        "{metrics}"
    );
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert_eq!(child.wait().unwrap().code(), Some(4));
    failed
}

#[test]
fn the_same_seed_gives_the_same_fault_decisions() {
    let a = decisions(11);
    let b = decisions(11);
    let c = decisions(12);
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
    assert_eq!(a, b, "same seed, same decisions");
    assert_ne!(a, c, "another seed, other decisions");
}

/// With `--api` and `--api-linger`, `/metrics` serves the final figures
/// (the verdict, the exit code) after the run, for a scraper.
#[test]
fn final_figures_stay_on_metrics_with_api_linger() {
    let d = scratch("linger");
    let port = free_port();
    let api = free_port();
    let body = r#"
[experiment]
name = "lingering"

[[target]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:{port}"
upstream = "127.0.0.1:5432"

[[load]]
name = "orders"
kind = "sql"
dsn = "postgres://postgres@127.0.0.1:{port}/postgres"
query = "SELECT 1"
rate = 20

[phases]
baseline = "1s"
injection = "1s"
recovery = "1s"

[[fault]]
target = "pg"
kind = "query_latency"
latency = "5ms"

[[slo]]
name = "errors"
source = "orders"
metric = "error_rate"
max = 0.1

[report]
dir = "{dir}"
"#;
    let f = experiment(&d, body, port);
    let started = Instant::now();
    let mut child = bin()
        .arg("run")
        .arg(&f)
        .args(["--api", &format!("127.0.0.1:{api}"), "--api-linger", "20s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let want = r#"shakedown_experiment_verdict{experiment="lingering",verdict="passed"} 1"#;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = std::net::TcpStream::connect(("127.0.0.1", api))
            .ok()
            .map(|_| http_get(api, "/metrics"));
        if m.as_deref().is_some_and(|m| m.contains(want)) {
            let m = m.unwrap_or_default();
            assert!(
                m.contains(r#"shakedown_experiment_exit_code{experiment="lingering"} 0"#),
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no final figures: {m:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.try_wait().unwrap().is_none(), "still lingering");
    // An interrupt ends the linger at once, with the run's own verdict.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(15));
}
