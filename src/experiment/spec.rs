//! An experiment as validated from its TOML file: what the runner executes.
//!
//! `config::experiment` reads the file strictly (every mistake with
//! `FILE:LINE:COL`) and builds these types; the runner, the load
//! generators, the probes, the checker and the reports only ever see them.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Protocol, TlsMode};
use crate::faults::FaultSpec;

/// A whole experiment.
#[derive(Clone, Debug)]
pub struct Experiment {
    /// The file it was read from (for messages and reports).
    pub file: String,
    /// `[experiment] name`: required.
    pub name: String,
    /// `[experiment] description`.
    pub description: Option<String>,
    /// `[experiment] seed`: every random choice derives from it; chosen
    /// and reported when absent.
    pub seed: Option<u64>,
    /// Proxies the experiment stands up (or drives on a remote agent).
    pub targets: Vec<Target>,
    /// Synthetic traffic, measured.
    pub loads: Vec<Load>,
    /// Periodic readings from elsewhere.
    pub probes: Vec<Probe>,
    /// How long each phase lasts.
    pub phases: Phases,
    /// Faults, scheduled within the injection phase.
    pub faults: Vec<PlannedFault>,
    /// The steady-state hypothesis.
    pub slos: Vec<Slo>,
    /// `[recovery] within`: after rollback, every recovery SLO must hold
    /// again this soon. `None`: the whole recovery phase may be used.
    pub recovery_within: Option<Duration>,
    /// Guardrails.
    pub aborts: Vec<Abort>,
    /// Where reports go.
    pub report: ReportSpec,
}

impl Experiment {
    /// The same experiment with its schedule scaled by `factor`: phase
    /// lengths, fault starts and durations, `recovery.within` and the
    /// guardrails' `for` (`shakedown run --time-scale 0.1` for a smoke run
    /// in CI). Fault attributes (latencies, timeouts) and load rates are
    /// not scaled: the system sees the same faults, for less time.
    pub fn scaled(&self, factor: f64) -> Experiment {
        let f = |d: Duration| d.mul_f64(factor);
        let mut e = self.clone();
        e.phases = Phases {
            baseline: f(e.phases.baseline),
            injection: f(e.phases.injection),
            recovery: f(e.phases.recovery),
        };
        for fault in &mut e.faults {
            fault.start = f(fault.start);
            fault.duration = fault.duration.map(f);
        }
        e.recovery_within = e.recovery_within.map(f);
        for a in &mut e.aborts {
            a.for_ = f(a.for_);
        }
        e
    }
}

/// `[[target]]`: a proxy.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// Unique among targets.
    pub name: String,
    /// `tcp` (default), `postgres` or `http`.
    #[serde(serialize_with = "protocol_name")]
    pub protocol: Protocol,
    /// Where the proxy listens (`host:port`).
    pub listen: String,
    /// Where it forwards.
    pub upstream: String,
    /// A remote `shakedown serve` (its API base URL, `http://host:port`)
    /// that runs the proxy instead of this process.
    pub agent: Option<String>,
    /// TLS handling of a postgres target.
    #[serde(skip)]
    pub tls: TlsMode,
    /// Upstream connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// An http target's time for the upstream's response headers before
    /// the client gets 504 (default 30 s).
    pub request_timeout: Duration,
    /// An http target honours Envoy's `x-envoy-fault-*` request headers.
    pub header_faults: bool,
}

fn protocol_name<S: serde::Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

/// `[[load]]`: traffic at a fixed rate.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// Unique among loads, probes and targets (it names a source).
    pub name: String,
    /// What one operation is.
    pub kind: LoadKind,
    /// Operations started per second (open model: started on schedule
    /// whether or not earlier ones finished).
    pub rate: f64,
    /// At most this many operations in flight; a start that finds them all
    /// busy is recorded as a failed operation (`overloaded`), so a slow
    /// system never lowers the offered load silently. Default 4.
    pub concurrency: usize,
    /// An operation slower than this is an error (default 2 s).
    pub timeout: Duration,
}

/// What a load operation does.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LoadKind {
    /// One query (or a short script) on a pooled connection.
    Sql {
        /// A libpq-style URL or key=value string.
        dsn: String,
        /// What one operation runs, in order, on one connection: a single
        /// statement, or several (`["BEGIN", "UPDATE …", "COMMIT"]`), so a
        /// fault can strike between them, mid-transaction. A failed step
        /// ends the operation and the connection is rolled back.
        query: Vec<String>,
        /// Run once on each new connection before its first operation
        /// (e.g. `CREATE TEMP TABLE …`); not an operation itself.
        setup: Option<String>,
        /// A new connection for every operation (`connection =
        /// "per_operation"`, like pgbench `-C`), so connection faults
        /// (`reject_connections`, `refuse`) are seen; default pooled.
        per_operation: bool,
    },
    /// One HTTP request.
    Http {
        /// `http://` URL.
        url: String,
        /// Default GET.
        method: String,
        /// Request body.
        body: Option<String>,
        /// The statuses that count as success; empty: any 2xx.
        expect_status: Vec<u16>,
    },
    /// One TCP connection opened (and closed).
    Tcp {
        /// `host:port`.
        addr: String,
    },
    /// One run of a shell command (`sh -c`); exit 0 is success.
    Command {
        /// The command line.
        run: String,
    },
}

/// `[[probe]]`: a reading taken every `interval`.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// Unique among sources.
    pub name: String,
    /// What is read.
    pub kind: ProbeKind,
    /// Time between readings (default 5 s).
    pub interval: Duration,
    /// A reading slower than this fails (default 5 s).
    pub timeout: Duration,
}

/// What a probe reads. Every reading is an operation (latency, success)
/// and, where there is one, a value (`metric = "value"`).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProbeKind {
    /// An instant query against a Prometheus server's HTTP API
    /// (`{url}/api/v1/query`); the value is the first sample's.
    Prometheus {
        /// Base URL of the Prometheus server.
        url: String,
        /// PromQL.
        query: String,
    },
    /// A GET; success by status; no value.
    Http {
        /// `http://` URL.
        url: String,
        /// The statuses that count as success; empty: any 2xx.
        expect_status: Vec<u16>,
    },
    /// A query whose first column of the first row is the value.
    Sql {
        /// Connection string.
        dsn: String,
        /// The query.
        query: String,
    },
    /// A shell command: exit 0 is success; a number printed on stdout is
    /// the value.
    Command {
        /// The command line.
        run: String,
    },
}

/// `[phases]`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Phases {
    /// Steady state before any fault.
    #[serde(with = "secs")]
    pub baseline: Duration,
    /// Faults applied on their schedule.
    #[serde(with = "secs")]
    pub injection: Duration,
    /// After rollback.
    #[serde(with = "secs")]
    pub recovery: Duration,
}

/// A phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Before injection.
    Baseline,
    /// While faults are scheduled.
    Injection,
    /// After rollback.
    Recovery,
}

impl Phase {
    /// All three, in order.
    pub const ALL: [Phase; 3] = [Phase::Baseline, Phase::Injection, Phase::Recovery];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Baseline => "baseline",
            Phase::Injection => "injection",
            Phase::Recovery => "recovery",
        }
    }
}

/// `[[fault]]`: a fault on a target during part of the injection phase.
#[derive(Clone, Debug)]
pub struct PlannedFault {
    /// The target's name.
    pub target: String,
    /// The fault (name, direction, toxicity, kind and attributes).
    pub spec: FaultSpec,
    /// Offset into the injection phase (default 0).
    pub start: Duration,
    /// How long it stays; `None`: to the end of the injection phase.
    pub duration: Option<Duration>,
}

/// What an SLO measures over a window of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Latency percentiles and maximum, in seconds.
    LatencyP50,
    /// 95th percentile.
    LatencyP95,
    /// 99th percentile.
    LatencyP99,
    /// Maximum.
    LatencyMax,
    /// Failed operations / operations, 0..1.
    ErrorRate,
    /// Successful operations / operations, 0..1.
    Availability,
    /// Operations per second.
    Throughput,
    /// The mean of a probe's values.
    Value,
}

impl Metric {
    /// The name written in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::LatencyP50 => "latency_p50",
            Metric::LatencyP95 => "latency_p95",
            Metric::LatencyP99 => "latency_p99",
            Metric::LatencyMax => "latency_max",
            Metric::ErrorRate => "error_rate",
            Metric::Availability => "availability",
            Metric::Throughput => "throughput",
            Metric::Value => "value",
        }
    }

    /// Whether values are durations (bounds written `"750ms"`, values in
    /// seconds).
    pub fn is_latency(self) -> bool {
        matches!(
            self,
            Metric::LatencyP50 | Metric::LatencyP95 | Metric::LatencyP99 | Metric::LatencyMax
        )
    }
}

/// A bound on a metric's value. Latencies are in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// value <= x
    Max(f64),
    /// value >= x
    Min(f64),
    /// value <= factor * baseline value + slack
    MaxRatio {
        /// The factor of the baseline value.
        factor: f64,
        /// An absolute allowance on top (`slack`, 0 unless written), so a
        /// tiny baseline (a 1 ms p95) does not make the bound mere noise.
        slack: f64,
    },
    /// value >= factor * baseline value - slack
    MinRatio {
        /// The factor of the baseline value.
        factor: f64,
        /// An absolute allowance below (`slack`, 0 unless written).
        slack: f64,
    },
}

impl Bound {
    /// Whether the bound is relative to the baseline.
    pub fn is_ratio(&self) -> bool {
        matches!(self, Bound::MaxRatio { .. } | Bound::MinRatio { .. })
    }
}

/// `[[slo]]`.
#[derive(Clone, Debug, Serialize)]
pub struct Slo {
    /// Unique among SLOs.
    pub name: String,
    /// A load, probe or target name.
    pub source: String,
    /// What is measured.
    pub metric: Metric,
    /// Every bound must hold (one or more).
    pub bounds: Vec<Bound>,
    /// The phases it is checked in (default all three). Ratio bounds are
    /// never checked in the baseline (they are relative to it).
    pub phases: Vec<Phase>,
}

/// `[[abort]]`: a guardrail.
#[derive(Clone, Debug, Serialize)]
pub struct Abort {
    /// A load, probe or target name.
    pub source: String,
    /// What is measured.
    pub metric: Metric,
    /// Absolute bounds only (`max`, `min`).
    pub bounds: Vec<Bound>,
    /// The bound must be broken over a window this long (default 5 s),
    /// checked every second during the injection phase.
    #[serde(with = "secs")]
    pub for_: Duration,
}

/// `[report]`.
#[derive(Clone, Debug, Serialize)]
pub struct ReportSpec {
    /// Directory of `journal.json`, `junit.xml`, `report.md` (default
    /// `target/shakedown`).
    pub dir: PathBuf,
    /// A Pushgateway base URL; the final figures are pushed there.
    pub pushgateway: Option<String>,
}

/// Durations as seconds (f64) in JSON.
pub mod secs {
    use std::time::Duration;

    use serde::Serializer;

    /// Serialises a duration as fractional seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}
