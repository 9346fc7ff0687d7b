//! The unchanged `toxiproxy-python` client (PyPI 0.1.1) against the real
//! binary, as a Python user would run it: `shakedown serve` on a free port,
//! the client in a venv, and `tests/clients/toxiproxy_python_test.py`
//! going through the client's whole API (see that script for the steps).
//!
//! The venv lives in `target/py-toxiproxy`; it is built on first use
//! (`python3 -m venv`, then `pip install toxiproxy-python==0.1.1`, which
//! needs PyPI) and reused afterwards, so later runs cost no network.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The client version under test: the last release on PyPI.
const CLIENT: &str = "toxiproxy-python==0.1.1";
/// Building the venv downloads a few packages.
const VENV_TIMEOUT: Duration = Duration::from_secs(300);
/// The script takes about two seconds; the rest is headroom for slow CI.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// The server binds its API at once; this only bounds a broken start.
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command to completion under a deadline; panics with its output
/// if it fails.
async fn run(what: &str, cmd: &mut Command, limit: Duration) {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `python` imports the client at the expected version.
async fn has_client(python: &Path) -> bool {
    let check = "import importlib.metadata as m, toxiproxy; \
                 assert m.version('toxiproxy-python') == '0.1.1'";
    Command::new(python)
        .args(["-c", check])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// The venv's python, building the venv if it is missing or broken. It is
/// built beside its final place and renamed in, so an interrupted install
/// never leaves a half-made venv behind.
async fn venv_python() -> PathBuf {
    let venv = root().join("target/py-toxiproxy");
    let python = venv.join("bin/python");
    if has_client(&python).await {
        return python;
    }
    let tmp = root().join(format!("target/py-toxiproxy.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(root().join("target")).expect("create target/");
    run(
        "python3 -m venv (is Python 3 with venv installed?)",
        Command::new("python3").arg("-m").arg("venv").arg(&tmp),
        VENV_TIMEOUT,
    )
    .await;
    run(
        &format!("pip install {CLIENT} (is PyPI reachable?)"),
        Command::new(tmp.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            CLIENT,
        ]),
        VENV_TIMEOUT,
    )
    .await;
    let _ = std::fs::remove_dir_all(&venv);
    if let Err(e) = std::fs::rename(&tmp, &venv) {
        // Another run may have won the race; its venv is as good as ours.
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(has_client(&python).await, "cannot install the venv: {e}");
    }
    assert!(has_client(&python).await, "the new venv lacks {CLIENT}");
    python
}

/// `shakedown serve` with its API on a port the OS picks, and its log.
struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary and returns once its API listens (read from the
    /// log line that reports the bound address, not slept on).
    async fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shakedown"))
            .args(["serve", "--host", "127.0.0.1", "--port", "0", "--seed", "1"])
            .env("RUST_LOG", "info")
            .env_remove("SHAKEDOWN_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start shakedown serve");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let port = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                log.lock().unwrap().push(line.clone());
                if line.contains("control API listening") {
                    let port = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("address="))
                        .and_then(|a| a.rsplit_once(':'))
                        .and_then(|(_, p)| p.parse::<u16>().ok());
                    return port;
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("serve did not report its API address: {:?}", log));
        // Keep draining the log so the server never blocks on a full pipe.
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Server { child, port, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

#[tokio::test]
async fn toxiproxy_python_client_drives_shakedown() {
    let python = venv_python().await;
    let mut server = Server::start().await;
    let script = root().join("tests/clients/toxiproxy_python_test.py");
    let port = server.port.to_string();
    let out = tokio::time::timeout(
        SCRIPT_TIMEOUT,
        Command::new(&python)
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", &port])
            .env("PYTHONUNBUFFERED", "1")
            // requests honours proxy variables; the API is on loopback.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the script finishes within its deadline")
    .expect("run the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "toxiproxy-python script failed ({}).\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- shakedown log\n{}",
        out.status,
        server.log()
    );
    assert!(
        stdout.contains("OK: toxiproxy-python drove shakedown"),
        "{stdout}"
    );
    let _ = server.child.kill().await;
}
