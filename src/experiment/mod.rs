//! Experiments: `shakedown run FILE` stands up targets, drives load and
//! probes, walks the phases baseline → injection → recovery, applies and
//! rolls back faults, and judges the steady state.
//!
//! - [`spec`]: the validated experiment (read by `config::experiment`).
//! - [`result`]: what a run produced; every report is written from it.
//! - [`run`]: the run itself; [`target`]: local or remote proxies;
//!   [`checker`]: SLO bounds, recovery time and the verdict.

pub mod checker;
pub mod load;
pub mod probe;
pub mod recorder;
pub mod result;
pub mod run;
pub mod spec;
pub mod target;
