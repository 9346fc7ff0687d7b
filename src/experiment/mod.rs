//! Experiments: `shakedown run FILE` stands up targets, drives load and
//! probes, walks the phases baseline → injection → recovery, applies and
//! rolls back faults, and judges the steady state.
//!
//! - [`spec`]: the validated experiment (read by `config::experiment`).
//! - [`result`]: what a run produced; every report is written from it.

pub mod result;
pub mod spec;
