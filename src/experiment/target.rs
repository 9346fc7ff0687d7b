//! The targets of a run: proxies in this process (through the registry),
//! or on a remote `shakedown serve` agent (through its control API, with a
//! TTL on every fault so that a runner killed mid-run cannot leave one
//! behind).

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::recorder::Summary;
use super::spec::Target;
use crate::config::{Protocol, ProxyConfig};
use crate::ctl::{Api, ApiToken};
use crate::faults::{FaultSpec, KINDS};
use crate::observe::http::HttpWindow;
use crate::observe::pg::{LatencySummary, PgWindow};
use crate::registry::{Proxy, Registry};

/// Extra life given to a remote fault beyond its planned end: the runner
/// removes it on time; the TTL only matters if the runner dies.
pub const REMOTE_TTL_MARGIN: Duration = Duration::from_secs(10);

/// How long an agent waits for the runner's next lease renewal before it
/// removes every fault by itself (the runner was killed, or the network
/// between them failed).
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the runner renews its lease: several renewals fit in one
/// TTL, so a slow request or two never lets it lapse.
const LEASE_RENEW: Duration = Duration::from_secs(2);

/// Just under the stores' one-second resolution: see [`Handle::observed`].
const WINDOW_SKIP: Duration = Duration::from_millis(999);

/// A target's own observations over a window, as the same [`Summary`] a
/// load or probe gives (so SLOs read every source alike): operations are
/// queries (postgres) or requests (http); failed ones are an ErrorResponse
/// to a query (not the FATALs that refuse sessions at startup), or a 5xx,
/// a 502/504 of the proxy's own, or a response cut by a reset.
fn summary(
    ops: u64,
    failed: u64,
    seconds: u64,
    latency: &LatencySummary,
    mut errors: Vec<(String, u64)>,
) -> Summary {
    errors.retain(|(_, n)| *n > 0);
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    Summary {
        ops,
        errors: failed.min(ops),
        p50: latency.p50_seconds,
        p95: latency.p95_seconds,
        p99: latency.p99_seconds,
        max: latency.max_seconds,
        seconds: seconds as f64,
        errors_by_class: errors,
        ..Summary::default()
    }
}

fn pg_summary(w: &PgWindow) -> Summary {
    let c = &w.counts;
    let failed = c.errors.total().saturating_sub(c.sessions_rejected.total());
    let errors = c
        .errors_by_sqlstate
        .iter()
        .map(|e| {
            (
                format!("sqlstate {} ({})", e.sqlstate, e.source.as_str()),
                e.count,
            )
        })
        .collect();
    summary(c.queries_total, failed, w.seconds, &c.latency, errors)
}

fn http_summary(w: &HttpWindow) -> Summary {
    let c = &w.counts.all;
    let class = |k: &str| c.by_class.get(k).copied().unwrap_or(0);
    let errors = vec![
        ("status 5xx".to_string(), class("5xx")),
        ("proxy 502/504".to_string(), class("error")),
        ("injected".to_string(), class("injected")),
        ("reset".to_string(), c.resets),
    ];
    summary(c.requests, c.errors, w.seconds, &c.latency, errors)
}

/// The agents' API token, from `SHAKEDOWN_API_TOKEN`.
fn agent_token() -> Option<ApiToken> {
    std::env::var("SHAKEDOWN_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(|s| s.parse::<ApiToken>().unwrap_or_else(|e| match e {}))
}

/// Holds the controller lease of `agent` (`/shakedown/v1/lease`) until
/// `stop`, then releases it: a dead-man's switch on top of every remote
/// fault's TTL. An agent that refuses the lease (another controller holds
/// it, or it is a Toxiproxy) is logged once; the TTLs still apply.
pub async fn keep_lease(agent: String, holder: String, stop: CancellationToken) {
    let Ok(api) = Api::new(&agent, agent_token()) else {
        return;
    };
    let body = json!({"holder": holder, "ttl": LEASE_TTL.as_millis() as u64});
    let path = ["shakedown", "v1", "lease"];
    let mut warned = false;
    let mut held = false;
    loop {
        match api.call(Method::PUT, &path, Some(&body)).await {
            Ok(_) => held = true,
            Err(e) if !warned => {
                warn!(%agent, error = %e, "cannot hold the agent's controller lease; relying on fault TTLs");
                warned = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(LEASE_RENEW) => {}
        }
    }
    if held {
        let _ = api.call(Method::DELETE, &path, None).await;
    }
}

/// A target, started.
pub enum Handle {
    /// A proxy of this process.
    Local(Arc<Proxy>),
    /// A proxy on an agent, by name.
    Remote {
        /// The agent's API (boxed: a pooled client is large).
        api: Box<Api>,
        /// The agent's base URL (for messages).
        agent: String,
        /// The proxy's name there.
        name: String,
    },
}

impl Handle {
    /// Starts a target: a proxy in `registry`, or on its agent.
    pub async fn start(t: &Target, registry: &Registry) -> Result<Handle, String> {
        match &t.agent {
            None => {
                let mut cfg = ProxyConfig::new(&t.name, &t.listen, &t.upstream);
                cfg.protocol = t.protocol;
                cfg.tls = t.tls;
                cfg.connect_timeout = t.connect_timeout;
                cfg.request_timeout = t.request_timeout;
                cfg.header_faults = t.header_faults;
                registry
                    .add_proxy(&cfg)
                    .map(Handle::Local)
                    .map_err(|e| format!("target `{}`: {e}", t.name))
            }
            Some(agent) => {
                let api = Api::new(agent, agent_token())
                    .map_err(|e| format!("target `{}`: {e}", t.name))?;
                let mut body = json!({
                    "name": t.name,
                    "listen": t.listen,
                    "upstream": t.upstream,
                    "enabled": true,
                });
                if t.protocol != Protocol::Tcp {
                    body["protocol"] = json!(t.protocol.as_str());
                }
                if t.protocol == Protocol::Http {
                    body["request_timeout"] = json!(t.request_timeout.as_millis() as u64);
                    body["header_faults"] = json!(t.header_faults);
                }
                api.call(Method::POST, &["proxies"], Some(&body))
                    .await
                    .map_err(|e| format!("target `{}` on agent {agent}: {e}", t.name))?;
                Ok(Handle::Remote {
                    api: Box::new(api),
                    agent: agent.clone(),
                    name: t.name.clone(),
                })
            }
        }
    }

    /// Applies a fault until about `until` (remote faults get a TTL to
    /// then, plus a margin).
    pub async fn apply(
        &self,
        registry: &Registry,
        spec: &FaultSpec,
        until: Instant,
    ) -> Result<(), String> {
        match self {
            Handle::Local(p) => registry
                .add_fault(p.name(), spec.clone())
                .map_err(|e| format!("fault `{}` on `{}`: {e}", spec.name, p.name())),
            Handle::Remote { api, agent, name } => {
                let ttl = until.saturating_duration_since(Instant::now()) + REMOTE_TTL_MARGIN;
                let body = json!({
                    "name": spec.name,
                    "type": spec.fault.kind(),
                    "stream": spec.direction.as_str(),
                    "toxicity": spec.toxicity,
                    "attributes": spec.fault.attributes(),
                    "ttl": ttl.as_millis() as u64,
                });
                api.call(Method::POST, &["proxies", name, "toxics"], Some(&body))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("fault `{}` on `{name}` at {agent}: {e}", spec.name))
            }
        }
    }

    /// Removes a fault; one that is already gone is not an error.
    pub async fn remove(&self, fault: &str) -> Result<(), String> {
        match self {
            Handle::Local(p) => {
                let _ = p.remove_fault(fault);
                Ok(())
            }
            Handle::Remote { api, agent, name } => {
                match api
                    .call(Method::DELETE, &["proxies", name, "toxics", fault], None)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(crate::ctl::CallError::Status { status: 404, .. }) => Ok(()),
                    Err(e) => Err(format!("removing `{fault}` from `{name}` at {agent}: {e}")),
                }
            }
        }
    }

    /// Removes the target's proxy (remote) or stops it (local).
    pub async fn stop(&self, registry: &Registry) {
        match self {
            Handle::Local(p) => {
                let _ = registry.remove_proxy(p.name());
            }
            Handle::Remote { api, name, .. } => {
                let _ = api.call(Method::DELETE, &["proxies", name], None).await;
            }
        }
    }

    /// Times faults of `kind` became active on this target, from the
    /// proxy's counters (remote: its `/shakedown/v1/proxies/{p}/stats`).
    /// `None` when they cannot be read (a Toxiproxy agent has no such
    /// route).
    pub async fn activations(&self, kind: &str) -> Option<u64> {
        match self {
            Handle::Local(p) => KINDS
                .iter()
                .position(|(k, _)| *k == kind)
                .map(|i| p.stats().activations[i].load(std::sync::atomic::Ordering::Relaxed)),
            Handle::Remote { api, name, .. } => {
                let body = api
                    .call(
                        Method::GET,
                        &["shakedown", "v1", "proxies", name, "stats"],
                        None,
                    )
                    .await
                    .ok()?;
                let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
                v.get("activations")?.get(kind)?.as_u64()
            }
        }
    }

    /// What a local postgres or http target observed in a window: its
    /// queries or requests.
    ///
    /// The stores keep whole seconds, and a window counts from the second
    /// holding `from`; that second also holds what happened just before
    /// `from` (the end of the previous phase). So the window starts at the
    /// first second wholly inside it: up to a second is left out, but
    /// nothing of a neighbouring phase is counted in.
    pub fn observed(&self, from: Instant, to: Instant) -> Option<Summary> {
        let Handle::Local(p) = self else {
            return None;
        };
        let from = (from + WINDOW_SKIP).min(to).into_std();
        let to = to.into_std();
        match p.info().protocol {
            Protocol::Postgres => Some(pg_summary(&p.pg_stats().window(from, to))),
            Protocol::Http => p.http_stats().map(|h| http_summary(&h.window(from, to))),
            Protocol::Tcp => None,
        }
    }
}
