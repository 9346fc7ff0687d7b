//! The `shakedown` binary: parse the command line, set up logging, build
//! the runtime, run.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .init();
    let cli = shakedown::cli::Cli::from_env();
    let threads = cli.runtime_threads();
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let code = match runtime {
        Ok(rt) => rt.block_on(shakedown::cli::run(cli)),
        Err(e) => {
            eprintln!("shakedown: cannot start the runtime: {e}");
            shakedown::EXIT_INTERNAL
        }
    };
    std::process::exit(code);
}
