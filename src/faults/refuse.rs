//! `refuse`: new connections are reset at once, as by a host whose service is
//! down or a firewall that rejects; connections already open carry on.
//!
//! It acts when a connection is accepted (see `proxy::session`), drawn with
//! the fault's toxicity per connection, so `toxicity = 0.3` refuses about a
//! third of new connections. Its direction is irrelevant.

use serde::{Deserialize, Serialize};

/// No attributes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Refuse {}
