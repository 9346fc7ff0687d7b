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
}

impl Protocol {
    /// The name used in configs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Postgres => "postgres",
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
    #[serde(default)]
    fault: Vec<fault::RawFault>,
}

fn yes() -> bool {
    true
}

/// Reads and validates a serve config file.
pub fn load_serve_config(path: &Path) -> Result<ServeConfig, ConfigErrors> {
    let name = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: name.clone(),
            line: 1,
            col: 1,
            message: format!("cannot read file: {e}"),
        }])
    })?;
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
        let mut faults: Vec<FaultSpec> = Vec::new();
        for raw_fault in &p.fault {
            if let Some((spec, _)) = fault::read_fault(raw_fault, &[], &loc, &mut errors) {
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
        });
    }
    if errors.is_empty() {
        Ok(ServeConfig { proxies })
    } else {
        Err(ConfigErrors(errors))
    }
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
