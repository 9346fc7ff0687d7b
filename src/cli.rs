//! The command line: `serve`, `validate` and `ctl`.
//!
//! `shakedown` also starts as a drop-in for `toxiproxy-server`: invoked
//! with Toxiproxy's single-dash flags (`-host=0.0.0.0 -port=8474
//! -config=proxies.json`), or through a link named `toxiproxy-server`, it
//! runs `serve` with the same meaning.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigErrors};
use crate::server::{self, ServeOptions};
use crate::{EXIT_BAD_INPUT, EXIT_INTERNAL};

/// A chaos-engineering fault-injection proxy.
#[derive(Debug, Parser)]
#[command(name = "shakedown", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start every proxy of a config file and the control API; run until
    /// SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Check config files without running them (exit 0 valid, 64 invalid).
    Validate {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Drive a running shakedown (or Toxiproxy) through its API, with
    /// toxiproxy-cli's commands and flags.
    Ctl(crate::ctl::CtlArgs),
    /// Run an experiment: baseline, injection, recovery, verdict. The exit
    /// code is the verdict (0 passed, 1 violated, 2 not recovered, 3
    /// precheck failed, 4 aborted, 5 inconclusive, 64 bad input, 70 error).
    Run(RunArgs),
}

/// `shakedown run` options.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The experiment file.
    pub file: PathBuf,
    /// Print the plan with its times and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Seed of every random choice (overrides the file's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where reports go (overrides `[report] dir`).
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
    /// Scale the schedule (phases, fault start and duration, recovery
    /// `within`, guardrail `for`) by F, e.g. 0.1 for a quick smoke run in
    /// CI. Fault attributes and load rates are not scaled.
    #[arg(long, value_name = "F", value_parser = parse_scale)]
    pub time_scale: Option<f64>,
    /// Serve the control API and /metrics (with the run's live figures:
    /// phase, SLO values, faults active) on HOST:PORT while the run lasts.
    #[arg(long, value_name = "HOST:PORT")]
    pub api: Option<String>,
    /// With --api: keep serving /metrics with the final figures (verdict,
    /// recovery seconds, SLO values) this long after the verdict.
    #[arg(long, value_name = "DURATION", value_parser = parse_linger, requires = "api")]
    pub api_linger: Option<std::time::Duration>,
    /// Runtime threads for proxies, load and probes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file (TOML). Without it, no proxy starts.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Proxies to create at start from a Toxiproxy JSON file (the
    /// `/populate` array that `toxiproxy-server -config` reads).
    #[arg(long, value_name = "FILE")]
    pub populate: Option<PathBuf>,
    /// Address the control API listens on (loopback by default: anyone who
    /// can reach the API can break your traffic).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the control API.
    #[arg(long, default_value_t = 8474)]
    pub port: u16,
    /// Require `Authorization: Bearer <token>` on every mutating API request.
    #[arg(long, env = "SHAKEDOWN_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Seed of every random decision (toxicity, jitter, slicer); the same
    /// seed gives the same decisions. Default: random, logged.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Runtime threads relaying traffic. One thread uses the least CPU per
    /// message (no cross-thread wake-ups) and relays tens of thousands of
    /// messages a second; raise it on a many-core host.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

impl Cli {
    /// Parses the process arguments, accepting `toxiproxy-server`'s too.
    pub fn from_env() -> Cli {
        Cli::parse_from(translate_toxiproxy_args(std::env::args_os().collect()))
    }

    /// How many runtime threads the command wants.
    pub fn runtime_threads(&self) -> usize {
        match &self.command {
            Command::Serve(a) => usize::from(a.threads),
            Command::Run(a) => usize::from(a.threads),
            _ => 1,
        }
    }
}

/// An `--api-linger` duration such as `30s`.
fn parse_linger(s: &str) -> Result<std::time::Duration, String> {
    crate::faults::units::parse_duration(s)
}

/// A `--time-scale` factor: above 0, at most 100.
fn parse_scale(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 100.0 => Ok(f),
        _ => Err(format!("`{s}` is not a factor above 0 and at most 100")),
    }
}

/// Toxiproxy's server flags, which Go's flag package accepts with one dash
/// or two, as `-flag=value` or `-flag value`.
const TOXIPROXY_FLAGS: &[&str] = &[
    "host",
    "port",
    "config",
    "seed",
    "proxy-metrics",
    "runtime-metrics",
    "version",
];

/// Rewrites a `toxiproxy-server` command line into `shakedown serve ...`;
/// leaves any other command line alone.
pub fn translate_toxiproxy_args(args: Vec<OsString>) -> Vec<OsString> {
    let as_server = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with("toxiproxy-server"));
    let first_is_flag = args.get(1).is_some_and(|a| {
        let a = a.to_string_lossy();
        let name = a.trim_start_matches('-').split('=').next().unwrap_or("");
        a.starts_with('-') && !a.starts_with("--help") && TOXIPROXY_FLAGS.contains(&name)
    });
    if !as_server && !first_is_flag {
        return args;
    }
    let mut out: Vec<OsString> = vec!["shakedown".into(), "serve".into()];
    let mut rest = args
        .into_iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = rest.next() {
        let trimmed = arg.trim_start_matches('-');
        let (name, inline) = match trimmed.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (trimmed.to_string(), None),
        };
        match name.as_str() {
            "host" | "port" | "seed" | "config" => {
                let value = inline.or_else(|| rest.next()).unwrap_or_default();
                let flag = if name == "config" {
                    "populate"
                } else {
                    name.as_str()
                };
                out.push(format!("--{flag}").into());
                out.push(value.into());
            }
            // Metrics are always served at /metrics.
            "proxy-metrics" | "runtime-metrics" => {}
            "version" => return vec!["shakedown".into(), "--version".into()],
            _ => out.push(arg.into()),
        }
    }
    out
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Validate { files } => {
            let mut code = 0;
            for f in files {
                // An experiment has an `[experiment]` table; anything else
                // is read as a serve config (an empty file is a valid one).
                let is_experiment = std::fs::read_to_string(&f)
                    .is_ok_and(|src| config::experiment::is_experiment(&src));
                let checked = if is_experiment {
                    config::experiment::load_experiment(&f).map(|e| {
                        format!(
                            "experiment `{}`: {} targets, {} loads, {} probes, {} faults, {} SLOs",
                            e.name,
                            e.targets.len(),
                            e.loads.len(),
                            e.probes.len(),
                            e.faults.len(),
                            e.slos.len()
                        )
                    })
                } else {
                    config::load_serve_config(&f).map(|c| format!("{} proxies", c.proxies.len()))
                };
                match checked {
                    Ok(what) => println!("{}: ok ({what})", f.display()),
                    Err(e) => {
                        report(&e);
                        code = EXIT_BAD_INPUT;
                    }
                }
            }
            code
        }
        Command::Ctl(args) => crate::ctl::run(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Run(args) => {
            let opts = crate::experiment::run::Options {
                dry_run: args.dry_run,
                seed: args.seed,
                report_dir: args.report_dir,
                api: args.api,
                api_linger: args.api_linger,
                time_scale: args.time_scale,
            };
            crate::experiment::run::run_file(&args.file, opts).await
        }
    }
}

async fn serve(args: ServeArgs) -> i32 {
    let mut cfg = match &args.config {
        Some(path) => match config::load_serve_config(path) {
            Ok(c) => c,
            Err(e) => {
                report(&e);
                return EXIT_BAD_INPUT;
            }
        },
        None => config::ServeConfig::default(),
    };
    if let Some(path) = &args.populate {
        match config::load_populate_json(path) {
            Ok(proxies) => cfg.proxies.extend(proxies),
            Err(e) => {
                report(&e);
                return EXIT_BAD_INPUT;
            }
        }
    }
    let seed = args.seed.unwrap_or_else(random_seed);
    let token = CancellationToken::new();
    tokio::spawn(server::cancel_on_signal(token.clone()));
    let opts = ServeOptions {
        api_host: args.host,
        api_port: args.port,
        api_token: args.api_token.filter(|t| !t.is_empty()),
        seed,
    };
    match server::run(cfg, opts, token).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shakedown: {e:#}");
            EXIT_INTERNAL
        }
    }
}

fn report(errors: &ConfigErrors) {
    for e in &errors.0 {
        eprintln!("{e}");
    }
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    crate::faults::random::mix(nanos ^ u64::from(std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(args: &[&str]) -> Vec<String> {
        translate_toxiproxy_args(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn toxiproxy_server_flags_become_serve() {
        assert_eq!(
            t(&[
                "shakedown",
                "-host=0.0.0.0",
                "-port",
                "8475",
                "-config=/tmp/p.json"
            ]),
            [
                "shakedown",
                "serve",
                "--host",
                "0.0.0.0",
                "--port",
                "8475",
                "--populate",
                "/tmp/p.json"
            ]
        );
        assert_eq!(t(&["/usr/bin/toxiproxy-server"]), ["shakedown", "serve"]);
        assert_eq!(
            t(&["shakedown", "-proxy-metrics", "--host=localhost"]),
            ["shakedown", "serve", "--host", "localhost"]
        );
        assert_eq!(
            t(&["shakedown", "serve", "--port", "1"]),
            ["shakedown", "serve", "--port", "1"]
        );
        assert_eq!(t(&["shakedown", "-version"]), ["shakedown", "--version"]);
    }
}
