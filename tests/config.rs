//! Config validation: every example parses; every kind of mistake is
//! reported as `FILE:LINE:COL: message` with exit code 64.

use std::path::{Path, PathBuf};
use std::process::Command;

use shakedown::config::{Protocol, parse_serve_config};
use shakedown::faults::{Direction, Fault};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shakedown"))
}

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_example_config_and_experiment_validates() {
    let mut files = toml_files("examples");
    assert!(!files.is_empty(), "no example configs found");
    files.extend(toml_files("experiments"));
    for f in files {
        let out = bin().arg("validate").arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn empty_file_is_valid() {
    assert_eq!(parse_serve_config("e.toml", "").unwrap().proxies.len(), 0);
}

#[test]
fn full_config_reads_every_field() {
    let src = r#"
[[proxy]]
name = "pg"
listen = "127.0.0.1:6432"
upstream = "127.0.0.1:5432"
enabled = false
protocol = "tcp"
connect_timeout = "2s"

[[proxy.fault]]
name = "slow-replies"
kind = "latency"
direction = "downstream"
latency = "100ms"
jitter = 10
toxicity = 0.5

[[proxy.fault]]
kind = "slicer"
direction = "upstream"
average_size = 10
delay = "1ms"
"#;
    let cfg = parse_serve_config("c.toml", src).unwrap();
    let p = &cfg.proxies[0];
    assert!(!p.enabled);
    assert_eq!(p.protocol, Protocol::Tcp);
    assert_eq!(p.connect_timeout, std::time::Duration::from_secs(2));
    assert_eq!(p.faults[0].name, "slow-replies");
    assert_eq!(p.faults[0].toxicity, 0.5);
    match &p.faults[0].fault {
        Fault::Latency(l) => {
            assert_eq!(l.latency.0.as_millis(), 100);
            assert_eq!(l.jitter.0.as_millis(), 10);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.faults[1].name, "slicer_upstream");
    assert_eq!(p.faults[1].direction, Direction::Upstream);
    match &p.faults[1].fault {
        Fault::Slicer(s) => assert_eq!(s.delay.0.as_micros(), 1000),
        other => panic!("{other:?}"),
    }
}

/// Each case: a file body and the `LINE:COL: ` plus a fragment of the
/// message that `validate` must print.
const BAD: &[(&str, &str, &str)] = &[
    (
        "unknown proxy key",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nlisten_port = 3\n",
        "5:1: unknown field `listen_port`",
    ),
    (
        "unknown top-level key",
        "proxies = []\n",
        "1:1: unknown field `proxies`",
    ),
    (
        "unknown fault attribute",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[[proxy.fault]]\nkind = \"latency\"\nlatncy = \"1s\"\n",
        "7:1: unknown key `latncy` for a latency fault",
    ),
    (
        "unknown fault kind",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[[proxy.fault]]\nkind = \"lag\"\n",
        "6:8: unknown fault kind `lag`",
    ),
    (
        "bad listen address",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1\"\nupstream = \"127.0.0.1:2\"\n",
        "3:10: bad listen address",
    ),
    (
        "bad upstream port",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"db:70000\"\n",
        "4:12: bad upstream address",
    ),
    (
        "duplicate proxy name",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:3\"\nupstream = \"127.0.0.1:2\"\n",
        "6:8: duplicate proxy name `a`",
    ),
    (
        "duplicate fault name",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[[proxy.fault]]\nkind = \"latency\"\n[[proxy.fault]]\nkind = \"latency\"\n",
        "7:1: duplicate fault name `latency_downstream`",
    ),
    (
        "bad duration",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[[proxy.fault]]\nkind = \"latency\"\nlatency = \"fast\"\n",
        "7:11: bad value for `latency` of latency",
    ),
    (
        "duration without unit",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nconnect_timeout = \"5\"\n",
        "5:19: duration `5` has no unit",
    ),
    (
        "toxicity out of range",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[[proxy.fault]]\nkind = \"timeout\"\ntoxicity = 1.5\n",
        "7:12: toxicity 1.5 is out of range",
    ),
    (
        "bad direction",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[[proxy.fault]]\nkind = \"timeout\"\ndirection = \"sideways\"\n",
        "7:13: direction `sideways` is invalid",
    ),
    ("broken toml", "[[proxy]\nname = \"a\"\n", "1:"),
    (
        "missing upstream",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\n",
        "1:1: missing field `upstream`",
    ),
    (
        "same listen twice",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[[proxy]]\nname = \"b\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n",
        "7:10: listen address `127.0.0.1:1` is already used by proxy `a`",
    ),
    (
        "postgres fault on a tcp proxy",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\n[[proxy.fault]]\nkind = \"query_error\"\n",
        "5:1: fault kind `query_error` needs a postgres proxy",
    ),
    (
        "tls on a tcp proxy",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\ntls = \"passthrough\"\n",
        "5:7: `tls` applies to postgres proxies only",
    ),
    (
        "bad sqlstate",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nprotocol = \"postgres\"\n[[proxy.fault]]\nkind = \"query_error\"\nsqlstate = \"4000\"\n",
        "8:12: bad value for `sqlstate` of query_error: `4000` is not an SQLSTATE",
    ),
    (
        "bad sql pattern",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nprotocol = \"postgres\"\n[[proxy.fault]]\nkind = \"query_latency\"\nsql = \"(unclosed\"\n",
        "8:7: bad value for `sql` of query_latency: bad regular expression",
    ),
    (
        "unknown statement kind",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nprotocol = \"postgres\"\n[[proxy.fault]]\nkind = \"terminate\"\nstatement = \"selct\"\n",
        "8:13: bad value for `statement` of terminate",
    ),
    (
        "query matching on a connection fault",
        "[[proxy]]\nname = \"a\"\nlisten = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nprotocol = \"postgres\"\n[[proxy.fault]]\nkind = \"reject_connections\"\nstatement = \"select\"\n",
        "8:13: bad value for `statement` of reject_connections: reject_connections acts on new sessions",
    ),
];

#[test]
fn every_mistake_names_file_line_and_column_with_exit_64() {
    let dir = std::env::temp_dir().join(format!("shakedown-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (what, body, want) in BAD {
        let file = dir.join(format!("{}.toml", what.replace(' ', "_")));
        std::fs::write(&file, body).unwrap();
        for cmd in [vec!["validate"], vec!["serve", "--config"]] {
            let out = bin().args(&cmd).arg(&file).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(64),
                "{what} ({cmd:?}): exit code; stderr: {stderr}"
            );
            let prefix = format!("{}:{want}", file.display());
            assert!(
                stderr.contains(&prefix),
                "{what} ({cmd:?}): wanted `{prefix}` in:\n{stderr}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn all_mistakes_are_reported_at_once() {
    let src = "[[proxy]]\nname = \"a\"\nlisten = \"x\"\nupstream = \"y\"\n[[proxy.fault]]\nkind = \"timeout\"\ntoxicity = 2\n";
    let errs = parse_serve_config("m.toml", src).unwrap_err();
    assert_eq!(errs.0.len(), 3, "{errs}");
}

#[test]
fn missing_file_is_bad_input() {
    let out = bin()
        .args(["validate", "/nonexistent/shakedown.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read file"));
}
