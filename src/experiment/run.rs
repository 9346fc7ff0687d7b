//! `shakedown run`: one experiment, from validation to verdict.
//!
//! validate → start targets → start load and probes → baseline → precheck
//! → injection (faults applied and removed on schedule, guardrails checked
//! every second) → rollback → recovery → verdict → reports.
//!
//! Rollback is guaranteed: every path out of the injection phase (its end,
//! a guardrail, SIGINT/SIGTERM, a load task that panicked, an error)
//! removes every fault the run applied before anything else happens, and
//! faults on remote agents carry a TTL besides.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::checker::{self, Outcome};
use super::recorder::{Recorder, Summary};
use super::result::{
    ErrorClass, Event, FaultFired, Plan, PlannedFaultRecord, RunResult, SloResult, SourceSummary,
};
use super::spec::{Experiment, Metric, Phase, PlannedFault};
use super::target::Handle;
use crate::api::{ApiState, Secret};
use crate::registry::Registry;
use crate::report::prom;
use crate::{EXIT_BAD_INPUT, EXIT_INTERNAL};

/// How `run` was asked to behave.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Print the plan and exit.
    pub dry_run: bool,
    /// Overrides `[experiment] seed`.
    pub seed: Option<u64>,
    /// Overrides `[report] dir`.
    pub report_dir: Option<PathBuf>,
    /// Scales the schedule (phases, fault times, `within`, guardrail
    /// windows) by this factor; see [`Experiment::scaled`].
    pub time_scale: Option<f64>,
    /// Serve the control API and `/metrics` (with the run's live figures)
    /// on this `host:port` while the run lasts.
    pub api: Option<String>,
    /// With `api`: keep serving the final figures (verdict, recovery time,
    /// SLO values) this long after the verdict, for a scraper to see.
    pub api_linger: Option<Duration>,
}

/// Runs the experiment in `path` and returns the process exit code.
pub async fn run_file(path: &Path, opts: Options) -> i32 {
    let exp = match crate::config::experiment::load_experiment(path) {
        Ok(e) => e,
        Err(errors) => {
            eprintln!("{errors}");
            return EXIT_BAD_INPUT;
        }
    };
    let exp = match opts.time_scale {
        Some(f) => exp.scaled(f),
        None => exp,
    };
    if opts.dry_run {
        print!("{}", plan_text(&exp, opts.seed.or(exp.seed)));
        return 0;
    }
    let interrupt = CancellationToken::new();
    tokio::spawn(crate::server::cancel_on_signal(interrupt.clone()));
    let result = match run(&exp, &opts, interrupt).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shakedown run: {e}");
            return EXIT_INTERNAL;
        }
    };
    let dir = opts.report_dir.clone().unwrap_or(exp.report.dir.clone());
    print!("{}", crate::report::summary_table(&result));
    match crate::report::write_all(&result, &dir) {
        Ok(files) => {
            for f in files {
                println!("report: {}", f.display());
            }
        }
        Err(e) => {
            eprintln!(
                "shakedown run: cannot write reports to {}: {e}",
                dir.display()
            );
            return EXIT_INTERNAL;
        }
    }
    if let Some(gw) = &exp.report.pushgateway {
        match crate::report::push::push(&result, gw).await {
            Ok(()) => println!("pushed to {gw}"),
            Err(e) => eprintln!("shakedown run: push to {gw} failed: {e}"),
        }
    }
    result.verdict.exit_code()
}

/// A fault's place on the timeline, from the start of the run.
struct Scheduled<'a> {
    fault: &'a PlannedFault,
    apply: Duration,
    remove: Duration,
}

fn schedule(exp: &Experiment) -> Vec<Scheduled<'_>> {
    let b = exp.phases.baseline;
    let i = exp.phases.injection;
    exp.faults
        .iter()
        .map(|f| {
            let end = f.duration.map_or(i, |d| (f.start + d).min(i));
            Scheduled {
                fault: f,
                apply: b + f.start,
                remove: b + end,
            }
        })
        .collect()
}

/// The plan as `--dry-run` prints it.
pub fn plan_text(exp: &Experiment, seed: Option<u64>) -> String {
    use std::fmt::Write as _;
    let p = exp.phases;
    let secs = |d: Duration| format!("{:>7.1}s", d.as_secs_f64());
    let mut out = String::new();
    let _ = writeln!(out, "experiment: {}", exp.name);
    let _ = writeln!(
        out,
        "seed:       {}",
        seed.map_or("chosen at start".into(), |s| s.to_string())
    );
    let _ = writeln!(out, "targets:");
    for t in &exp.targets {
        let _ = writeln!(
            out,
            "  {} ({}) {} -> {}{}",
            t.name,
            t.protocol.as_str(),
            t.listen,
            t.upstream,
            t.agent
                .as_ref()
                .map_or(String::new(), |a| format!(" on agent {a}"))
        );
    }
    for l in &exp.loads {
        let _ = writeln!(
            out,
            "load:       {} {:?} at {}/s, concurrency {}, timeout {:?}",
            l.name,
            kind_name(&l.kind),
            l.rate,
            l.concurrency,
            l.timeout
        );
    }
    for pr in &exp.probes {
        let _ = writeln!(out, "probe:      {} every {:?}", pr.name, pr.interval);
    }
    let _ = writeln!(out, "timeline:");
    let _ = writeln!(out, "  {} baseline starts", secs(Duration::ZERO));
    let mut events: Vec<(Duration, String)> = vec![
        (p.baseline, "precheck; injection starts".into()),
        (
            p.baseline + p.injection,
            "rollback (every fault removed); recovery starts".into(),
        ),
        (
            p.baseline + p.injection + p.recovery,
            "verdict and reports".into(),
        ),
    ];
    for s in schedule(exp) {
        let f = &s.fault.spec;
        events.push((
            s.apply,
            format!(
                "apply {} `{}` on {} ({}, toxicity {})",
                f.fault.kind(),
                f.name,
                s.fault.target,
                f.direction,
                f.toxicity
            ),
        ));
        events.push((
            s.remove,
            format!("remove `{}` from {}", f.name, s.fault.target),
        ));
    }
    events.sort_by_key(|(t, _)| *t);
    for (t, what) in events {
        let _ = writeln!(out, "  {} {what}", secs(t));
    }
    let _ = writeln!(out, "SLOs:");
    for s in &exp.slos {
        let phases: Vec<&str> = s.phases.iter().map(|p| p.as_str()).collect();
        let _ = writeln!(
            out,
            "  {}: {} of {} {:?} in {}",
            s.name,
            s.metric.as_str(),
            s.source,
            s.bounds,
            phases.join(", ")
        );
    }
    for a in &exp.aborts {
        let _ = writeln!(
            out,
            "guardrail:  {} of {} {:?} for {:?}",
            a.metric.as_str(),
            a.source,
            a.bounds,
            a.for_
        );
    }
    if let Some(w) = exp.recovery_within {
        let _ = writeln!(out, "recovery:   SLOs must hold again within {w:?}");
    }
    out
}

fn kind_name(k: &super::spec::LoadKind) -> &'static str {
    match k {
        super::spec::LoadKind::Sql { .. } => "sql",
        super::spec::LoadKind::Http { .. } => "http",
        super::spec::LoadKind::Tcp { .. } => "tcp",
        super::spec::LoadKind::Command { .. } => "command",
    }
}

struct Run<'a> {
    exp: &'a Experiment,
    t0: Instant,
    /// A fault's activations could not be read (an agent without
    /// shakedown's stats route): "never fired" cannot be judged.
    uncounted: bool,
    targets: HashMap<String, Handle>,
    recorders: HashMap<String, (Arc<Recorder>, &'static str)>,
    timeline: Vec<Event>,
    /// Faults applied and not yet removed: (target, name, activations at apply).
    applied: Vec<(String, String, String, Option<u64>)>,
    fired: Vec<FaultFired>,
    live: bool,
    last_line: Instant,
    /// The API state when `--api` serves one: its `/metrics` carries the
    /// run's live figures.
    api: Option<Arc<ApiState>>,
    /// The phase now, and when it started.
    phase: (Phase, Instant),
    /// When the current phase is planned to end (for the status line).
    phase_end: Instant,
    last_publish: Instant,
    /// Faults applied at the last publication.
    published_faults: usize,
}

impl Run<'_> {
    fn event(&mut self, kind: &str, detail: String) {
        let at = self.t0.elapsed().as_secs_f64();
        info!(at = format!("{at:.1}s"), kind, "{detail}");
        if self.live {
            eprint!("\r\x1b[K");
        }
        self.timeline.push(Event {
            at_seconds: at,
            kind: kind.to_string(),
            detail,
        });
    }

    /// What a source did over `[from, to)`, and its kind (`load`,
    /// `probe`, `target`); `None` for a source with no observations (a
    /// tcp or remote target).
    fn window(&self, source: &str, from: Instant, to: Instant) -> Option<(Summary, &'static str)> {
        if let Some((r, kind)) = self.recorders.get(source) {
            return Some((r.summary(from, to), kind));
        }
        let observed = self.targets.get(source)?.observed(from, to)?;
        Some((observed, "target"))
    }

    /// A metric of a source over `[from, to)`.
    fn metric(&self, source: &str, m: Metric, from: Instant, to: Instant) -> Option<f64> {
        self.window(source, from, to)?.0.metric(m)
    }

    fn summary(&self, source: &str, phase: Phase, from: Instant, to: Instant) -> SourceSummary {
        let (s, kind) = self
            .window(source, from, to)
            .unwrap_or((Summary::default(), "target"));
        SourceSummary {
            source: source.to_string(),
            kind: kind.to_string(),
            phase,
            ops: s.ops,
            errors: s.errors,
            // Successful operations per second, as the SLO metric.
            throughput: s.metric(Metric::Throughput).unwrap_or(0.0),
            p50: s.p50,
            p95: s.p95,
            p99: s.p99,
            max: s.max,
            value: s.value,
            errors_by_class: s
                .errors_by_class
                .into_iter()
                .map(|(class, count)| ErrorClass { class, count })
                .collect(),
        }
    }

    /// Removes every fault still applied. Errors are recorded, never
    /// stop the rollback of the others.
    async fn rollback(&mut self, why: &str) {
        if self.applied.is_empty() {
            return;
        }
        let applied = std::mem::take(&mut self.applied);
        let n = applied.len();
        for (target, name, kind, before) in applied {
            self.remove_one(&target, &name, &kind, before).await;
        }
        self.event("rollback", format!("{n} fault(s) removed ({why})"));
    }

    async fn remove_one(&mut self, target: &str, name: &str, kind: &str, before: Option<u64>) {
        let Some(h) = self.targets.get(target) else {
            return;
        };
        let after = h.activations(kind).await;
        self.uncounted |= before.is_none() || after.is_none();
        if let Err(e) = h.remove(name).await {
            self.event("error", e);
        }
        if let Some(f) = self
            .fired
            .iter_mut()
            .find(|f| f.target == target && f.name == name && !f.applied)
        {
            f.applied = true;
            f.activations += match (before, after) {
                (Some(b), Some(a)) => a.saturating_sub(b),
                _ => 0,
            };
        }
        self.event("fault_removed", format!("`{name}` removed from `{target}`"));
    }

    /// One status line: on a terminal, redrawn every second; otherwise a
    /// log line every 10 s.
    fn status(&mut self, phase: Phase, left: Duration) {
        let every = if self.live {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        if self.last_line.elapsed() < every {
            return;
        }
        self.last_line = Instant::now();
        let now = Instant::now();
        let from = now
            .checked_sub(Duration::from_secs(5))
            .unwrap_or(self.t0)
            .max(self.t0);
        let mut parts = vec![format!(
            "{:<9} {:>5.0}s left",
            phase.as_str(),
            left.as_secs_f64()
        )];
        for l in &self.exp.loads {
            let p95 = self.metric(&l.name, Metric::LatencyP95, from, now);
            let er = self.metric(&l.name, Metric::ErrorRate, from, now);
            parts.push(format!(
                "{}: p95 {} err {}",
                l.name,
                p95.map_or("-".into(), |v| format!("{:.1}ms", v * 1000.0)),
                er.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
            ));
        }
        parts.push(format!("faults active {}", self.applied.len()));
        let line = parts.join(" | ");
        if self.live {
            eprint!("\r\x1b[K{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
    }
}

impl Run<'_> {
    /// Refreshes the live figures on `/metrics` (at most once a second).
    fn publish(&mut self, phase: Phase) {
        let Some(api) = self.api.clone() else {
            return;
        };
        let now = Instant::now();
        // A new phase or a fault applied or removed shows at once; values
        // are refreshed once a second.
        let changed = self.phase.0 != phase || self.published_faults != self.applied.len();
        if self.phase.0 != phase {
            self.phase = (phase, now);
        }
        if !changed && now.duration_since(self.last_publish) < Duration::from_secs(1) {
            return;
        }
        self.last_publish = now;
        self.published_faults = self.applied.len();
        let text = self.live_metrics(now);
        if let Ok(mut extra) = api.extra_metrics.write() {
            *extra = text;
        }
    }

    /// The run so far as Prometheus text: phase, time, faults active, and
    /// every SLO's value over the current phase up to now.
    fn live_metrics(&self, now: Instant) -> String {
        let reg = prometheus::Registry::new();
        match self.live_families(&reg, now) {
            Ok(()) => prom::encode(&reg),
            Err(e) => format!("# shakedown: cannot encode the run's live metrics: {e}\n"),
        }
    }

    fn live_families(&self, reg: &prometheus::Registry, now: Instant) -> prometheus::Result<()> {
        let exp = self.exp.name.as_str();
        let (phase, since) = self.phase;
        let phases = prom::gauge(
            reg,
            "shakedown_experiment_phase",
            "1 for the phase the running experiment is in, 0 for the others.",
            &["experiment", "phase"],
        )?;
        for p in Phase::ALL {
            prom::set(&phases, &[exp, p.as_str()], f64::from(u8::from(p == phase)))?;
        }
        let elapsed = prom::gauge(
            reg,
            "shakedown_experiment_elapsed_seconds",
            "Seconds since the running experiment started.",
            &["experiment"],
        )?;
        prom::set(&elapsed, &[exp], now.duration_since(self.t0).as_secs_f64())?;
        let active = prom::gauge(
            reg,
            "shakedown_experiment_faults_active",
            "Faults the running experiment has applied and not yet removed.",
            &["experiment"],
        )?;
        prom::set(&active, &[exp], self.applied.len() as f64)?;
        let slo_labels = ["experiment", "slo", "phase"];
        let value = prom::gauge(
            reg,
            "shakedown_experiment_live_slo_value",
            "Each SLO's value over the current phase so far (latencies in seconds).",
            &slo_labels,
        )?;
        let passed = prom::gauge(
            reg,
            "shakedown_experiment_live_slo_passed",
            "1 while an SLO's absolute bounds hold over the current phase so far, else 0.",
            &slo_labels,
        )?;
        for slo in self.exp.slos.iter().filter(|s| s.phases.contains(&phase)) {
            let Some(v) = self.metric(&slo.source, slo.metric, since, now) else {
                continue;
            };
            let labels = [exp, slo.name.as_str(), phase.as_str()];
            prom::set(&value, &labels, v)?;
            let absolute: Vec<_> = slo
                .bounds
                .iter()
                .copied()
                .filter(|b| matches!(b, super::spec::Bound::Max(_) | super::spec::Bound::Min(_)))
                .collect();
            if let Some(ok) = checker::holds(&absolute, Some(v), None) {
                prom::set(&passed, &labels, f64::from(u8::from(ok)))?;
            }
        }
        Ok(())
    }
}

/// Why waiting stopped early.
enum Stop {
    Interrupted,
    Guardrail(String),
    Crashed(String),
}

/// Runs an experiment to its verdict.
pub async fn run(
    exp: &Experiment,
    opts: &Options,
    interrupt: CancellationToken,
) -> Result<RunResult, String> {
    let seed = opts.seed.or(exp.seed).unwrap_or_else(rand::random::<u64>);
    info!(experiment = %exp.name, seed, "run starts");
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stop_all = CancellationToken::new();
    let registry = Registry::new(seed, stop_all.clone());
    let t0 = Instant::now();
    let mut run = Run {
        exp,
        t0,
        uncounted: false,
        targets: HashMap::new(),
        recorders: HashMap::new(),
        timeline: Vec::new(),
        applied: Vec::new(),
        fired: exp
            .faults
            .iter()
            .map(|f| FaultFired {
                target: f.target.clone(),
                name: f.spec.name.clone(),
                kind: f.spec.fault.kind().to_string(),
                applied: false,
                activations: 0,
            })
            .collect(),
        live: std::io::stderr().is_terminal(),
        last_line: t0,
        api: None,
        phase: (Phase::Baseline, t0),
        phase_end: t0,
        last_publish: t0,
        published_faults: 0,
    };
    if let Some(addr) = &opts.api {
        let listener = match tokio::net::TcpListener::bind(addr.as_str()).await {
            Ok(l) => l,
            Err(e) => {
                registry.shutdown();
                return Err(format!("--api: cannot listen on {addr}: {e}"));
            }
        };
        let token = std::env::var("SHAKEDOWN_API_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        let state = ApiState::new(registry.clone(), token);
        tokio::spawn(crate::api::serve(listener, state.clone(), stop_all.clone()));
        run.api = Some(state);
    }
    for t in &exp.targets {
        match Handle::start(t, &registry).await {
            Ok(h) => {
                run.event(
                    "target",
                    format!("`{}` listening on {} -> {}", t.name, t.listen, t.upstream),
                );
                run.targets.insert(t.name.clone(), h);
            }
            Err(e) => {
                for h in run.targets.values() {
                    h.stop(&registry).await;
                }
                registry.shutdown();
                stop_all.cancel();
                return Err(e);
            }
        }
    }

    // A lease on every agent: if this process dies, the agent removes the
    // faults within LEASE_TTL (each fault's own TTL is the second line).
    let lease_stop = CancellationToken::new();
    let mut leases = Vec::new();
    let mut agents: Vec<&String> = exp
        .targets
        .iter()
        .filter_map(|t| t.agent.as_ref())
        .collect();
    agents.sort();
    agents.dedup();
    for agent in agents {
        let holder = format!("shakedown run `{}` (pid {})", exp.name, std::process::id());
        leases.push(tokio::spawn(super::target::keep_lease(
            agent.clone(),
            holder,
            lease_stop.clone(),
        )));
    }

    let work = stop_all.child_token();
    let mut watch = Watch {
        interrupt,
        tasks: JoinSet::new(),
        names: HashMap::new(),
    };
    for l in &exp.loads {
        let rec = Recorder::new(t0);
        run.recorders.insert(l.name.clone(), (rec.clone(), "load"));
        let h = watch
            .tasks
            .spawn(super::load::run(l.clone(), rec, work.clone()));
        watch.names.insert(h.id(), format!("load `{}`", l.name));
    }
    for p in &exp.probes {
        let rec = Recorder::new(t0);
        run.recorders.insert(p.name.clone(), (rec.clone(), "probe"));
        let h = watch
            .tasks
            .spawn(super::probe::run(p.clone(), rec, work.clone()));
        watch.names.insert(h.id(), format!("probe `{}`", p.name));
    }

    let b_end = t0 + exp.phases.baseline;
    let i_end = b_end + exp.phases.injection;
    let r_end = i_end + exp.phases.recovery;
    let mut aborted: Option<String> = None;
    let mut precheck_failed = false;
    let mut injection_end = i_end;
    let mut recovery_end = r_end;

    // Baseline.
    run.event("phase", "baseline".into());
    run.phase_end = b_end;
    if let Err(stop) = wait(&mut run, &mut watch, Phase::Baseline, b_end, false).await {
        aborted = Some(stop_reason(&stop));
        injection_end = Instant::now();
        recovery_end = injection_end;
    }

    // Precheck: the baseline must meet the SLOs before anything is injected.
    if aborted.is_none() {
        for slo in exp
            .slos
            .iter()
            .filter(|s| s.phases.contains(&Phase::Baseline))
        {
            let v = run.metric(&slo.source, slo.metric, t0, b_end);
            if checker::check(slo, Phase::Baseline, v, v).passed == Some(false) {
                precheck_failed = true;
            }
        }
        if precheck_failed {
            run.event(
                "precheck",
                "the baseline broke an SLO; nothing will be injected".into(),
            );
            injection_end = b_end;
            recovery_end = b_end;
        }
    }

    // Injection: faults on schedule, guardrails every second.
    if aborted.is_none() && !precheck_failed {
        run.event("phase", "injection".into());
        run.phase_end = i_end;
        let mut plan: Vec<(Instant, bool, usize)> = Vec::new();
        let sched = schedule(exp);
        for (i, s) in sched.iter().enumerate() {
            plan.push((t0 + s.apply, true, i));
            plan.push((t0 + s.remove, false, i));
        }
        // Removals before applications at the same instant (ramps).
        plan.sort_by_key(|(at, apply, _)| (*at, *apply));
        let mut next = 0;
        loop {
            while next < plan.len() && plan[next].0 <= Instant::now() {
                let (_, apply, i) = plan[next];
                next += 1;
                let f = sched[i].fault;
                if apply {
                    let Some(h) = run.targets.get(&f.target) else {
                        continue;
                    };
                    let before = h.activations(f.spec.fault.kind()).await;
                    match h.apply(&registry, &f.spec, t0 + sched[i].remove).await {
                        Ok(()) => {
                            run.applied.push((
                                f.target.clone(),
                                f.spec.name.clone(),
                                f.spec.fault.kind().to_string(),
                                before,
                            ));
                            run.event(
                                "fault_applied",
                                format!(
                                    "{} `{}` on `{}` ({}, toxicity {})",
                                    f.spec.fault.kind(),
                                    f.spec.name,
                                    f.target,
                                    f.spec.direction,
                                    f.spec.toxicity
                                ),
                            );
                        }
                        Err(e) => run.event("error", e),
                    }
                } else if let Some(pos) = run
                    .applied
                    .iter()
                    .position(|(t, n, _, _)| *t == f.target && *n == f.spec.name)
                {
                    let (t, n, k, b) = run.applied.remove(pos);
                    run.remove_one(&t, &n, &k, b).await;
                }
            }
            let now = Instant::now();
            if now >= i_end {
                break;
            }
            let wake = plan
                .get(next)
                .map_or(i_end, |(at, _, _)| *at)
                .min(i_end)
                .min(now + Duration::from_secs(1));
            if let Err(stop) = wait(&mut run, &mut watch, Phase::Injection, wake, true).await {
                aborted = Some(stop_reason(&stop));
                injection_end = Instant::now();
                recovery_end = injection_end;
                break;
            }
        }
        let why = if aborted.is_some() {
            "aborted"
        } else {
            "end of injection"
        };
        run.rollback(why).await;
    }

    // Recovery.
    if aborted.is_none() && !precheck_failed {
        run.event("phase", "recovery".into());
        run.phase_end = r_end;
        if let Err(stop) = wait(&mut run, &mut watch, Phase::Recovery, r_end, false).await {
            aborted = Some(stop_reason(&stop));
            recovery_end = Instant::now();
        }
    }
    if let Some(why) = &aborted {
        run.event("abort", why.clone());
    }
    if run.live {
        eprintln!();
    }

    // Stop the traffic, then the targets.
    work.cancel();
    while watch.tasks.join_next().await.is_some() {}
    let end = Instant::now();

    // Judge.
    let windows = [
        (Phase::Baseline, t0, b_end.min(injection_end.max(t0))),
        (Phase::Injection, b_end, injection_end),
        (Phase::Recovery, injection_end, recovery_end),
    ];
    let reached = |phase: Phase| -> Option<(Instant, Instant)> {
        windows
            .iter()
            .find(|(p, _, _)| *p == phase)
            .filter(|(_, from, to)| to > from)
            .map(|(_, from, to)| (*from, *to))
    };
    // Each SLO's baseline value, once: ratio bounds compare with it in
    // every phase and at every second of the recovery scan.
    let baselines: Vec<Option<f64>> = exp
        .slos
        .iter()
        .map(|slo| {
            reached(Phase::Baseline).and_then(|(f, t)| run.metric(&slo.source, slo.metric, f, t))
        })
        .collect();
    let mut slos: Vec<SloResult> = Vec::new();
    for (slo, baseline) in exp.slos.iter().zip(&baselines) {
        for phase in &slo.phases {
            let Some((from, to)) = reached(*phase) else {
                continue;
            };
            let v = run.metric(&slo.source, slo.metric, from, to);
            slos.push(checker::check(slo, *phase, v, *baseline));
        }
    }
    let recovery_slos: Vec<_> = exp
        .slos
        .iter()
        .zip(&baselines)
        .filter(|(s, _)| s.phases.contains(&Phase::Recovery))
        .collect();
    let mut recovery_seconds = None;
    if aborted.is_none()
        && !precheck_failed
        && !recovery_slos.is_empty()
        && let Some((from, to)) = reached(Phase::Recovery)
    {
        let last = (to - from).as_secs().saturating_sub(1);
        recovery_seconds = checker::recovery_time(last, |s| {
            let start = from + Duration::from_secs(s);
            recovery_slos.iter().all(|(slo, baseline)| {
                let v = run.metric(&slo.source, slo.metric, start, to);
                checker::holds(&slo.bounds, v, **baseline) == Some(true)
            })
        })
        .map(|s| s as f64);
    }
    let counted = !run.uncounted;
    let applied_faults: Vec<FaultFired> = run.fired.iter().filter(|f| f.applied).cloned().collect();
    let (verdict, reason) = checker::verdict(&Outcome {
        aborted: aborted.clone(),
        precheck_failed,
        slos: &slos,
        recovery_seconds,
        recovery_within: exp.recovery_within.map(|d| d.as_secs_f64()),
        has_recovery_slos: !recovery_slos.is_empty() && aborted.is_none() && !precheck_failed,
        faults: &applied_faults,
        counted,
    });
    let mut sources = Vec::new();
    let names: Vec<String> = exp
        .loads
        .iter()
        .map(|l| l.name.clone())
        .chain(exp.probes.iter().map(|p| p.name.clone()))
        .chain(
            exp.targets
                .iter()
                .filter(|t| t.protocol != crate::config::Protocol::Tcp && t.agent.is_none())
                .map(|t| t.name.clone()),
        )
        .collect();
    for name in &names {
        for phase in Phase::ALL {
            if let Some((from, to)) = reached(phase) {
                sources.push(run.summary(name, phase, from, to));
            }
        }
    }
    run.event("verdict", format!("{}: {reason}", verdict.as_str()));
    let targets = std::mem::take(&mut run.targets);
    let api = run.api.take();

    let plan = Plan {
        baseline_seconds: exp.phases.baseline.as_secs_f64(),
        injection_seconds: exp.phases.injection.as_secs_f64(),
        recovery_seconds: exp.phases.recovery.as_secs_f64(),
        faults: schedule(exp)
            .iter()
            .map(|s| PlannedFaultRecord {
                target: s.fault.target.clone(),
                name: s.fault.spec.name.clone(),
                kind: s.fault.spec.fault.kind().to_string(),
                direction: s.fault.spec.direction.as_str().to_string(),
                toxicity: f64::from(s.fault.spec.toxicity),
                attributes: s.fault.spec.fault.attributes(),
                apply_at_seconds: s.apply.as_secs_f64(),
                remove_at_seconds: s.remove.as_secs_f64(),
            })
            .collect(),
    };
    let result = RunResult {
        experiment: exp.name.clone(),
        file: exp.file.clone(),
        description: exp.description.clone(),
        seed,
        started_at,
        duration_seconds: (end - t0).as_secs_f64(),
        plan,
        timeline: run.timeline,
        slos,
        sources,
        faults: run.fired,
        recovery_seconds,
        recovery_within_seconds: exp.recovery_within.map(|d| d.as_secs_f64()),
        verdict,
        reason,
    };

    // The final figures on `/metrics`, for `--api-linger` (Prometheus
    // scrapes the verdict and the recovery time before the API goes).
    if let Some(api) = api {
        if let Ok(mut extra) = api.extra_metrics.write() {
            *extra = crate::report::prom::text(&result);
        }
        if let Some(linger) = opts.api_linger {
            tokio::select! {
                _ = watch.interrupt.cancelled() => {}
                _ = tokio::time::sleep(linger) => {}
            }
        }
    }
    for h in targets.values() {
        h.stop(&registry).await;
    }
    lease_stop.cancel();
    for l in leases {
        let _ = l.await;
    }
    registry.shutdown();
    stop_all.cancel();
    Ok(result)
}

fn stop_reason(s: &Stop) -> String {
    match s {
        Stop::Interrupted => "interrupted (SIGINT/SIGTERM); every fault was rolled back".into(),
        Stop::Guardrail(g) => format!("guardrail fired: {g}; every fault was rolled back"),
        Stop::Crashed(c) => format!("{c}; every fault was rolled back"),
    }
}

/// What every wait watches besides the clock: the interrupt, and the load
/// and probe tasks (one ending early is a crash).
struct Watch {
    interrupt: CancellationToken,
    tasks: JoinSet<()>,
    names: HashMap<tokio::task::Id, String>,
}

/// Waits until `until`, watching for an interrupt, a crashed load or probe
/// and (during injection) the guardrails.
async fn wait(
    run: &mut Run<'_>,
    w: &mut Watch,
    phase: Phase,
    until: Instant,
    guard: bool,
) -> Result<(), Stop> {
    let Watch {
        interrupt,
        tasks,
        names,
    } = w;
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        run.status(phase, run.phase_end.saturating_duration_since(now));
        run.publish(phase);
        if guard && let Some(g) = guardrail(run, now) {
            warn!("{g}");
            return Err(Stop::Guardrail(g));
        }
        let tick = (now + Duration::from_millis(250)).min(until);
        tokio::select! {
            _ = interrupt.cancelled() => return Err(Stop::Interrupted),
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (id, what) = match &done {
                    Ok((id, ())) => (*id, "stopped"),
                    Err(e) => (e.id(), if e.is_panic() { "panicked" } else { "was cancelled" }),
                };
                let name = names.get(&id).cloned().unwrap_or_else(|| "a task".into());
                return Err(Stop::Crashed(format!("{name} {what}")));
            }
            _ = tokio::time::sleep_until(tick) => {}
        }
    }
}

/// The first guardrail broken over its whole window, if any.
fn guardrail(run: &Run<'_>, now: Instant) -> Option<String> {
    let injection_start = run.t0 + run.exp.phases.baseline;
    for a in &run.exp.aborts {
        if now < injection_start + a.for_ {
            continue;
        }
        let from = now - a.for_;
        let v = run.metric(&a.source, a.metric, from, now);
        if checker::holds(&a.bounds, v, None) == Some(false) {
            let shown = v.map_or("no data".into(), |v| format!("{v:.4}"));
            return Some(format!(
                "{} of `{}` was {shown} over the last {:?}, beyond {:?}",
                a.metric.as_str(),
                a.source,
                a.for_,
                a.bounds
            ));
        }
    }
    None
}
