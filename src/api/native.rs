//! shakedown's own routes, under `/shakedown/v1/` so they never collide
//! with Toxiproxy's, plus `/healthz`.
//!
//! They give a remote controller (the experiment runner driving an agent)
//! what Toxiproxy lacks:
//!
//! - `GET  /shakedown/v1/info`: version, seed, the fault kinds and their
//!   attributes.
//! - `GET  /shakedown/v1/proxies/{p}/stats`: live counters of one proxy.
//! - `POST /shakedown/v1/faults/clear`: remove every fault on every proxy,
//!   leaving proxies as they are (the runner's rollback; `/reset` would also
//!   re-enable disabled proxies).
//! - `PUT  /shakedown/v1/lease` `{"holder": "...", "ttl": ms}`: a dead-man's
//!   switch. While a lease is held, the controller must renew it within
//!   `ttl`; if it does not (it crashed, or the network between them failed),
//!   every fault is removed. `DELETE` releases it. Faults never outlive
//!   their controller.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, Response, StatusCode};
use serde_json::json;
use tokio::time::Instant;
use tracing::warn;

use super::toxiproxy::registry_error;
use super::{ApiState, Body, Call, TOXIPROXY_VERSION, empty, error, json_response, only};
use crate::faults::{Direction, KINDS};
use crate::registry::{Registry, RegistryError};

/// `GET /healthz`: the server is up and answering.
pub fn healthz(state: &ApiState) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &json!({"status": "ok", "proxies": state.registry.list().len()}),
    )
}

/// Dispatches `/shakedown/v1/...`.
pub async fn route(call: &Call, rest: &[&str], state: &ApiState) -> Response<Body> {
    match rest {
        ["info"] => only(call, &[Method::GET], || info(state)),
        ["proxies", p, "stats"] => only(call, &[Method::GET], || stats(state, p)),
        ["faults", "clear"] => only(call, &[Method::POST], || {
            state.registry.clear_all_faults();
            empty(StatusCode::NO_CONTENT)
        }),
        ["lease"] => match call.method {
            Method::PUT => state.leases.take(call, &state.registry),
            Method::GET => state.leases.show(),
            Method::DELETE => state.leases.release(),
            _ => empty(StatusCode::METHOD_NOT_ALLOWED),
        },
        _ => super::text(StatusCode::NOT_FOUND, "404 page not found\n"),
    }
}

fn info(state: &ApiState) -> Response<Body> {
    let kinds: Vec<_> = KINDS
        .iter()
        .map(|(k, attrs)| json!({"kind": k, "attributes": attrs}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "name": "shakedown",
            "version": env!("CARGO_PKG_VERSION"),
            "toxiproxy_version": TOXIPROXY_VERSION,
            "seed": state.registry.seed(),
            "fault_kinds": kinds,
        }),
    )
}

fn stats(state: &ApiState, name: &str) -> Response<Body> {
    let Some(proxy) = state.registry.get(name) else {
        return registry_error(RegistryError::ProxyNotFound);
    };
    let s = proxy.stats();
    let dir = |d: Direction| {
        let x = s.dir(d);
        json!({
            "received_bytes": x.received.load(Ordering::Relaxed),
            "sent_bytes": x.sent.load(Ordering::Relaxed),
        })
    };
    let connect = s.connect_time.snapshot();
    // Times each fault kind became active (a connection direction or a
    // query it acted on): a remote runner tells from these whether a fault
    // fired at all.
    let activations: serde_json::Map<String, serde_json::Value> = KINDS
        .iter()
        .zip(&s.activations)
        .map(|((k, _), n)| (k.to_string(), json!(n.load(Ordering::Relaxed))))
        .collect();
    let mut body = json!({
            "proxy": name,
            "connections_active": s.connections_active.load(Ordering::Relaxed),
            "connections_total": s.connections_total.load(Ordering::Relaxed),
            "connect_errors": s.connect_errors.load(Ordering::Relaxed),
            "connect_count": connect.count,
            "connect_seconds_sum": connect.sum,
            "refused": s.refused.load(Ordering::Relaxed),
            "upstream": dir(Direction::Upstream),
            "downstream": dir(Direction::Downstream),
            "activations": activations,
    });
    // An http proxy's observations since it started (requests by class
    // and route, latencies), for a remote runner.
    if let Some(http) = proxy.http_stats()
        && let Ok(v) = serde_json::to_value(http.snapshot())
    {
        body["http"] = v;
    }
    json_response(StatusCode::OK, &body)
}

#[derive(Debug)]
struct Lease {
    holder: String,
    ttl: Duration,
    expires: Instant,
    generation: u64,
}

/// The controller lease (at most one holder at a time).
#[derive(Debug, Default)]
pub struct Leases {
    inner: Arc<Mutex<(Option<Lease>, u64)>>,
}

impl Leases {
    fn take(&self, call: &Call, registry: &Arc<Registry>) -> Response<Body> {
        let obj = match super::json::object(&call.body, "lease") {
            Ok(o) => o,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad request body: {e}")),
        };
        let holder = super::json::string(&obj, "holder", "lease").ok().flatten();
        let ttl = super::json::integer(&obj, "ttl", "lease").ok().flatten();
        let (Some(holder), Some(ttl)) = (holder.filter(|h| !h.is_empty()), ttl.filter(|t| *t > 0))
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "missing required field: holder (string) and ttl (milliseconds > 0)",
            );
        };
        let ttl = Duration::from_millis(ttl);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = &guard.0
            && l.holder != holder
            && l.expires > Instant::now()
        {
            return error(
                StatusCode::CONFLICT,
                &format!("lease is held by `{}`", l.holder),
            );
        }
        guard.1 += 1;
        let generation = guard.1;
        let expires = Instant::now() + ttl;
        guard.0 = Some(Lease {
            holder: holder.clone(),
            ttl,
            expires,
            generation,
        });
        drop(guard);
        let inner = self.inner.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(expires).await;
            let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
            if guard.0.as_ref().is_some_and(|l| l.generation == generation) {
                let holder = guard.0.take().map(|l| l.holder).unwrap_or_default();
                drop(guard);
                warn!(%holder, "controller lease expired: removing every fault");
                registry.clear_all_faults();
            }
        });
        json_response(
            StatusCode::OK,
            &json!({"holder": holder, "ttl": ttl.as_millis() as u64}),
        )
    }

    fn show(&self) -> Response<Body> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match &guard.0 {
            Some(l) => json_response(
                StatusCode::OK,
                &json!({
                    "holder": l.holder,
                    "ttl": l.ttl.as_millis() as u64,
                    "expires_in": l.expires.saturating_duration_since(Instant::now()).as_millis() as u64,
                }),
            ),
            None => error(StatusCode::NOT_FOUND, "no lease is held"),
        }
    }

    fn release(&self) -> Response<Body> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 = None;
        empty(StatusCode::NO_CONTENT)
    }
}
