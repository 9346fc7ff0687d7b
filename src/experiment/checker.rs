//! The steady-state checker: SLO bounds against measured values, recovery
//! time, and the verdict. Pure functions of the measurements, so every
//! rule is tested without a run.

use super::result::{BoundCheck, FaultFired, SloResult, Verdict};
use super::spec::{Bound, Phase, Slo};

/// Checks one SLO's value in one phase. `baseline` is the same metric's
/// value in the baseline phase (for ratio bounds).
pub fn check(slo: &Slo, phase: Phase, value: Option<f64>, baseline: Option<f64>) -> SloResult {
    let checks: Vec<BoundCheck> = slo
        .bounds
        .iter()
        // A ratio against the baseline says nothing in the baseline itself.
        .filter(|b| phase != Phase::Baseline || matches!(b, Bound::Max(_) | Bound::Min(_)))
        .map(|b| check_bound(*b, value, baseline))
        .collect();
    let passed = if checks.is_empty() {
        // Only ratio bounds, in the baseline: nothing to judge, it holds.
        value.map(|_| true)
    } else if checks.iter().any(|c| c.ok == Some(false)) {
        Some(false)
    } else if checks.iter().all(|c| c.ok == Some(true)) {
        Some(true)
    } else {
        None
    };
    SloResult {
        name: slo.name.clone(),
        source: slo.source.clone(),
        metric: slo.metric.as_str().to_string(),
        phase,
        value,
        checks,
        passed,
    }
}

fn check_bound(b: Bound, value: Option<f64>, baseline: Option<f64>) -> BoundCheck {
    let (name, written, slack, limit, is_max) = match b {
        Bound::Max(x) => ("max", x, 0.0, Some(x), true),
        Bound::Min(x) => ("min", x, 0.0, Some(x), false),
        Bound::MaxRatio { factor, slack } => (
            "max_ratio",
            factor,
            slack,
            baseline.map(|v| v * factor + slack),
            true,
        ),
        Bound::MinRatio { factor, slack } => (
            "min_ratio",
            factor,
            slack,
            baseline.map(|v| (v * factor - slack).max(0.0)),
            false,
        ),
    };
    let ok = match (value, limit) {
        (Some(v), Some(l)) => Some(if is_max { v <= l } else { v >= l }),
        _ => None,
    };
    BoundCheck {
        bound: name.to_string(),
        written,
        slack,
        limit,
        ok,
    }
}

/// Whether a set of bounds holds for a value (guardrails, recovery scan):
/// `Some(false)` as soon as one is broken, `None` without data.
pub fn holds(bounds: &[Bound], value: Option<f64>, baseline: Option<f64>) -> Option<bool> {
    let mut all = Some(true);
    for b in bounds {
        match check_bound(*b, value, baseline).ok {
            Some(false) => return Some(false),
            None => all = None,
            Some(true) => {}
        }
    }
    all
}

/// The first offset (seconds after rollback) from which `holds_from(s)`
/// is true for every later offset tried, scanning `0..=last`. `holds_from`
/// judges the window from `s` to the end of the recovery phase.
pub fn recovery_time(last: u64, mut holds_from: impl FnMut(u64) -> bool) -> Option<u64> {
    (0..=last).find(|s| holds_from(*s))
}

/// Everything the verdict depends on.
#[derive(Debug, Default)]
pub struct Outcome<'a> {
    /// A guardrail fired or the run was interrupted: the reason.
    pub aborted: Option<String>,
    /// The run stopped after the baseline because it broke an SLO.
    pub precheck_failed: bool,
    /// Every SLO result of the run.
    pub slos: &'a [SloResult],
    /// Recovery time, if recovery SLOs held again.
    pub recovery_seconds: Option<f64>,
    /// `[recovery] within`.
    pub recovery_within: Option<f64>,
    /// Whether any SLO is checked in the recovery phase.
    pub has_recovery_slos: bool,
    /// The planned faults and how often they acted (`activations` is
    /// meaningful only when `counted`).
    pub faults: &'a [FaultFired],
    /// Whether activations could be counted (remote targets: no).
    pub counted: bool,
}

/// The verdict, most severe first, with its reason.
pub fn verdict(o: &Outcome<'_>) -> (Verdict, String) {
    if let Some(why) = &o.aborted {
        return (Verdict::Aborted, why.clone());
    }
    let failed = |phase: Phase| -> Vec<&SloResult> {
        o.slos
            .iter()
            .filter(|r| r.phase == phase && r.passed == Some(false))
            .collect()
    };
    if o.precheck_failed {
        let names = names(&failed(Phase::Baseline));
        return (
            Verdict::PrecheckFailed,
            format!("the baseline broke {names}; nothing was injected"),
        );
    }
    if o.has_recovery_slos {
        match (o.recovery_seconds, o.recovery_within) {
            (None, _) => {
                return (
                    Verdict::NotRecovered,
                    "the recovery SLOs did not hold again before the end of the recovery phase"
                        .into(),
                );
            }
            (Some(t), Some(w)) if t > w => {
                return (
                    Verdict::NotRecovered,
                    format!("the SLOs held again only after {t:.0} s; the limit is {w:.0} s"),
                );
            }
            _ => {}
        }
    }
    let broken = failed(Phase::Injection);
    if !broken.is_empty() {
        return (
            Verdict::Violated,
            format!("{} broke during the injection", names(&broken)),
        );
    }
    let no_data: Vec<&SloResult> = o.slos.iter().filter(|r| r.passed.is_none()).collect();
    if !no_data.is_empty() {
        let list: Vec<String> = no_data
            .iter()
            .map(|r| format!("`{}` in {}", r.name, r.phase.as_str()))
            .collect();
        return (
            Verdict::Inconclusive,
            format!("no data for {}", list.join(", ")),
        );
    }
    if o.counted {
        let silent: Vec<String> = o
            .faults
            .iter()
            .filter(|f| f.activations == 0)
            .map(|f| format!("`{}` on `{}`", f.name, f.target))
            .collect();
        if !silent.is_empty() {
            return (
                Verdict::Inconclusive,
                format!(
                    "{} never fired, so the hypothesis was not tested",
                    silent.join(", ")
                ),
            );
        }
    }
    (
        Verdict::Passed,
        "the steady state held before, during and after the injection".into(),
    )
}

fn names(rs: &[&SloResult]) -> String {
    let mut v: Vec<String> = rs.iter().map(|r| format!("`{}`", r.name)).collect();
    v.dedup();
    match v.len() {
        0 => "an SLO".into(),
        1 => format!("SLO {}", v[0]),
        _ => format!("SLOs {}", v.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::spec::Metric;

    fn slo(bounds: Vec<Bound>) -> Slo {
        Slo {
            name: "p95".into(),
            source: "orders".into(),
            metric: Metric::LatencyP95,
            bounds,
            phases: Phase::ALL.to_vec(),
        }
    }

    #[test]
    fn absolute_and_ratio_bounds() {
        let s = slo(vec![
            Bound::Max(0.75),
            Bound::MaxRatio {
                factor: 2.0,
                slack: 0.0,
            },
        ]);
        let r = check(&s, Phase::Injection, Some(0.5), Some(0.2));
        assert_eq!(r.passed, Some(false), "0.5 > 2 x 0.2");
        assert_eq!(r.checks[1].limit, Some(0.4));
        let r = check(&s, Phase::Injection, Some(0.3), Some(0.2));
        assert_eq!(r.passed, Some(true));
        // In the baseline only the absolute bound counts.
        let r = check(&s, Phase::Baseline, Some(0.3), Some(0.3));
        assert_eq!(r.checks.len(), 1);
        assert_eq!(r.passed, Some(true));
        // No data, or no baseline for a ratio: not judged.
        assert_eq!(check(&s, Phase::Injection, None, Some(0.2)).passed, None);
        let r = check(&s, Phase::Injection, Some(0.3), None);
        assert_eq!(r.passed, None);
        let r = check(&s, Phase::Injection, Some(0.9), None);
        assert_eq!(r.passed, Some(false), "a broken absolute bound decides");
        let min = slo(vec![Bound::Min(10.0)]);
        assert_eq!(
            check(&min, Phase::Recovery, Some(9.0), None).passed,
            Some(false)
        );
    }

    #[test]
    fn slack_is_added_to_a_max_ratio_and_taken_from_a_min_ratio() {
        let s = slo(vec![Bound::MaxRatio {
            factor: 2.0,
            slack: 0.01,
        }]);
        // 2 x 1.4 ms + 10 ms: a 3.3 ms p95 after a 1.4 ms baseline is noise.
        let r = check(&s, Phase::Recovery, Some(0.0033), Some(0.0014));
        assert_eq!(r.passed, Some(true));
        assert!((r.checks[0].limit.unwrap() - 0.0128).abs() < 1e-12);
        assert_eq!(r.checks[0].slack, 0.01);
        assert_eq!(
            check(&s, Phase::Recovery, Some(0.013), Some(0.0014)).passed,
            Some(false)
        );
        let t = slo(vec![Bound::MinRatio {
            factor: 0.5,
            slack: 30.0,
        }]);
        assert!(t.bounds[0].is_ratio());
        let r = check(&t, Phase::Injection, Some(0.0), Some(40.0));
        assert_eq!(r.checks[0].limit, Some(0.0), "never below zero");
        assert_eq!(
            check(&t, Phase::Injection, Some(10.0), Some(100.0)).passed,
            Some(false),
            "10 < 0.5 x 100 - 30"
        );
    }

    #[test]
    fn recovery_time_is_the_first_offset_that_holds() {
        assert_eq!(recovery_time(10, |s| s >= 4), Some(4));
        assert_eq!(recovery_time(10, |_| false), None);
        assert_eq!(recovery_time(10, |_| true), Some(0));
    }

    fn result(phase: Phase, passed: Option<bool>) -> SloResult {
        SloResult {
            name: "x".into(),
            source: "s".into(),
            metric: "error_rate".into(),
            phase,
            value: Some(0.0),
            checks: vec![],
            passed,
        }
    }

    #[test]
    fn verdicts_in_order_of_severity() {
        let ok = [
            result(Phase::Baseline, Some(true)),
            result(Phase::Injection, Some(true)),
            result(Phase::Recovery, Some(true)),
        ];
        let fired = [FaultFired {
            target: "pg".into(),
            name: "f".into(),
            kind: "latency".into(),
            applied: true,
            activations: 3,
        }];
        let base = Outcome {
            slos: &ok,
            faults: &fired,
            counted: true,
            has_recovery_slos: true,
            recovery_seconds: Some(2.0),
            recovery_within: Some(5.0),
            ..Default::default()
        };
        assert_eq!(verdict(&base).0, Verdict::Passed);
        let o = Outcome {
            aborted: Some("guardrail".into()),
            ..base
        };
        assert_eq!(verdict(&o).0, Verdict::Aborted);
        let base = Outcome {
            slos: &ok,
            faults: &fired,
            counted: true,
            has_recovery_slos: true,
            recovery_seconds: Some(8.0),
            recovery_within: Some(5.0),
            ..Default::default()
        };
        assert_eq!(verdict(&base).0, Verdict::NotRecovered);
        let bad = [
            result(Phase::Baseline, Some(true)),
            result(Phase::Injection, Some(false)),
        ];
        let o = Outcome {
            slos: &bad,
            faults: &fired,
            counted: true,
            ..Default::default()
        };
        assert_eq!(verdict(&o).0, Verdict::Violated);
        let silent = [FaultFired {
            activations: 0,
            ..fired[0].clone()
        }];
        let o = Outcome {
            slos: &ok[..2],
            faults: &silent,
            counted: true,
            ..Default::default()
        };
        assert_eq!(verdict(&o).0, Verdict::Inconclusive);
        let nodata = [result(Phase::Injection, None)];
        let o = Outcome {
            slos: &nodata,
            faults: &fired,
            counted: true,
            ..Default::default()
        };
        assert_eq!(verdict(&o).0, Verdict::Inconclusive);
        let o = Outcome {
            precheck_failed: true,
            slos: &[result(Phase::Baseline, Some(false))],
            faults: &fired,
            ..Default::default()
        };
        let (v, why) = verdict(&o);
        assert_eq!(v, Verdict::PrecheckFailed);
        assert!(why.contains("nothing was injected"), "{why}");
    }
}
