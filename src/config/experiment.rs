//! Experiment files (`shakedown run FILE`, `shakedown validate FILE`).
//!
//! Read key by key rather than through serde structs, so that one pass
//! reports every mistake in the file, each at the key or value that holds
//! it (`FILE:LINE:COL`): unknown keys, bad durations, references to
//! sources or targets that do not exist, and bounds that cannot hold (an
//! error rate above 1, a `min` above its `max`, a fault that starts after
//! the injection ends). What comes out is the validated
//! [`Experiment`](crate::experiment::spec::Experiment); nothing downstream
//! checks input again.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::fault::{self, RawFault};
use super::location::{ConfigError, ConfigErrors, Locator};
use super::{DEFAULT_REQUEST_TIMEOUT, Protocol, TlsMode, check_addr};
use crate::experiment::spec::{
    Abort, Bound, Experiment, Load, LoadKind, Metric, Phase, Phases, PlannedFault, Probe,
    ProbeKind, ReportSpec, Slo, Target,
};
use crate::faults::units::parse_duration;
use crate::proxy::DEFAULT_CONNECT_TIMEOUT;

/// A table as written, with the position of every key and value.
type RawTable = Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>;

/// Highest load rate accepted: beyond it the generator, not the system
/// under test, becomes the bottleneck on a small machine.
const MAX_RATE: f64 = 100_000.0;
/// Most operations a load keeps in flight (each SQL slot holds a
/// connection; PostgreSQL's default max_connections is 100).
const MAX_CONCURRENCY: u64 = 10_000;
/// Default operations in flight.
const DEFAULT_CONCURRENCY: usize = 4;
/// Default operation timeout of a load.
const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time between probe readings.
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Default probe timeout.
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default window over which a guardrail's bound must be broken.
const DEFAULT_ABORT_FOR: Duration = Duration::from_secs(5);
/// Default report directory.
const DEFAULT_REPORT_DIR: &str = "target/shakedown";

/// The file's top level. Unknown tables are refused by serde with their
/// position.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    experiment: Option<RawTable>,
    #[serde(default)]
    target: Vec<RawTable>,
    #[serde(default)]
    load: Vec<RawTable>,
    #[serde(default)]
    probe: Vec<RawTable>,
    phases: Option<RawTable>,
    #[serde(default)]
    fault: Vec<RawFault>,
    #[serde(default)]
    slo: Vec<RawTable>,
    recovery: Option<RawTable>,
    #[serde(default)]
    abort: Vec<RawTable>,
    report: Option<RawTable>,
}

/// Whether a TOML text is an experiment (it has an `[experiment]` table)
/// rather than a serve config.
pub fn is_experiment(src: &str) -> bool {
    toml::from_str::<toml::Table>(src).is_ok_and(|t| t.contains_key("experiment"))
}

/// Reads and validates an experiment file.
pub fn load_experiment(path: &Path) -> Result<Experiment, ConfigErrors> {
    let (name, src) = super::location::read_source(path)?;
    parse_experiment(&name, &src)
}

/// Validates an experiment held in memory; `file` names it in errors.
pub fn parse_experiment(file: &str, src: &str) -> Result<Experiment, ConfigErrors> {
    let loc = Locator::new(file, src);
    let raw: RawFile = toml::from_str(src).map_err(|e| ConfigErrors(vec![loc.from_toml(&e)]))?;
    let mut cx = Cx {
        loc: &loc,
        errors: Vec::new(),
    };
    let exp = read(&mut cx, file, raw);
    if cx.errors.is_empty() {
        exp.ok_or_else(|| ConfigErrors(vec![loc.error(None, "invalid experiment")]))
    } else {
        cx.errors.sort_by_key(|e| (e.line, e.col));
        Err(ConfigErrors(cx.errors))
    }
}

/// The locator and the errors found so far.
struct Cx<'a> {
    loc: &'a Locator<'a>,
    errors: Vec<ConfigError>,
}

impl Cx<'_> {
    fn err(&mut self, span: Range<usize>, msg: impl Into<String>) {
        self.errors.push(self.loc.error(Some(span), msg));
    }
}

/// One table being read: keys are taken one by one, and whatever is left
/// at the end is an unknown key.
struct Table<'a> {
    raw: &'a RawTable,
    /// How messages name it: "[[load]] `orders`".
    what: String,
    taken: Vec<&'a str>,
}

impl<'a> Table<'a> {
    fn new(raw: &'a RawTable, what: impl Into<String>) -> Self {
        Self {
            raw,
            what: what.into(),
            taken: Vec::new(),
        }
    }

    fn span(&self) -> Range<usize> {
        self.raw.span()
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Spanned<toml::Value>> {
        self.taken.push(key);
        self.raw
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v)
    }

    fn has(&self, key: &str) -> bool {
        self.raw.get_ref().keys().any(|k| k.get_ref() == key)
    }

    fn required(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<&'a Spanned<toml::Value>> {
        let v = self.get(key);
        if v.is_none() {
            cx.err(self.span(), format!("{} is missing `{key}`", self.what));
        }
        v
    }

    fn string(
        &mut self,
        cx: &mut Cx<'_>,
        key: &'static str,
        required: bool,
    ) -> Option<Spanned<String>> {
        let v = if required {
            self.required(cx, key)?
        } else {
            self.get(key)?
        };
        match v.get_ref() {
            toml::Value::String(s) if !s.trim().is_empty() => {
                Some(Spanned::new(v.span(), s.clone()))
            }
            toml::Value::String(_) => {
                cx.err(v.span(), format!("`{key}` must not be empty"));
                None
            }
            other => {
                cx.err(
                    v.span(),
                    format!("`{key}` must be a string, not {}", other.type_str()),
                );
                None
            }
        }
    }

    /// The table's required `name`; messages then name the table by it
    /// (`[[load]] \`orders\``).
    fn name(&mut self, cx: &mut Cx<'_>) -> Option<Spanned<String>> {
        let n = self.string(cx, "name", true)?;
        self.what = format!("{} `{}`", self.what, n.get_ref());
        Some(n)
    }

    /// An `http://` URL.
    fn url(
        &mut self,
        cx: &mut Cx<'_>,
        key: &'static str,
        required: bool,
    ) -> Option<Spanned<String>> {
        let u = self.string(cx, key, required)?;
        if let Err(e) = crate::http::client_uri(u.get_ref()) {
            cx.err(u.span(), format!("bad `{key}` `{}`: {e}", u.get_ref()));
        }
        Some(u)
    }

    /// HTTP statuses: one (`503`) or a list (`[200, 503]`); empty when
    /// absent (any 2xx).
    fn statuses(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Vec<u16> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let items: Vec<&toml::Value> = match v.get_ref() {
            toml::Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        let statuses: Option<Vec<u16>> = items
            .iter()
            .map(|i| {
                i.as_integer()
                    .filter(|s| (100..=599).contains(s))
                    .map(|s| s as u16)
            })
            .collect();
        match statuses {
            Some(s) if !s.is_empty() => s,
            _ => {
                cx.err(
                    v.span(),
                    format!("`{key}` must be an HTTP status (100 to 599) or a list of them"),
                );
                Vec::new()
            }
        }
    }

    /// A PostgreSQL connection string (`dsn`, required).
    fn dsn(&mut self, cx: &mut Cx<'_>) -> Option<Spanned<String>> {
        let d = self.string(cx, "dsn", true)?;
        if let Err(e) = d.get_ref().parse::<tokio_postgres::Config>() {
            cx.err(d.span(), format!("bad `dsn`: {e}"));
        }
        Some(d)
    }

    fn duration(&mut self, cx: &mut Cx<'_>, key: &'static str, required: bool) -> Option<Duration> {
        let v = if required {
            self.required(cx, key)?
        } else {
            self.get(key)?
        };
        duration_value(cx, key, v)
    }

    fn number(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<(f64, Range<usize>)> {
        let v = self.get(key)?;
        match number_value(v.get_ref()) {
            Some(n) if n.is_finite() => Some((n, v.span())),
            _ => {
                cx.err(
                    v.span(),
                    format!("`{key}` must be a number, not {}", v.get_ref().type_str()),
                );
                None
            }
        }
    }

    fn integer(&mut self, cx: &mut Cx<'_>, key: &'static str, min: u64, max: u64) -> Option<u64> {
        let v = self.get(key)?;
        match v.get_ref() {
            toml::Value::Integer(i) if *i >= min as i64 && (*i as u64) <= max => Some(*i as u64),
            toml::Value::Integer(i) => {
                cx.err(
                    v.span(),
                    format!("`{key}` = {i} is out of range ({min} to {max})"),
                );
                None
            }
            other => {
                cx.err(
                    v.span(),
                    format!("`{key}` must be a whole number, not {}", other.type_str()),
                );
                None
            }
        }
    }

    /// Reports every key not taken, naming the ones that are expected.
    fn finish(self, cx: &mut Cx<'_>) {
        for key in self.raw.get_ref().keys() {
            if !self.taken.contains(&key.get_ref().as_str()) {
                let mut expected: Vec<&str> = self.taken.clone();
                expected.dedup();
                cx.err(
                    key.span(),
                    format!(
                        "unknown key `{}` in {}; expected one of: {}",
                        key.get_ref(),
                        self.what,
                        expected.join(", ")
                    ),
                );
            }
        }
    }
}

fn number_value(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

fn duration_value(cx: &mut Cx<'_>, key: &str, v: &Spanned<toml::Value>) -> Option<Duration> {
    match v.get_ref() {
        toml::Value::String(s) => match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                cx.err(v.span(), format!("bad duration for `{key}`: {e}"));
                None
            }
        },
        toml::Value::Integer(i) => {
            cx.err(
                v.span(),
                format!("`{key}` needs a unit: write it as e.g. \"{i}s\" or \"{i}ms\""),
            );
            None
        }
        other => {
            cx.err(
                v.span(),
                format!(
                    "`{key}` must be a duration such as \"30s\", not {}",
                    other.type_str()
                ),
            );
            None
        }
    }
}

/// What a source name refers to, for checking SLOs and guardrails.
#[derive(Clone, Copy, PartialEq)]
enum SourceKind {
    Load,
    Probe,
    /// A local postgres or http target: its own query or request
    /// observations.
    ObservedTarget,
    /// A target without observations the runner can read.
    OtherTarget,
}

fn read(cx: &mut Cx<'_>, file: &str, raw: RawFile) -> Option<Experiment> {
    // [experiment]
    let (name, description, seed) = match &raw.experiment {
        None => {
            cx.errors.push(cx.loc.error(
                None,
                "missing [experiment] table (it needs at least `name`)",
            ));
            (None, None, None)
        }
        Some(t) => {
            let mut t = Table::new(t, "[experiment]");
            let name = t.string(cx, "name", true);
            let description = t.string(cx, "description", false);
            let seed = t.integer(cx, "seed", 0, i64::MAX as u64);
            t.finish(cx);
            (name, description, seed)
        }
    };

    let mut sources: HashMap<String, SourceKind> = HashMap::new();
    let mut name_taken = |cx: &mut Cx<'_>, n: &Spanned<String>, kind: SourceKind| {
        if sources.insert(n.get_ref().clone(), kind).is_some() {
            cx.err(
                n.span(),
                format!(
                    "duplicate name `{}`: targets, loads and probes share one namespace (SLOs name them as `source`)",
                    n.get_ref()
                ),
            );
        }
    };

    // [[target]]
    let mut targets = Vec::new();
    let mut listens: HashMap<String, String> = HashMap::new();
    for raw_t in &raw.target {
        let mut t = Table::new(raw_t, "[[target]]");
        let name = t.name(cx);
        let protocol = match t.get("protocol") {
            None => Some(Protocol::Tcp),
            Some(v) => match v.get_ref().as_str() {
                Some("tcp") => Some(Protocol::Tcp),
                Some("postgres") => Some(Protocol::Postgres),
                Some("http") => Some(Protocol::Http),
                _ => {
                    cx.err(
                        v.span(),
                        "`protocol` must be \"tcp\", \"postgres\" or \"http\"",
                    );
                    None
                }
            },
        };
        let listen = t.string(cx, "listen", true);
        let upstream = t.string(cx, "upstream", true);
        for (what, a) in [("listen", &listen), ("upstream", &upstream)] {
            if let Some(a) = a
                && let Err(e) = check_addr(a.get_ref())
            {
                cx.err(a.span(), format!("bad {what} address: {e}"));
            }
        }
        let agent = t.url(cx, "agent", false);
        let tls = match t.get("tls") {
            None => TlsMode::Refuse,
            Some(v) => match v.get_ref().as_str() {
                Some("refuse") => TlsMode::Refuse,
                Some("passthrough") => TlsMode::Passthrough,
                _ => {
                    cx.err(v.span(), "`tls` must be \"refuse\" or \"passthrough\"");
                    TlsMode::Refuse
                }
            },
        };
        if t.has("tls") && protocol != Some(Protocol::Postgres) {
            cx.err(
                t.span(),
                "`tls` applies to postgres targets only (add protocol = \"postgres\")",
            );
        }
        let connect_timeout = t
            .duration(cx, "connect_timeout", false)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let request_timeout = positive(cx, &mut t, "request_timeout");
        let header_faults = match t.get("header_faults") {
            None => false,
            Some(v) => v.get_ref().as_bool().unwrap_or_else(|| {
                cx.err(v.span(), "`header_faults` must be true or false");
                false
            }),
        };
        for key in ["request_timeout", "header_faults"] {
            if t.has(key) && protocol != Some(Protocol::Http) {
                cx.err(
                    t.span(),
                    format!("`{key}` applies to http targets only (add protocol = \"http\")"),
                );
            }
        }
        t.finish(cx);
        if let (Some(l), None) = (&listen, &agent)
            && !l.get_ref().ends_with(":0")
            && let Some(other) = listens.insert(
                l.get_ref().clone(),
                name.as_ref().map_or(String::new(), |n| n.get_ref().clone()),
            )
        {
            cx.err(
                l.span(),
                format!(
                    "listen address `{}` is already used by target `{other}`",
                    l.get_ref()
                ),
            );
        }
        if let Some(n) = &name {
            let observed = matches!(protocol, Some(Protocol::Postgres | Protocol::Http));
            let kind = if observed && agent.is_none() {
                SourceKind::ObservedTarget
            } else {
                SourceKind::OtherTarget
            };
            name_taken(cx, n, kind);
        }
        if let (Some(name), Some(protocol), Some(listen), Some(upstream)) =
            (name, protocol, listen, upstream)
        {
            targets.push(Target {
                name: name.into_inner(),
                protocol,
                listen: listen.into_inner(),
                upstream: upstream.into_inner(),
                agent: agent.map(Spanned::into_inner),
                tls,
                connect_timeout,
                request_timeout: request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
                header_faults,
            });
        }
    }

    // [[load]]
    let mut loads = Vec::new();
    for raw_l in &raw.load {
        let mut t = Table::new(raw_l, "[[load]]");
        let name = t.name(cx);
        if let Some(n) = &name {
            name_taken(cx, n, SourceKind::Load);
        }
        let kind = t.string(cx, "kind", true);
        let kind = kind.and_then(|k| match k.get_ref().as_str() {
            "sql" => {
                let dsn = t.dsn(cx);
                let query = sql_steps(cx, &mut t);
                let setup = t.string(cx, "setup", false);
                let per_operation = match t.get("connection") {
                    None => false,
                    Some(v) => match v.get_ref().as_str() {
                        Some("pooled") => false,
                        Some("per_operation") => true,
                        _ => {
                            cx.err(
                                v.span(),
                                "`connection` must be \"pooled\" (default) or \"per_operation\"",
                            );
                            false
                        }
                    },
                };
                Some(LoadKind::Sql {
                    dsn: dsn?.into_inner(),
                    query: query?,
                    setup: setup.map(Spanned::into_inner),
                    per_operation,
                })
            }
            "http" => {
                let url = t.url(cx, "url", true);
                let method = t.string(cx, "method", false);
                if let Some(m) = &method
                    && hyper::Method::from_bytes(m.get_ref().as_bytes()).is_err()
                {
                    cx.err(m.span(), format!("`{}` is not an HTTP method", m.get_ref()));
                }
                let body = t.string(cx, "body", false);
                let expect_status = t.statuses(cx, "expect_status");
                Some(LoadKind::Http {
                    url: url?.into_inner(),
                    method: method.map_or("GET".into(), |m| m.into_inner().to_ascii_uppercase()),
                    body: body.map(Spanned::into_inner),
                    expect_status,
                })
            }
            "tcp" => {
                let addr = t.string(cx, "addr", true);
                if let Some(a) = &addr
                    && let Err(e) = check_addr(a.get_ref())
                {
                    cx.err(a.span(), format!("bad `addr`: {e}"));
                }
                Some(LoadKind::Tcp {
                    addr: addr?.into_inner(),
                })
            }
            "command" => Some(LoadKind::Command {
                run: t.string(cx, "run", true)?.into_inner(),
            }),
            other => {
                cx.err(
                    k.span(),
                    format!("unknown load kind `{other}`; known kinds: sql, http, tcp, command"),
                );
                None
            }
        });
        let rate = match t.number(cx, "rate") {
            Some((r, span)) if r <= 0.0 || r > MAX_RATE => {
                cx.err(
                    span,
                    format!("`rate` must be above 0 and at most {MAX_RATE} per second"),
                );
                None
            }
            Some((r, _)) => Some(r),
            None => {
                if !t.has("rate") {
                    cx.err(
                        t.span(),
                        format!("{} is missing `rate` (operations per second)", t.what),
                    );
                }
                None
            }
        };
        let concurrency = t
            .integer(cx, "concurrency", 1, MAX_CONCURRENCY)
            .map_or(DEFAULT_CONCURRENCY, |c| c as usize);
        let timeout = positive(cx, &mut t, "timeout").unwrap_or(DEFAULT_LOAD_TIMEOUT);
        t.finish(cx);
        if let (Some(name), Some(kind), Some(rate)) = (name, kind, rate) {
            loads.push(Load {
                name: name.into_inner(),
                kind,
                rate,
                concurrency,
                timeout,
            });
        }
    }

    // [[probe]]
    let mut probes = Vec::new();
    for raw_p in &raw.probe {
        let mut t = Table::new(raw_p, "[[probe]]");
        let name = t.name(cx);
        if let Some(n) = &name {
            name_taken(cx, n, SourceKind::Probe);
        }
        let kind = t.string(cx, "kind", true);
        let kind = kind.and_then(|k| match k.get_ref().as_str() {
            "prometheus" => {
                let url = t.url(cx, "url", true);
                let query = t.string(cx, "query", true);
                Some(ProbeKind::Prometheus {
                    url: url?.into_inner(),
                    query: query?.into_inner(),
                })
            }
            "http" => {
                let url = t.url(cx, "url", true);
                let expect_status = t.statuses(cx, "expect_status");
                Some(ProbeKind::Http {
                    url: url?.into_inner(),
                    expect_status,
                })
            }
            "sql" => {
                let dsn = t.dsn(cx);
                let query = t.string(cx, "query", true);
                Some(ProbeKind::Sql {
                    dsn: dsn?.into_inner(),
                    query: query?.into_inner(),
                })
            }
            "command" => Some(ProbeKind::Command {
                run: t.string(cx, "run", true)?.into_inner(),
            }),
            other => {
                cx.err(
                    k.span(),
                    format!(
                        "unknown probe kind `{other}`; known kinds: prometheus, http, sql, command"
                    ),
                );
                None
            }
        });
        let interval = positive(cx, &mut t, "interval").unwrap_or(DEFAULT_PROBE_INTERVAL);
        let timeout = positive(cx, &mut t, "timeout").unwrap_or(DEFAULT_PROBE_TIMEOUT);
        t.finish(cx);
        if let (Some(name), Some(kind)) = (name, kind) {
            probes.push(Probe {
                name: name.into_inner(),
                kind,
                interval,
                timeout,
            });
        }
    }

    // [phases]
    let phases = match &raw.phases {
        None => {
            cx.errors.push(cx.loc.error(
                None,
                "missing [phases] table (baseline, injection and recovery durations)",
            ));
            None
        }
        Some(p) => {
            let mut t = Table::new(p, "[phases]");
            let baseline = t.duration(cx, "baseline", true);
            let injection = t.duration(cx, "injection", true);
            if injection == Some(Duration::ZERO)
                && let Some(v) = t.get("injection")
            {
                cx.err(v.span(), "the injection phase must last longer than 0 s");
            }
            let recovery = t.duration(cx, "recovery", true);
            t.finish(cx);
            match (baseline, injection, recovery) {
                (Some(baseline), Some(injection), Some(recovery)) if !injection.is_zero() => {
                    Some(Phases {
                        baseline,
                        injection,
                        recovery,
                    })
                }
                _ => None,
            }
        }
    };

    // [[fault]]
    let target_protocols: HashMap<&str, Protocol> = targets
        .iter()
        .map(|t| (t.name.as_str(), t.protocol))
        .collect();
    let mut faults: Vec<(PlannedFault, Range<usize>)> = Vec::new();
    for raw_f in &raw.fault {
        let Some((spec, rest)) = fault::read_fault(
            raw_f,
            &["target", "start", "duration"],
            cx.loc,
            &mut cx.errors,
        ) else {
            continue;
        };
        let target = match rest.get("target") {
            None => {
                cx.err(
                    raw_f.span(),
                    "[[fault]] is missing `target` (a [[target]] name)",
                );
                None
            }
            Some(v) => match v.get_ref().as_str() {
                Some(name) => match target_protocols.get(name) {
                    None => {
                        let known: Vec<&str> = target_protocols.keys().copied().collect();
                        cx.err(
                            v.span(),
                            format!(
                                "fault target `{name}` is not a [[target]]{}",
                                if known.is_empty() {
                                    String::new()
                                } else {
                                    format!("; targets: {}", sorted(known))
                                }
                            ),
                        );
                        None
                    }
                    Some(proto) => {
                        let kind_at = raw_f
                            .get_ref()
                            .iter()
                            .find(|(k, _)| k.get_ref() == "kind")
                            .map_or(raw_f.span(), |(_, v)| v.span());
                        let f = &spec.fault;
                        let needs = if f.is_postgres() && *proto != Protocol::Postgres {
                            Some("needs a postgres target")
                        } else if f.is_http() && *proto != Protocol::Http {
                            Some("needs an http target")
                        } else if *proto == Protocol::Http && !f.applies_to_http() {
                            Some(
                                "acts on bytes and does not apply to an http target (use http_latency, http_throttle, http_reset, http_abort or refuse)",
                            )
                        } else {
                            None
                        };
                        if let Some(why) = needs {
                            cx.err(
                                kind_at,
                                format!(
                                    "fault kind `{}` {why}; `{name}` has protocol = \"{}\"",
                                    f.kind(),
                                    proto.as_str()
                                ),
                            );
                        }
                        Some(name.to_string())
                    }
                },
                None => {
                    cx.err(v.span(), "`target` must be a string");
                    None
                }
            },
        };
        let start = match rest.get("start") {
            Some(v) => duration_value(cx, "start", v),
            None => Some(Duration::ZERO),
        };
        let duration = match rest.get("duration") {
            Some(v) => match duration_value(cx, "duration", v) {
                Some(d) if d.is_zero() => {
                    cx.err(v.span(), "a fault's `duration` must be longer than 0 s");
                    None
                }
                d => d.map(Some),
            },
            None => Some(None),
        };
        if let (Some(p), Some(start), Some(duration)) = (&phases, start, duration) {
            let at = rest
                .get("start")
                .or(rest.get("duration"))
                .map_or(raw_f.span(), |v| v.span());
            if start >= p.injection {
                cx.err(
                    at,
                    format!(
                        "the fault starts at {} into an injection phase of {}: it would never be applied",
                        show(start),
                        show(p.injection)
                    ),
                );
            } else if let Some(d) = duration
                && start + d > p.injection
            {
                cx.err(
                    at,
                    format!(
                        "the fault would end at {} into an injection phase of {}; shorten `duration` or leave it out (to the end of the injection)",
                        show(start + d),
                        show(p.injection)
                    ),
                );
            }
        }
        if let (Some(target), Some(start), Some(duration)) = (target, start, duration) {
            faults.push((
                PlannedFault {
                    target,
                    spec,
                    start,
                    duration,
                },
                raw_f.span(),
            ));
        }
    }
    // Two faults of one name on one target may follow each other (a ramp),
    // but not overlap: the second would replace the first.
    if let Some(p) = &phases {
        for (i, (a, _)) in faults.iter().enumerate() {
            for (b, span) in &faults[i + 1..] {
                if a.target == b.target && a.spec.name == b.spec.name {
                    let end = |f: &PlannedFault| f.duration.map_or(p.injection, |d| f.start + d);
                    if b.start < end(a) && a.start < end(b) {
                        cx.err(
                            span.clone(),
                            format!(
                                "fault `{}` on `{}` overlaps an earlier fault of the same name; give one a different `name`",
                                b.spec.name, b.target
                            ),
                        );
                    }
                }
            }
        }
    }

    // [[slo]]
    let mut slos = Vec::new();
    let mut slo_names: HashMap<String, ()> = HashMap::new();
    for raw_s in &raw.slo {
        let mut t = Table::new(raw_s, "[[slo]]");
        let name = t.name(cx);
        if let Some(n) = &name
            && slo_names.insert(n.get_ref().clone(), ()).is_some()
        {
            cx.err(n.span(), format!("duplicate SLO name `{}`", n.get_ref()));
        }
        let source = t.string(cx, "source", true);
        let metric = read_metric(cx, &mut t);
        let source_ok = check_source(cx, &sources, source.as_ref(), metric);
        let bounds = read_bounds(cx, &mut t, metric, true);
        let phases_list = match t.get("phases") {
            None => Some(Phase::ALL.to_vec()),
            Some(v) => read_phases(cx, v),
        };
        if let (Some(list), Some(bounds)) = (&phases_list, &bounds)
            && list.iter().all(|p| *p == Phase::Baseline)
            && bounds.iter().all(Bound::is_ratio)
        {
            cx.err(
                t.span(),
                format!(
                    "{} has only ratio bounds (relative to the baseline) and is checked only in the baseline: it can never fail",
                    t.what
                ),
            );
        }
        if let (Some(p), Some(bounds)) = (&phases, &bounds)
            && p.baseline.is_zero()
            && bounds.iter().any(Bound::is_ratio)
        {
            cx.err(
                t.span(),
                "ratio bounds compare with the baseline, but the baseline phase lasts 0 s",
            );
        }
        t.finish(cx);
        if let (Some(name), Some(source), Some(metric), Some(bounds), Some(phases), true) =
            (name, source, metric, bounds, phases_list, source_ok)
        {
            slos.push(Slo {
                name: name.into_inner(),
                source: source.into_inner(),
                metric,
                bounds,
                phases,
            });
        }
    }

    // [recovery]
    let recovery_within = match &raw.recovery {
        None => None,
        Some(r) => {
            let mut t = Table::new(r, "[recovery]");
            let within = t.duration(cx, "within", false);
            if let (Some(w), Some(p)) = (within, &phases)
                && w > p.recovery
                && let Some(v) = t.get("within")
            {
                cx.err(
                    v.span(),
                    format!(
                        "`within` = {} is longer than the recovery phase ({}): recovery could not be judged",
                        show(w),
                        show(p.recovery)
                    ),
                );
            }
            if within.is_some() && !slos.iter().any(|s| s.phases.contains(&Phase::Recovery)) {
                cx.err(
                    t.span(),
                    "[recovery] `within` needs at least one [[slo]] checked in the recovery phase",
                );
            }
            t.finish(cx);
            within
        }
    };

    // [[abort]]
    let mut aborts = Vec::new();
    for raw_a in &raw.abort {
        let mut t = Table::new(raw_a, "[[abort]]");
        let source = t.string(cx, "source", true);
        let metric = read_metric(cx, &mut t);
        let source_ok = check_source(cx, &sources, source.as_ref(), metric);
        let bounds = read_bounds(cx, &mut t, metric, false);
        let for_ = positive(cx, &mut t, "for").unwrap_or(DEFAULT_ABORT_FOR);
        if let Some(p) = &phases
            && for_ > p.injection
        {
            cx.err(
                t.span(),
                format!(
                    "the guardrail's `for` ({}) is longer than the injection phase ({}): it could never fire",
                    show(for_),
                    show(p.injection)
                ),
            );
        }
        t.finish(cx);
        if let (Some(source), Some(metric), Some(bounds), true) =
            (source, metric, bounds, source_ok)
        {
            aborts.push(Abort {
                source: source.into_inner(),
                metric,
                bounds,
                for_,
            });
        }
    }

    // [report]
    let report = match &raw.report {
        None => ReportSpec {
            dir: PathBuf::from(DEFAULT_REPORT_DIR),
            pushgateway: None,
        },
        Some(r) => {
            let mut t = Table::new(r, "[report]");
            let dir = t.string(cx, "dir", false);
            let pushgateway = t.url(cx, "pushgateway", false);
            t.finish(cx);
            ReportSpec {
                dir: dir.map_or(PathBuf::from(DEFAULT_REPORT_DIR), |d| {
                    PathBuf::from(d.into_inner())
                }),
                pushgateway: pushgateway.map(Spanned::into_inner),
            }
        }
    };

    Some(Experiment {
        file: file.to_string(),
        name: name?.into_inner(),
        description: description.map(Spanned::into_inner),
        seed,
        targets,
        loads,
        probes,
        phases: phases?,
        faults: faults.into_iter().map(|(f, _)| f).collect(),
        slos,
        recovery_within,
        aborts,
        report,
    })
}

/// A SQL load's `query`: one statement, or a list run in order as one
/// operation.
fn sql_steps(cx: &mut Cx<'_>, t: &mut Table<'_>) -> Option<Vec<String>> {
    let v = t.required(cx, "query")?;
    let steps: Option<Vec<String>> = match v.get_ref() {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Array(items) => items.iter().map(|i| i.as_str().map(String::from)).collect(),
        _ => None,
    };
    match steps {
        Some(steps) if !steps.is_empty() && steps.iter().all(|s| !s.trim().is_empty()) => {
            Some(steps)
        }
        _ => {
            cx.err(
                v.span(),
                "`query` must be a SQL string, or a list of them run in order (e.g. [\"BEGIN\", \"UPDATE …\", \"COMMIT\"])",
            );
            None
        }
    }
}

/// A duration that must be above zero.
fn positive(cx: &mut Cx<'_>, t: &mut Table<'_>, key: &'static str) -> Option<Duration> {
    let d = t.duration(cx, key, false)?;
    if d.is_zero() {
        if let Some(v) = t.get(key) {
            cx.err(v.span(), format!("`{key}` must be longer than 0 s"));
        }
        return None;
    }
    Some(d)
}

fn read_metric(cx: &mut Cx<'_>, t: &mut Table<'_>) -> Option<Metric> {
    let m = t.string(cx, "metric", true)?;
    let metric = match m.get_ref().as_str() {
        "latency_p50" => Metric::LatencyP50,
        "latency_p95" => Metric::LatencyP95,
        "latency_p99" => Metric::LatencyP99,
        "latency_max" => Metric::LatencyMax,
        "error_rate" => Metric::ErrorRate,
        "availability" => Metric::Availability,
        "throughput" => Metric::Throughput,
        "value" => Metric::Value,
        other => {
            cx.err(
                m.span(),
                format!(
                    "unknown metric `{other}`; known metrics: latency_p50, latency_p95, latency_p99, latency_max, error_rate, availability, throughput, value"
                ),
            );
            return None;
        }
    };
    Some(metric)
}

/// Checks that a source exists and can give the metric.
fn check_source(
    cx: &mut Cx<'_>,
    sources: &HashMap<String, SourceKind>,
    source: Option<&Spanned<String>>,
    metric: Option<Metric>,
) -> bool {
    let Some(source) = source else {
        return false;
    };
    let name = source.get_ref();
    match sources.get(name) {
        None => {
            let known: Vec<&str> = sources.keys().map(String::as_str).collect();
            cx.err(
                source.span(),
                format!(
                    "source `{name}` is not a load, probe or target of this experiment{}",
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!("; known: {}", sorted(known))
                    }
                ),
            );
            false
        }
        Some(SourceKind::OtherTarget) => {
            cx.err(
                source.span(),
                format!(
                    "target `{name}` has no observations the runner can read (only local postgres and http targets do); measure it with a [[load]] or [[probe]]"
                ),
            );
            false
        }
        Some(kind) => {
            if metric == Some(Metric::Value) && *kind != SourceKind::Probe {
                cx.err(
                    source.span(),
                    format!("metric `value` is the reading of a [[probe]]; `{name}` is not one"),
                );
                return false;
            }
            true
        }
    }
}

/// The bounds of an SLO (`ratios`) or a guardrail (absolute only).
fn read_bounds(
    cx: &mut Cx<'_>,
    t: &mut Table<'_>,
    metric: Option<Metric>,
    ratios: bool,
) -> Option<Vec<Bound>> {
    let latency = metric.is_some_and(Metric::is_latency);
    let mut bounds = Vec::new();
    let mut ok = true;
    let mut absolute =
        |cx: &mut Cx<'_>, t: &mut Table<'_>, key: &'static str| -> Option<(f64, Range<usize>)> {
            let v = t.get(key)?;
            if latency {
                let d = duration_value(cx, key, v);
                if d.is_none() {
                    ok = false;
                }
                d.map(|d| (d.as_secs_f64(), v.span()))
            } else {
                match number_value(v.get_ref()) {
                    Some(n) if n.is_finite() => Some((n, v.span())),
                    _ => {
                        cx.err(
                            v.span(),
                            format!("`{key}` must be a number, not {}", v.get_ref().type_str()),
                        );
                        ok = false;
                        None
                    }
                }
            }
        };
    let max = absolute(cx, t, "max");
    let min = absolute(cx, t, "min");
    let slack = absolute(cx, t, "slack");
    let unit = |cx: &mut Cx<'_>, (v, span): &(f64, Range<usize>), key: &str| {
        if matches!(metric, Some(Metric::ErrorRate | Metric::Availability))
            && !(0.0..=1.0).contains(v)
        {
            cx.err(
                span.clone(),
                format!("`{key}` = {v} is impossible for a rate: it must be between 0 and 1"),
            );
            return false;
        }
        if matches!(metric, Some(Metric::Throughput)) && *v < 0.0 {
            cx.err(
                span.clone(),
                format!("`{key}` = {v}: throughput cannot be negative"),
            );
            return false;
        }
        true
    };
    if let Some(m) = &max {
        ok &= unit(cx, m, "max");
        bounds.push(Bound::Max(m.0));
    }
    if let Some(m) = &min {
        ok &= unit(cx, m, "min");
        bounds.push(Bound::Min(m.0));
    }
    if let (Some((hi, _)), Some((lo, span))) = (&max, &min)
        && lo > hi
    {
        cx.err(
            span.clone(),
            format!("`min` ({lo}) is above `max` ({hi}): the bound can never hold"),
        );
        ok = false;
    }
    for (key, is_max) in [("max_ratio", true), ("min_ratio", false)] {
        if !t.has(key) {
            t.taken.push(key);
            continue;
        }
        let r = t.number(cx, key);
        if !ratios {
            if let Some((_, span)) = r {
                cx.err(
                    span,
                    format!("guardrails take absolute bounds only (`max`, `min`), not `{key}`"),
                );
            }
            ok = false;
            continue;
        }
        match r {
            Some((r, span)) if r <= 0.0 => {
                cx.err(
                    span,
                    format!("`{key}` must be above 0 (a factor of the baseline value)"),
                );
                ok = false;
            }
            Some((factor, _)) => {
                let slack = slack.as_ref().map_or(0.0, |s| s.0);
                bounds.push(if is_max {
                    Bound::MaxRatio { factor, slack }
                } else {
                    Bound::MinRatio { factor, slack }
                })
            }
            None => ok = false,
        }
    }
    if let Some((v, span)) = &slack {
        if !bounds.iter().any(Bound::is_ratio) && ok {
            cx.err(
                span.clone(),
                "`slack` widens `max_ratio` or `min_ratio`, and there is neither here",
            );
            ok = false;
        } else if *v < 0.0 {
            cx.err(
                span.clone(),
                format!("`slack` = {v} cannot be negative: it widens a ratio bound"),
            );
            ok = false;
        }
    }
    if bounds.is_empty() && ok {
        cx.err(
            t.span(),
            format!(
                "{} has no bound: give `max` or `min`{}",
                t.what,
                if ratios {
                    " (or `max_ratio`, `min_ratio`)"
                } else {
                    ""
                }
            ),
        );
        return None;
    }
    (ok && metric.is_some()).then_some(bounds)
}

fn read_phases(cx: &mut Cx<'_>, v: &Spanned<toml::Value>) -> Option<Vec<Phase>> {
    let Some(items) = v.get_ref().as_array() else {
        cx.err(
            v.span(),
            "`phases` must be a list such as [\"injection\", \"recovery\"]",
        );
        return None;
    };
    let mut out = Vec::new();
    for item in items {
        let p = match item.as_str() {
            Some("baseline") => Phase::Baseline,
            Some("injection") => Phase::Injection,
            Some("recovery") => Phase::Recovery,
            _ => {
                cx.err(
                    v.span(),
                    format!(
                        "unknown phase {item}; phases are \"baseline\", \"injection\", \"recovery\""
                    ),
                );
                return None;
            }
        };
        if out.contains(&p) {
            cx.err(
                v.span(),
                format!("phase \"{}\" is listed twice", p.as_str()),
            );
            return None;
        }
        out.push(p);
    }
    if out.is_empty() {
        cx.err(v.span(), "`phases` must name at least one phase");
        return None;
    }
    out.sort();
    Some(out)
}

/// Checks an `http://host:port[/path]` URL.
fn sorted(mut v: Vec<&str>) -> String {
    v.sort_unstable();
    v.join(", ")
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[experiment]
name = "checkout survives 500 ms of database latency"
seed = 42

[[target]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:6432"
upstream = "127.0.0.1:5432"

[[load]]
name = "orders"
kind = "sql"
dsn = "postgres://postgres@127.0.0.1:6432/postgres"
query = "SELECT 1"
rate = 50

[[probe]]
name = "score"
kind = "command"
run = "echo 1"
interval = "1s"

[phases]
baseline = "30s"
injection = "60s"
recovery = "30s"

[[fault]]
target = "pg"
kind = "query_latency"
latency = "500ms"
statement = "select"
start = "10s"
duration = "40s"

[[slo]]
name = "orders p95"
source = "orders"
metric = "latency_p95"
max = "750ms"
max_ratio = 3.0

[[slo]]
name = "score"
source = "score"
metric = "value"
min = 0.5
phases = ["recovery", "injection"]

[recovery]
within = "20s"

[[abort]]
source = "orders"
metric = "error_rate"
max = 0.5
for = "5s"

[report]
dir = "out"
"#;

    fn errors(src: &str) -> Vec<String> {
        match parse_experiment("e.toml", src) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_full_experiment_reads() {
        let e = parse_experiment("e.toml", GOOD).unwrap();
        assert_eq!(e.seed, Some(42));
        assert_eq!(e.targets[0].protocol, Protocol::Postgres);
        assert_eq!(e.loads[0].concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(e.faults[0].start, Duration::from_secs(10));
        assert_eq!(e.faults[0].duration, Some(Duration::from_secs(40)));
        assert_eq!(e.faults[0].spec.name, "query_latency_downstream");
        assert_eq!(
            e.slos[0].bounds,
            vec![
                Bound::Max(0.75),
                Bound::MaxRatio {
                    factor: 3.0,
                    slack: 0.0
                }
            ]
        );
        assert_eq!(e.slos[1].phases, vec![Phase::Injection, Phase::Recovery]);
        assert_eq!(e.recovery_within, Some(Duration::from_secs(20)));
        assert_eq!(e.aborts[0].for_, Duration::from_secs(5));
        assert_eq!(e.report.dir, PathBuf::from("out"));
        assert!(is_experiment(GOOD));
        assert!(!is_experiment("[[proxy]]\nname = \"a\"\n"));
    }

    fn with(replace: &str, by: &str) -> String {
        assert!(GOOD.contains(replace), "{replace}");
        GOOD.replacen(replace, by, 1)
    }

    /// The line (1-based) of the first occurrence of `needle` in `src`.
    fn line_of(src: &str, needle: &str) -> usize {
        src[..src.find(needle).unwrap()].matches('\n').count() + 1
    }

    #[track_caller]
    fn fails(src: &str, at: &str, message: &str) {
        let errs = errors(src);
        let line = line_of(src, at);
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("e.toml:{line}:")) && e.contains(message)),
            "expected e.toml:{line}: ... {message}\ngot: {errs:#?}"
        );
    }

    #[test]
    fn mistakes_are_reported_where_they_are() {
        let s = with(
            "source = \"orders\"\nmetric = \"latency_p95\"",
            "source = \"ordres\"\nmetric = \"latency_p95\"",
        );
        fails(
            &s,
            "\"ordres\"",
            "source `ordres` is not a load, probe or target",
        );
        let s = with("target = \"pg\"", "target = \"db\"");
        fails(&s, "\"db\"", "fault target `db` is not a [[target]]");
        let s = with("max = \"750ms\"", "max = \"750 furlongs\"");
        fails(&s, "750 furlongs", "bad duration");
        let s = with("max = \"750ms\"", "max = 750");
        fails(&s, "max = 750", "needs a unit");
        let s = with("max = 0.5\nfor", "max = 1.5\nfor");
        fails(&s, "max = 1.5", "impossible for a rate");
        let s = with("rate = 50", "rate = 50\nrat = 3");
        fails(&s, "rat = 3", "unknown key `rat`");
        let s = with("[report]", "[reprot]");
        fails(&s, "[reprot]", "unknown field");
        let s = with("start = \"10s\"", "start = \"70s\"");
        fails(&s, "\"70s\"", "never be applied");
        let s = with("duration = \"40s\"", "duration = \"55s\"");
        fails(&s, "start = \"10s\"", "would end at");
        let s = with("within = \"20s\"", "within = \"40s\"");
        fails(&s, "within = \"40s\"", "longer than the recovery phase");
        let s = with("min = 0.5", "min = 0.5\nmax = 0.1");
        fails(&s, "min = 0.5", "above `max`");
        let s = with("metric = \"value\"", "metric = \"valeu\"");
        fails(&s, "\"valeu\"", "unknown metric");
        let s = with("name = \"score\"\nkind", "name = \"orders\"\nkind");
        fails(
            &s,
            "name = \"orders\"\nkind = \"command\"",
            "duplicate name",
        );
        let s = with("kind = \"query_latency\"", "kind = \"query_lag\"");
        fails(&s, "\"query_lag\"", "unknown fault kind");
        let s = with("protocol = \"postgres\"\n", "");
        fails(&s, "kind = \"query_latency\"", "needs a postgres target");
        let s = with(
            "source = \"orders\"\nmetric = \"error_rate\"",
            "source = \"orders\"\nmetric = \"value\"",
        );
        fails(
            &s,
            "source = \"orders\"\nmetric = \"value\"",
            "reading of a [[probe]]",
        );
        let s = with("max = 0.5\nfor", "max_ratio = 2.0\nfor");
        fails(&s, "max_ratio = 2.0", "absolute bounds only");
        let s = with("injection = \"60s\"", "injection = \"0s\"");
        fails(&s, "\"0s\"", "longer than 0 s");
        let s = with(
            "dsn = \"postgres://postgres@127.0.0.1:6432/postgres\"",
            "dsn = \"host=127.0.0.1 port=fivefour\"",
        );
        fails(&s, "port=fivefour", "bad `dsn`");
    }

    #[test]
    fn every_problem_is_reported_in_one_pass() {
        let s = with(
            "source = \"orders\"\nmetric = \"latency_p95\"",
            "source = \"ordres\"\nmetric = \"latency_p95\"",
        )
        .replacen("target = \"pg\"", "target = \"db\"", 1);
        assert_eq!(errors(&s).len(), 2, "{:#?}", errors(&s));
    }

    #[test]
    fn slack_widens_ratio_bounds_in_the_metric_s_unit() {
        let s = with("max_ratio = 3.0\n", "max_ratio = 3.0\nslack = \"20ms\"\n");
        let e = parse_experiment("e.toml", &s).unwrap();
        assert_eq!(
            e.slos[0].bounds[1],
            Bound::MaxRatio {
                factor: 3.0,
                slack: 0.02
            }
        );
        let s = with("max_ratio = 3.0\n", "max_ratio = 3.0\nslack = 20\n");
        fails(&s, "slack = 20", "`slack`");
        let s = with("max_ratio = 3.0\n", "slack = \"20ms\"\n");
        fails(&s, "slack =", "`slack` widens `max_ratio` or `min_ratio`");
        let s = with("max_ratio = 3.0\n", "max_ratio = 3.0\nslack = \"-1ms\"\n");
        assert!(!errors(&s).is_empty(), "a negative slack is refused");
        let s = with("min = 0.5\n", "min_ratio = 0.5\nslack = -1\n");
        fails(&s, "slack = -1", "cannot be negative");
    }

    #[test]
    fn missing_sections_and_keys() {
        let errs = errors("[phases]\nbaseline = \"1s\"\ninjection = \"1s\"\nrecovery = \"1s\"\n");
        assert!(errs[0].contains("missing [experiment]"), "{errs:?}");
        let errs = errors("[experiment]\nname = \"x\"\n");
        assert!(errs[0].contains("missing [phases]"), "{errs:?}");
        let s = with("rate = 50\n", "");
        fails(&s, "[[load]]", "missing `rate`");
        assert_eq!(errors(&s).len(), 1, "no cascade: {:#?}", errors(&s));
        let s = with("max = \"750ms\"\nmax_ratio = 3.0\n", "");
        fails(&s, "[[slo]]", "has no bound");
    }

    #[test]
    fn http_targets_take_http_faults_only() {
        let base = r#"
[experiment]
name = "web"
[[target]]
name = "web"
protocol = "http"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:80"
request_timeout = "2s"
[[target]]
name = "pg"
protocol = "postgres"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:5432"
[[load]]
name = "buy"
kind = "http"
url = "http://127.0.0.1:7000/checkout"
expect_status = [200, 503]
rate = 5
[phases]
baseline = "1s"
injection = "1s"
recovery = "1s"
[[fault]]
target = "web"
kind = "KIND"
[[slo]]
name = "web p95"
source = "web"
metric = "latency_p95"
max = "1s"
"#;
        let e = parse_experiment("e.toml", &base.replace("KIND", "http_abort")).unwrap();
        assert_eq!(e.targets[0].protocol, Protocol::Http);
        assert_eq!(e.targets[0].request_timeout, Duration::from_secs(2));
        let LoadKind::Http { expect_status, .. } = &e.loads[0].kind else {
            panic!("{:?}", e.loads[0].kind);
        };
        assert_eq!(expect_status, &vec![200, 503]);
        let bytes = base.replace("KIND", "latency");
        fails(
            &bytes,
            "kind = \"latency\"",
            "does not apply to an http target",
        );
        let on_pg = base
            .replace("target = \"web\"\nkind", "target = \"pg\"\nkind")
            .replace("KIND", "http_abort");
        fails(&on_pg, "kind = \"http_abort\"", "needs an http target");
        let misplaced = base
            .replace(
                "upstream = \"127.0.0.1:5432\"",
                "upstream = \"127.0.0.1:5432\"\nheader_faults = true",
            )
            .replace("KIND", "http_abort");
        fails(
            &misplaced,
            "[[target]]\nname = \"pg\"",
            "applies to http targets only",
        );
        let bad_status = base
            .replace("[200, 503]", "[200, 700]")
            .replace("KIND", "http_abort");
        fails(&bad_status, "[200, 700]", "must be an HTTP status");
    }

    #[test]
    fn ramps_may_follow_but_not_overlap() {
        let base = r#"
[experiment]
name = "ramp"
[[target]]
name = "pg"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:5432"
[phases]
baseline = "1s"
injection = "30s"
recovery = "1s"
[[fault]]
target = "pg"
kind = "latency"
latency = "10ms"
duration = "10s"
[[fault]]
target = "pg"
kind = "latency"
latency = "20ms"
start = "START"
"#;
        let ok = parse_experiment("e.toml", &base.replace("START", "10s")).unwrap();
        assert_eq!(ok.faults.len(), 2);
        let bad = base.replace("START", "5s");
        fails(
            &bad,
            "[[fault]]\ntarget = \"pg\"\nkind = \"latency\"\nlatency = \"20ms\"",
            "overlaps",
        );
    }
}
