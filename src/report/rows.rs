//! The tables every human-readable report shows, as plain cells.
//!
//! The terminal table, the Markdown and the HTML render the same rows, so
//! a figure reads the same wherever a reader meets it. Cells are raw text
//! (already in display units, see [`super::format`]); each renderer
//! escapes them for its own format.

use crate::experiment::result::{RunResult, SourceSummary};
use crate::experiment::spec::Phase;

use super::format::{self, Unit};

/// A table: a header and rows of the same width.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Rows {
    /// Column titles.
    pub headers: Vec<&'static str>,
    /// The cells, row by row.
    pub rows: Vec<Vec<String>>,
}

/// One row per SLO and phase: the hypothesis and its result.
pub(crate) fn slos(r: &RunResult) -> Rows {
    Rows {
        headers: vec![
            "SLO", "Source", "Metric", "Phase", "Value", "Bound", "Result",
        ],
        rows: r
            .slos
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.source.clone(),
                    s.metric.clone(),
                    s.phase.as_str().to_string(),
                    format::opt(format::unit(&s.metric), s.value, "no data"),
                    format::bounds(&s.metric, &s.checks),
                    format::outcome(s.passed).to_string(),
                ]
            })
            .collect(),
    }
}

/// Failed operations / operations, when there were any.
fn error_rate(s: &SourceSummary) -> Option<f64> {
    (s.ops > 0).then(|| s.errors as f64 / s.ops as f64)
}

/// One row per source and phase: what was measured.
/// One row per source, phase and class of error: why operations failed.
pub(crate) fn errors(r: &RunResult) -> Rows {
    Rows {
        headers: vec!["Source", "Phase", "Error", "Count"],
        rows: r
            .sources
            .iter()
            .flat_map(|s| {
                s.errors_by_class.iter().map(|e| {
                    vec![
                        s.source.clone(),
                        s.phase.as_str().to_string(),
                        e.class.clone(),
                        e.count.to_string(),
                    ]
                })
            })
            .collect(),
    }
}

pub(crate) fn observed(r: &RunResult) -> Rows {
    let with_value = r.sources.iter().any(|s| s.value.is_some());
    let mut headers = vec![
        "Source",
        "Kind",
        "Phase",
        "Ops",
        "Errors",
        "Error rate",
        "Throughput",
        "p50",
        "p95",
        "p99",
        "Max",
    ];
    if with_value {
        headers.push("Value");
    }
    let rows = r
        .sources
        .iter()
        .map(|s| {
            let lat = |v| format::opt(Unit::Latency, v, "-");
            let mut row = vec![
                s.source.clone(),
                s.kind.clone(),
                s.phase.as_str().to_string(),
                s.ops.to_string(),
                s.errors.to_string(),
                format::opt(Unit::Rate, error_rate(s), "-"),
                format::per_second(s.throughput),
                lat(s.p50),
                lat(s.p95),
                lat(s.p99),
                lat(s.max),
            ];
            if with_value {
                row.push(format::opt(Unit::Plain, s.value, "-"));
            }
            row
        })
        .collect();
    Rows { headers, rows }
}

/// One source's headline figures across the three phases (`-` where a
/// phase did not run or had no data).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Delta {
    /// Source name.
    pub source: String,
    /// `load`, `probe`, `target`.
    pub kind: String,
    /// (measure, [baseline, injection, recovery]).
    pub measures: Vec<(&'static str, [String; 3])>,
}

/// Per source: p95, error rate and throughput (and the probe value when
/// there is one) from baseline to injection to recovery.
pub(crate) fn deltas(r: &RunResult) -> Vec<Delta> {
    let mut names: Vec<(&str, &str)> = Vec::new();
    for s in &r.sources {
        if !names.iter().any(|(n, _)| *n == s.source) {
            names.push((&s.source, &s.kind));
        }
    }
    names
        .into_iter()
        .map(|(name, kind)| {
            let per_phase = |f: &dyn Fn(&SourceSummary) -> Option<String>| -> [String; 3] {
                Phase::ALL.map(|p| {
                    r.sources
                        .iter()
                        .find(|s| s.source == name && s.phase == p)
                        .and_then(f)
                        .unwrap_or_else(|| "-".into())
                })
            };
            let mut measures = vec![
                ("p95", per_phase(&|s| s.p95.map(format::ms))),
                ("error rate", per_phase(&|s| error_rate(s).map(format::pct))),
                (
                    "throughput",
                    per_phase(&|s| Some(format::per_second(s.throughput))),
                ),
            ];
            let has_value = r
                .sources
                .iter()
                .any(|s| s.source == name && s.value.is_some());
            if has_value {
                measures.push(("value", per_phase(&|s| s.value.map(format::num))));
            }
            Delta {
                source: name.to_string(),
                kind: kind.to_string(),
                measures,
            }
        })
        .collect()
}

/// The deltas as a table: source, measure, one column per phase.
pub(crate) fn deltas_table(r: &RunResult) -> Rows {
    let mut rows = Vec::new();
    for d in deltas(r) {
        for (m, [b, i, rec]) in &d.measures {
            rows.push(vec![
                d.source.clone(),
                m.to_string(),
                b.clone(),
                i.clone(),
                rec.clone(),
            ]);
        }
    }
    Rows {
        headers: vec!["Source", "Measure", "Baseline", "Injection", "Recovery"],
        rows,
    }
}

/// The phases: planned length and when each actually ran.
pub(crate) fn phases(r: &RunResult) -> Rows {
    let windows = format::windows(r);
    let rows = Phase::ALL
        .iter()
        .map(|&p| {
            let planned = match p {
                Phase::Baseline => r.plan.baseline_seconds,
                Phase::Injection => r.plan.injection_seconds,
                Phase::Recovery => r.plan.recovery_seconds,
            };
            let ran = windows.iter().find(|w| w.phase == p).map_or_else(
                || "not reached".to_string(),
                |w| format!("{} to {}", format::at(w.start), format::at(w.end)),
            );
            vec![p.as_str().to_string(), format::secs(planned), ran]
        })
        .collect();
    Rows {
        headers: vec!["Phase", "Planned", "Ran"],
        rows,
    }
}

/// The planned faults, in file order.
pub(crate) fn planned_faults(r: &RunResult) -> Rows {
    Rows {
        headers: vec![
            "Fault",
            "Target",
            "Kind",
            "Direction",
            "Toxicity",
            "Attributes",
            "Apply",
            "Remove",
        ],
        rows: r
            .plan
            .faults
            .iter()
            .map(|f| {
                vec![
                    f.name.clone(),
                    f.target.clone(),
                    f.kind.clone(),
                    f.direction.clone(),
                    format::num(f.toxicity),
                    f.attributes.to_string(),
                    format::at(f.apply_at_seconds),
                    format::at(f.remove_at_seconds),
                ]
            })
            .collect(),
    }
}

/// Whether and how often each planned fault acted.
pub(crate) fn fired(r: &RunResult) -> Rows {
    Rows {
        headers: vec!["Fault", "Target", "Kind", "Applied", "Activations"],
        rows: r
            .faults
            .iter()
            .map(|f| {
                vec![
                    f.name.clone(),
                    f.target.clone(),
                    f.kind.clone(),
                    if f.applied { "yes" } else { "no" }.to_string(),
                    f.activations.to_string(),
                ]
            })
            .collect(),
    }
}

/// The events, in order.
pub(crate) fn timeline(r: &RunResult) -> Rows {
    Rows {
        headers: vec!["Time", "Event", "Detail"],
        rows: r
            .timeline
            .iter()
            .map(|e| vec![format::at(e.at_seconds), e.kind.clone(), e.detail.clone()])
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn slo_rows_carry_units_and_results() {
        let t = slos(&fixtures::violated());
        assert_eq!(t.rows.len(), 6);
        assert!(t.rows.iter().all(|r| r.len() == t.headers.len()));
        assert_eq!(
            t.rows[1],
            [
                "checkout p95",
                "orders",
                "latency_p95",
                "injection",
                "340ms",
                "<= 750ms, <= 2.0x baseline (= 24.0ms)",
                "FAIL"
            ]
        );
        assert_eq!(t.rows[4][4], "0.40%");
        let t = slos(&fixtures::no_data());
        assert_eq!(t.rows[6][4], "no data");
        assert_eq!(t.rows[6][6], "NO DATA");
    }

    #[test]
    fn deltas_span_the_phases_that_ran() {
        let d = deltas(&fixtures::aborted());
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0].measures[0],
            ("p95", ["12.0ms".into(), "20.0ms".into(), "-".into()])
        );
        assert_eq!(d[0].measures[1].1[1], "0.40%");
        let d = deltas(&fixtures::no_data());
        let lag = d.iter().find(|d| d.source == "lag").expect("lag source");
        assert_eq!(lag.measures[0].1, ["-", "-", "-"]);
        assert_eq!(lag.measures[1].1, ["100.00%", "100.00%", "100.00%"]);
    }

    #[test]
    fn phases_not_reached_say_so() {
        let t = phases(&fixtures::aborted());
        assert_eq!(t.rows[1][2], "+30.0s to +41.5s");
        assert_eq!(t.rows[2][2], "not reached");
    }
}
