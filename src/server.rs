//! `shakedown serve`: start every proxy of a config and the control API,
//! run until told to stop, then stop accepting, close connections and wait
//! for them (bounded).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, ApiState, Secret};
use crate::config::ServeConfig;
use crate::registry::Registry;

/// How long shutdown waits for connections to finish closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Options of `serve` besides the config.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Host (name or address) the control API listens on.
    pub api_host: String,
    /// Port of the control API (0 picks a free one).
    pub api_port: u16,
    /// Bearer token required on mutating API requests.
    pub api_token: Option<String>,
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
            .add_or_replace(p)
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
    info!(
        seed = opts.seed,
        proxies = config.proxies.len(),
        "starting shakedown"
    );
    // Proxies first, then the API, as Toxiproxy does: a client that sees
    // the API port open finds every configured proxy listening.
    let registry = start(&config, opts.seed, shutdown.clone())?;
    let api_listener = match TcpListener::bind((opts.api_host.as_str(), opts.api_port)).await {
        Ok(l) => l,
        Err(e) => {
            registry.shutdown();
            return Err(anyhow::Error::new(e).context(format!(
                "control API: cannot listen on {}:{}",
                opts.api_host, opts.api_port
            )));
        }
    };
    let state = ApiState::new(registry.clone(), opts.api_token.map(Secret::new));
    let api_task = tokio::spawn(api::serve(api_listener, state, shutdown.clone()));
    shutdown.cancelled().await;
    info!("shutting down");
    registry.shutdown();
    let _ = api_task.await;
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
