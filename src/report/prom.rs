//! The final figures of a run as Prometheus metrics, for a Pushgateway
//! (see [`super::push`]) or any other scrape.
//!
//! All are gauges: they describe one run, and a later run's push replaces
//! them. Values keep Prometheus base units (seconds, 0..1 ratios). Labels
//! stay bounded: the experiment, SLO, phase, target, fault and kind names
//! all come from the experiment file, never from traffic. The verdict is
//! one series, `shakedown_experiment_verdict{verdict="…"} 1`, for the
//! verdict reached only (a push replaces the whole group, so no stale
//! verdict lingers).

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, Opts, Registry, TextEncoder};

use crate::experiment::result::RunResult;

/// Registers a gauge family and returns it.
pub(crate) fn gauge(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Sets one series.
pub(crate) fn set(g: &GaugeVec, labels: &[&str], v: f64) -> prometheus::Result<()> {
    g.get_metric_with_label_values(labels)?.set(v);
    Ok(())
}

/// When the run ended, seconds since the epoch: `started_at` plus the
/// duration (now, if `started_at` does not parse).
fn end_timestamp(r: &RunResult) -> f64 {
    let start = humantime::parse_rfc3339_weak(&r.started_at)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64() + r.duration_seconds);
    start.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

/// The metric families of a run, for callers that merge them with their
/// own (the API's `/metrics` could show the last run this way).
pub fn families(r: &RunResult) -> prometheus::Result<Vec<MetricFamily>> {
    let reg = Registry::new();
    let exp = r.experiment.as_str();
    let verdict = gauge(
        &reg,
        "shakedown_experiment_verdict",
        "1 for the verdict the run reached (one series per run).",
        &["experiment", "verdict"],
    )?;
    set(&verdict, &[exp, r.verdict.as_str()], 1.0)?;
    let exit = gauge(
        &reg,
        "shakedown_experiment_exit_code",
        "The exit code of shakedown run (0 passed, 1 violated, 2 not recovered, 3 precheck failed, 4 aborted, 5 inconclusive).",
        &["experiment"],
    )?;
    set(&exit, &[exp], f64::from(r.verdict.exit_code()))?;
    let duration = gauge(
        &reg,
        "shakedown_experiment_duration_seconds",
        "From the start of the run to its verdict.",
        &["experiment"],
    )?;
    set(&duration, &[exp], r.duration_seconds)?;
    if let Some(t) = r.recovery_seconds {
        let g = gauge(
            &reg,
            "shakedown_experiment_recovery_seconds",
            "From rollback until every recovery SLO held to the end of the run.",
            &["experiment"],
        )?;
        set(&g, &[exp], t)?;
    }
    let slo_labels = ["experiment", "slo", "phase"];
    let value = gauge(
        &reg,
        "shakedown_experiment_slo_value",
        "The value an SLO measured in a phase (latencies in seconds, rates 0..1).",
        &slo_labels,
    )?;
    let passed = gauge(
        &reg,
        "shakedown_experiment_slo_passed",
        "1 if the SLO held in the phase, 0 if it broke (absent without data).",
        &slo_labels,
    )?;
    for s in &r.slos {
        let labels = [exp, s.name.as_str(), s.phase.as_str()];
        if let Some(v) = s.value {
            set(&value, &labels, v)?;
        }
        if let Some(p) = s.passed {
            set(&passed, &labels, if p { 1.0 } else { 0.0 })?;
        }
    }
    let fired = gauge(
        &reg,
        "shakedown_experiment_fault_activations",
        "Times a planned fault acted (connections or queries affected; 0 on remote targets, which cannot count).",
        &["experiment", "target", "fault", "kind"],
    )?;
    for f in &r.faults {
        let labels = [exp, f.target.as_str(), f.name.as_str(), f.kind.as_str()];
        set(&fired, &labels, f.activations as f64)?;
    }
    let last = gauge(
        &reg,
        "shakedown_experiment_last_run_timestamp_seconds",
        "When the run ended, seconds since the Unix epoch.",
        &["experiment"],
    )?;
    set(&last, &[exp], end_timestamp(r))?;
    Ok(reg.gather())
}

/// The figures in the Prometheus text exposition format (0.0.4).
///
/// Only an internal mistake (a bad metric name) can fail; the text then
/// holds a comment saying so instead of metrics.
pub fn text(r: &RunResult) -> String {
    match families(r).and_then(|f| TextEncoder::new().encode_to_string(&f)) {
        Ok(s) => s,
        Err(e) => format!("# shakedown: cannot encode the run's metrics: {e}\n"),
    }
}

/// The families registered in `reg`, as Prometheus text (the runner's live
/// figures are built with [`gauge`] and [`set`] too).
pub(crate) fn encode(reg: &Registry) -> String {
    TextEncoder::new()
        .encode_to_string(&reg.gather())
        .unwrap_or_else(|e| format!("# shakedown: cannot encode metrics: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    fn series(t: &str, prefix: &str) -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn passed_run_figures() {
        let t = text(&fixtures::passed());
        let exp = "experiment=\"checkout survives a slow primary\"";
        assert_eq!(
            series(&t, "shakedown_experiment_verdict{"),
            [format!(
                "shakedown_experiment_verdict{{{exp},verdict=\"passed\"}} 1"
            )]
        );
        assert!(t.contains(&format!("shakedown_experiment_exit_code{{{exp}}} 0\n")));
        assert!(t.contains(&format!(
            "shakedown_experiment_duration_seconds{{{exp}}} 90.4\n"
        )));
        assert!(t.contains(&format!(
            "shakedown_experiment_recovery_seconds{{{exp}}} 2\n"
        )));
        assert!(t.contains(&format!(
            "shakedown_experiment_slo_value{{{exp},phase=\"injection\",slo=\"checkout p95\"}} 0.02\n"
        )));
        assert_eq!(series(&t, "shakedown_experiment_slo_passed{").len(), 6);
        assert!(t.contains(&format!(
            "shakedown_experiment_fault_activations{{{exp},fault=\"slow-primary\",kind=\"latency\",target=\"pg\"}} 812\n"
        )));
        // 2025-03-01T10:00:00Z + 90.4 s.
        assert!(t.contains(&format!(
            "shakedown_experiment_last_run_timestamp_seconds{{{exp}}} 1740823290.4\n"
        )));
        assert!(t.contains("# TYPE shakedown_experiment_verdict gauge\n"));
        assert!(t.contains("# HELP shakedown_experiment_exit_code "));
    }

    #[test]
    fn absent_figures_are_absent() {
        let t = text(&fixtures::aborted());
        assert!(!t.contains("shakedown_experiment_recovery_seconds"));
        assert!(t.contains("verdict=\"aborted\"} 1\n"));
        assert!(t.contains("exit_code{experiment=\"checkout survives a slow primary\"} 4\n"));
        let t = text(&fixtures::no_data());
        assert!(
            !t.contains("slo=\"replication lag\""),
            "no value, no passed: {t}"
        );
        let t = text(&fixtures::violated());
        assert!(t.contains("phase=\"injection\",slo=\"checkout p95\"} 0\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut r = fixtures::special();
        r.experiment = "a\"b\\c\nd".into();
        let t = text(&r);
        assert!(t.contains("experiment=\"a\\\"b\\\\c\\nd\""), "{t}");
        assert!(t.lines().all(|l| !l.is_empty()));
    }
}
