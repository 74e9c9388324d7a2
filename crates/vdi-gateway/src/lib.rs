//! The Space Gateway daemon (`vdi-gateway`): settings store, API v3, tunnels,
//! service tunnel. See `docs/ARCHITECTURE.md` for the map.

pub mod api;
pub mod cli;
pub mod ha;
pub mod logging;
pub mod metrics;
pub mod relay;
pub mod server;
pub mod service;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod state;
pub mod store;
pub mod tls;
pub mod tunnel;
pub mod units;

pub use state::{Gateway, Shared};
pub use store::Store;

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long shutdown may take before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Start(#[from] state::ChangeError),
}

/// Runs a gateway until `shutdown` is cancelled: binds every listener, calls
/// `ready` (the daemon sends READY=1 there), then waits; on shutdown, closes
/// every listener, tunnel and stream and waits for them (bounded).
pub async fn run(
    store: Store,
    shutdown: CancellationToken,
    ready: impl FnOnce(&Shared),
) -> Result<(), ServeError> {
    let settings = store.load()?;
    let gw = Gateway::new(store, settings, shutdown.clone());
    gw.start().await?;
    ready(&gw);
    shutdown.cancelled().await;
    tracing::info!("shutting down: closing listeners, tunnels and streams");
    gw.tasks.close();
    let all_closed = async {
        let closing: Vec<_> = gw.tunnels.all();
        futures_util::future::join_all(closing.iter().map(|t| t.close())).await;
        gw.tasks.wait().await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, all_closed)
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    Ok(())
}
