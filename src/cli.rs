//! The command line: `serve` and `validate`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
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
    /// Start every proxy of a config file and run until SIGINT/SIGTERM.
    Serve {
        /// The config file (TOML). Without it, no proxy starts.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address of the control API.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// Port of the control API.
        #[arg(long, default_value_t = 8474)]
        port: u16,
        /// Seed of every random decision (toxicity, jitter, slicer); the
        /// same seed gives the same decisions. Default: random, logged.
        #[arg(long)]
        seed: Option<u64>,
        /// Runtime threads relaying traffic. One thread uses the least CPU
        /// per message (no cross-thread wake-ups) and relays tens of
        /// thousands of messages a second; raise it on a many-core host.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        threads: u16,
    },
    /// Check config files without running them (exit 0 valid, 64 invalid).
    Validate {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

impl Cli {
    /// How many runtime threads the command wants.
    pub fn runtime_threads(&self) -> usize {
        match &self.command {
            Command::Serve { threads, .. } => usize::from(*threads),
            Command::Validate { .. } => 1,
        }
    }
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Validate { files } => {
            let mut code = 0;
            for f in files {
                match config::load_serve_config(&f) {
                    Ok(c) => println!("{}: ok ({} proxies)", f.display(), c.proxies.len()),
                    Err(e) => {
                        report(&e);
                        code = EXIT_BAD_INPUT;
                    }
                }
            }
            code
        }
        Command::Serve {
            config,
            host,
            port,
            seed,
            threads: _,
        } => {
            let cfg = match config {
                Some(path) => match config::load_serve_config(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        report(&e);
                        return EXIT_BAD_INPUT;
                    }
                },
                None => config::ServeConfig::default(),
            };
            let seed = seed.unwrap_or_else(random_seed);
            let token = CancellationToken::new();
            tokio::spawn(server::cancel_on_signal(token.clone()));
            let opts = ServeOptions {
                api_addr: SocketAddr::new(host, port),
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
