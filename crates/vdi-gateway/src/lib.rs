//! The Space Gateway (`vdi-gateway`): settings store, API v3, tunnels,
//! service tunnel. See `docs/ARCHITECTURE.md` for the map and the layers.
//!
//! Features: `daemon` (default) is the host's daemon: the command line,
//! systemd notifications, and the HA apply path that writes HAProxy's and
//! Keepalived's files and runs their reload commands. Without it (the
//! console's embedded gateway) that path does not exist and `ha_managed`
//! is refused. `testing` adds [`testing`], the harness the tests share.

// The layers (docs/ARCHITECTURE.md): store, paths, tls, ha, units, metrics ->
// relay (splice) -> tunnel -> gateway -> conn -> api, service -> server.
// No module imports from a layer above its own.
mod accept;
mod api;
#[cfg(feature = "daemon")]
pub mod cli;
mod conn;
#[cfg(feature = "daemon")]
mod control;
mod drain;
mod gateway;
mod ha;
pub mod handover;
#[cfg(feature = "daemon")]
mod logging;
mod memory;
mod metrics;
mod paths;
mod relay;
mod server;
mod service;
#[cfg(target_os = "linux")]
mod splice;
mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tls;
mod tunnel;
mod units;

pub use api::openapi;
pub use gateway::{Caller, ChangeError, Closing, Gateway, NotFound, OpenError, Options, Shared};
pub use store::{
    DEFAULT_DB_PATH, Store, StoreError, first_start_settings, host_settings, random_key,
};

use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long shutdown may take before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Start(#[from] ChangeError),
}

/// A running gateway, from [`start`].
pub struct Handle {
    gw: Shared,
    done: tokio::task::JoinHandle<()>,
}

/// Starts a gateway on the settings in `store`: binds every listener and
/// returns once they accept. It runs until [`Handle::stop`] or its
/// [`Handle::shutdown_token`] is cancelled; then every listener, tunnel and
/// stream is closed and waited for (at most [`SHUTDOWN_GRACE`]).
pub async fn start(store: Store, options: Options) -> Result<Handle, ServeError> {
    start_inherited(store, options, None).await
}

/// [`start`], taking over what a previous process handed over (its
/// listeners, tunnels and streams) where there is a handover.
pub async fn start_inherited(
    store: Store,
    options: Options,
    mut inherited: Option<handover::Inherited>,
) -> Result<Handle, ServeError> {
    let settings = store.load()?;
    let shutdown = CancellationToken::new();
    let (gw, bound) = Gateway::new(store, settings, options, shutdown.clone());
    if let Some(inh) = inherited.as_mut() {
        gw.inherit_listeners(inh);
    }
    gw.start().await?;
    if let Some(inh) = inherited {
        let t = std::time::Instant::now();
        let done = gw.restore(inh);
        tracing::info!(
            tunnels = done.tunnels,
            streams = done.streams,
            failed = done.failed,
            restore_ms = t.elapsed().as_millis() as u64,
            "handover: tunnels and streams taken over from the previous process"
        );
    }
    let server = tokio::spawn(server::serve(gw.clone(), bound));
    tokio::spawn(memory::give_back(gw.metrics.clone(), shutdown.clone()));
    let g = gw.clone();
    let done = tokio::spawn(async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down: closing listeners, tunnels and streams");
        if !g.close_all(SHUTDOWN_GRACE).await {
            tracing::warn!(
                "some connections did not close within {SHUTDOWN_GRACE:?}; exiting anyway"
            );
        }
        let _ = server.await;
    });
    Ok(Handle { gw, done })
}

impl Handle {
    pub fn gateway(&self) -> &Shared {
        &self.gw
    }

    /// Cancelling it stops the gateway (the daemon's signal handler does).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.gw.shutdown.clone()
    }

    /// The first address the API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.gw.api_addrs()[0]
    }

    /// `http://` or `https://` and the API's first address.
    pub fn api_url(&self) -> String {
        let scheme = if self.gw.current().ssl {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.api_addr())
    }

    pub fn api_key(&self) -> String {
        self.gw.current().api_key.expose().to_string()
    }

    pub fn cli_key(&self) -> String {
        self.gw.current().cli_key.expose().to_string()
    }

    /// Waits until the gateway has stopped (after its shutdown token fired).
    pub async fn stopped(self) {
        let _ = self.done.await;
    }

    /// Stops the gateway and waits until every socket is closed.
    pub async fn stop(self) {
        self.gw.shutdown.cancel();
        self.stopped().await;
    }
}
