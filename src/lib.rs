//! shakedown: a chaos-engineering fault-injection proxy.
//!
//! It sits between services and their upstreams (PostgreSQL, HTTP, any
//! TCP service) and injects latency, drops, resets and partitions, as a config
//! file or (later) the control API and experiment runner say.
//!
//! The map, in short:
//!
//! - [`proxy`]: the data path. A listener accepts and spawns; each
//!   connection dials its upstream in its own task and runs two byte pumps
//!   (client→server = upstream, server→client = downstream). With no fault
//!   active the bytes take a fast path; otherwise each direction runs its
//!   fault chain.
//! - [`faults`]: the [`Fault`](faults::Fault) enum, the single description
//!   of a fault used by the config, the API and the runner; one file per
//!   fault; the per-direction chain; seeded randomness.
//! - [`registry`]: the live proxies and faults, changed by the control
//!   plane and read lock-free by the data path.
//! - [`config`]: strict TOML models with `FILE:LINE:COL` errors.
//! - [`api`]: the control API (Toxiproxy 2.12 compatible, native routes
//!   under `/shakedown/v1/`, `/metrics`).
//! - [`ctl`]: `shakedown ctl`, a client of that API.
//! - [`observe`]: lock-free recording for metrics.
//! - [`postgres`]: the PostgreSQL-aware layer: framing, SQLSTATEs,
//!   statement classification, and the session that applies query faults.
//! - [`http`]: the HTTP-aware layer: a hyper reverse proxy (HTTP/1.1 and
//!   h2c) applying request faults and counting requests per route.
//! - [`experiment`]: `shakedown run`: phases, load, probes, faults on a
//!   schedule, the steady-state checker and the verdict.
//! - [`report`]: journal, JUnit XML, Markdown, terminal table, Pushgateway.
//! - [`server`]: `shakedown serve`, wiring the pieces together.
//!
//! The data path knows nothing of the API, the runner or reports; they all
//! talk to it through the registry.

pub mod api;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod experiment;
pub mod faults;
pub mod http;
pub mod observe;
pub mod postgres;
pub mod proxy;
pub mod registry;
pub mod report;
pub mod server;

/// Exit code for bad input: a config or experiment that does not validate.
pub const EXIT_BAD_INPUT: i32 = 64;
/// Exit code for an internal error.
pub const EXIT_INTERNAL: i32 = 70;
