//! Every experiment under `experiments/` runs for real against the local
//! PostgreSQL, its schedule shortened with `--time-scale`, and ends with
//! the verdict its own comment promises ("Expected verdict: … (exit N)"),
//! so the examples and their documentation cannot drift from what the
//! runner does.

use std::path::{Path, PathBuf};
use std::process::Command;

use shakedown::experiment::result::RunResult;

/// Shortens each schedule to a fifth: a 40 s experiment takes 8 s. Fault
/// attributes (500 ms of latency, 1 s timeouts) stay as written.
const SCALE: &str = "0.2";

fn experiment(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experiments")
        .join(name)
}

/// The exit code the file's comment promises.
fn promised(file: &Path) -> i32 {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .map(|l| l.trim_start_matches('#').trim())
        .collect::<Vec<_>>()
        .join(" ");
    let at = line
        .find("Expected verdict:")
        .unwrap_or_else(|| panic!("{} has no `Expected verdict:` comment", file.display()));
    let rest = &line[at..];
    let code = rest
        .find("(exit ")
        .map(|i| &rest[i + 6..])
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.trim().parse().ok());
    code.unwrap_or_else(|| {
        panic!(
            "{}: no `(exit N)` after `Expected verdict:`",
            file.display()
        )
    })
}

fn run(name: &str) -> RunResult {
    let file = experiment(name);
    let dir = std::env::temp_dir().join(format!(
        "shakedown-experiments-{}-{}",
        name.trim_end_matches(".toml"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_shakedown"))
        .env("RUST_LOG", "warn")
        .args(["run", "--time-scale", SCALE, "--report-dir"])
        .arg(&dir)
        .arg(&file)
        .output()
        .expect("run shakedown");
    let want = promised(&file);
    assert_eq!(
        out.status.code(),
        Some(want),
        "{name}: expected exit {want}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = std::fs::read_to_string(dir.join("journal.json")).expect("journal.json");
    let _ = std::fs::remove_dir_all(&dir);
    serde_json::from_str(&journal).expect("journal.json round-trips")
}

/// Every file in the folder has a test here.
#[test]
fn every_experiment_has_a_run_test() {
    let me = std::fs::read_to_string(file!()).unwrap();
    for e in std::fs::read_dir(experiment("")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") {
            assert!(
                me.contains(&format!("run(\"{name}\")")),
                "experiments/{name} is not run by {}",
                file!()
            );
            promised(&e.path());
        }
    }
}

#[test]
fn quickstart() {
    let j = run("quickstart.toml");
    assert!(j.faults.iter().all(|f| f.applied && f.activations > 0));
}

#[test]
fn query_latency_500ms() {
    let j = run("query-latency-500ms.toml");
    let p95 = j
        .slos
        .iter()
        .find(|s| s.name == "orders p95" && s.phase.as_str() == "injection")
        .and_then(|s| s.value)
        .unwrap();
    assert!(p95 >= 0.45, "the 500 ms shows in the injection p95: {p95}");
}

#[test]
fn bad_migration_not_null() {
    let j = run("bad-migration-not-null.toml");
    let failed: Vec<&str> = j
        .slos
        .iter()
        .filter(|s| s.passed == Some(false))
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(failed, ["payments error rate"], "only payments break");
}

#[test]
fn too_many_clients() {
    let j = run("too-many-clients.toml");
    assert!(j.recovery_seconds.is_some(), "recovery is measured");
}

#[test]
fn terminate_mid_transaction() {
    let j = run("terminate-mid-transaction.toml");
    assert!(j.faults[0].activations > 0);
}

#[test]
fn blackhole_guardrail() {
    let j = run("blackhole-guardrail.toml");
    assert!(j.reason.contains("guardrail"), "{}", j.reason);
    let kinds: Vec<&str> = j.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"rollback"), "{kinds:?}");
}

#[test]
fn seeded_drops() {
    let j = run("seeded-drops.toml");
    assert!(j.faults[0].activations > 0);
}

/// A demo service (`examples/checkout_demo.rs`), killed when dropped.
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the demo in `args` and waits for its `listening on` line.
fn demo(args: &[&str]) -> Demo {
    use std::io::BufRead;
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = profile.join("examples").join("checkout_demo");
    assert!(
        bin.exists(),
        "{} is built by `cargo test`; build it with `cargo build --example checkout_demo`",
        bin.display()
    );
    let mut child = Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line:?}");
    Demo(child)
}

#[test]
fn http_partition() {
    // The addresses the experiment's comment gives.
    let _inventory = demo(&["inventory", "--listen", "127.0.0.1:7001"]);
    let _checkout = demo(&[
        "checkout",
        "--listen",
        "127.0.0.1:7000",
        "--inventory",
        "http://127.0.0.1:6439",
        "--timeout",
        "500ms",
    ]);
    let j = run("http-partition.toml");
    let confirmed_in_injection = j
        .sources
        .iter()
        .find(|s| s.source == "confirmed" && s.phase.as_str() == "injection")
        .unwrap();
    assert!(
        confirmed_in_injection
            .errors_by_class
            .iter()
            .all(|e| e.class == "status 503"),
        "checkout declined with 503, nothing else: {confirmed_in_injection:?}"
    );
}
