//! PostgreSQL awareness: the pure pieces a protocol-aware proxy layer needs.
//!
//! - [`protocol`]: message framing (startup packets and typed frames, per
//!   direction), the few bodies the proxy inspects, and builders for the
//!   messages it injects.
//! - [`sqlstate`]: the SQLSTATEs worth injecting, with the exact texts a
//!   PostgreSQL 15 server sends, so clients react as they would in production.
//! - [`statement`]: which kind of statement a query starts with, so faults
//!   can target COMMITs, writes, DDL, …
//!
//! Nothing here does I/O or depends on tokio; the data path feeds bytes in
//! and forwards the raw frames these modules hand back.

pub mod protocol;
pub mod session;
pub mod sqlstate;
pub mod statement;
