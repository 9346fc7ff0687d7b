//! `junit.xml`: the run as test results, for CI (Jenkins, GitLab, GitHub
//! test reporters all read this common JUnit shape).
//!
//! One `<testsuite>` per run; its test cases are:
//!
//! - one per SLO and phase, named `<slo> [<phase>]`. A broken SLO fails
//!   with type `slo_violation` and a message carrying the value, the bound,
//!   its limit and the phase. **An SLO without data fails too** (type
//!   `no_data`), on purpose: a `<skipped>` case lets a CI stage pass while
//!   the thing it was meant to watch was never measured.
//! - `verdict`, failing (type = the verdict's name, message = its reason)
//!   unless the run passed, so the JUnit outcome matches the exit code even
//!   when nothing but the run itself failed (aborted, a fault that never
//!   fired, a slow recovery).
//! - one per planned fault, `fault <name> on <target> fired`, failing when
//!   it was never applied. An applied fault with 0 activations passes with
//!   `activations=0` in `<system-out>`: remote targets cannot count, and
//!   when a local one really stayed silent the verdict case already fails.
//!
//! Written by hand (no XML crate): every text and attribute goes through
//! the escaping of `escape.rs` (entities, characters XML 1.0 forbids
//! dropped).

use std::fmt::Write as _;

use crate::experiment::result::{RunResult, SloResult, Verdict};

use super::escape::{xml_attr, xml_text};
use super::format;

/// One `<testcase>`.
struct Case {
    name: String,
    time: f64,
    /// (type, message, details).
    failure: Option<(String, String, String)>,
    out: Option<String>,
}

/// Seconds as JUnit writes them.
fn time(t: f64) -> String {
    format!("{:.3}", if t.is_finite() { t.max(0.0) } else { 0.0 })
}

/// The failure of an SLO result, if it did not pass.
fn slo_failure(s: &SloResult) -> Option<(String, String, String)> {
    let shown = |v: f64| format::value(&s.metric, v);
    let what = format!("{} of {} in {}", s.metric, s.source, s.phase.as_str());
    let mut details = String::new();
    let _ = writeln!(
        details,
        "value: {}",
        s.value
            .map_or("no data".to_string(), |v| format!("{} ({v} raw)", shown(v)))
    );
    for c in &s.checks {
        let _ = writeln!(
            details,
            "bound {}: limit {}, {}",
            format::bound(&s.metric, c),
            c.limit
                .map_or("none".to_string(), |l| format!("{} ({l} raw)", shown(l))),
            match c.ok {
                Some(true) => "held",
                Some(false) => "broken",
                None => "not checked",
            }
        );
    }
    match (s.passed, s.value) {
        (Some(true), _) => None,
        (Some(false), value) => {
            let broken: Vec<String> = s
                .checks
                .iter()
                .filter(|c| c.ok == Some(false))
                // A ratio bound shows its limit (`= 24.0ms`); an
                // absolute bound is its own limit.
                .map(|c| format::bound(&s.metric, c))
                .collect();
            let value = value.map_or("no data".to_string(), shown);
            let msg = format!("{what} was {value}; broke {}", broken.join(", "));
            Some(("slo_violation".into(), msg, details))
        }
        (None, None) => {
            let msg = format!("no data: {what} had no measurements");
            Some(("no_data".into(), msg, details))
        }
        (None, Some(v)) => {
            let msg = format!(
                "no data: {what} was {} but a bound could not be checked (no baseline data)",
                shown(v)
            );
            Some(("no_data".into(), msg, details))
        }
    }
}

fn cases(r: &RunResult) -> Vec<Case> {
    let mut out: Vec<Case> = r
        .slos
        .iter()
        .map(|s| Case {
            name: format!("{} [{}]", s.name, s.phase.as_str()),
            time: format::window(r, s.phase).map_or(0.0, |w| w.len()),
            failure: slo_failure(s),
            out: None,
        })
        .collect();
    out.push(Case {
        name: "verdict".into(),
        time: r.duration_seconds,
        failure: (r.verdict != Verdict::Passed).then(|| {
            (
                r.verdict.as_str().to_string(),
                r.reason.clone(),
                format!("exit code {}", r.verdict.exit_code()),
            )
        }),
        out: Some(format!("{}: {}", r.verdict.as_str(), r.reason)),
    });
    for f in &r.faults {
        let planned = r
            .plan
            .faults
            .iter()
            .find(|p| p.name == f.name && p.target == f.target);
        let failure = (!f.applied).then(|| {
            (
                "fault_not_applied".to_string(),
                format!(
                    "{} `{}` on `{}` was never applied",
                    f.kind, f.name, f.target
                ),
                planned.map_or(String::new(), |p| {
                    format!("planned from {}", format::at(p.apply_at_seconds))
                }),
            )
        });
        out.push(Case {
            name: format!("fault {} on {} fired", f.name, f.target),
            time: planned.map_or(0.0, |p| p.remove_at_seconds - p.apply_at_seconds),
            failure,
            out: Some(format!(
                "applied={} activations={}",
                f.applied, f.activations
            )),
        });
    }
    out
}

/// The JUnit XML document.
pub fn text(r: &RunResult) -> String {
    let cases = cases(r);
    let tests = cases.len();
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let suite = xml_attr(&r.experiment);
    let classname = xml_attr(&format!("shakedown.{}", format::slug(&r.experiment)));
    let total = time(r.duration_seconds);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"shakedown\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{total}\">"
    );
    let _ = writeln!(
        x,
        "  <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{total}\" timestamp=\"{}\">",
        xml_attr(&r.started_at)
    );
    x.push_str("    <properties>\n");
    let recovery = r
        .recovery_seconds
        .map_or("none".to_string(), |s| s.to_string());
    let within = r
        .recovery_within_seconds
        .map_or("none".to_string(), |s| s.to_string());
    for (name, value) in [
        ("seed", r.seed.to_string()),
        ("verdict", r.verdict.as_str().to_string()),
        ("exit_code", r.verdict.exit_code().to_string()),
        ("reason", r.reason.clone()),
        ("file", r.file.clone()),
        ("started_at", r.started_at.clone()),
        ("recovery_seconds", recovery),
        ("recovery_within_seconds", within),
    ] {
        let _ = writeln!(
            x,
            "      <property name=\"{name}\" value=\"{}\"/>",
            xml_attr(&value)
        );
    }
    x.push_str("    </properties>\n");
    for c in &cases {
        let _ = write!(
            x,
            "    <testcase classname=\"{classname}\" name=\"{}\" time=\"{}\"",
            xml_attr(&c.name),
            time(c.time)
        );
        if c.failure.is_none() && c.out.is_none() {
            x.push_str("/>\n");
            continue;
        }
        x.push_str(">\n");
        if let Some((kind, message, details)) = &c.failure {
            let _ = writeln!(
                x,
                "      <failure message=\"{}\" type=\"{}\">{}</failure>",
                xml_attr(message),
                xml_attr(kind),
                xml_text(details.trim_end())
            );
        }
        if let Some(out) = &c.out {
            let _ = writeln!(x, "      <system-out>{}</system-out>", xml_text(out));
        }
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    /// A small well-formedness check, so the test holds on a machine
    /// without python3: tags balance, attribute values are quoted and
    /// hold no raw `<`, every `&` starts a reference. Returns the number of
    /// elements per name.
    fn well_formed(x: &str) -> std::collections::HashMap<String, usize> {
        let mut counts = std::collections::HashMap::new();
        let mut stack: Vec<String> = Vec::new();
        let body = x
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .expect("declaration");
        let mut rest = body;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let tail = &rest[open + 1..];
            // Find the tag's end outside quotes.
            let mut in_quote = false;
            let mut end = None;
            for (i, c) in tail.char_indices() {
                match c {
                    '"' => in_quote = !in_quote,
                    '<' => panic!("raw < in a tag: {tail:.60}"),
                    '>' if !in_quote => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.expect("unterminated tag");
            let tag = &tail[..end];
            rest = &tail[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "unbalanced </{name}>");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().expect("tag name").to_string();
            let mut attrs = tag[name.len()..].trim();
            while !attrs.is_empty() {
                let (key, after) = attrs.split_once("=\"").expect("attribute quoted");
                assert!(!key.trim().is_empty() && !key.contains(' '), "attr {key:?}");
                let (value, after) = after.split_once('"').expect("closing quote");
                check_text(value);
                attrs = after.trim_start();
            }
            *counts.entry(name.clone()).or_insert(0) += 1;
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed {stack:?}");
        counts
    }

    fn check_text(t: &str) {
        assert!(!t.contains('>') && !t.contains('\''), "raw > or ' in {t:?}");
        let mut parts = t.split('&');
        parts.next();
        for p in parts {
            let ok = [
                "amp;", "lt;", "gt;", "quot;", "apos;", "#9;", "#10;", "#13;",
            ]
            .iter()
            .any(|e| p.starts_with(e));
            assert!(ok, "bare & in {t:?}");
        }
        assert!(
            t.chars()
                .all(|c| c >= ' ' || matches!(c, '\n' | '\t' | '\r')),
            "control character in {t:?}"
        );
    }

    /// Parses with python3's xml.etree when python3 is installed; returns
    /// (testcases, failures, suite name, first testcase name).
    fn python_parse(x: &str, tag: &str) -> Option<String> {
        let dir =
            std::env::temp_dir().join(format!("shakedown-junit-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let file = dir.join("junit.xml");
        std::fs::write(&file, x).expect("write junit");
        let script = "import sys,xml.etree.ElementTree as E\n\
            r=E.parse(sys.argv[1]).getroot()\n\
            s=r.find('testsuite')\n\
            print(len(r.findall('.//testcase')), len(r.findall('.//failure')), \
            r.get('tests'), r.get('failures'))\n\
            print(s.get('name'))\n\
            print(s.find('testcase').get('name'))";
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&file)
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        match out {
            Err(e) => {
                eprintln!("python3 not run ({e}); the Rust check alone applies");
                None
            }
            Ok(o) => {
                assert!(
                    o.status.success(),
                    "python3 rejects the XML: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                Some(String::from_utf8_lossy(&o.stdout).into_owned())
            }
        }
    }

    #[test]
    fn passed_run_has_no_failures() {
        let x = text(&fixtures::passed());
        let n = well_formed(&x);
        assert_eq!(n["testcase"], 6 + 1 + 1);
        assert_eq!(n.get("failure"), None);
        assert!(x.contains("<testsuite name=\"checkout survives a slow primary\" tests=\"8\" failures=\"0\" errors=\"0\" skipped=\"0\" time=\"90.400\" timestamp=\"2025-03-01T10:00:00Z\">"));
        assert!(x.contains(
            "classname=\"shakedown.checkout_survives_a_slow_primary\" name=\"checkout p95 [injection]\" time=\"30.000\""
        ));
        assert!(x.contains("<property name=\"seed\" value=\"42\"/>"));
        assert!(x.contains("<property name=\"recovery_seconds\" value=\"2\"/>"));
        assert!(x.contains("<system-out>applied=true activations=812</system-out>"));
        if let Some(out) = python_parse(&x, "passed") {
            assert!(out.starts_with("8 0 8 0\n"), "{out}");
        }
    }

    #[test]
    fn violation_fails_the_slo_and_the_verdict() {
        let x = text(&fixtures::violated());
        let n = well_formed(&x);
        assert_eq!(n["failure"], 2);
        assert!(x.contains("tests=\"8\" failures=\"2\""));
        assert!(x.contains(
            "<failure message=\"latency_p95 of orders in injection was 340ms; broke &lt;= 2.0x baseline (= 24.0ms)\" type=\"slo_violation\">"
        ), "{x}");
        assert!(x.contains("type=\"violated\""));
        assert!(x.contains("value: 340ms (0.34 raw)"));
        let mut r = fixtures::violated();
        r.slos[1].checks[0].ok = Some(false);
        assert!(text(&r).contains(
            "message=\"latency_p95 of orders in injection was 340ms; broke &lt;= 750ms, &lt;= 2.0x baseline (= 24.0ms)\""
        ));
        if let Some(out) = python_parse(&x, "violated") {
            assert!(out.starts_with("8 2 8 2\n"), "{out}");
        }
    }

    #[test]
    fn aborted_run_fails_verdict_and_the_fault_not_applied() {
        let x = text(&fixtures::aborted());
        let n = well_formed(&x);
        // 4 SLO results (no recovery), the verdict, two faults.
        assert_eq!(n["testcase"], 7);
        assert_eq!(n["failure"], 2);
        assert!(x.contains("type=\"aborted\""));
        assert!(x.contains("message=\"guardrail fired: error_rate of `orders` was 0.4000;"));
        assert!(x.contains("name=\"fault reset on pg fired\""));
        assert!(x.contains("type=\"fault_not_applied\""));
        assert!(x.contains("<property name=\"recovery_seconds\" value=\"none\"/>"));
        // The injection case lasted until the abort.
        assert!(x.contains("name=\"errors [injection]\" time=\"11.500\""));
        if let Some(out) = python_parse(&x, "aborted") {
            assert!(out.starts_with("7 2 7 2\n"), "{out}");
        }
    }

    #[test]
    fn no_data_is_a_failure_not_a_skip() {
        let x = text(&fixtures::no_data());
        let n = well_formed(&x);
        assert_eq!(n["failure"], 4, "three no-data SLOs and the verdict");
        assert_eq!(x.matches("type=\"no_data\"").count(), 3);
        assert!(!x.contains("<skipped"));
        assert!(x.contains("message=\"no data: value of lag in recovery had no measurements\""));
        assert!(x.contains("type=\"inconclusive\""));
    }

    #[test]
    fn applied_fault_without_activations_passes_with_a_note() {
        let mut r = fixtures::passed();
        r.faults[0].activations = 0;
        let x = text(&r);
        assert_eq!(well_formed(&x).get("failure"), None);
        assert!(x.contains("<system-out>applied=true activations=0</system-out>"));
    }

    #[test]
    fn special_characters_are_escaped_and_survive_a_parser() {
        let r = fixtures::special();
        let x = text(&r);
        well_formed(&x);
        assert!(x.contains("name=\"a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos; | e\""));
        assert!(!x.contains('\u{0}') && !x.contains('\u{1}') && !x.contains('\u{7}'));
        if let Some(out) = python_parse(&x, "special") {
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines[1], "a <b> & \"c\" 'd' | e");
            assert_eq!(lines[2], "checkout p95 <&> | \"q\" [baseline]");
        }
    }
}
