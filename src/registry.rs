//! The registry: the live set of proxies and their faults.
//!
//! The control API and the experiment runner change it; the data path reads
//! it. Changing a proxy takes a short control-plane lock; the data path never
//! takes it: connections read faults through the proxy's lock-free
//! [`FaultBoard`](crate::faults::chain::FaultBoard) and are woken on change.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::{Protocol, ProxyConfig};
use crate::faults::FaultSpec;
use crate::faults::chain::ActiveFault;
use crate::faults::random;
use crate::proxy::{self, Listener, ProxyShared, ProxyStats};

/// What went wrong changing the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A proxy with that name exists.
    #[error("proxy already exists")]
    ProxyExists,
    /// No proxy with that name.
    #[error("proxy not found")]
    ProxyNotFound,
    /// A fault with that name exists on the proxy (either direction).
    #[error("toxic already exists")]
    FaultExists,
    /// No fault with that name on the proxy.
    #[error("toxic not found")]
    FaultNotFound,
    /// A PostgreSQL fault on a proxy that does not read PostgreSQL.
    #[error(
        "fault kind {kind} needs a proxy with protocol postgres; this proxy has protocol {protocol}"
    )]
    NeedsPostgres {
        /// The fault's kind.
        kind: &'static str,
        /// The proxy's protocol.
        protocol: &'static str,
    },
    /// An HTTP fault on a proxy that does not read HTTP.
    #[error(
        "fault kind {kind} needs a proxy with protocol http; this proxy has protocol {protocol}"
    )]
    NeedsHttp {
        /// The fault's kind.
        kind: &'static str,
        /// The proxy's protocol.
        protocol: &'static str,
    },
    /// A byte fault on an HTTP proxy, where hyper owns the bytes.
    #[error(
        "fault kind {kind} acts on bytes and does not apply to a proxy with protocol http; use http_latency, http_throttle, http_reset or http_abort"
    )]
    NotForHttp {
        /// The fault's kind.
        kind: &'static str,
    },
    /// The listen address could not be bound (worded as Go words it).
    #[error("listen tcp {}: bind: {}", resolved(listen), go_errno(source))]
    Bind {
        /// The address asked for.
        listen: String,
        /// Why it failed.
        source: io::Error,
    },
}

fn resolved(listen: &str) -> String {
    use std::net::ToSocketAddrs;
    listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map_or_else(|| listen.to_string(), |a| a.to_string())
}

/// The text Go gives for common socket errors (Toxiproxy's clients and
/// tests compare it), else the system's text without the errno suffix.
fn go_errno(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => "address already in use".into(),
        Some(libc::EACCES) => "permission denied".into(),
        Some(libc::EADDRNOTAVAIL) => "cannot assign requested address".into(),
        _ => {
            let text = e.to_string();
            let text = text.split(" (os error").next().unwrap_or(&text);
            text.to_lowercase()
        }
    }
}

/// A proxy's settings as they stand, for listing.
#[derive(Clone, Debug, PartialEq)]
pub struct ProxyInfo {
    /// Unique name.
    pub name: String,
    /// The listen address; once started, the address actually bound.
    pub listen: String,
    /// Where connections go.
    pub upstream: String,
    /// Whether it accepts connections.
    pub enabled: bool,
    /// How it reads the stream.
    pub protocol: Protocol,
}

/// All live proxies.
#[derive(Debug)]
pub struct Registry {
    seed: u64,
    proxies: Mutex<BTreeMap<String, Arc<Proxy>>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    next_uid: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// An empty registry. `seed` seeds every random decision; cancelling
    /// `shutdown` stops every proxy.
    pub fn new(seed: u64, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            seed,
            proxies: Mutex::new(BTreeMap::new()),
            tracker: TaskTracker::new(),
            shutdown,
            next_uid: AtomicU64::new(1),
        })
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The tasks of every listener and connection, to wait on at shutdown.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Creates a proxy with its faults and, if enabled, starts it (the
    /// address is bound before this returns).
    pub fn add_proxy(&self, cfg: &ProxyConfig) -> Result<Arc<Proxy>, RegistryError> {
        let mut proxies = lock(&self.proxies);
        if proxies.contains_key(&cfg.name) {
            return Err(RegistryError::ProxyExists);
        }
        let shared = Arc::new(ProxyShared::new(
            cfg,
            random::proxy_seed(self.seed, &cfg.name),
        ));
        let proxy = Arc::new(Proxy {
            shared,
            state: Mutex::new(ProxyState {
                listen: cfg.listen.clone(),
                upstream: cfg.upstream.clone(),
                enabled: cfg.enabled,
                protocol: cfg.protocol,
                running: None,
            }),
            tracker: self.tracker.clone(),
            shutdown: self.shutdown.clone(),
        });
        for spec in &cfg.faults {
            proxy.add_fault_uid(spec.clone(), self.uid())?;
        }
        if cfg.enabled {
            proxy.start(&mut lock(&proxy.state))?;
        }
        proxies.insert(cfg.name.clone(), proxy.clone());
        Ok(proxy)
    }

    fn uid(&self) -> u64 {
        self.next_uid.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a fault to a proxy; fails if the name is taken in either direction.
    pub fn add_fault(&self, proxy: &str, spec: FaultSpec) -> Result<(), RegistryError> {
        self.add_fault_with_ttl(proxy, spec, None)
    }

    /// Adds a fault that removes itself after `ttl` (if given): a client
    /// that crashes cannot leave it behind.
    pub fn add_fault_with_ttl(
        &self,
        proxy: &str,
        spec: FaultSpec,
        ttl: Option<Duration>,
    ) -> Result<(), RegistryError> {
        let p = self.get(proxy).ok_or(RegistryError::ProxyNotFound)?;
        let name = spec.name.clone();
        p.add_fault_uid(spec, self.uid())?;
        if let Some(ttl) = ttl {
            p.set_fault_ttl(&name, Some(ttl))?;
        }
        Ok(())
    }

    /// Creates a proxy, or, if one of that name exists with the same listen
    /// address and upstream, keeps it untouched (its faults and connections
    /// too); otherwise the old one is stopped and replaced. Toxiproxy's
    /// `/populate` rule.
    pub fn add_or_replace(&self, cfg: &ProxyConfig) -> Result<Arc<Proxy>, RegistryError> {
        if let Some(existing) = self.get(&cfg.name) {
            let unchanged = {
                let st = lock(&existing.state);
                same_listen(&cfg.listen, &st)
                    && cfg.upstream == st.upstream
                    && cfg.protocol == st.protocol
            };
            if unchanged {
                return Ok(existing);
            }
            self.remove_proxy(&cfg.name)?;
        }
        self.add_proxy(cfg)
    }

    /// The proxy of that name.
    pub fn get(&self, name: &str) -> Option<Arc<Proxy>> {
        lock(&self.proxies).get(name).cloned()
    }

    /// Every proxy, sorted by name.
    pub fn list(&self) -> Vec<Arc<Proxy>> {
        lock(&self.proxies).values().cloned().collect()
    }

    /// Stops and forgets a proxy; its connections are closed.
    pub fn remove_proxy(&self, name: &str) -> Result<(), RegistryError> {
        let proxy = lock(&self.proxies)
            .remove(name)
            .ok_or(RegistryError::ProxyNotFound)?;
        proxy.stop(&mut lock(&proxy.state));
        Ok(())
    }

    /// Removes every fault from every proxy and starts every proxy again
    /// (Toxiproxy's `/reset`).
    pub fn reset(&self) -> Result<(), RegistryError> {
        for proxy in self.list() {
            proxy.clear_faults();
            let mut st = lock(&proxy.state);
            st.enabled = true;
            if st.running.is_none() {
                proxy.start(&mut st)?;
            }
        }
        Ok(())
    }

    /// Removes every fault everywhere: the fail-open path when a run ends.
    pub fn clear_all_faults(&self) {
        for proxy in self.list() {
            proxy.clear_faults();
        }
    }

    /// Stops every proxy and closes every connection.
    pub fn shutdown(&self) {
        for proxy in self.list() {
            proxy.stop(&mut lock(&proxy.state));
        }
        self.tracker.close();
    }
}

#[derive(Debug)]
struct ProxyState {
    listen: String,
    upstream: String,
    enabled: bool,
    protocol: Protocol,
    running: Option<Listener>,
}

/// One live proxy.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<ProxyShared>,
    state: Mutex<ProxyState>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Proxy {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Its settings as they stand.
    pub fn info(&self) -> ProxyInfo {
        let st = lock(&self.state);
        ProxyInfo {
            name: self.shared.name.clone(),
            listen: st.listen.clone(),
            upstream: st.upstream.clone(),
            enabled: st.enabled,
            protocol: st.protocol,
        }
    }

    /// The bound address while it runs.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        lock(&self.state).running.as_ref().map(|l| l.local_addr)
    }

    /// Live counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// Observations of a postgres proxy (all zero for other protocols).
    pub fn pg_stats(&self) -> &crate::observe::pg::PgStats {
        &self.shared.pg
    }

    /// Observations of an http proxy (`None` for other protocols): the
    /// experiment runner reads `http_stats()?.window(from, to)`.
    pub fn http_stats(&self) -> Option<&crate::observe::http::HttpStats> {
        self.shared.http.as_deref().map(|h| &h.stats)
    }

    /// Changes any of listen, upstream, enabled. A new listen or upstream
    /// restarts the proxy (its connections are closed), as in Toxiproxy.
    pub fn update(
        &self,
        listen: Option<String>,
        upstream: Option<String>,
        enabled: Option<bool>,
    ) -> Result<ProxyInfo, RegistryError> {
        {
            let mut st = lock(&self.state);
            let new_listen = listen.filter(|l| !same_listen(l, &st));
            let new_upstream = upstream.filter(|u| *u != st.upstream);
            if new_listen.is_some() || new_upstream.is_some() {
                self.stop(&mut st);
                if let Some(l) = new_listen {
                    st.listen = l;
                }
                if let Some(u) = new_upstream {
                    self.shared.upstream.store(Arc::new(u.clone()));
                    st.upstream = u;
                }
            }
            if let Some(e) = enabled {
                st.enabled = e;
            }
            if st.enabled && st.running.is_none() {
                self.start(&mut st)?;
            } else if !st.enabled {
                self.stop(&mut st);
            }
        }
        Ok(self.info())
    }

    /// Enables (binds and accepts) or disables (closes the listener and
    /// every connection; faults stay configured).
    pub fn set_enabled(&self, enabled: bool) -> Result<(), RegistryError> {
        self.update(None, None, Some(enabled)).map(|_| ())
    }

    fn start(&self, st: &mut ProxyState) -> Result<(), RegistryError> {
        let listener = proxy::bind(&st.listen).map_err(|source| RegistryError::Bind {
            listen: st.listen.clone(),
            source,
        })?;
        let token = self.shutdown.child_token();
        let running = proxy::start(listener, self.shared.clone(), &self.tracker, token).map_err(
            |source| RegistryError::Bind {
                listen: st.listen.clone(),
                source,
            },
        )?;
        st.listen = running.local_addr.to_string();
        info!(proxy = %self.shared.name, listen = %st.listen, upstream = %st.upstream, "started proxy");
        st.running = Some(running);
        st.enabled = true;
        Ok(())
    }

    fn stop(&self, st: &mut ProxyState) {
        if let Some(running) = st.running.take() {
            running.close();
            info!(proxy = %self.shared.name, "stopped proxy");
        }
    }

    fn add_fault_uid(&self, spec: FaultSpec, uid: u64) -> Result<(), RegistryError> {
        if spec.fault.is_postgres() && self.shared.protocol != Protocol::Postgres {
            return Err(RegistryError::NeedsPostgres {
                kind: spec.fault.kind(),
                protocol: self.shared.protocol.as_str(),
            });
        }
        if spec.fault.is_http() && self.shared.protocol != Protocol::Http {
            return Err(RegistryError::NeedsHttp {
                kind: spec.fault.kind(),
                protocol: self.shared.protocol.as_str(),
            });
        }
        if self.shared.protocol == Protocol::Http && !spec.fault.applies_to_http() {
            return Err(RegistryError::NotForHttp {
                kind: spec.fault.kind(),
            });
        }
        self.shared.board.update(|set| {
            if set.iter().any(|f| f.spec.name == spec.name) {
                return Err(RegistryError::FaultExists);
            }
            info!(proxy = %self.shared.name, fault = %spec.name, kind = spec.fault.kind(), direction = %spec.direction, "fault added");
            set.direction_mut(spec.direction)
                .push(Arc::new(ActiveFault {
                    uid,
                    spec,
                    expires: None,
                    hits: Default::default(),
                }));
            Ok(())
        })
    }

    /// Changes a fault in place (attributes, toxicity); live connections keep
    /// its state. The name and direction cannot change.
    pub fn update_fault(
        &self,
        name: &str,
        change: impl FnOnce(&mut FaultSpec),
    ) -> Result<FaultSpec, RegistryError> {
        self.shared.board.update(|set| {
            for dir in crate::faults::Direction::BOTH {
                let chain = set.direction_mut(dir);
                if let Some(slot) = chain.iter_mut().find(|f| f.spec.name == name) {
                    let mut spec = slot.spec.clone();
                    change(&mut spec);
                    spec.name = slot.spec.name.clone();
                    spec.direction = slot.spec.direction;
                    *slot = Arc::new(ActiveFault {
                        uid: slot.uid,
                        spec: spec.clone(),
                        expires: slot.expires,
                        hits: slot.hits.clone(),
                    });
                    return Ok(spec);
                }
            }
            Err(RegistryError::FaultNotFound)
        })
    }

    /// Removes a fault; what it held on live connections is flushed.
    pub fn remove_fault(&self, name: &str) -> Result<FaultSpec, RegistryError> {
        self.shared.board.update(|set| {
            for dir in crate::faults::Direction::BOTH {
                let chain = set.direction_mut(dir);
                if let Some(i) = chain.iter().position(|f| f.spec.name == name) {
                    let f = chain.remove(i);
                    info!(proxy = %self.shared.name, fault = %name, "fault removed");
                    return Ok(f.spec.clone());
                }
            }
            Err(RegistryError::FaultNotFound)
        })
    }

    /// Sets or clears a fault's time to live, counted from now. A timer
    /// removes it when the time comes, unless the TTL was changed since.
    pub fn set_fault_ttl(&self, name: &str, ttl: Option<Duration>) -> Result<(), RegistryError> {
        let expires = ttl.map(|t| Instant::now() + t);
        let uid = self.shared.board.update(|set| {
            for dir in crate::faults::Direction::BOTH {
                if let Some(slot) = set
                    .direction_mut(dir)
                    .iter_mut()
                    .find(|f| f.spec.name == name)
                {
                    *slot = Arc::new(ActiveFault {
                        uid: slot.uid,
                        spec: slot.spec.clone(),
                        expires,
                        hits: slot.hits.clone(),
                    });
                    return Ok(slot.uid);
                }
            }
            Err(RegistryError::FaultNotFound)
        })?;
        if let Some(at) = expires {
            let shared = self.shared.clone();
            let name = name.to_string();
            let token = self.shutdown.clone();
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep_until(at) => {}
                }
                let removed = shared.board.update(|set| {
                    for dir in crate::faults::Direction::BOTH {
                        let chain = set.direction_mut(dir);
                        if let Some(i) = chain
                            .iter()
                            .position(|f| f.uid == uid && f.expires == Some(at))
                        {
                            chain.remove(i);
                            return true;
                        }
                    }
                    false
                });
                if removed {
                    info!(proxy = %shared.name, fault = %name, "fault expired (ttl)");
                }
            });
        }
        Ok(())
    }

    /// Every fault with when it expires (if it has a TTL), in list order.
    pub fn faults_with_expiry(&self) -> Vec<(FaultSpec, Option<Instant>)> {
        self.shared
            .board
            .snapshot()
            .iter()
            .map(|f| (f.spec.clone(), f.expires))
            .collect()
    }

    /// One fault by name.
    pub fn fault(&self, name: &str) -> Option<FaultSpec> {
        self.shared
            .board
            .snapshot()
            .iter()
            .find(|f| f.spec.name == name)
            .map(|f| f.spec.clone())
    }

    /// Every fault: upstream chain then downstream, each in creation order.
    pub fn faults(&self) -> Vec<FaultSpec> {
        self.shared
            .board
            .snapshot()
            .iter()
            .map(|f| f.spec.clone())
            .collect()
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        if !self.shared.board.snapshot().is_empty() {
            self.shared.board.update(|set| {
                set.upstream.clear();
                set.downstream.clear();
            });
        }
    }
}

fn same_listen(new: &str, st: &ProxyState) -> bool {
    if new == st.listen {
        return true;
    }
    // Compare resolved addresses, so `localhost:p` matches `127.0.0.1:p`
    // (Toxiproxy 2.12's `Differs`).
    use std::net::ToSocketAddrs;
    let resolve = |s: &str| s.to_socket_addrs().ok().and_then(|mut a| a.next());
    match (resolve(new), st.listen.parse::<SocketAddr>().ok()) {
        (Some(a), Some(b)) => a == b && b.port() != 0,
        _ => false,
    }
}
