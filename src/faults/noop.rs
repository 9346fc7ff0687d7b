//! `noop`: passes data through. Toxiproxy registers it as a real type, and
//! clients create it in tests, so it is accepted here too.

use serde::{Deserialize, Serialize};

/// No attributes; serialised as `{}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Noop {}
