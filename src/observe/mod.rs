//! Observations: what the data path records, and how it is exported.
//!
//! The data path records into plain atomics ([`Histogram`], the counters of
//! `proxy::ProxyStats`), which cost one atomic add on the hot path and no
//! lock; the control API's `/metrics` turns them into Prometheus text when
//! scraped, so counters are live (bytes count as they flow, not when a
//! connection closes).
//!
//! [`pg::PgStats`] does the same for PostgreSQL-aware proxies and also keeps
//! one-second buckets of the last minutes, so the experiment runner can ask
//! what happened in any recent time window; [`http::HttpStats`] does it
//! for HTTP proxies, per route.

pub mod histogram;
pub mod http;
pub mod pg;
mod ring;

pub use histogram::Histogram;
