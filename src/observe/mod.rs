//! Observations: what the data path records, and how it is exported.
//!
//! The data path records into plain atomics ([`Histogram`], the counters of
//! `proxy::ProxyStats`), which cost one atomic add on the hot path and no
//! lock; the control API's `/metrics` turns them into Prometheus text when
//! scraped, so counters are live (bytes count as they flow, not when a
//! connection closes).

pub mod histogram;

pub use histogram::Histogram;
