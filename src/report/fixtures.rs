//! Hand-made run results for the report tests: one per kind of outcome a
//! reader must be able to tell apart (passed, violated, aborted before
//! recovery, no data), and one whose names carry every character XML,
//! HTML or Markdown treats specially.

use serde_json::json;

use crate::experiment::result::{
    BoundCheck, Event, FaultFired, Plan, PlannedFaultRecord, RunResult, SloResult, SourceSummary,
    Verdict,
};
use crate::experiment::spec::Phase;

fn ev(at_seconds: f64, kind: &str, detail: &str) -> Event {
    Event {
        at_seconds,
        kind: kind.into(),
        detail: detail.into(),
    }
}

fn check(bound: &str, written: f64, limit: Option<f64>, ok: Option<bool>) -> BoundCheck {
    BoundCheck {
        bound: bound.into(),
        written,
        slack: 0.0,
        limit,
        ok,
    }
}

fn slo(
    name: &str,
    source: &str,
    metric: &str,
    phase: Phase,
    value: Option<f64>,
    checks: Vec<BoundCheck>,
) -> SloResult {
    let passed = if value.is_none() || checks.iter().any(|c| c.ok.is_none()) {
        None
    } else {
        Some(checks.iter().all(|c| c.ok == Some(true)))
    };
    SloResult {
        name: name.into(),
        source: source.into(),
        metric: metric.into(),
        phase,
        value,
        checks,
        passed,
    }
}

/// Rounded to micro-units, so a value's shortest decimal form has few
/// digits: serde_json without its `float_roundtrip` feature reads longer
/// ones back a bit off (see `journal`).
fn nice(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn source(
    name: &str,
    kind: &str,
    phase: Phase,
    ops: u64,
    errors: u64,
    p95: Option<f64>,
    value: Option<f64>,
) -> SourceSummary {
    SourceSummary {
        source: name.into(),
        kind: kind.into(),
        phase,
        ops,
        errors,
        throughput: nice(ops as f64 / 30.0),
        p50: p95.map(|p| nice(p / 2.0)),
        p95,
        p99: p95.map(|p| nice(p * 1.5)),
        max: p95.map(|p| nice(p * 3.0)),
        value,
        errors_by_class: Vec::new(),
    }
}

/// Everything held: two SLOs over three phases, one fault that fired.
pub(crate) fn passed() -> RunResult {
    let p95 = |phase, v, ratio: Option<f64>| {
        let mut checks = vec![check("max", 0.75, Some(0.75), Some(v <= 0.75))];
        if let Some(limit) = ratio {
            checks.push(check("max_ratio", 2.0, Some(limit), Some(v <= limit)));
        }
        slo(
            "checkout p95",
            "orders",
            "latency_p95",
            phase,
            Some(v),
            checks,
        )
    };
    let err = |phase, v: f64| {
        let checks = vec![check("max", 0.01, Some(0.01), Some(v <= 0.01))];
        slo("errors", "orders", "error_rate", phase, Some(v), checks)
    };
    RunResult {
        experiment: "checkout survives a slow primary".into(),
        file: "experiments/slow-primary.toml".into(),
        description: Some("The primary answers 300 ms late; checkout must hold.".into()),
        seed: 42,
        started_at: "2025-03-01T10:00:00Z".into(),
        duration_seconds: 90.4,
        plan: Plan {
            baseline_seconds: 30.0,
            injection_seconds: 30.0,
            recovery_seconds: 30.0,
            faults: vec![PlannedFaultRecord {
                target: "pg".into(),
                name: "slow-primary".into(),
                kind: "latency".into(),
                direction: "downstream".into(),
                toxicity: 1.0,
                attributes: json!({"latency": 300, "jitter": 50}),
                apply_at_seconds: 30.0,
                remove_at_seconds: 60.0,
            }],
        },
        timeline: vec![
            ev(
                0.0,
                "target",
                "`pg` listening on 127.0.0.1:6432 -> 127.0.0.1:5432",
            ),
            ev(0.01, "phase", "baseline"),
            ev(30.0, "phase", "injection"),
            ev(30.01, "fault_applied", "latency `slow-primary` on `pg`"),
            ev(60.0, "fault_removed", "latency `slow-primary` on `pg`"),
            ev(60.01, "rollback", "end of injection"),
            ev(60.02, "phase", "recovery"),
            ev(90.1, "verdict", "passed: the steady state held"),
        ],
        slos: vec![
            p95(Phase::Baseline, 0.012, None),
            p95(Phase::Injection, 0.02, Some(0.024)),
            p95(Phase::Recovery, 0.013, Some(0.024)),
            err(Phase::Baseline, 0.0),
            err(Phase::Injection, 0.004),
            err(Phase::Recovery, 0.0),
        ],
        sources: vec![
            source(
                "orders",
                "load",
                Phase::Baseline,
                1500,
                0,
                Some(0.012),
                None,
            ),
            source(
                "orders",
                "load",
                Phase::Injection,
                1490,
                6,
                Some(0.02),
                None,
            ),
            source(
                "orders",
                "load",
                Phase::Recovery,
                1500,
                0,
                Some(0.013),
                None,
            ),
            source("pg", "target", Phase::Baseline, 3000, 0, Some(0.002), None),
            source("pg", "target", Phase::Injection, 2980, 0, Some(0.302), None),
            source("pg", "target", Phase::Recovery, 3000, 0, Some(0.002), None),
        ],
        faults: vec![FaultFired {
            target: "pg".into(),
            name: "slow-primary".into(),
            kind: "latency".into(),
            applied: true,
            activations: 812,
        }],
        recovery_seconds: Some(2.0),
        recovery_within_seconds: Some(10.0),
        verdict: Verdict::Passed,
        reason: "the steady state held before, during and after the injection".into(),
    }
}

/// The p95 broke its ratio bound during the injection.
pub(crate) fn violated() -> RunResult {
    let mut r = passed();
    r.slos[1] = slo(
        "checkout p95",
        "orders",
        "latency_p95",
        Phase::Injection,
        Some(0.34),
        vec![
            check("max", 0.75, Some(0.75), Some(true)),
            check("max_ratio", 2.0, Some(0.024), Some(false)),
        ],
    );
    r.sources[1].p95 = Some(0.34);
    r.verdict = Verdict::Violated;
    r.reason = "SLO `checkout p95` broke during the injection".into();
    r
}

/// A guardrail fired during the injection: no recovery phase, the second
/// fault never applied.
pub(crate) fn aborted() -> RunResult {
    let mut r = passed();
    r.plan.faults.push(PlannedFaultRecord {
        target: "pg".into(),
        name: "reset".into(),
        kind: "reset_peer".into(),
        direction: "upstream".into(),
        toxicity: 0.5,
        attributes: json!({"timeout": 0}),
        apply_at_seconds: 50.0,
        remove_at_seconds: 60.0,
    });
    r.faults.push(FaultFired {
        target: "pg".into(),
        name: "reset".into(),
        kind: "reset_peer".into(),
        applied: false,
        activations: 0,
    });
    r.timeline.truncate(4);
    let why = "guardrail fired: error_rate of `orders` was 0.4000; every fault was rolled back";
    r.timeline
        .push(ev(41.2, "fault_removed", "latency `slow-primary` on `pg`"));
    r.timeline.push(ev(41.3, "rollback", "aborted"));
    r.timeline.push(ev(41.5, "abort", why));
    r.timeline
        .push(ev(41.9, "verdict", &format!("aborted: {why}")));
    r.duration_seconds = 42.0;
    r.slos.retain(|s| s.phase != Phase::Recovery);
    r.sources.retain(|s| s.phase != Phase::Recovery);
    r.recovery_seconds = None;
    r.verdict = Verdict::Aborted;
    r.reason = why.into();
    r
}

/// A probe that never answered: its SLO has no value in any phase.
pub(crate) fn no_data() -> RunResult {
    let mut r = passed();
    for phase in Phase::ALL {
        r.slos.push(slo(
            "replication lag",
            "lag",
            "value",
            phase,
            None,
            vec![check("max", 5.0, Some(5.0), None)],
        ));
        r.sources
            .push(source("lag", "probe", phase, 6, 6, None, None));
    }
    r.verdict = Verdict::Inconclusive;
    r.reason = "no data for `replication lag` in baseline, `replication lag` in injection, \
                `replication lag` in recovery"
        .into();
    r
}

/// Names with `& < > " ' |`, a control character and a newline.
pub(crate) fn special() -> RunResult {
    let mut r = violated();
    r.experiment = "a <b> & \"c\" 'd' | e\u{1}".into();
    r.description = Some("line one | two\n<script>alert(1)</script> *bold* `code`".into());
    r.file = "exp & <x>.toml".into();
    for s in &mut r.slos {
        s.name = format!("{} <&> | \"q\"", s.name);
        s.source = "o|r<d>".into();
    }
    for s in &mut r.sources {
        if s.source == "orders" {
            s.source = "o|r<d>".into();
        }
    }
    r.plan.faults[0].name = "x&y|z".into();
    r.plan.faults[0].target = "p'g\"".into();
    r.plan.faults[0].attributes = json!({"note": "a|b <c> & \"d\""});
    r.faults[0].name = "x&y|z".into();
    r.faults[0].target = "p'g\"".into();
    r.reason = "SLO `checkout p95 <&> | \"q\"` broke during the injection\u{0}".into();
    r.timeline
        .push(ev(61.0, "error", "upstream said <nope> & \"bye\" | \u{7}"));
    r
}
