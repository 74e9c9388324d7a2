//! Tauri commands: thin wrappers over `vdi_console::Console`, each with a typed
//! wrapper in `ui/src/api.rs`. Errors reach the page as `{code, message,
//! fields}`. Live data goes through Channels: each `watch_*` command replaces
//! the previous watch of its kind (one-shot reads of the same data are the
//! library's and the CLI's).

use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tauri::State;
use tauri::ipc::Channel;
use tokio_util::sync::CancellationToken;
use vdi_console::Console;
use vdi_wire::console::{ConsoleError, FleetRow, FleetSummary, GatewayDraft, GatewayEntry};
use vdi_wire::{
    ConnectionOpened, Connections, Disconnect, Disconnected, Settings, SettingsChanged,
};

pub(crate) type Res<T> = Result<T, ConsoleError>;

pub struct AppState {
    pub console: Arc<Console>,
    data_dir: PathBuf,
    fleet_watch: Mutex<CancellationToken>,
    connections_watch: Mutex<CancellationToken>,
}

impl AppState {
    pub fn new(console: Arc<Console>, data_dir: PathBuf) -> Self {
        Self {
            console,
            data_dir,
            fleet_watch: Mutex::new(CancellationToken::new()),
            connections_watch: Mutex::new(CancellationToken::new()),
        }
    }

    /// Cancels the previous watch in `slot` and returns the new one's token.
    fn rewatch(slot: &Mutex<CancellationToken>) -> CancellationToken {
        let token = CancellationToken::new();
        let old = std::mem::replace(&mut *slot.lock().unwrap(), token.clone());
        old.cancel();
        token
    }
}

pub fn handler<R: tauri::Runtime>() -> impl Fn(tauri::ipc::Invoke<R>) -> bool + Send + Sync + 'static
{
    tauri::generate_handler![
        app_info,
        fleet_list,
        fleet_add,
        fleet_update,
        fleet_remove,
        watch_fleet,
        gateway_settings,
        change_settings,
        watch_connections,
        disconnect,
        demo_tunnel,
        crate::hosts::services,
        crate::hosts::ssh_reconnects,
        crate::hosts::service_action,
        crate::hosts::rolling_action,
        crate::hosts::trust_host_key,
        crate::hosts::watch_journal,
        crate::hosts::stop_journal,
        crate::hosts::journal_earlier,
        crate::hosts::config_preview,
        crate::hosts::deploy,
        crate::hosts::audit_list,
        crate::hosts::audit_export,
    ]
}

#[derive(Serialize)]
pub struct AppInfo {
    version: &'static str,
    data_dir: String,
    secrets_warning: Option<String>,
}

#[derive(Clone, Serialize)]
pub struct FleetUpdate {
    rows: Vec<FleetRow>,
    summary: FleetSummary,
}

#[derive(Clone, Serialize)]
pub struct ConnectionsUpdate {
    id: i64,
    result: Result<Connections, ConsoleError>,
}

#[tauri::command]
fn app_info(state: State<'_, AppState>) -> AppInfo {
    AppInfo {
        version: env!("CARGO_PKG_VERSION"),
        data_dir: state.data_dir.display().to_string(),
        secrets_warning: state.console.secrets_warning(),
    }
}

#[tauri::command]
fn fleet_list(state: State<'_, AppState>) -> Res<Vec<GatewayEntry>> {
    Ok(state.console.list()?)
}

#[tauri::command]
fn fleet_add(state: State<'_, AppState>, draft: GatewayDraft) -> Res<GatewayEntry> {
    Ok(state.console.add(&draft)?)
}

#[tauri::command]
fn fleet_update(state: State<'_, AppState>, id: i64, draft: GatewayDraft) -> Res<GatewayEntry> {
    Ok(state.console.update(id, &draft)?)
}

#[tauri::command]
fn fleet_remove(state: State<'_, AppState>, id: i64) -> Res<()> {
    Ok(state.console.remove(id)?)
}

/// Pushes the fleet overview now and every `interval` ms until the page
/// subscribes again (or goes away).
#[tauri::command]
fn watch_fleet(
    state: State<'_, AppState>,
    channel: Channel<FleetUpdate>,
    interval: u64,
) -> Res<()> {
    let console = state.console.clone();
    spawn_watch(&state.fleet_watch, channel, interval, move || {
        let console = console.clone();
        async move {
            match console.overview().await {
                Ok((rows, summary)) => FleetUpdate { rows, summary },
                Err(e) => {
                    tracing::warn!(error = %e, "fleet overview failed");
                    FleetUpdate {
                        rows: Vec::new(),
                        summary: FleetSummary::default(),
                    }
                }
            }
        }
    });
    Ok(())
}

/// Sends `next()` on `channel` every `interval` ms (250 ms to 60 s) until
/// the page drops the channel or a newer watch of the same kind (`slot`)
/// replaces this one.
fn spawn_watch<T, F, Fut>(
    slot: &Mutex<CancellationToken>,
    channel: Channel<T>,
    interval: u64,
    mut next: F,
) where
    T: tauri::ipc::IpcResponse + Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let token = AppState::rewatch(slot);
    let every = Duration::from_millis(interval.clamp(250, 60_000));
    tauri::async_runtime::spawn(async move {
        loop {
            let update = next().await;
            if channel.send(update).is_err() {
                return;
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

#[tauri::command]
async fn gateway_settings(state: State<'_, AppState>, id: i64) -> Res<Settings> {
    Ok(state.console.settings(id).await?)
}

#[tauri::command]
async fn change_settings(
    state: State<'_, AppState>,
    id: i64,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Res<SettingsChanged> {
    Ok(state.console.change_settings(id, patch).await?)
}

/// Pushes one gateway's connections now and every `interval` ms.
#[tauri::command]
fn watch_connections(
    state: State<'_, AppState>,
    id: i64,
    channel: Channel<ConnectionsUpdate>,
    interval: u64,
) -> Res<()> {
    let console = state.console.clone();
    spawn_watch(&state.connections_watch, channel, interval, move || {
        let console = console.clone();
        async move {
            let result = console.connections(id).await.map_err(ConsoleError::from);
            ConnectionsUpdate { id, result }
        }
    });
    Ok(())
}

#[tauri::command]
async fn disconnect(
    state: State<'_, AppState>,
    id: i64,
    selector: Disconnect,
) -> Res<Disconnected> {
    Ok(state.console.disconnect(id, &selector).await?)
}

#[tauri::command]
async fn demo_tunnel(state: State<'_, AppState>) -> Res<ConnectionOpened> {
    Ok(state.console.demo_tunnel().await?)
}
