//! `shakedown ctl`: a command-line client of the control API, with
//! `toxiproxy-cli`'s commands, aliases, flags and output lines, so scripts
//! written for `toxiproxy-cli` keep working with `shakedown ctl` in its
//! place (against shakedown or against a real Toxiproxy 2.x).
//!
//! What is the same as `toxiproxy-cli` 2.12:
//!
//! - the global `--host/-h` (default `http://localhost:8474`, env
//!   `TOXIPROXY_URL`); `-h` is the host, so help is `--help` only;
//! - the commands and aliases: `list` (`l`, `li`, `ls`), `inspect` (`i`,
//!   `ins`), `create` (`c`, `new`), `toggle` (`tog`), `delete` (`d`), and
//!   `toxic` (`t`) with `add` (`a`), `update` (`u`), `remove` (`r`,
//!   `delete`, `d`);
//! - the success lines (`Created new proxy redis`, `Added downstream
//!   latency toxic 'latency_downstream' on proxy 'redis'`, ...);
//! - attribute values: a number when the text parses as one (integers are
//!   sent as JSON integers, since Go servers decode integer fields strictly),
//!   otherwise a string (`true`/`false` become booleans); `-a k=v,k2=v2` is
//!   split on commas as urfave/cli's string-slice flags do;
//! - output when stdout is not a terminal: `list` prints one tab-separated
//!   line per proxy (`name listen upstream enabled toxics`), `inspect` one
//!   line per toxic, with no header, exactly what scripts parse today. On a
//!   terminal both print a readable table instead.
//!
//! What differs, on purpose:
//!
//! - `toxic update` without `--toxicity` leaves the toxicity alone;
//!   `toxiproxy-cli` sends its default of 1 and so silently resets it.
//! - Errors follow one pattern, `shakedown ctl: <what failed>: HTTP
//!   <status>: <server message>`, on stderr with exit code 1; bad usage is
//!   clap's error with exit code 2.
//! - `--api-token` (env `SHAKEDOWN_API_TOKEN`) sends `Authorization: Bearer`
//!   for a server started with a token.
//! - Go's single-dash long flags (`-listen`, `-toxicName`) are not accepted;
//!   use `--listen` or `-l`.
//!
//! Only plain `http://` URLs are supported: the API is meant for loopback
//! or a private network, and shakedown's server does not speak TLS.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgAction, Args, Subcommand};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Where `toxiproxy-cli` looks when neither `--host` nor `TOXIPROXY_URL`
/// says otherwise.
pub const DEFAULT_URL: &str = "http://localhost:8474";

/// Exit code of a failed request (`toxiproxy-cli` uses 1 for every failure).
const EXIT_FAILED: i32 = 1;
/// A server that accepts no connection within this is down or unreachable;
/// waiting longer only delays the script that called us.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than the server's own handler timeout (25 s, then 503), so a slow
/// server's answer is still seen, but a hung one does not hang the script.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Help position of the global options: after each command's own flags.
const GLOBALS_LAST: usize = 100;
/// Largest response read: thousands of proxies fit; more is not an API.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Options of `ctl`: where the API is, and what to do.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct CtlArgs {
    /// Base URL of the API (Toxiproxy's or shakedown's), `http://` only.
    #[arg(
        long,
        short = 'h',
        global = true,
        env = "TOXIPROXY_URL",
        default_value = DEFAULT_URL,
        value_name = "URL",
        display_order = GLOBALS_LAST
    )]
    pub host: String,
    /// Bearer token for a server started with `--api-token`.
    #[arg(
        long,
        global = true,
        env = "SHAKEDOWN_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        display_order = GLOBALS_LAST
    )]
    pub api_token: Option<ApiToken>,
    /// Print help (`-h` is the host, as in toxiproxy-cli).
    #[arg(long, global = true, action = ArgAction::Help, display_order = GLOBALS_LAST)]
    help: Option<bool>,
    /// The command.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `toxiproxy-cli`'s commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// List all proxies.
    #[command(visible_aliases = ["l", "li", "ls"])]
    List,
    /// Show one proxy and its toxics.
    #[command(visible_aliases = ["i", "ins"])]
    Inspect {
        /// The proxy.
        #[arg(value_name = "PROXY")]
        proxy: String,
    },
    /// Create a proxy (enabled).
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// Address the proxy listens on, e.g. `127.0.0.1:26379`.
        #[arg(short, long, value_name = "ADDR")]
        listen: String,
        /// Address the proxy forwards to, e.g. `localhost:6379`.
        #[arg(short, long, value_name = "ADDR")]
        upstream: String,
        /// Name of the new proxy.
        #[arg(value_name = "PROXY")]
        proxy: String,
    },
    /// Enable a disabled proxy, or disable an enabled one.
    #[command(visible_alias = "tog")]
    Toggle {
        /// The proxy.
        #[arg(value_name = "PROXY")]
        proxy: String,
    },
    /// Delete a proxy and its toxics.
    #[command(visible_alias = "d")]
    Delete {
        /// The proxy.
        #[arg(value_name = "PROXY")]
        proxy: String,
    },
    /// Add, update or remove a toxic.
    #[command(visible_alias = "t", subcommand)]
    Toxic(ToxicCommand),
}

/// `toxiproxy-cli toxic ...`.
#[derive(Debug, Subcommand)]
pub enum ToxicCommand {
    /// Add a toxic to a proxy.
    #[command(visible_alias = "a")]
    Add(ToxicAddArgs),
    /// Change a toxic's attributes or toxicity.
    #[command(visible_alias = "u")]
    Update(ToxicUpdateArgs),
    /// Remove a toxic.
    #[command(visible_aliases = ["r", "delete", "d"])]
    Remove(ToxicRemoveArgs),
}

/// `toxic add`.
#[derive(Debug, Args)]
pub struct ToxicAddArgs {
    /// Name of the toxic (default: `<type>_<stream>`).
    #[arg(short = 'n', long = "toxicName", visible_alias = "toxic-name")]
    pub toxic_name: Option<String>,
    /// Type of toxic: latency, bandwidth, slow_close, timeout, reset_peer,
    /// slicer, limit_data (shakedown adds blackhole, refuse, noop).
    #[arg(short = 't', long = "type", value_name = "TYPE")]
    pub kind: String,
    /// Share of connections affected, between 0 and 1 (default 1).
    #[arg(long = "toxicity", visible_alias = "tox", value_parser = parse_toxicity)]
    pub toxicity: Option<f64>,
    /// An attribute as key=value (repeatable; commas separate several).
    #[arg(short = 'a', long = "attribute", value_name = "KEY=VALUE",
          value_parser = parse_attribute, value_delimiter = ',', action = ArgAction::Append)]
    pub attributes: Vec<Attribute>,
    /// Apply to data from the client to the upstream.
    #[arg(short = 'u', long, conflicts_with = "downstream")]
    pub upstream: bool,
    /// Apply to data from the upstream to the client (the default).
    #[arg(short = 'd', long)]
    pub downstream: bool,
    /// The proxy.
    #[arg(value_name = "PROXY")]
    pub proxy: String,
}

/// `toxic update`. Without `--toxicity` the toxicity is left as it is (not
/// reset to 1 as `toxiproxy-cli` does).
#[derive(Debug, Args)]
pub struct ToxicUpdateArgs {
    /// Name of the toxic.
    #[arg(short = 'n', long = "toxicName", visible_alias = "toxic-name")]
    pub toxic_name: String,
    /// New share of connections affected, between 0 and 1; omitted, the
    /// toxicity is unchanged.
    #[arg(long = "toxicity", visible_alias = "tox", value_parser = parse_toxicity)]
    pub toxicity: Option<f64>,
    /// An attribute to change, as key=value (repeatable; commas separate
    /// several); attributes not named keep their values.
    #[arg(short = 'a', long = "attribute", value_name = "KEY=VALUE",
          value_parser = parse_attribute, value_delimiter = ',', action = ArgAction::Append)]
    pub attributes: Vec<Attribute>,
    /// The proxy.
    #[arg(value_name = "PROXY")]
    pub proxy: String,
}

/// `toxic remove`.
#[derive(Debug, Args)]
pub struct ToxicRemoveArgs {
    /// Name of the toxic.
    #[arg(short = 'n', long = "toxicName", visible_alias = "toxic-name")]
    pub toxic_name: String,
    /// The proxy.
    #[arg(value_name = "PROXY")]
    pub proxy: String,
}

/// A bearer token; never printed (`Debug` shows `MASKED`).
#[derive(Clone)]
pub struct ApiToken(String);

impl FromStr for ApiToken {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MASKED")
    }
}

/// One `-a key=value`, with the value already typed for JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// Attribute name, e.g. `latency`.
    pub key: String,
    /// Its value: a number, a boolean or a string.
    pub value: Value,
}

fn parse_attribute(raw: &str) -> Result<Attribute, String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok(Attribute {
            key: key.trim().to_string(),
            value: attribute_value(value),
        }),
        _ => Err(format!("expected key=value, got `{raw}`")),
    }
}

/// Types an attribute value the way `toxiproxy-cli` does (a number if it
/// parses as one), except that whole numbers are sent as JSON integers
/// (`100`, not `100.0`, which a Go server cannot decode into an int) and
/// `true`/`false` as booleans.
fn attribute_value(raw: &str) -> Value {
    if let Ok(i) = raw.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(u) = raw.parse::<u64>() {
        return Value::from(u);
    }
    // Rust also parses "inf" and "NaN", which JSON cannot carry: strings.
    if let Ok(f) = raw.parse::<f64>()
        && f.is_finite()
    {
        // Below 2^53 a whole f64 is an exact integer.
        if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
            return Value::from(f as i64);
        }
        if let Some(n) = serde_json::Number::from_f64(f) {
            return Value::Number(n);
        }
    }
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(raw.to_string()),
    }
}

fn parse_toxicity(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(t) if (0.0..=1.0).contains(&t) => Ok(t),
        _ => Err("toxicity should be a float between 0 and 1".to_string()),
    }
}

/// Runs a ctl command: prints its result on stdout, or the failure on
/// stderr; returns the exit code (0, or 1 on failure).
pub async fn run(args: CtlArgs) -> i32 {
    let api = match Api::new(&args.host, args.api_token) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("shakedown ctl: {e}");
            return EXIT_FAILED;
        }
    };
    let tty = std::io::stdout().is_terminal();
    match execute(&api, args.command, tty).await {
        Ok(out) => {
            // A closed pipe (`| head`) is not worth a panic or an error.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
            0
        }
        Err(e) => {
            eprintln!("shakedown ctl: {e}");
            EXIT_FAILED
        }
    }
}

/// A failed command: what was being done, and why it failed.
#[derive(Debug)]
struct Failure {
    what: String,
    why: CallError,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

/// Why one API call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String },
    /// Nothing listens there, or it cannot be reached.
    #[error(
        "cannot connect to {url}: {detail} (is the server running? set --host or TOXIPROXY_URL)"
    )]
    Connect { url: String, detail: String },
    /// The server accepted but did not answer in time.
    #[error("no answer from {url} within {} s", REQUEST_TIMEOUT.as_secs())]
    Timeout { url: String },
    /// Anything else: a broken connection, an unexpected body.
    #[error("{0}")]
    Other(String),
}

/// What ends up on stdout.
type Output = String;

async fn execute(api: &Api, command: CtlCommand, tty: bool) -> Result<Output, Failure> {
    match command {
        CtlCommand::List => {
            let what = || "cannot list proxies".to_string();
            let body = api.call(Method::GET, &["proxies"], None).await;
            let all: Map<String, Value> = decode(body).map_err(fail(what))?;
            let mut proxies = all
                .into_values()
                .map(serde_json::from_value::<ProxyView>)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unexpected(e).within(what()))?;
            proxies.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(render_list(&proxies, tty))
        }
        CtlCommand::Inspect { proxy } => {
            let what = || format!("cannot inspect proxy {proxy}");
            let body = api.call(Method::GET, &["proxies", &proxy], None).await;
            let view: ProxyView = decode(body).map_err(fail(what))?;
            Ok(render_inspect(&view, tty))
        }
        CtlCommand::Create {
            listen,
            upstream,
            proxy,
        } => {
            let what = || format!("cannot create proxy {proxy}");
            let body =
                json!({"name": proxy, "listen": listen, "upstream": upstream, "enabled": true});
            let resp = api.call(Method::POST, &["proxies"], Some(&body)).await;
            resp.map_err(fail(what))?;
            Ok(format!("Created new proxy {proxy}\n"))
        }
        CtlCommand::Toggle { proxy } => {
            let what = || format!("cannot toggle proxy {proxy}");
            let path = ["proxies", proxy.as_str()];
            let current: ProxyView =
                decode(api.call(Method::GET, &path, None).await).map_err(fail(what))?;
            let body = json!({"enabled": !current.enabled});
            let after: ProxyView =
                decode(api.call(Method::PATCH, &path, Some(&body)).await).map_err(fail(what))?;
            Ok(format!(
                "Proxy {proxy} is now {}\n",
                enabled_text(after.enabled)
            ))
        }
        CtlCommand::Delete { proxy } => {
            let what = || format!("cannot delete proxy {proxy}");
            let resp = api.call(Method::DELETE, &["proxies", &proxy], None).await;
            resp.map_err(fail(what))?;
            Ok(format!("Deleted proxy {proxy}\n"))
        }
        CtlCommand::Toxic(ToxicCommand::Add(a)) => {
            let what = || format!("cannot add toxic to proxy {}", a.proxy);
            let mut body = Map::new();
            if let Some(name) = &a.toxic_name {
                body.insert("name".into(), json!(name));
            }
            body.insert("type".into(), json!(a.kind));
            let stream = if a.upstream { "upstream" } else { "downstream" };
            body.insert("stream".into(), json!(stream));
            if let Some(t) = a.toxicity {
                body.insert("toxicity".into(), json!(t));
            }
            body.insert("attributes".into(), attributes_json(&a.attributes));
            let path = ["proxies", a.proxy.as_str(), "toxics"];
            let body = Value::Object(body);
            let resp = api.call(Method::POST, &path, Some(&body)).await;
            let toxic: ToxicView = decode(resp).map_err(fail(what))?;
            Ok(format!(
                "Added {} {} toxic '{}' on proxy '{}'\n",
                toxic.stream, toxic.kind, toxic.name, a.proxy
            ))
        }
        CtlCommand::Toxic(ToxicCommand::Update(u)) => {
            let what = || {
                format!(
                    "cannot update toxic '{}' on proxy '{}'",
                    u.toxic_name, u.proxy
                )
            };
            let mut body = Map::new();
            body.insert("attributes".into(), attributes_json(&u.attributes));
            if let Some(t) = u.toxicity {
                body.insert("toxicity".into(), json!(t));
            }
            let path = ["proxies", u.proxy.as_str(), "toxics", u.toxic_name.as_str()];
            let body = Value::Object(body);
            let resp = api.call(Method::PATCH, &path, Some(&body)).await;
            let toxic: ToxicView = decode(resp).map_err(fail(what))?;
            Ok(format!(
                "Updated toxic '{}' on proxy '{}'\n",
                toxic.name, u.proxy
            ))
        }
        CtlCommand::Toxic(ToxicCommand::Remove(r)) => {
            let what = || {
                format!(
                    "cannot remove toxic '{}' on proxy '{}'",
                    r.toxic_name, r.proxy
                )
            };
            let path = ["proxies", r.proxy.as_str(), "toxics", r.toxic_name.as_str()];
            api.call(Method::DELETE, &path, None)
                .await
                .map_err(fail(what))?;
            Ok(format!(
                "Removed toxic '{}' on proxy '{}'\n",
                r.toxic_name, r.proxy
            ))
        }
    }
}

fn attributes_json(attrs: &[Attribute]) -> Value {
    Value::Object(
        attrs
            .iter()
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect(),
    )
}

/// Turns a call error into a failure of the command `what` describes.
fn fail<W: FnOnce() -> String>(what: W) -> impl FnOnce(CallError) -> Failure {
    move |why| Failure { what: what(), why }
}

impl CallError {
    fn within(self, what: String) -> Failure {
        Failure { what, why: self }
    }
}

fn unexpected(e: serde_json::Error) -> CallError {
    CallError::Other(format!("unexpected response from the server: {e}"))
}

/// Decodes a successful response body as JSON.
fn decode<T: serde::de::DeserializeOwned>(body: Result<Bytes, CallError>) -> Result<T, CallError> {
    serde_json::from_slice(&body?).map_err(unexpected)
}

/// A proxy as the API shows it (unknown fields, such as `Logger`, ignored).
#[derive(Debug, Deserialize)]
struct ProxyView {
    name: String,
    #[serde(default)]
    listen: String,
    #[serde(default)]
    upstream: String,
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    toxics: Vec<ToxicView>,
}

/// A toxic as the API shows it.
#[derive(Debug, Deserialize)]
struct ToxicView {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    stream: String,
    #[serde(default = "full_toxicity")]
    toxicity: f64,
    #[serde(default)]
    attributes: Map<String, Value>,
}

fn full_toxicity() -> f64 {
    1.0
}

fn enabled_text(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

/// `list`: on a terminal an aligned table with a header; otherwise
/// `toxiproxy-cli`'s plain lines (`name\tlisten\tupstream\tenabled\tN`).
fn render_list(proxies: &[ProxyView], tty: bool) -> String {
    let rows: Vec<[String; 5]> = proxies
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.listen.clone(),
                p.upstream.clone(),
                enabled_text(p.enabled).to_string(),
                p.toxics.len().to_string(),
            ]
        })
        .collect();
    if !tty {
        return rows.iter().map(|r| format!("{}\n", r.join("\t"))).collect();
    }
    let header = ["NAME", "LISTEN", "UPSTREAM", "ENABLED", "TOXICS"].map(String::from);
    let mut out = table(&[header].into_iter().chain(rows).collect::<Vec<_>>());
    if proxies.is_empty() {
        out.push_str("no proxies (create one with `shakedown ctl create`)\n");
    }
    out
}

/// Columns padded to their widest cell, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `inspect`: on a terminal the proxy then its toxics under `Upstream` and
/// `Downstream`; otherwise `toxiproxy-cli`'s one line per toxic.
fn render_inspect(p: &ProxyView, tty: bool) -> String {
    if !tty {
        return p.toxics.iter().map(toxic_line).collect();
    }
    let mut out = format!(
        "Name: {}\tListen: {}\tUpstream: {}\tEnabled: {}\n",
        p.name,
        p.listen,
        p.upstream,
        enabled_text(p.enabled)
    );
    out.push_str(&"=".repeat(70));
    out.push('\n');
    for (title, stream) in [("Upstream", "upstream"), ("Downstream", "downstream")] {
        out.push_str(&format!("{title} toxics:\n"));
        let toxics: Vec<&ToxicView> = p.toxics.iter().filter(|t| t.stream == stream).collect();
        if toxics.is_empty() {
            out.push_str("  (none)\n");
        }
        for t in toxics {
            out.push_str(&format!(
                "  {}: type={} toxicity={:.2} attributes: {}\n",
                t.name,
                t.kind,
                t.toxicity,
                sorted_attributes(t).join(" ")
            ));
        }
    }
    out
}

/// One toxic as `toxiproxy-cli inspect` prints it when piped.
fn toxic_line(t: &ToxicView) -> String {
    let attrs: String = sorted_attributes(t)
        .iter()
        .map(|a| format!("\t{a}"))
        .collect();
    format!(
        "{}\ttype={}\tstream={}\ttoxicity={:.2}\tattributes=[{attrs}\t]\n",
        t.name, t.kind, t.stream, t.toxicity
    )
}

/// `key=value` pairs sorted by key; strings unquoted.
fn sorted_attributes(t: &ToxicView) -> Vec<String> {
    let mut attrs: Vec<(&String, &Value)> = t.attributes.iter().collect();
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    attrs
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect()
}

/// The API at one base URL, over hyper's pooled HTTP/1 client.
pub struct Api {
    /// `http://host:port` (and any path prefix), without a trailing slash.
    base: String,
    token: Option<HeaderValue>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    /// Checks the URL (a bare `host:port` gets `http://`, as in the Go
    /// client) and builds the client.
    pub fn new(host: &str, token: Option<ApiToken>) -> Result<Self, String> {
        let host = host.trim();
        let base = if host.contains("://") {
            host.to_string()
        } else {
            format!("http://{host}")
        };
        let base = base.trim_end_matches('/').to_string();
        let uri = crate::http::client_uri(&base)
            .map_err(|e| format!("bad --host/TOXIPROXY_URL `{host}`: {e}"))?;
        if uri.query().is_some() {
            return Err(format!(
                "bad --host/TOXIPROXY_URL `{host}`: expected http://host:port"
            ));
        }
        let token = match token {
            Some(ApiToken(t)) if !t.is_empty() => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| "the API token has characters not allowed in a header")?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            base,
            token,
            client,
        })
    }

    /// Sends one request to the path made of `segments` (each
    /// percent-encoded); returns the body of a 2xx answer.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Bytes, CallError> {
        let path: String = segments
            .iter()
            .map(|s| format!("/{}", encode_segment(s)))
            .collect();
        let url = format!("{}{path}", self.base);
        match tokio::time::timeout(REQUEST_TIMEOUT, self.send(method, &url, body)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout {
                url: self.base.clone(),
            }),
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Bytes, CallError> {
        let mut req = Request::builder().method(method).uri(url).header(
            USER_AGENT,
            concat!("shakedown-ctl/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, t.clone());
        }
        let payload = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| CallError::Other(format!("cannot build a request for {url}: {e}")))?;
        let resp = self.client.request(req).await.map_err(|e| {
            if e.is_connect() {
                CallError::Connect {
                    url: self.base.clone(),
                    detail: causes(&e),
                }
            } else {
                CallError::Other(format!("request to {url} failed: {}", causes(&e)))
            }
        })?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| CallError::Other(format!("cannot read the answer from {url}: {e}")))?
            .to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(CallError::Status {
                status: status.as_u16(),
                message: error_message(&bytes, status.canonical_reason()),
            })
        }
    }
}

/// The server's message: the `error` field of Toxiproxy's JSON error body,
/// else the body's text, else the status's reason phrase.
fn error_message(body: &[u8], reason: Option<&str>) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && let Some(msg) = v.get("error").and_then(Value::as_str)
    {
        return msg.to_string();
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() {
        return text.chars().take(500).collect();
    }
    reason.unwrap_or("no message").to_string()
}

/// An error and its sources, from the first source down (the top level of
/// hyper-util's errors only says "client error (Connect)").
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// Percent-encodes a path segment: names may hold spaces, `/` or `%`.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(subcommand)]
        cmd: Top,
    }

    #[derive(Debug, Subcommand)]
    enum Top {
        Ctl(CtlArgs),
    }

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        let all = ["shakedown", "ctl"].iter().chain(args);
        Wrapper::try_parse_from(all).map(|w| match w.cmd {
            Top::Ctl(a) => a,
        })
    }

    #[test]
    fn command_line_is_toxiproxy_clis() {
        let a = parse(&["-h", "http://x:1", "ls"]).unwrap();
        assert_eq!(a.host, "http://x:1");
        assert!(matches!(a.command, CtlCommand::List));
        let a = parse(&["new", "-l", "127.0.0.1:0", "-u", "localhost:6379", "redis"]).unwrap();
        assert!(matches!(a.command, CtlCommand::Create { ref proxy, .. } if proxy == "redis"));
        let a = parse(&[
            "t",
            "a",
            "-t",
            "latency",
            "-n",
            "lat",
            "--tox",
            "0.5",
            "-u",
            "-a",
            "latency=100",
            "-a",
            "jitter=5,mode=x",
            "redis",
        ])
        .unwrap();
        let CtlCommand::Toxic(ToxicCommand::Add(add)) = a.command else {
            panic!("not toxic add");
        };
        assert_eq!(add.toxic_name.as_deref(), Some("lat"));
        assert_eq!(add.toxicity, Some(0.5));
        assert!(add.upstream);
        let attrs: Vec<(String, Value)> = add
            .attributes
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect();
        assert_eq!(
            attrs,
            [
                ("latency".to_string(), json!(100)),
                ("jitter".to_string(), json!(5)),
                ("mode".to_string(), json!("x"))
            ]
        );
        // Flags after the proxy name are fine too; --host after the command.
        let a = parse(&["toxic", "d", "redis", "--toxicName", "lat", "-h", "y:2"]).unwrap();
        assert_eq!(a.host, "y:2");
        assert!(matches!(
            a.command,
            CtlCommand::Toxic(ToxicCommand::Remove(_))
        ));
    }

    #[test]
    fn bad_usage_is_a_clap_error() {
        for bad in [
            &["toxic", "add", "-t", "latency", "-u", "-d", "p"][..],
            &["toxic", "add", "-t", "latency", "--tox", "2", "p"],
            &["toxic", "add", "-t", "latency", "-a", "novalue", "p"],
            &["toxic", "update", "p"],
            &["create", "-l", "x:1", "p"],
            &["frobnicate"],
        ] {
            let e = parse(bad).expect_err("must not parse");
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
        let help = parse(&["--help"]).expect_err("help exits");
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = parse(&["toxic", "add", "--help"]).expect_err("help exits");
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn attribute_values_are_typed() {
        assert_eq!(attribute_value("100"), json!(100));
        assert_eq!(attribute_value("-3"), json!(-3));
        assert_eq!(attribute_value("1e3"), json!(1000));
        assert_eq!(attribute_value("2.0"), json!(2));
        assert_eq!(attribute_value("0.25"), json!(0.25));
        assert_eq!(attribute_value("18446744073709551615"), json!(u64::MAX));
        assert_eq!(attribute_value("true"), json!(true));
        assert_eq!(attribute_value("inf"), json!("inf"));
        assert_eq!(attribute_value("NaN"), json!("NaN"));
        assert_eq!(attribute_value("fast"), json!("fast"));
        assert_eq!(attribute_value(""), json!(""));
        assert_eq!(
            parse_attribute("a=b=c").unwrap(),
            Attribute {
                key: "a".into(),
                value: json!("b=c")
            }
        );
    }

    fn sample() -> Vec<ProxyView> {
        let v = json!({
            "name": "redis", "listen": "127.0.0.1:26379", "upstream": "localhost:6379",
            "enabled": true, "Logger": {},
            "toxics": [
                {"attributes": {"rate": 10}, "name": "bw", "type": "bandwidth",
                 "stream": "upstream", "toxicity": 1},
                {"attributes": {"latency": 100, "jitter": 5}, "name": "lat",
                 "type": "latency", "stream": "downstream", "toxicity": 0.5}
            ]
        });
        let other = json!({"name": "db", "listen": "127.0.0.1:5433",
                           "upstream": "localhost:5432", "enabled": false, "toxics": []});
        vec![
            serde_json::from_value(other).unwrap(),
            serde_json::from_value(v).unwrap(),
        ]
    }

    #[test]
    fn list_is_plain_when_piped_and_a_table_on_a_terminal() {
        let proxies = sample();
        assert_eq!(
            render_list(&proxies, false),
            "db\t127.0.0.1:5433\tlocalhost:5432\tdisabled\t0\n\
             redis\t127.0.0.1:26379\tlocalhost:6379\tenabled\t2\n"
        );
        assert_eq!(
            render_list(&proxies, true),
            "NAME   LISTEN           UPSTREAM        ENABLED   TOXICS\n\
             db     127.0.0.1:5433   localhost:5432  disabled  0\n\
             redis  127.0.0.1:26379  localhost:6379  enabled   2\n"
        );
        assert!(render_list(&[], true).contains("no proxies"));
        assert_eq!(render_list(&[], false), "");
    }

    #[test]
    fn inspect_groups_toxics_by_stream() {
        let proxies = sample();
        let redis = &proxies[1];
        assert_eq!(
            render_inspect(redis, false),
            "bw\ttype=bandwidth\tstream=upstream\ttoxicity=1.00\tattributes=[\trate=10\t]\n\
             lat\ttype=latency\tstream=downstream\ttoxicity=0.50\tattributes=[\tjitter=5\tlatency=100\t]\n"
        );
        let tty = render_inspect(redis, true);
        let up = tty.find("Upstream toxics:").unwrap();
        let down = tty.find("Downstream toxics:").unwrap();
        let bw = tty
            .find("bw: type=bandwidth toxicity=1.00 attributes: rate=10")
            .unwrap();
        let lat = tty
            .find("lat: type=latency toxicity=0.50 attributes: jitter=5 latency=100")
            .unwrap();
        assert!(up < bw && bw < down && down < lat, "{tty}");
        assert!(tty.starts_with("Name: redis\tListen: 127.0.0.1:26379"));
        assert_eq!(
            render_inspect(&proxies[0], true).matches("(none)").count(),
            2
        );
    }

    #[test]
    fn urls_errors_and_paths() {
        assert!(Api::new("localhost:8474", None).is_ok());
        let https = Api::new("https://x:1", None).err().unwrap();
        assert!(https.contains("https is not supported"), "{https}");
        assert!(Api::new("ftp://x:1", None).is_err());
        assert_eq!(Api::new("http://x:1/", None).unwrap().base, "http://x:1");
        assert_eq!(encode_segment("a b/c%"), "a%20b%2Fc%25");
        assert_eq!(
            error_message(b"{\"error\":\"proxy not found\",\"status\":404}\n", None),
            "proxy not found"
        );
        assert_eq!(
            error_message(b"404 page not found\n", None),
            "404 page not found"
        );
        assert_eq!(
            error_message(b"", Some("Service Unavailable")),
            "Service Unavailable"
        );
        assert_eq!(format!("{:?}", ApiToken("s3cret".into())), "MASKED");
    }
}
