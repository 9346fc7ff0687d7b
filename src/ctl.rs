//! `shakedown ctl`: a client for the control API (placeholder, filled in by
//! the ctl work).

use clap::Args;

/// Options of `ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {}

/// Runs a ctl command; returns the exit code.
pub async fn run(_args: CtlArgs) -> i32 {
    0
}
