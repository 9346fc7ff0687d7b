//! `shakedown ctl`, the real binary, against an in-process control API:
//! toxiproxy-cli's commands, aliases, flags and output lines, and the state
//! each command leaves on the server (read back with the raw HTTP client).

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::http::{get, post};
use common::{ApiHarness, connect, echo_server};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What one run of the binary gave.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "ctl failed: {self:?}");
        assert_eq!(self.stderr, "", "{self:?}");
        &self.stdout
    }
}

/// Runs `shakedown ctl <args>` with `envs`, none of the caller's
/// TOXIPROXY_URL / SHAKEDOWN_API_TOKEN, and stdout piped (not a terminal).
async fn ctl_env(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_shakedown"));
    cmd.arg("ctl")
        .args(args)
        .env_remove("TOXIPROXY_URL")
        .env_remove("SHAKEDOWN_API_TOKEN")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("ctl finishes within 60 s")
        .expect("ctl runs");
    Run {
        code: out.status.code().expect("exit code, not a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `shakedown ctl --host http://<api> <args>`.
async fn ctl(api: SocketAddr, args: &[&str]) -> Run {
    let host = format!("http://{api}");
    let mut all = vec!["--host", host.as_str()];
    all.extend_from_slice(args);
    ctl_env(&all, &[]).await
}

async fn proxy_state(api: SocketAddr, name: &str) -> Value {
    let r = get(api, &format!("/proxies/{name}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

async fn toxic_state(api: SocketAddr, proxy: &str, toxic: &str) -> Value {
    let r = get(api, &format!("/proxies/{proxy}/toxics/{toxic}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Creates `name` through the API, listening on 127.0.0.1:0; returns its
/// resolved listen address.
async fn create_direct(api: SocketAddr, name: &str, upstream: &str) -> String {
    let body = json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream});
    let r = post(api, "/proxies", &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["listen"].as_str().unwrap().to_string()
}

async fn echo_through(listen: &str) {
    let mut s = connect(listen.parse().unwrap()).await;
    s.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(&buf, b"hello");
}

fn refused(listen: &str) -> bool {
    std::net::TcpStream::connect(listen).is_err()
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn proxy_lifecycle_create_list_inspect_toggle_delete() {
    let a = ApiHarness::start(None).await;
    let echo = echo_server().await;
    let upstream = echo.to_string();

    let out = ctl(
        a.addr,
        &["create", "-l", "127.0.0.1:0", "-u", &upstream, "api"],
    )
    .await;
    assert_eq!(out.ok(), "Created new proxy api\n");
    let p = proxy_state(a.addr, "api").await;
    assert_eq!(
        (&p["upstream"], &p["enabled"]),
        (&json!(upstream), &json!(true))
    );
    let listen = p["listen"].as_str().unwrap().to_string();
    echo_through(&listen).await;

    // Long flags, given after the name, work too.
    let out = ctl(
        a.addr,
        &[
            "create",
            "other",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "localhost:1",
        ],
    )
    .await;
    assert_eq!(out.ok(), "Created new proxy other\n");
    let other_listen = proxy_state(a.addr, "other").await["listen"]
        .as_str()
        .unwrap()
        .to_string();

    // Piped, `list` prints toxiproxy-cli's plain lines, sorted by name.
    let out = ctl(a.addr, &["list"]).await;
    assert_eq!(
        out.ok(),
        format!(
            "api\t{listen}\t{upstream}\tenabled\t0\nother\t{other_listen}\tlocalhost:1\tenabled\t0\n"
        )
    );
    // No toxics: piped `inspect` prints nothing, as toxiproxy-cli does.
    assert_eq!(ctl(a.addr, &["inspect", "api"]).await.ok(), "");

    let out = ctl(a.addr, &["toggle", "api"]).await;
    assert_eq!(out.ok(), "Proxy api is now disabled\n");
    assert_eq!(proxy_state(a.addr, "api").await["enabled"], json!(false));
    assert!(refused(&listen), "a disabled proxy must refuse connections");
    assert!(ctl(a.addr, &["list"]).await.ok().contains("\tdisabled\t"));

    let out = ctl(a.addr, &["toggle", "api"]).await;
    assert_eq!(out.ok(), "Proxy api is now enabled\n");
    assert_eq!(proxy_state(a.addr, "api").await["enabled"], json!(true));
    echo_through(&listen).await;

    let out = ctl(a.addr, &["delete", "api"]).await;
    assert_eq!(out.ok(), "Deleted proxy api\n");
    assert_eq!(get(a.addr, "/proxies/api").await.status, 404);
    assert!(refused(&listen));
    assert_eq!(
        ctl(a.addr, &["list"]).await.ok(),
        format!("other\t{other_listen}\tlocalhost:1\tenabled\t0\n")
    );
}

#[tokio::test]
async fn toxics_add_update_remove() {
    let a = ApiHarness::start(None).await;
    create_direct(a.addr, "db", "localhost:1").await;

    // Named, upstream, with toxicity and attributes (typed as integers).
    let out = ctl(
        a.addr,
        &[
            "toxic",
            "add",
            "-n",
            "lat",
            "-t",
            "latency",
            "--tox",
            "0.5",
            "-u",
            "-a",
            "latency=100",
            "-a",
            "jitter=10",
            "db",
        ],
    )
    .await;
    assert_eq!(
        out.ok(),
        "Added upstream latency toxic 'lat' on proxy 'db'\n"
    );
    assert_eq!(
        toxic_state(a.addr, "db", "lat").await,
        json!({"attributes": {"latency": 100, "jitter": 10}, "name": "lat",
               "type": "latency", "stream": "upstream", "toxicity": 0.5})
    );

    // Defaults: downstream, the server's default name, toxicity 1; several
    // attributes in one -a, split on commas as urfave/cli does.
    let out = ctl(
        a.addr,
        &[
            "toxic",
            "add",
            "--type",
            "slicer",
            "--attribute",
            "average_size=64,delay=10",
            "db",
        ],
    )
    .await;
    assert_eq!(
        out.ok(),
        "Added downstream slicer toxic 'slicer_downstream' on proxy 'db'\n"
    );
    let slicer = toxic_state(a.addr, "db", "slicer_downstream").await;
    assert_eq!(slicer["toxicity"], json!(1));
    assert_eq!(slicer["attributes"]["average_size"], json!(64));
    assert_eq!(slicer["attributes"]["delay"], json!(10));

    // Piped inspect: one toxiproxy-cli line per toxic, upstream first.
    assert_eq!(
        ctl(a.addr, &["inspect", "db"]).await.ok(),
        "lat\ttype=latency\tstream=upstream\ttoxicity=0.50\tattributes=[\tjitter=10\tlatency=100\t]\n\
         slicer_downstream\ttype=slicer\tstream=downstream\ttoxicity=1.00\t\
         attributes=[\taverage_size=64\tdelay=10\tsize_variation=0\t]\n"
    );
    assert!(
        ctl(a.addr, &["list"])
            .await
            .ok()
            .ends_with("\tenabled\t2\n")
    );

    // Update without --tox changes only the named attribute: jitter and
    // the toxicity 0.5 stay (toxiproxy-cli would reset toxicity to 1).
    let out = ctl(
        a.addr,
        &["toxic", "update", "-n", "lat", "-a", "latency=250", "db"],
    )
    .await;
    assert_eq!(out.ok(), "Updated toxic 'lat' on proxy 'db'\n");
    let lat = toxic_state(a.addr, "db", "lat").await;
    assert_eq!(lat["attributes"], json!({"latency": 250, "jitter": 10}));
    assert_eq!(lat["toxicity"], json!(0.5));
    assert_eq!(lat["stream"], json!("upstream"));

    // With --tox only the toxicity changes.
    let out = ctl(
        a.addr,
        &["toxic", "update", "-n", "lat", "--toxicity", "0.25", "db"],
    )
    .await;
    assert_eq!(out.ok(), "Updated toxic 'lat' on proxy 'db'\n");
    let lat = toxic_state(a.addr, "db", "lat").await;
    assert_eq!(lat["toxicity"], json!(0.25));
    assert_eq!(lat["attributes"]["latency"], json!(250));

    let out = ctl(a.addr, &["toxic", "remove", "-n", "lat", "db"]).await;
    assert_eq!(out.ok(), "Removed toxic 'lat' on proxy 'db'\n");
    assert_eq!(get(a.addr, "/proxies/db/toxics/lat").await.status, 404);
    let left = get(a.addr, "/proxies/db/toxics").await.json();
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
}

#[tokio::test]
async fn toxiproxy_cli_aliases() {
    let a = ApiHarness::start(None).await;
    for (alias, name) in [("c", "p1"), ("new", "p2"), ("create", "p3")] {
        let out = ctl(
            a.addr,
            &[alias, "-l", "127.0.0.1:0", "-u", "localhost:1", name],
        )
        .await;
        assert_eq!(out.ok(), format!("Created new proxy {name}\n"), "{alias}");
    }
    let full = ctl(a.addr, &["list"]).await.ok().to_string();
    assert_eq!(full.lines().count(), 3, "{full}");
    for alias in ["l", "li", "ls"] {
        assert_eq!(ctl(a.addr, &[alias]).await.ok(), full, "{alias}");
    }

    let out = ctl(
        a.addr,
        &["t", "a", "-t", "timeout", "-a", "timeout=1000", "p1"],
    )
    .await;
    assert_eq!(
        out.ok(),
        "Added downstream timeout toxic 'timeout_downstream' on proxy 'p1'\n"
    );
    let out = ctl(
        a.addr,
        &["toxic", "a", "-d", "-t", "latency", "-n", "l2", "p1"],
    )
    .await;
    assert_eq!(
        out.ok(),
        "Added downstream latency toxic 'l2' on proxy 'p1'\n"
    );
    let inspected = ctl(a.addr, &["inspect", "p1"]).await.ok().to_string();
    assert!(
        inspected.starts_with("timeout_downstream\ttype=timeout\t"),
        "{inspected}"
    );
    for alias in ["i", "ins"] {
        assert_eq!(ctl(a.addr, &[alias, "p1"]).await.ok(), inspected, "{alias}");
    }

    let out = ctl(
        a.addr,
        &[
            "t",
            "u",
            "-n",
            "timeout_downstream",
            "-a",
            "timeout=5",
            "p1",
        ],
    )
    .await;
    assert_eq!(
        out.ok(),
        "Updated toxic 'timeout_downstream' on proxy 'p1'\n"
    );
    assert_eq!(
        toxic_state(a.addr, "p1", "timeout_downstream").await["attributes"]["timeout"],
        json!(5)
    );

    for (sub, toxic) in [("r", "timeout_downstream"), ("delete", "l2")] {
        let out = ctl(a.addr, &["t", sub, "-n", toxic, "p1"]).await;
        assert_eq!(out.ok(), format!("Removed toxic '{toxic}' on proxy 'p1'\n"));
    }
    ctl(a.addr, &["t", "a", "-t", "latency", "p1"]).await.ok();
    let out = ctl(a.addr, &["t", "d", "-n", "latency_downstream", "p1"]).await;
    assert_eq!(
        out.ok(),
        "Removed toxic 'latency_downstream' on proxy 'p1'\n"
    );
    let toxics = get(a.addr, "/proxies/p1/toxics").await;
    assert_eq!(toxics.body, "[]");

    let out = ctl(a.addr, &["tog", "p2"]).await;
    assert_eq!(out.ok(), "Proxy p2 is now disabled\n");
    assert_eq!(proxy_state(a.addr, "p2").await["enabled"], json!(false));

    let out = ctl(a.addr, &["d", "p3"]).await;
    assert_eq!(out.ok(), "Deleted proxy p3\n");
    assert_eq!(get(a.addr, "/proxies/p3").await.status, 404);
}

#[tokio::test]
async fn host_comes_from_toxiproxy_url_or_the_flag() {
    let a = ApiHarness::start(None).await;
    create_direct(a.addr, "envy", "localhost:1").await;

    let url = format!("http://{}", a.addr);
    let out = ctl_env(&["list"], &[("TOXIPROXY_URL", &url)]).await;
    assert!(out.ok().starts_with("envy\t"), "{out:?}");

    // A bare host:port gets http:// as in the Go client.
    let bare = a.addr.to_string();
    let out = ctl_env(&["list"], &[("TOXIPROXY_URL", &bare)]).await;
    assert!(out.ok().starts_with("envy\t"), "{out:?}");

    // -h wins over the environment.
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let out = ctl_env(&["-h", &url, "list"], &[("TOXIPROXY_URL", &dead)]).await;
    assert!(out.ok().starts_with("envy\t"), "{out:?}");

    // https is refused with a reason, not attempted.
    let out = ctl_env(&["list"], &[("TOXIPROXY_URL", "https://127.0.0.1:1")]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("https is not supported"), "{out:?}");
}

#[tokio::test]
async fn server_errors_name_the_command_and_the_server_message() {
    let a = ApiHarness::start(None).await;
    let out = ctl(a.addr, &["inspect", "nope"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "shakedown ctl: cannot inspect proxy nope: HTTP 404: proxy not found\n"
    );

    create_direct(a.addr, "db", "localhost:1").await;
    let out = ctl(
        a.addr,
        &["create", "-l", "127.0.0.1:0", "-u", "localhost:1", "db"],
    )
    .await;
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "shakedown ctl: cannot create proxy db: HTTP 409: proxy already exists\n"
        )
    );
    let out = ctl(a.addr, &["toxic", "remove", "-n", "ghost", "db"]).await;
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "shakedown ctl: cannot remove toxic 'ghost' on proxy 'db': HTTP 404: toxic not found\n"
        )
    );
    let out = ctl(a.addr, &["toxic", "add", "-t", "gremlins", "db"]).await;
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "shakedown ctl: cannot add toxic to proxy db: HTTP 400: invalid toxic type\n"
        )
    );
    let out = ctl(a.addr, &["toggle", "nope"]).await;
    assert_eq!(
        out.stderr,
        "shakedown ctl: cannot toggle proxy nope: HTTP 404: proxy not found\n"
    );
}

#[tokio::test]
async fn bad_usage_exits_2_with_clap_error() {
    let a = ApiHarness::start(None).await;
    for args in [
        &["toxic", "add", "db"][..],
        &["toxic", "add", "-t", "latency", "-u", "-d", "db"],
        &["toxic", "add", "-t", "latency", "--tox", "1.5", "db"],
        &["toxic", "update", "db"],
        &["create", "-u", "localhost:1", "db"],
        &["inspect"],
        &["explode"],
    ] {
        let out = ctl(a.addr, args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.contains("error:"), "{args:?}: {out:?}");
    }
    // Nothing reached the server.
    assert_eq!(get(a.addr, "/proxies").await.body, "{}");
    // --help prints help and succeeds; -h is the host, not help.
    let out = ctl_env(&["--help"], &[]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("-h, --host <URL>"), "{out:?}");
}

#[tokio::test]
async fn connection_refused_names_the_url() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let out = ctl_env(&["-h", &url, "list"], &[]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.starts_with(&format!(
            "shakedown ctl: cannot list proxies: cannot connect to {url}: "
        )),
        "{out:?}"
    );
    assert!(out.stderr.contains("refused"), "{out:?}");
}

#[tokio::test]
async fn api_token_from_flag_or_environment() {
    let a = ApiHarness::start(Some("s3cret")).await;
    let create = ["create", "-l", "127.0.0.1:0", "-u", "localhost:1"];

    let mut args = create.to_vec();
    args.push("nokey");
    let out = ctl(a.addr, &args).await;
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (
            1,
            "shakedown ctl: cannot create proxy nokey: HTTP 401: missing or wrong bearer token\n"
        )
    );
    // Reads need no token.
    assert_eq!(ctl(a.addr, &["list"]).await.ok(), "");

    let mut args = vec!["--api-token", "s3cret"];
    args.extend_from_slice(&create);
    args.push("flag");
    assert_eq!(ctl(a.addr, &args).await.ok(), "Created new proxy flag\n");

    let url = format!("http://{}", a.addr);
    let mut args = create.to_vec();
    args.push("env");
    let out = ctl_env(
        &args,
        &[("TOXIPROXY_URL", &url), ("SHAKEDOWN_API_TOKEN", "s3cret")],
    )
    .await;
    assert_eq!(out.ok(), "Created new proxy env\n");
    assert_eq!(proxy_state(a.addr, "env").await["name"], json!("env"));
}
