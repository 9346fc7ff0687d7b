//! The timeline chart of `report.html`: one inline SVG, no script.
//!
//! Phases are coloured bands along a time axis, each planned fault a bar
//! from its application to its removal (grey and dashed when it was never
//! applied), events are markers (hover shows the detail through SVG
//! `<title>`), and each source's p95 per phase is a step line below, so a
//! reader sees at a glance whether latency rose with the fault and fell
//! with the rollback.

use std::fmt::Write as _;

use crate::experiment::result::RunResult;
use crate::experiment::spec::Phase;

use super::escape::html;
use super::format;

/// Overall width in SVG units (the page scales it).
const WIDTH: f64 = 960.0;
/// Room for row labels on the left.
const LEFT: f64 = 180.0;
/// Room on the right so the last tick label fits.
const RIGHT: f64 = 24.0;
/// Height of one row (phases, each fault, events).
const ROW: f64 = 22.0;
/// Height of the p95 panel.
const PANEL: f64 = 140.0;
/// Line colours for sources, in order.
const PALETTE: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
];

/// A band's fill for a phase.
pub(crate) fn phase_colour(p: Phase) -> &'static str {
    match p {
        Phase::Baseline => "#4c78a8",
        Phase::Injection => "#e45756",
        Phase::Recovery => "#54a24b",
    }
}

/// A marker's colour for an event kind.
fn event_colour(kind: &str) -> &'static str {
    match kind {
        "abort" | "error" | "interrupted" | "precheck" => "#c00000",
        "fault_applied" => "#e45756",
        "fault_removed" | "rollback" => "#54a24b",
        "verdict" => "#222222",
        _ => "#777777",
    }
}

/// A tick step that gives at most ten ticks.
fn tick_step(span: f64) -> f64 {
    const STEPS: [f64; 14] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
    ];
    STEPS
        .into_iter()
        .find(|s| span / s <= 10.0)
        .unwrap_or((span / 10.0).ceil())
}

/// Cuts a label to `n` characters.
fn cut(s: &str, n: usize) -> String {
    let s = format::one_line(s);
    if s.chars().count() <= n {
        s
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The chart.
pub(crate) fn svg(r: &RunResult) -> String {
    // The planned length too, so a run cut short shows what it missed.
    let planned = r.plan.baseline_seconds + r.plan.injection_seconds + r.plan.recovery_seconds;
    let span = r
        .timeline
        .iter()
        .map(|e| e.at_seconds)
        .fold(r.duration_seconds.max(planned), f64::max)
        .max(1.0);
    let pw = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + (t.clamp(0.0, span) / span) * pw;
    let windows = format::windows(r);
    let p95_sources: Vec<&str> = {
        let mut v: Vec<&str> = Vec::new();
        for s in r.sources.iter().filter(|s| s.p95.is_some()) {
            if !v.contains(&s.source.as_str()) {
                v.push(&s.source);
            }
        }
        v
    };
    let faults_top = 8.0 + ROW + 6.0;
    let events_top = faults_top + r.plan.faults.len() as f64 * ROW;
    let panel_top = events_top + ROW + 10.0;
    let panel_h = if p95_sources.is_empty() { 0.0 } else { PANEL };
    let axis_y = panel_top + panel_h;
    let legend_y = axis_y + 34.0;
    let height = legend_y + if p95_sources.is_empty() { 0.0 } else { 16.0 };

    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height:.0}\" width=\"100%\" role=\"img\" aria-label=\"run timeline\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    // Phase bands: faint across the whole plot, solid in the top row.
    for w in &windows {
        let (x0, x1) = (x(w.start), x(w.end));
        let c = phase_colour(w.phase);
        let name = w.phase.as_str();
        let _ = writeln!(
            s,
            "<rect x=\"{x0:.1}\" y=\"8\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{c}\" opacity=\"0.08\"/>",
            (x1 - x0).max(0.5),
            axis_y - 8.0
        );
        let _ = writeln!(
            s,
            "<rect x=\"{x0:.1}\" y=\"8\" width=\"{:.1}\" height=\"{ROW}\" fill=\"{c}\"><title>{name}: {} to {}</title></rect>",
            (x1 - x0).max(0.5),
            format::at(w.start),
            format::at(w.end)
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"23\" fill=\"#fff\">{name}</text>",
            x0 + 4.0
        );
    }
    let _ = writeln!(s, "<text x=\"4\" y=\"23\">phases</text>");
    // Fault bars: the planned interval outlined, the time it was active
    // filled (every fault is rolled back when the injection phase ends,
    // early or not).
    let injection_end = windows
        .iter()
        .find(|w| w.phase == Phase::Injection)
        .map(|w| w.end);
    for (i, f) in r.plan.faults.iter().enumerate() {
        let y = faults_top + i as f64 * ROW;
        let applied = r
            .faults
            .iter()
            .any(|d| d.name == f.name && d.target == f.target && d.applied);
        let label = html(&cut(&format!("{} on {}", f.name, f.target), 28));
        let (x0, x1) = (x(f.apply_at_seconds), x(f.remove_at_seconds));
        let _ = writeln!(s, "<text x=\"4\" y=\"{:.1}\">{label}</text>", y + 15.0);
        let _ = writeln!(
            s,
            "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"#bbbbbb\" fill-opacity=\"0.3\" stroke=\"#666\" stroke-dasharray=\"4 2\"/>",
            y + 3.0,
            (x1 - x0).max(1.0),
            ROW - 6.0
        );
        let state = if applied { "applied" } else { "never applied" };
        let active_end = injection_end.map_or(f.remove_at_seconds, |e| e.min(f.remove_at_seconds));
        let x1 = if applied { x(active_end) } else { x0 };
        let _ = writeln!(
            s,
            "<rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"3\" fill=\"#f58518\"{}><title>{} `{}` on `{}`: planned {} to {} ({state})</title></rect>",
            y + 3.0,
            (x1 - x0).max(1.0),
            ROW - 6.0,
            if applied { "" } else { " fill-opacity=\"0\"" },
            html(&f.kind),
            html(&f.name),
            html(&f.target),
            format::at(f.apply_at_seconds),
            format::at(f.remove_at_seconds)
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#000\">{}</text>",
            x0 + 4.0,
            y + 15.0,
            html(&cut(&f.kind, 20))
        );
    }
    // Event markers: a faint line down the plot and a dot in the row.
    let _ = writeln!(
        s,
        "<text x=\"4\" y=\"{:.1}\">events</text>",
        events_top + 15.0
    );
    for e in &r.timeline {
        let ex = x(e.at_seconds);
        let c = event_colour(&e.kind);
        let _ = writeln!(
            s,
            "<line x1=\"{ex:.1}\" y1=\"8\" x2=\"{ex:.1}\" y2=\"{axis_y:.1}\" stroke=\"{c}\" stroke-opacity=\"0.25\"/>"
        );
        let _ = writeln!(
            s,
            "<circle cx=\"{ex:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"{c}\"><title>{} {}: {}</title></circle>",
            events_top + ROW / 2.0,
            format::at(e.at_seconds),
            html(&e.kind),
            html(&e.detail)
        );
    }
    // p95 step lines.
    if !p95_sources.is_empty() {
        let max = r
            .sources
            .iter()
            .filter_map(|s| s.p95)
            .fold(0.0, f64::max)
            .max(1e-6)
            * 1.15;
        let y = |v: f64| panel_top + PANEL - (v / max) * (PANEL - 8.0);
        let _ = writeln!(
            s,
            "<text x=\"4\" y=\"{:.1}\">p95 per phase</text>",
            panel_top + 14.0
        );
        for frac in [0.0, 0.5, 1.0] {
            let v = max * frac;
            let _ = writeln!(
                s,
                "<line x1=\"{LEFT}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{2:.1}\" y=\"{3:.1}\" text-anchor=\"end\">{4}</text>",
                y(v),
                WIDTH - RIGHT,
                LEFT - 4.0,
                y(v) + 4.0,
                if v == 0.0 {
                    "0".to_string()
                } else {
                    format::ms(v)
                }
            );
        }
        for (i, name) in p95_sources.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            let mut d = String::new();
            let mut last_end: Option<f64> = None;
            for w in &windows {
                let p95 = r
                    .sources
                    .iter()
                    .find(|s| s.source == *name && s.phase == w.phase)
                    .and_then(|s| s.p95);
                let Some(v) = p95 else {
                    last_end = None;
                    continue;
                };
                let cmd = if last_end.is_some_and(|e| (e - w.start).abs() < 0.5) {
                    'L'
                } else {
                    'M'
                };
                let _ = write!(d, "{cmd}{:.1} {:.1} H{:.1} ", x(w.start), y(v), x(w.end));
                last_end = Some(w.end);
            }
            let _ = writeln!(
                s,
                "<path d=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"><title>p95 of {}</title></path>",
                d.trim_end(),
                html(name)
            );
            let lx = LEFT + i as f64 * 150.0;
            let _ = writeln!(
                s,
                "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{c}\"/><text x=\"{:.1}\" y=\"{legend_y:.1}\">{}</text>",
                legend_y - 9.0,
                lx + 14.0,
                html(&cut(name, 20))
            );
        }
    }
    // Time axis.
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{axis_y:.1}\" x2=\"{:.1}\" y2=\"{axis_y:.1}\" stroke=\"#333\"/>",
        WIDTH - RIGHT
    );
    let step = tick_step(span);
    let mut t = 0.0;
    while t <= span + 1e-9 {
        let tx = x(t);
        let _ = writeln!(
            s,
            "<line x1=\"{tx:.1}\" y1=\"{axis_y:.1}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#333\"/><text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">+{}</text>",
            axis_y + 5.0,
            axis_y + 18.0,
            format::secs(t)
        );
        t += step;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn chart_draws_phases_faults_events_and_p95() {
        let s = svg(&fixtures::passed());
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(s.trim_end().ends_with("</svg>"));
        for p in ["baseline", "injection", "recovery"] {
            assert!(s.contains(&format!(">{p}</text>")), "{p} band");
        }
        assert!(
            s.contains("fill=\"#f58518\"><title>latency"),
            "applied fault bar"
        );
        assert_eq!(s.matches("<circle").count(), 8, "one marker per event");
        assert_eq!(s.matches("<path d=\"M").count(), 2, "a p95 line per source");
        assert!(s.contains(">+30s</text>"), "ticks");
        assert!(!s.contains("<script"));
    }

    #[test]
    fn aborted_chart_marks_the_fault_that_never_ran() {
        let s = svg(&fixtures::aborted());
        assert!(s.contains("(never applied)"));
        assert!(
            s.contains("fill-opacity=\"0\"><title>reset_peer"),
            "never-applied: outline only"
        );
        // The applied fault is drawn active until the abort, not its plan.
        let x = |t: f64| LEFT + t / 90.0 * (WIDTH - LEFT - RIGHT);
        let width = x(41.5) - x(30.0);
        assert!(
            s.contains(&format!(
                "width=\"{width:.1}\" height=\"16.0\" rx=\"3\" fill=\"#f58518\">"
            )),
            "{s}"
        );
        assert!(s.contains(">+90s</text>"), "the axis spans the plan");
        assert!(!s.contains(">recovery</text>"), "no recovery band");
    }

    #[test]
    fn chart_escapes_names_and_copes_without_data() {
        let s = svg(&fixtures::special());
        assert!(!s.contains("<nope>") && !s.contains("x&y"));
        assert!(s.contains("x&amp;y|z"));
        let mut r = fixtures::passed();
        r.sources.clear();
        r.timeline.clear();
        r.plan.faults.clear();
        let s = svg(&r);
        assert!(!s.contains("<path"));
        assert_eq!(tick_step(90.4), 10.0);
        assert_eq!(tick_step(5000.0), 600.0);
    }
}
