//! `report.html`: the Markdown report as one self-contained page, with a
//! timeline chart.
//!
//! Self-contained on purpose: it is attached to tickets and CI artefacts
//! and opened offline, so there are no external resources and no script —
//! inline CSS and an inline SVG (`chart.rs`). Every text from the run
//! is escaped (`escape.rs`).

use std::fmt::Write as _;

use crate::experiment::result::{RunResult, Verdict};

use super::chart;
use super::escape::html;
use super::format;
use super::rows::{self, Rows};

/// Inline style: readable tables, the verdict as a coloured banner.
const CSS: &str = "\
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;padding:0 1rem;color:#222;line-height:1.4}\
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}\
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}\
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}\
.verdict{padding:.6rem 1rem;border-radius:4px;font-weight:600;color:#fff}\
.passed{background:#2e7d32}.failed{background:#c62828}.inconclusive{background:#ef6c00}\
td.PASS{color:#2e7d32;font-weight:600}td.FAIL{color:#c62828;font-weight:600}td.nodata{color:#ef6c00;font-weight:600}\
.meta,footer{color:#555;font-size:.9rem}code{background:#f3f3f3;padding:0 .2rem}\
svg{border:1px solid #eee;margin:.5rem 0}";

/// Whether a cell reads as a number (right-aligned).
fn numeric(c: &str) -> bool {
    let mut chars = c.chars();
    match chars.next() {
        Some(d) if d.is_ascii_digit() => true,
        Some('+') => chars.next().is_some_and(|d| d.is_ascii_digit()),
        _ => false,
    }
}

/// An HTML table; cells escaped, results classed for colour.
fn table(t: &Rows, code: &[usize]) -> String {
    let mut o = String::from("<table>\n<tr>");
    for h in &t.headers {
        let _ = write!(o, "<th>{}</th>", html(h));
    }
    o.push_str("</tr>\n");
    for r in &t.rows {
        o.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let class = match c.as_str() {
                "PASS" | "FAIL" => format!(" class=\"{c}\""),
                "NO DATA" => " class=\"nodata\"".to_string(),
                _ if numeric(c) => " class=\"num\"".to_string(),
                _ => String::new(),
            };
            if code.contains(&i) {
                let _ = write!(o, "<td{class}><code>{}</code></td>", html(c));
            } else {
                let _ = write!(o, "<td{class}>{}</td>", html(c));
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</table>\n");
    o
}

/// The HTML page.
pub fn text(r: &RunResult) -> String {
    let name = html(&r.experiment);
    let banner = match r.verdict {
        Verdict::Passed => "passed",
        Verdict::Inconclusive => "inconclusive",
        _ => "failed",
    };
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>shakedown: {name}</title>\n<style>{CSS}</style>\n</head>\n<body>\n\
         <h1>{name}</h1>\n"
    );
    let _ = writeln!(
        o,
        "<p class=\"verdict {banner}\">{} — {}</p>",
        html(&format::verdict_line(r)),
        html(&r.reason)
    );
    let _ = writeln!(
        o,
        "<p class=\"meta\">seed {} · started {} · duration {} · file <code>{}</code></p>",
        r.seed,
        html(&r.started_at),
        format::secs(r.duration_seconds),
        html(&r.file)
    );

    o.push_str("<h2>Timeline</h2>\n");
    o.push_str(&chart::svg(r));

    o.push_str("<h2>What was tested</h2>\n");
    if let Some(d) = &r.description {
        let _ = writeln!(o, "<p>{}</p>", html(d));
    }
    o.push_str(&table(&rows::phases(r), &[]));
    if r.plan.faults.is_empty() {
        o.push_str("<p>No fault was planned.</p>\n");
    } else {
        o.push_str("<p>Faults (times from the start of the run):</p>\n");
        o.push_str(&table(&rows::planned_faults(r), &[5]));
    }

    o.push_str("<h2>Hypothesis and results</h2>\n");
    if r.slos.is_empty() {
        o.push_str("<p>No SLO was checked.</p>\n");
    } else {
        o.push_str(&table(&rows::slos(r), &[]));
    }

    o.push_str("<h2>Observed</h2>\n");
    if r.sources.is_empty() {
        o.push_str("<p>No source was measured.</p>\n");
    } else {
        o.push_str(&table(&rows::observed(r), &[]));
        let errors = rows::errors(r);
        if !errors.rows.is_empty() {
            o.push_str("<h3>Errors by class</h3>\n");
            o.push_str(&table(&errors, &[]));
        }
        o.push_str("<p>From baseline to injection to recovery:</p>\n");
        o.push_str(&table(&rows::deltas_table(r), &[]));
    }

    o.push_str("<h2>Events</h2>\n");
    o.push_str(&table(&rows::timeline(r), &[]));

    o.push_str("<h2>Recovery</h2>\n");
    let _ = writeln!(o, "<p>Recovery time: {}.</p>", html(&format::recovery(r)));

    o.push_str("<h2>Faults fired</h2>\n");
    if r.faults.is_empty() {
        o.push_str("<p>No fault was planned.</p>\n");
    } else {
        o.push_str(&table(&rows::fired(r), &[]));
    }

    let _ = writeln!(
        o,
        "<footer><p>Reproduce: <code>{}</code></p></footer>\n</body>\n</html>",
        html(&format::reproduce(r))
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn page_is_self_contained() {
        let s = text(&fixtures::violated());
        assert!(s.starts_with("<!DOCTYPE html>"));
        assert!(s.trim_end().ends_with("</html>"));
        assert!(!s.contains("<script"), "no script");
        assert!(!s.contains("src="), "no external resources");
        assert!(!s.contains("href="), "no external resources");
        assert!(!s.contains("@import") && !s.contains("url("));
        assert!(s.contains("<svg"));
        assert!(s.contains(
            "<p class=\"verdict failed\">VERDICT: VIOLATED (exit 1) — SLO `checkout p95` broke"
        ));
        assert!(s.contains("<td class=\"FAIL\">FAIL</td>"));
        assert!(s.contains("<td>&lt;= 750ms, &lt;= 2.0x baseline (= 24.0ms)</td>"));
        assert!(s.contains("<code>shakedown run experiments/slow-primary.toml --seed 42</code>"));
        assert_eq!(s.matches("<table>").count(), s.matches("</table>").count());
    }

    #[test]
    fn every_name_is_escaped() {
        let s = text(&fixtures::special());
        assert!(!s.contains("<script>alert"), "description escaped");
        assert!(s.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(s.contains("<h1>a &lt;b&gt; &amp; &quot;c&quot; &#39;d&#39; | e</h1>"));
        assert!(!s.contains("<nope>") && !s.contains("<d>"));
        assert!(!s.contains('\u{0}') && !s.contains('\u{1}'));
    }

    #[test]
    fn no_data_and_aborted_pages() {
        let s = text(&fixtures::no_data());
        assert!(s.contains("verdict inconclusive"));
        assert!(s.contains("<td class=\"nodata\">NO DATA</td>"));
        let s = text(&fixtures::aborted());
        assert!(s.contains("<p>Recovery time: not measured.</p>"));
        assert!(s.contains("VERDICT: ABORTED (exit 4)"));
    }
}
