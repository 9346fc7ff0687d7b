//! The summary printed on stdout at the end of `shakedown run`.
//!
//! Plain text only: no colours or box-drawing, because it lands in CI logs
//! and gets pasted into tickets. Columns are padded to the widest cell so
//! they line up in any monospace font; control characters in names are
//! replaced so a name cannot break a row.

use std::fmt::Write as _;

use crate::experiment::result::RunResult;

use super::format;
use super::rows::{self, Rows};

/// Renders rows as aligned columns, two spaces apart, with a dashed rule
/// under the header and no trailing spaces.
pub(crate) fn columns(t: &Rows, indent: &str) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(
        t.headers
            .iter()
            .map(|h| h.to_uppercase())
            .collect::<Vec<_>>(),
    )
    .chain(
        t.rows
            .iter()
            .map(|r| r.iter().map(|c| format::one_line(c)).collect()),
    )
    .collect();
    let n = t.headers.len();
    let mut widths = vec![0usize; n];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[String]| -> String {
        let mut s = String::from(indent);
        for (i, c) in row.iter().enumerate() {
            s.push_str(c);
            if i + 1 < row.len() {
                let pad = widths[i] - c.chars().count() + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = String::new();
    let mut rows = cells.iter();
    if let Some(h) = rows.next() {
        out.push_str(&line(h));
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&line(&rule));
        out.push('\n');
    }
    for r in rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// The whole summary: header, SLO table, per-source deltas, recovery and
/// faults.
pub(crate) fn summary(r: &RunResult) -> String {
    let one = format::one_line;
    let mut out = String::new();
    // `write!` to a String cannot fail.
    let _ = writeln!(out, "shakedown run: {}", one(&r.experiment));
    let _ = writeln!(
        out,
        "file {}  seed {}  started {}  duration {}",
        one(&r.file),
        r.seed,
        one(&r.started_at),
        format::secs(r.duration_seconds)
    );
    let _ = writeln!(out, "{}", format::verdict_line(r));
    let _ = writeln!(out, "reason: {}", one(&r.reason));
    out.push('\n');

    if r.slos.is_empty() {
        out.push_str("no SLO was checked\n");
    } else {
        out.push_str(&columns(&rows::slos(r), ""));
    }

    let deltas = rows::deltas(r);
    if !deltas.is_empty() {
        out.push_str("\nsources (baseline -> injection -> recovery):\n");
        for d in deltas {
            let parts: Vec<String> = d
                .measures
                .iter()
                .map(|(m, v)| format!("{m} {}", v.join(" -> ")))
                .collect();
            let _ = writeln!(
                out,
                "  {} ({}): {}",
                one(&d.source),
                one(&d.kind),
                parts.join("; ")
            );
        }
    }

    let errors = rows::errors(r);
    if !errors.rows.is_empty() {
        out.push_str("\nerrors (source, phase: class count):\n");
        for row in &errors.rows {
            let _ = writeln!(
                out,
                "  {} {}: {} {}",
                one(&row[0]),
                row[1],
                one(&row[2]),
                row[3]
            );
        }
    }

    let _ = writeln!(out, "\nrecovery: {}", format::recovery(r));

    if r.faults.is_empty() {
        out.push_str("faults: none planned\n");
    } else {
        out.push_str("faults:\n");
        for f in &r.faults {
            let state = if f.applied {
                format!("applied, {} activations", f.activations)
            } else {
                "not applied".to_string()
            };
            let _ = writeln!(
                out,
                "  {} ({}) on {}: {state}",
                one(&f.name),
                one(&f.kind),
                one(&f.target)
            );
        }
    }
    // A name ending in a replaced control character leaves a trailing
    // space; CI logs and diffs are cleaner without.
    out.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn passed_run_summary() {
        let s = summary(&fixtures::passed());
        assert!(
            s.contains("shakedown run: checkout survives a slow primary\n"),
            "{s}"
        );
        assert!(s.contains("seed 42"));
        assert!(s.contains("duration 90.4s"));
        assert!(s.contains("VERDICT: PASSED (exit 0)\n"));
        assert!(s.contains("reason: the steady state held"));
        assert!(s.contains("<= 2.0x baseline (= 24.0ms)"));
        assert!(s.contains("orders (load): p95 12.0ms -> 20.0ms -> 13.0ms; error rate 0.00% -> 0.40% -> 0.00%; throughput 50.0/s -> 49.7/s -> 50.0/s"), "{s}");
        assert!(s.contains("recovery: 2s (limit 10s)\n"));
        assert!(s.contains("slow-primary (latency) on pg: applied, 812 activations"));
        assert!(!s.contains('\u{1b}'), "no colours");
        assert!(s.lines().all(|l| l == l.trim_end()), "no trailing spaces");
    }

    #[test]
    fn columns_line_up() {
        let s = summary(&fixtures::special());
        let table: Vec<&str> = s
            .lines()
            .skip_while(|l| !l.starts_with("SLO"))
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(table.len(), 2 + 6, "{s}");
        // Every column starts at the same character offset on every line.
        let header = table[0];
        for col in ["SOURCE", "METRIC", "PHASE", "VALUE", "BOUND", "RESULT"] {
            let at = header.find(col).expect("column");
            let at = header[..at].chars().count();
            for l in &table[2..] {
                let before: String = l.chars().take(at).collect();
                assert!(before.ends_with("  "), "column {col} misaligned in {l:?}");
                assert_ne!(l.chars().nth(at), Some(' '), "column {col} in {l:?}");
            }
        }
        assert!(table[3].contains("FAIL"));
        assert!(!s.contains('\u{1}'), "control characters are replaced");
        assert!(s.lines().all(|l| l == l.trim_end()), "no trailing spaces");
    }

    #[test]
    fn aborted_and_violated_runs() {
        let s = summary(&fixtures::aborted());
        assert!(s.contains("VERDICT: ABORTED (exit 4)"));
        assert!(s.contains("reason: guardrail fired"));
        assert!(s.contains("recovery: not measured"));
        assert!(s.contains("reset (reset_peer) on pg: not applied"));
        assert!(s.contains("-> -;"), "recovery did not run: {s}");
        let s = summary(&fixtures::violated());
        assert!(s.contains("VERDICT: VIOLATED (exit 1)"));
        let s = summary(&fixtures::no_data());
        assert!(s.contains("no data"));
        assert!(s.contains("NO DATA"));
        assert!(s.contains("VERDICT: INCONCLUSIVE (exit 5)"));
    }
}
