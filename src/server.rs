//! `shakedown serve`: start every proxy of a config and run until told to
//! stop, then stop accepting, close connections and wait for them (bounded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::ServeConfig;
use crate::registry::Registry;

/// How long shutdown waits for connections to finish closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Options of `serve` besides the config.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Where the control API listens (reserved: the API is a later step).
    pub api_addr: SocketAddr,
    /// Seed of every random decision.
    pub seed: u64,
}

/// Starts every proxy of `config` in a new registry. Returns once every
/// listener is bound, so callers (and tests) know the proxies are ready.
pub fn start(
    config: &ServeConfig,
    seed: u64,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<Registry>> {
    let registry = Registry::new(seed, shutdown);
    for p in &config.proxies {
        registry
            .add_proxy(p)
            .with_context(|| format!("starting proxy `{}`", p.name))?;
        if !p.enabled {
            info!(proxy = %p.name, "proxy configured but disabled");
        }
    }
    Ok(registry)
}

/// Runs until `shutdown` is cancelled, then closes everything.
pub async fn run(
    config: ServeConfig,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    info!(seed = opts.seed, api = %opts.api_addr, proxies = config.proxies.len(), "starting shakedown");
    let registry = start(&config, opts.seed, shutdown.clone())?;
    shutdown.cancelled().await;
    info!("shutting down");
    registry.shutdown();
    if tokio::time::timeout(SHUTDOWN_GRACE, registry.tracker().wait())
        .await
        .is_err()
    {
        warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; exiting anyway");
    }
    Ok(())
}

/// Cancels `token` on SIGINT or SIGTERM.
pub async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    token.cancel();
}
