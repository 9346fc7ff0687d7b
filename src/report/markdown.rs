//! `report.md`: the recovery validation report a QA engineer pastes into
//! a postmortem.
//!
//! It reads top to bottom as the story of the run: what was tested, the
//! hypothesis against the results, what was observed, when things
//! happened, how fast it recovered, whether the faults fired, and how to
//! run it again. Every name is escaped (`escape.rs`) so a `|` or `<` in
//! an experiment file cannot break a table or inject HTML.

use std::fmt::Write as _;

use crate::experiment::result::RunResult;

use super::escape::{md, md_code};
use super::format;
use super::rows::{self, Rows};

/// A GFM table; cells escaped.
fn table(t: &Rows) -> String {
    table_with(t, &[])
}

/// A GFM table whose columns in `code` are written as inline code.
fn table_with(t: &Rows, code: &[usize]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", t.headers.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        t.headers.iter().map(|_| " --- |").collect::<String>()
    );
    for r in &t.rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| if code.contains(&i) { md_code(c) } else { md(c) })
            .collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// The Markdown report.
pub fn text(r: &RunResult) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {}\n", md(&r.experiment));
    let _ = writeln!(o, "**{}**: {}\n", format::verdict_line(r), md(&r.reason));

    o.push_str("## What was tested\n\n");
    if let Some(d) = &r.description {
        let _ = writeln!(o, "{}\n", md(d));
    }
    o.push_str(&table(&rows::phases(r)));
    o.push('\n');
    if r.plan.faults.is_empty() {
        o.push_str("No fault was planned.\n\n");
    } else {
        o.push_str("Faults (times from the start of the run):\n\n");
        o.push_str(&table_with(&rows::planned_faults(r), &[5]));
        o.push('\n');
    }

    o.push_str("## Hypothesis and results\n\n");
    if r.slos.is_empty() {
        o.push_str("No SLO was checked.\n\n");
    } else {
        o.push_str(&table(&rows::slos(r)));
        o.push('\n');
    }

    o.push_str("## Observed\n\n");
    if r.sources.is_empty() {
        o.push_str("No source was measured.\n\n");
    } else {
        o.push_str(&table(&rows::observed(r)));
        o.push_str("\nFrom baseline to injection to recovery:\n\n");
        o.push_str(&table(&rows::deltas_table(r)));
        o.push('\n');
        let errors = rows::errors(r);
        if !errors.rows.is_empty() {
            o.push_str("Errors by class:\n\n");
            o.push_str(&table(&errors));
            o.push('\n');
        }
    }

    o.push_str("## Timeline\n\n");
    o.push_str(&table(&rows::timeline(r)));
    o.push('\n');

    o.push_str("## Recovery\n\n");
    let _ = writeln!(o, "Recovery time: {}.\n", md(&format::recovery(r)));

    o.push_str("## Faults fired\n\n");
    if r.faults.is_empty() {
        o.push_str("No fault was planned.\n\n");
    } else {
        o.push_str(&table(&rows::fired(r)));
        o.push('\n');
    }

    o.push_str("---\n\n");
    let _ = writeln!(
        o,
        "Seed {} · started {} · duration {} · file {}\n",
        r.seed,
        md(&r.started_at),
        format::secs(r.duration_seconds),
        md_code(&r.file)
    );
    let _ = writeln!(o, "Reproduce: {}", md_code(&format::reproduce(r)));
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    /// Every table row has as many unescaped `|` as its header.
    fn tables_are_rectangular(s: &str) {
        let pipes = |l: &str| {
            let mut n = 0;
            let mut prev = ' ';
            for c in l.chars() {
                if c == '|' && prev != '\\' {
                    n += 1;
                }
                prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            }
            n
        };
        let mut width = None;
        for l in s.lines() {
            if l.starts_with('|') {
                let n = pipes(l);
                let w = *width.get_or_insert(n);
                assert_eq!(n, w, "ragged table row {l:?}");
            } else {
                width = None;
            }
        }
    }

    #[test]
    fn passed_report_tells_the_story() {
        let s = text(&fixtures::passed());
        tables_are_rectangular(&s);
        assert!(s.starts_with("# checkout survives a slow primary\n\n**VERDICT: PASSED (exit 0)**: the steady state held"));
        for h in [
            "## What was tested",
            "## Hypothesis and results",
            "## Observed",
            "## Timeline",
            "## Recovery",
            "## Faults fired",
        ] {
            assert!(s.contains(h), "{h}");
        }
        assert!(s.contains("The primary answers 300 ms late"));
        assert!(s.contains("| injection | 30s | +30.0s to +60.0s |"));
        assert!(s.contains(
            "| slow-primary | pg | latency | downstream | 1 | `{\"latency\":300,\"jitter\":50}` | +30.0s | +60.0s |"
        ), "{s}");
        assert!(s.contains("| checkout p95 | orders | latency\\_p95 | injection | 20.0ms | \\<= 750ms, \\<= 2.0x baseline (= 24.0ms) | PASS |"), "{s}");
        assert!(s.contains("| orders | load | injection | 1490 | 6 | 0.40% | 49.7/s | 10.0ms | 20.0ms | 30.0ms | 60.0ms |"), "{s}");
        assert!(s.contains("| +30.0s | fault\\_applied |"));
        assert!(s.contains("Recovery time: 2s (limit 10s)."));
        assert!(s.contains("| slow-primary | pg | latency | yes | 812 |"));
        assert!(s.contains("Reproduce: `shakedown run experiments/slow-primary.toml --seed 42`"));
    }

    #[test]
    fn aborted_and_no_data_reports() {
        let s = text(&fixtures::aborted());
        tables_are_rectangular(&s);
        assert!(s.contains("**VERDICT: ABORTED (exit 4)**: guardrail fired"));
        assert!(s.contains("| recovery | 30s | not reached |"));
        assert!(s.contains("Recovery time: not measured."));
        assert!(s.contains("| reset | pg | reset\\_peer | no | 0 |"));
        let s = text(&fixtures::no_data());
        tables_are_rectangular(&s);
        assert!(
            s.contains("| replication lag | lag | value | recovery | no data | \\<= 5 | NO DATA |")
        );
        assert!(s.contains("| Value |"), "the probe value column");
    }

    #[test]
    fn special_characters_cannot_break_tables() {
        let s = text(&fixtures::special());
        tables_are_rectangular(&s);
        assert!(s.starts_with("# a \\<b\\> \\& \"c\" 'd' \\| e \n"));
        assert!(!s.contains("<script>"));
        assert!(s.contains("line one \\| two \\<script\\>"));
        assert!(s.contains("`{\"note\":\"a\\|b <c> & \\\"d\\\"\"}`"), "{s}");
        assert!(s.contains("Reproduce: `shakedown run 'exp & <x>.toml' --seed 42`"));
        assert!(!s.contains('\u{1}') && !s.contains('\u{7}'));
    }
}
