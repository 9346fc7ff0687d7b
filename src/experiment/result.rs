//! What a run produced: the data every report is written from.
//!
//! `journal.json` is this structure serialised; it round-trips through
//! serde, so tools (and tests) can read a journal back.

use serde::{Deserialize, Serialize};

use super::spec::Phase;

/// The outcome of a run, most severe first when several apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A guardrail fired or the run was interrupted; faults rolled back.
    Aborted,
    /// The baseline broke an SLO; nothing was injected.
    PrecheckFailed,
    /// SLOs did not hold again within `recovery.within`.
    NotRecovered,
    /// An SLO broke during injection.
    Violated,
    /// A fault never fired, or a source produced no data.
    Inconclusive,
    /// The steady state held before, during and after.
    Passed,
}

impl Verdict {
    /// The process exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Passed => 0,
            Verdict::Violated => 1,
            Verdict::NotRecovered => 2,
            Verdict::PrecheckFailed => 3,
            Verdict::Aborted => 4,
            Verdict::Inconclusive => 5,
        }
    }

    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Violated => "violated",
            Verdict::NotRecovered => "not_recovered",
            Verdict::PrecheckFailed => "precheck_failed",
            Verdict::Aborted => "aborted",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The whole record of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// `[experiment] name`.
    pub experiment: String,
    /// The experiment file.
    pub file: String,
    /// `[experiment] description`.
    pub description: Option<String>,
    /// The seed used (given or chosen).
    pub seed: u64,
    /// Wall-clock start, RFC 3339 UTC.
    pub started_at: String,
    /// From start to verdict.
    pub duration_seconds: f64,
    /// What was planned.
    pub plan: Plan,
    /// What happened, in order.
    pub timeline: Vec<Event>,
    /// Every SLO in every phase it applies to (phases not reached are
    /// absent).
    pub slos: Vec<SloResult>,
    /// Per source and phase: what was measured.
    pub sources: Vec<SourceSummary>,
    /// How often each planned fault acted.
    pub faults: Vec<FaultFired>,
    /// Seconds from rollback until every recovery SLO held to the end;
    /// `None` if they never did (or the run stopped before recovery).
    pub recovery_seconds: Option<f64>,
    /// `[recovery] within`, seconds.
    pub recovery_within_seconds: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why, in one sentence a person reads.
    pub reason: String,
}

/// The plan: phase lengths and the fault schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Seconds.
    pub baseline_seconds: f64,
    /// Seconds.
    pub injection_seconds: f64,
    /// Seconds.
    pub recovery_seconds: f64,
    /// The faults, in file order.
    pub faults: Vec<PlannedFaultRecord>,
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedFaultRecord {
    /// Target name.
    pub target: String,
    /// Fault name.
    pub name: String,
    /// Fault kind.
    pub kind: String,
    /// `upstream` / `downstream`.
    pub direction: String,
    /// 0..1.
    pub toxicity: f64,
    /// The kind's attributes (Toxiproxy's JSON shape).
    pub attributes: serde_json::Value,
    /// Seconds from the start of the run.
    pub apply_at_seconds: f64,
    /// Seconds from the start of the run.
    pub remove_at_seconds: f64,
}

/// Something that happened during the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds from the start of the run.
    pub at_seconds: f64,
    /// `phase`, `fault_applied`, `fault_removed`, `abort`, `rollback`,
    /// `interrupted`, `error`.
    pub kind: String,
    /// Human-readable detail (the phase, the fault, the guardrail...).
    pub detail: String,
}

/// One SLO checked in one phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SloResult {
    /// SLO name.
    pub name: String,
    /// Source name.
    pub source: String,
    /// Metric name (`latency_p95` ...).
    pub metric: String,
    /// The phase.
    pub phase: Phase,
    /// The measured value (latencies in seconds); `None`: no data.
    pub value: Option<f64>,
    /// The bounds with their resolved limits.
    pub checks: Vec<BoundCheck>,
    /// All bounds hold; `None` when there was no data.
    pub passed: Option<bool>,
}

/// One bound of an SLO, resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundCheck {
    /// As written: `max`, `min`, `max_ratio`, `min_ratio`.
    pub bound: String,
    /// The factor or limit as written (ratio bounds: the factor).
    pub written: f64,
    /// A ratio bound's absolute allowance (`slack`); 0 for the others.
    #[serde(default)]
    pub slack: f64,
    /// The limit the value was compared with (ratio bounds: factor x
    /// baseline value); `None` when the baseline had no data.
    pub limit: Option<f64>,
    /// Whether it held; `None` when it could not be checked.
    pub ok: Option<bool>,
}

/// What one source measured in one phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSummary {
    /// Source name.
    pub source: String,
    /// `load`, `probe` or `target`.
    pub kind: String,
    /// The phase.
    pub phase: Phase,
    /// Operations (queries, requests, readings).
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Operations per second.
    pub throughput: f64,
    /// Seconds.
    pub p50: Option<f64>,
    /// Seconds.
    pub p95: Option<f64>,
    /// Seconds.
    pub p99: Option<f64>,
    /// Seconds.
    pub max: Option<f64>,
    /// Mean probe value.
    pub value: Option<f64>,
    /// Failed operations by class (`timeout`, `sqlstate 23502`, `status
    /// 503`...), most frequent first; for a target, errors by SQLSTATE and
    /// source (`sqlstate 23502 (injected)`).
    #[serde(default)]
    pub errors_by_class: Vec<ErrorClass>,
}

/// How many failed operations had one class of error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorClass {
    /// `timeout`, `overloaded`, `connect`, `sqlstate 57014`, ...
    pub class: String,
    /// Failed operations of that class.
    pub count: u64,
}

/// How often a planned fault acted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultFired {
    /// Target name.
    pub target: String,
    /// Fault name.
    pub name: String,
    /// Fault kind.
    pub kind: String,
    /// Whether it was applied at all (a run aborted early may not reach it).
    pub applied: bool,
    /// Times it acted: connections or queries affected (for byte faults,
    /// connection directions it became active on).
    pub activations: u64,
}
