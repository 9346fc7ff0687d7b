//! How numbers, bounds and times are written in every report.
//!
//! One place decides units so the terminal table, the Markdown, the HTML
//! and the JUnit messages never disagree: latencies (metrics named
//! `latency_*`, seconds in [`RunResult`]) are shown in milliseconds, rates
//! (`error_rate`, `availability`, 0..1) as percentages, throughput as
//! operations per second. The journal and the Prometheus figures keep the
//! raw values (seconds, ratios).

use crate::experiment::result::{BoundCheck, RunResult};
use crate::experiment::spec::Phase;

/// How a metric's values read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Seconds, shown in ms.
    Latency,
    /// 0..1, shown as a percentage.
    Rate,
    /// Operations per second.
    PerSecond,
    /// A plain number (probe values).
    Plain,
}

/// The unit of a metric, by its name as written in files.
pub(crate) fn unit(metric: &str) -> Unit {
    if metric.starts_with("latency_") {
        Unit::Latency
    } else if metric == "error_rate" || metric == "availability" {
        Unit::Rate
    } else if metric == "throughput" {
        Unit::PerSecond
    } else {
        Unit::Plain
    }
}

/// A value of `metric`, in that metric's display unit.
pub(crate) fn value(metric: &str, v: f64) -> String {
    in_unit(unit(metric), v)
}

/// A value in a unit.
pub(crate) fn in_unit(u: Unit, v: f64) -> String {
    match u {
        Unit::Latency => ms(v),
        Unit::Rate => pct(v),
        Unit::PerSecond => per_second(v),
        Unit::Plain => num(v),
    }
}

/// An optional value; `none` when absent.
pub(crate) fn opt(u: Unit, v: Option<f64>, none: &str) -> String {
    v.map_or_else(|| none.to_string(), |v| in_unit(u, v))
}

/// Seconds as milliseconds, with precision that fits the magnitude.
pub(crate) fn ms(s: f64) -> String {
    if !s.is_finite() {
        return "n/a".into();
    }
    let m = s * 1000.0;
    if m.abs() >= 100.0 {
        format!("{m:.0}ms")
    } else if m.abs() >= 10.0 {
        format!("{m:.1}ms")
    } else {
        format!("{m:.2}ms")
    }
}

/// A 0..1 ratio as a percentage (two decimals, so 99.95% and 0.05% differ).
pub(crate) fn pct(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    format!("{:.2}%", x * 100.0)
}

/// Operations per second.
pub(crate) fn per_second(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    format!("{x:.1}/s")
}

/// A number without noise: integers bare, others to three decimals.
pub(crate) fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x == x.trunc() && x.abs() < 1e15 {
        return format!("{x:.0}");
    }
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0');
    s.trim_end_matches('.').to_string()
}

/// A duration in seconds: `3s`, `95.3s`.
pub(crate) fn secs(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x == x.trunc() {
        format!("{x:.0}s")
    } else {
        format!("{x:.1}s")
    }
}

/// An offset from the start of the run: `+12.3s`.
pub(crate) fn at(x: f64) -> String {
    format!("+{x:.1}s")
}

/// A ratio factor: `2.0x`, `1.25x`.
fn factor(x: f64) -> String {
    let s = format!("{x:.2}");
    let s = s.strip_suffix('0').unwrap_or(&s);
    format!("{s}x")
}

/// One bound as a reader checks it: `<= 750ms`, `>= 99.00%`,
/// `<= 2.0x baseline (= 120ms)`.
pub(crate) fn bound(metric: &str, c: &BoundCheck) -> String {
    let op = if c.bound.starts_with("min") {
        ">="
    } else {
        "<="
    };
    if c.bound.ends_with("_ratio") {
        let limit = c.limit.map_or_else(
            || "no baseline data".to_string(),
            |l| format!("= {}", value(metric, l)),
        );
        let slack = if c.slack > 0.0 {
            format!(
                " {} {}",
                if op == ">=" { "-" } else { "+" },
                value(metric, c.slack)
            )
        } else {
            String::new()
        };
        format!("{op} {} baseline{slack} ({limit})", factor(c.written))
    } else {
        format!("{op} {}", value(metric, c.written))
    }
}

/// Every bound of an SLO in a phase; `-` when none applies there (ratio
/// bounds are not checked in the baseline).
pub(crate) fn bounds(metric: &str, checks: &[BoundCheck]) -> String {
    if checks.is_empty() {
        return "-".into();
    }
    checks
        .iter()
        .map(|c| bound(metric, c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `PASS`, `FAIL` or `NO DATA`.
pub(crate) fn outcome(passed: Option<bool>) -> &'static str {
    match passed {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "NO DATA",
    }
}

/// `VERDICT: PASSED (exit 0)`.
pub(crate) fn verdict_line(r: &RunResult) -> String {
    format!(
        "VERDICT: {} (exit {})",
        r.verdict.as_str().to_uppercase(),
        r.verdict.exit_code()
    )
}

/// Text on one line: control characters (newlines included) become spaces,
/// so a name cannot break a table row.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A name fit for an identifier: lower-case ASCII letters and digits, runs
/// of anything else as one `_`.
pub(crate) fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_');
    if out.is_empty() {
        "experiment".into()
    } else {
        out.to_string()
    }
}

/// The command that reruns the experiment with the same seed, the file
/// quoted for a POSIX shell when it needs to be.
pub(crate) fn reproduce(r: &RunResult) -> String {
    let plain = !r.file.is_empty()
        && r.file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-+:=@%".contains(c));
    let file = if plain {
        r.file.clone()
    } else {
        format!("'{}'", r.file.replace('\'', r"'\''"))
    };
    format!("shakedown run {file} --seed {}", r.seed)
}

/// The recovery time against its limit, as a sentence fragment:
/// `2s (limit 10s)`, `did not recover (limit 10s)`, `not measured`.
pub(crate) fn recovery(r: &RunResult) -> String {
    let limit = r
        .recovery_within_seconds
        .map(|w| format!(" (limit {})", secs(w)))
        .unwrap_or_default();
    match r.recovery_seconds {
        Some(t) => {
            let late = r.recovery_within_seconds.is_some_and(|w| t > w);
            let note = if late { ", beyond the limit" } else { "" };
            format!("{}{limit}{note}", secs(t))
        }
        None if r.verdict == crate::experiment::result::Verdict::NotRecovered => {
            format!("did not recover{limit}")
        }
        None => "not measured".into(),
    }
}

/// When a phase actually ran, in seconds from the start of the run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Window {
    /// The phase.
    pub phase: Phase,
    /// Start offset.
    pub start: f64,
    /// End offset.
    pub end: f64,
}

impl Window {
    /// Its length in seconds.
    pub fn len(&self) -> f64 {
        (self.end - self.start).max(0.0)
    }
}

/// The phases as they ran, read from the timeline's `phase` events (a
/// phase ends at the next one, its planned length, an abort, a precheck
/// stop or the verdict, whichever comes first). Without `phase` events
/// (a journal from elsewhere) the plan is used, cut at the run's end.
pub(crate) fn windows(r: &RunResult) -> Vec<Window> {
    let planned = |p: Phase| match p {
        Phase::Baseline => r.plan.baseline_seconds,
        Phase::Injection => r.plan.injection_seconds,
        Phase::Recovery => r.plan.recovery_seconds,
    };
    let starts: Vec<(Phase, f64)> = r
        .timeline
        .iter()
        .filter(|e| e.kind == "phase")
        .filter_map(|e| {
            Phase::ALL
                .into_iter()
                .find(|p| p.as_str() == e.detail)
                .map(|p| (p, e.at_seconds))
        })
        .collect();
    if starts.is_empty() {
        let mut t = 0.0;
        let mut out = Vec::new();
        for p in Phase::ALL {
            let end = (t + planned(p)).min(r.duration_seconds);
            if end > t {
                out.push(Window {
                    phase: p,
                    start: t,
                    end,
                });
            }
            t += planned(p);
        }
        return out;
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &(phase, start))| {
            let mut end = (start + planned(phase)).min(r.duration_seconds.max(start));
            if let Some(&(_, next)) = starts.get(i + 1) {
                end = end.min(next);
            }
            if let Some(stop) = r
                .timeline
                .iter()
                .filter(|e| matches!(e.kind.as_str(), "abort" | "precheck" | "verdict"))
                .map(|e| e.at_seconds)
                .find(|&t| t >= start)
            {
                end = end.min(stop);
            }
            Window { phase, start, end }
        })
        .collect()
}

/// The window of one phase, if it ran.
pub(crate) fn window(r: &RunResult, phase: Phase) -> Option<Window> {
    windows(r).into_iter().find(|w| w.phase == phase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn units_follow_the_metric_name() {
        assert_eq!(value("latency_p95", 0.12), "120ms");
        assert_eq!(value("latency_max", 0.0345), "34.5ms");
        assert_eq!(value("latency_p50", 0.0012), "1.20ms");
        assert_eq!(value("error_rate", 0.125), "12.50%");
        assert_eq!(value("availability", 0.99), "99.00%");
        assert_eq!(value("throughput", 49.84), "49.8/s");
        assert_eq!(value("value", 3.0), "3");
        assert_eq!(value("value", 0.1234), "0.123");
        assert_eq!(value("value", f64::NAN), "n/a");
    }

    #[test]
    fn bounds_read_like_the_file() {
        let c = |bound: &str, written, limit| BoundCheck {
            bound: bound.into(),
            written,
            slack: 0.0,
            limit,
            ok: None,
        };
        assert_eq!(
            bound("latency_p95", &c("max", 0.75, Some(0.75))),
            "<= 750ms"
        );
        assert_eq!(
            bound("availability", &c("min", 0.99, Some(0.99))),
            ">= 99.00%"
        );
        assert_eq!(
            bound("latency_p95", &c("max_ratio", 2.0, Some(0.12))),
            "<= 2.0x baseline (= 120ms)"
        );
        let slack = BoundCheck {
            slack: 0.02,
            ..c("max_ratio", 2.0, Some(0.0228))
        };
        assert_eq!(
            bound("latency_p95", &slack),
            "<= 2.0x baseline + 20.0ms (= 22.8ms)"
        );
        let slack = BoundCheck {
            slack: 5.0,
            ..c("min_ratio", 0.5, Some(20.0))
        };
        assert_eq!(
            bound("throughput", &slack),
            ">= 0.5x baseline - 5.0/s (= 20.0/s)"
        );
        assert_eq!(
            bound("throughput", &c("min_ratio", 0.75, None)),
            ">= 0.75x baseline (no baseline data)"
        );
        assert_eq!(bounds("latency_p95", &[]), "-");
    }

    #[test]
    fn slugs_and_reproduce_commands() {
        assert_eq!(
            slug("Checkout survives a slow primary!"),
            "checkout_survives_a_slow_primary"
        );
        assert_eq!(slug("<&>"), "experiment");
        let mut r = fixtures::passed();
        assert_eq!(
            reproduce(&r),
            "shakedown run experiments/slow-primary.toml --seed 42"
        );
        r.file = "my exp's.toml".into();
        assert_eq!(reproduce(&r), r"shakedown run 'my exp'\''s.toml' --seed 42");
    }

    #[test]
    fn windows_come_from_the_timeline() {
        let w = windows(&fixtures::passed());
        assert_eq!(w.len(), 3);
        assert_eq!(w[1].phase, Phase::Injection);
        assert!((w[1].start - 30.0).abs() < 1e-9 && (w[1].end - 60.0).abs() < 1e-9);
        // Aborted during injection: it ends at the abort.
        let w = windows(&fixtures::aborted());
        assert_eq!(w.len(), 2);
        assert!((w[1].end - 41.5).abs() < 1e-9, "{w:?}");
        // No phase events: the plan, cut at the end of the run.
        let mut r = fixtures::aborted();
        r.timeline.clear();
        let w = windows(&r);
        assert_eq!(w.len(), 2);
        assert!((w[1].end - r.duration_seconds).abs() < 1e-9);
    }

    #[test]
    fn recovery_sentences() {
        assert_eq!(recovery(&fixtures::passed()), "2s (limit 10s)");
        assert_eq!(recovery(&fixtures::aborted()), "not measured");
        let mut r = fixtures::passed();
        r.recovery_seconds = None;
        r.verdict = crate::experiment::result::Verdict::NotRecovered;
        assert_eq!(recovery(&r), "did not recover (limit 10s)");
        r.recovery_seconds = Some(14.0);
        assert_eq!(recovery(&r), "14s (limit 10s), beyond the limit");
    }
}
