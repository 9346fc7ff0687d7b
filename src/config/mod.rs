//! Configuration files: the `serve` config (proxies and their faults).
//!
//! Files are read strictly: an unknown key, a bad address, a duplicate
//! name, a bad duration or an out-of-range toxicity is an error that names
//! `FILE:LINE:COL`. Every problem in the file is reported, not just the
//! first, so a user fixes them in one pass.

pub mod experiment;
pub mod fault;
pub mod location;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use location::{ConfigError, ConfigErrors, Locator};

use crate::faults::FaultSpec;
use crate::faults::http::PathPattern;
use crate::faults::units::HumanDuration;
use crate::proxy::DEFAULT_CONNECT_TIMEOUT;

/// How a proxy reads its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Bytes only: every byte fault, no protocol awareness.
    #[default]
    Tcp,
    /// PostgreSQL's wire protocol: query and session faults, observations.
    Postgres,
    /// HTTP/1.1 and h2c through a reverse proxy: request faults,
    /// observations per route.
    Http,
}

impl Protocol {
    /// The name used in configs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Postgres => "postgres",
            Protocol::Http => "http",
        }
    }
}

/// What a postgres proxy does with a client's request for TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Answer `N` to SSLRequest, as a server without TLS does: the client
    /// goes on in plain text (or gives up, if it requires TLS).
    #[default]
    Refuse,
    /// Pass SSLRequest to the server; if it accepts, the session is relayed
    /// untouched (encrypted): byte faults only.
    Passthrough,
}

/// One proxy, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyConfig {
    /// Unique name.
    pub name: String,
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen: String,
    /// Address to forward to.
    pub upstream: String,
    /// Whether it accepts connections from the start.
    pub enabled: bool,
    /// How it reads the stream.
    pub protocol: Protocol,
    /// TLS handling of a postgres proxy.
    pub tls: TlsMode,
    /// Time allowed to dial the upstream.
    pub connect_timeout: Duration,
    /// Faults active from the start.
    pub faults: Vec<FaultSpec>,
    /// HTTP proxies: how long the upstream may take to send its response
    /// headers before the client gets 504.
    pub request_timeout: Duration,
    /// HTTP proxies: honour Envoy's fault headers (`x-envoy-fault-*`) sent
    /// by clients.
    pub header_faults: bool,
    /// HTTP proxies: speak HTTP/2 (h2c, prior knowledge) to the upstream
    /// instead of HTTP/1.1.
    pub upstream_http2: bool,
    /// HTTP proxies: named routes that observations are counted under
    /// (first match wins; the rest count as `other`).
    pub routes: Vec<RouteConfig>,
}

/// Default time an HTTP upstream gets to answer a request (its response
/// headers): long enough for a slow but working service, short enough that
/// a hung one is reported as 504 rather than held forever.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many routes per HTTP proxy: route names are metric label
/// values, so the set stays small and fixed.
pub const MAX_ROUTES: usize = 32;

/// The route of requests no configured route matches.
pub const OTHER_ROUTE: &str = "other";

/// A named route of an HTTP proxy: requests whose path matches are counted
/// under its name.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// Label value in metrics and windows.
    pub name: String,
    /// A path prefix, or a glob when it contains `*`.
    pub path: PathPattern,
}

impl ProxyConfig {
    /// A plain TCP proxy with no faults.
    pub fn new(name: &str, listen: &str, upstream: &str) -> Self {
        Self {
            name: name.into(),
            listen: listen.into(),
            upstream: upstream.into(),
            enabled: true,
            protocol: Protocol::Tcp,
            tls: TlsMode::Refuse,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            faults: Vec::new(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            header_faults: false,
            upstream_http2: false,
            routes: Vec::new(),
        }
    }
}

/// The `serve` config: a list of proxies. An empty file is valid.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServeConfig {
    /// Proxies in file order.
    pub proxies: Vec<ProxyConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
    #[serde(default)]
    proxy: Vec<RawProxy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    name: Spanned<String>,
    listen: Spanned<String>,
    upstream: Spanned<String>,
    #[serde(default = "yes")]
    enabled: bool,
    protocol: Option<Spanned<Protocol>>,
    tls: Option<Spanned<TlsMode>>,
    connect_timeout: Option<HumanDuration>,
    request_timeout: Option<Spanned<HumanDuration>>,
    header_faults: Option<Spanned<bool>>,
    upstream_http2: Option<Spanned<bool>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    fault: Vec<fault::RawFault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Spanned<String>,
    path: Spanned<String>,
}

fn yes() -> bool {
    true
}

/// Reads and validates a serve config file.
pub fn load_serve_config(path: &Path) -> Result<ServeConfig, ConfigErrors> {
    let (name, src) = location::read_source(path)?;
    parse_serve_config(&name, &src)
}

/// Validates a serve config held in memory; `file` names it in errors.
pub fn parse_serve_config(file: &str, src: &str) -> Result<ServeConfig, ConfigErrors> {
    let loc = Locator::new(file, src);
    let raw: RawServe = toml::from_str(src).map_err(|e| ConfigErrors(vec![loc.from_toml(&e)]))?;
    let mut errors = Vec::new();
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut listens: HashMap<String, String> = HashMap::new();
    let mut proxies = Vec::new();
    for p in raw.proxy {
        let name = p.name.get_ref().clone();
        if name.is_empty() {
            errors.push(loc.error(Some(p.name.span()), "proxy `name` must not be empty"));
        } else if names.insert(name.clone(), ()).is_some() {
            errors.push(loc.error(
                Some(p.name.span()),
                format!("duplicate proxy name `{name}`"),
            ));
        }
        for (what, addr) in [("listen", &p.listen), ("upstream", &p.upstream)] {
            if let Err(e) = check_addr(addr.get_ref()) {
                errors.push(loc.error(Some(addr.span()), format!("bad {what} address: {e}")));
            }
        }
        let listen = p.listen.get_ref().clone();
        if p.enabled
            && !listen.ends_with(":0")
            && let Some(other) = listens.insert(listen.clone(), name.clone())
        {
            errors.push(loc.error(
                Some(p.listen.span()),
                format!("listen address `{listen}` is already used by proxy `{other}`"),
            ));
        }
        let protocol = p.protocol.as_ref().map_or(Protocol::Tcp, |s| *s.get_ref());
        if let Some(tls) = &p.tls
            && protocol != Protocol::Postgres
        {
            errors.push(loc.error(
                Some(tls.span()),
                "`tls` applies to postgres proxies only (add protocol = \"postgres\")",
            ));
        }
        let http_only = [
            (
                "request_timeout",
                p.request_timeout.as_ref().map(|s| s.span()),
            ),
            ("header_faults", p.header_faults.as_ref().map(|s| s.span())),
            (
                "upstream_http2",
                p.upstream_http2.as_ref().map(|s| s.span()),
            ),
            ("route", p.route.first().map(|s| s.span())),
        ];
        for (key, span) in http_only {
            if let Some(span) = span
                && protocol != Protocol::Http
            {
                errors.push(loc.error(
                    Some(span),
                    format!("`{key}` applies to http proxies only (add protocol = \"http\")"),
                ));
            }
        }
        let routes = read_routes(&p.route, &loc, &mut errors);
        let mut faults: Vec<FaultSpec> = Vec::new();
        for raw_fault in &p.fault {
            if let Some((spec, _)) = fault::read_fault(raw_fault, &[], &loc, &mut errors) {
                if spec.fault.is_http() && protocol != Protocol::Http {
                    errors.push(loc.error(
                        Some(raw_fault.span()),
                        format!(
                            "fault kind `{}` needs an http proxy; proxy `{name}` has protocol = \"{}\"",
                            spec.fault.kind(),
                            protocol.as_str()
                        ),
                    ));
                }
                if protocol == Protocol::Http && !spec.fault.applies_to_http() {
                    errors.push(loc.error(
                        Some(raw_fault.span()),
                        format!(
                            "fault kind `{}` acts on bytes and does not apply to http proxy `{name}`; use http_latency, http_throttle, http_reset or http_abort (or refuse)",
                            spec.fault.kind()
                        ),
                    ));
                }
                if spec.fault.is_postgres() && protocol != Protocol::Postgres {
                    errors.push(loc.error(
                        Some(raw_fault.span()),
                        format!(
                            "fault kind `{}` needs a postgres proxy; proxy `{name}` has protocol = \"{}\"",
                            spec.fault.kind(),
                            protocol.as_str()
                        ),
                    ));
                }
                if faults.iter().any(|f| f.name == spec.name) {
                    errors.push(loc.error(
                        Some(raw_fault.span()),
                        format!(
                            "duplicate fault name `{}` on proxy `{name}` (names are unique across both directions)",
                            spec.name
                        ),
                    ));
                }
                faults.push(spec);
            }
        }
        proxies.push(ProxyConfig {
            name,
            listen,
            upstream: p.upstream.into_inner(),
            enabled: p.enabled,
            protocol,
            tls: p.tls.map_or(TlsMode::Refuse, |t| *t.get_ref()),
            connect_timeout: p.connect_timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0),
            faults,
            request_timeout: p
                .request_timeout
                .map_or(DEFAULT_REQUEST_TIMEOUT, |d| d.into_inner().0),
            header_faults: p.header_faults.is_some_and(|b| b.into_inner()),
            upstream_http2: p.upstream_http2.is_some_and(|b| b.into_inner()),
            routes,
        });
    }
    if errors.is_empty() {
        Ok(ServeConfig { proxies })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Checks the `[[proxy.route]]` tables of one proxy: names non-empty,
/// unique and not `other`, paths valid, at most [`MAX_ROUTES`].
fn read_routes(
    raw: &[Spanned<RawRoute>],
    loc: &Locator<'_>,
    errors: &mut Vec<ConfigError>,
) -> Vec<RouteConfig> {
    let mut routes: Vec<RouteConfig> = Vec::new();
    if raw.len() > MAX_ROUTES {
        errors.push(loc.error(
            Some(raw[MAX_ROUTES].span()),
            format!(
                "at most {MAX_ROUTES} routes per proxy (route names are metric labels); unmatched requests count as `{OTHER_ROUTE}`"
            ),
        ));
    }
    for r in raw.iter().take(MAX_ROUTES) {
        let r = r.get_ref();
        let name = r.name.get_ref();
        if name.is_empty() {
            errors.push(loc.error(Some(r.name.span()), "route `name` must not be empty"));
            continue;
        }
        if name == OTHER_ROUTE {
            errors.push(loc.error(
                Some(r.name.span()),
                format!("route name `{OTHER_ROUTE}` is reserved for requests no route matches"),
            ));
            continue;
        }
        if routes.iter().any(|x| x.name == *name) {
            errors.push(loc.error(
                Some(r.name.span()),
                format!("duplicate route name `{name}`"),
            ));
            continue;
        }
        match PathPattern::new(r.path.get_ref()) {
            Ok(path) => routes.push(RouteConfig {
                name: name.clone(),
                path,
            }),
            Err(e) => errors.push(loc.error(Some(r.path.span()), e)),
        }
    }
    routes
}

/// Reads a Toxiproxy JSON config (`toxiproxy-server -config FILE`): the
/// same array `/populate` takes, `[{"name", "listen", "upstream",
/// "enabled"}]`. Keys match case-insensitively and unknown keys are ignored,
/// as Go reads them; a missing name or upstream is an error.
pub fn load_populate_json(path: &Path) -> Result<Vec<ProxyConfig>, ConfigErrors> {
    let file = path.display().to_string();
    let fail = |line: usize, col: usize, message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line,
            col,
            message,
        }])
    };
    let src =
        std::fs::read_to_string(path).map_err(|e| fail(1, 1, format!("cannot read file: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&src).map_err(|e| fail(e.line(), e.column(), e.to_string()))?;
    let serde_json::Value::Array(items) = value else {
        return Err(fail(1, 1, "expected a JSON array of proxies".into()));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let n = i + 1;
        let serde_json::Value::Object(obj) = item else {
            return Err(fail(1, 1, format!("proxy {n} is not a JSON object")));
        };
        let get = |key: &str| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        };
        let text = |key: &str| -> Result<String, ConfigErrors> {
            match get(key) {
                None | Some(serde_json::Value::Null) => Ok(String::new()),
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(fail(1, 1, format!("`{key}` of proxy {n} must be a string"))),
            }
        };
        let name = text("name")?;
        let upstream = text("upstream")?;
        for (field, v) in [("name", &name), ("upstream", &upstream)] {
            if v.is_empty() {
                return Err(fail(
                    1,
                    1,
                    format!("missing required field: {field} at proxy {n}"),
                ));
            }
        }
        let mut cfg = ProxyConfig::new(&name, &text("listen")?, &upstream);
        cfg.enabled = match get("enabled") {
            None | Some(serde_json::Value::Null) => true,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => {
                return Err(fail(
                    1,
                    1,
                    format!("`enabled` of proxy {n} must be a boolean"),
                ));
            }
        };
        out.push(cfg);
    }
    Ok(out)
}

/// Checks a `host:port` address: an IPv4 address, a bracketed IPv6 address
/// or a host name, then a port number.
pub fn check_addr(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("`{addr}` is not host:port"));
    };
    port.parse::<u16>()
        .map_err(|_| format!("`{addr}` has a bad port `{port}` (0-65535)"))?;
    if host.is_empty() {
        return Err(format!("`{addr}` has no host"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("`{addr}` has an unclosed `[`"))?;
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("`{inner}` is not an IPv6 address"))?;
        return Ok(());
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        host.parse::<Ipv4Addr>()
            .map_err(|_| format!("`{host}` is not an IPv4 address"))?;
        return Ok(());
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(valid_label) {
        return Err(format!("`{host}` is not a valid host name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_proxies_read_their_keys_and_refuse_misplaced_ones() {
        let ok = r#"
[[proxy]]
name = "web"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:8080"
protocol = "http"
request_timeout = "2s"
header_faults = true

[[proxy.route]]
name = "checkout"
path = "/api/checkout*"

[[proxy.fault]]
kind = "http_abort"
status = 503
headers = { "Retry-After" = "5" }
path = "/api/"

[[proxy.fault]]
kind = "refuse"
toxicity = 0.1
"#;
        let cfg = parse_serve_config("h.toml", ok).unwrap();
        let p = &cfg.proxies[0];
        assert_eq!(p.protocol, Protocol::Http);
        assert_eq!(p.request_timeout, Duration::from_secs(2));
        assert!(p.header_faults);
        assert!(!p.upstream_http2);
        assert_eq!(p.routes[0].name, "checkout");
        assert!(p.routes[0].path.matches("/api/checkout"));
        assert_eq!(p.faults.len(), 2);

        let bad = r#"
[[proxy]]
name = "tcp"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:8080"
header_faults = true

[[proxy.fault]]
kind = "http_latency"
latency = 5

[[proxy]]
name = "web"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:8080"
protocol = "http"

[[proxy.route]]
name = "other"
path = "/x"

[[proxy.route]]
name = "a"
path = "x"

[[proxy.fault]]
kind = "latency"
latency = 5

[[proxy.fault]]
kind = "http_abort"
status = 700
"#;
        let errs = parse_serve_config("b.toml", bad).unwrap_err().to_string();
        for want in [
            "b.toml:6:17: `header_faults` applies to http proxies only",
            "b.toml:8:1: fault kind `http_latency` needs an http proxy",
            "b.toml:19:8: route name `other` is reserved",
            "b.toml:24:8: path pattern `x` must start with `/`",
            "b.toml:26:1: fault kind `latency` acts on bytes and does not apply to http proxy `web`",
            "b.toml:32:10: bad value for `status` of http_abort: status 700 is out of range",
        ] {
            assert!(errs.contains(want), "missing {want:?} in\n{errs}");
        }
        let mut many = String::from(
            "[[proxy]]\nname = \"w\"\nlisten = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:1\"\nprotocol = \"http\"\n",
        );
        for i in 0..=MAX_ROUTES {
            many.push_str(&format!(
                "[[proxy.route]]\nname = \"r{i}\"\npath = \"/{i}\"\n"
            ));
        }
        let errs = parse_serve_config("m.toml", &many).unwrap_err().to_string();
        assert!(errs.contains("at most 32 routes"), "{errs}");
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:5432",
            "localhost:0",
            "[::1]:80",
            "db-1.staging:5432",
        ] {
            assert!(check_addr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:99999",
            "300.1.1.1:5",
            ":5",
            "[::1:5",
            "a_b:5",
        ] {
            assert!(check_addr(bad).is_err(), "{bad}");
        }
    }
}
