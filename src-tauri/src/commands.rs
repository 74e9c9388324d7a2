//! Tauri commands: one `vdi_console::Console` call each, with a typed wrapper
//! in `ui/src/api.rs`. Errors reach the page as `{code, message, fields}`.
//! Live data goes through Channels: each `watch_*` command returns a
//! [`WatchId`] that `unwatch` ends (a newer watch of the same kind ends the
//! older one too).

use std::sync::Arc;
use tauri::State;
use tauri::ipc::Channel;
use vdi_console::Console;
use vdi_wire::console::{
    AppInfo, ClusterState, ConnectionsUpdate, ConsoleError, DemoState, FleetUpdate, GatewayDraft,
    GatewayEntry, UiState, WatchId,
};
use vdi_wire::{ConnectionOpened, Disconnect, Disconnected, DrainState, Settings, SettingsChanged};

pub(crate) type Res<T> = Result<T, ConsoleError>;
pub(crate) type App<'a> = State<'a, Arc<Console>>;

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
        unwatch,
        disconnect,
        set_draining,
        demo_tunnel,
        demo_state,
        stop_demo,
        cluster_state,
        start_cluster,
        stop_cluster,
        ui_state,
        save_ui_state,
        crate::hosts::services,
        crate::hosts::ssh_reconnects,
        crate::hosts::service_action,
        crate::hosts::reboot_plan,
        crate::hosts::plan_reboot,
        crate::hosts::cancel_reboot,
        crate::hosts::rolling_action,
        crate::bulk::plan_bulk_change,
        crate::bulk::apply_bulk_change,
        crate::bulk::rolling_maintenance,
        crate::hosts::trust_host_key,
        crate::hosts::watch_journal,
        crate::hosts::journal_earlier,
        crate::hosts::config_preview,
        crate::hosts::deploy,
        crate::hosts::audit_list,
        crate::hosts::audit_export,
    ]
}

#[tauri::command]
fn app_info(console: App<'_>) -> AppInfo {
    console.app_info()
}

#[tauri::command]
fn fleet_list(console: App<'_>) -> Res<Vec<GatewayEntry>> {
    Ok(console.list()?)
}

#[tauri::command]
fn fleet_add(console: App<'_>, draft: GatewayDraft) -> Res<GatewayEntry> {
    Ok(console.add(&draft)?)
}

#[tauri::command]
fn fleet_update(console: App<'_>, id: i64, draft: GatewayDraft) -> Res<GatewayEntry> {
    Ok(console.update(id, &draft)?)
}

#[tauri::command]
fn fleet_remove(console: App<'_>, id: i64) -> Res<()> {
    Ok(console.remove(id)?)
}

/// Async: the watch runs on the app's Tokio runtime.
#[tauri::command]
async fn watch_fleet(
    console: App<'_>,
    channel: Channel<FleetUpdate>,
    interval: u64,
) -> Res<WatchId> {
    Ok(console.watch_fleet(interval, move |u| channel.send(u).is_ok()))
}

#[tauri::command]
async fn gateway_settings(console: App<'_>, id: i64) -> Res<Settings> {
    Ok(console.settings(id).await?)
}

#[tauri::command]
async fn change_settings(
    console: App<'_>,
    id: i64,
    patch: serde_json::Map<String, serde_json::Value>,
) -> Res<SettingsChanged> {
    Ok(console.change_settings(id, patch).await?)
}

#[tauri::command]
async fn watch_connections(
    console: App<'_>,
    id: i64,
    channel: Channel<ConnectionsUpdate>,
    interval: u64,
) -> Res<WatchId> {
    Ok(console.watch_connections(id, interval, move |u| channel.send(u).is_ok()))
}

/// Ends a watch; false when it had ended already.
#[tauri::command]
fn unwatch(console: App<'_>, watch: WatchId) -> bool {
    console.unwatch(watch)
}

#[tauri::command]
async fn disconnect(console: App<'_>, id: i64, selector: Disconnect) -> Res<Disconnected> {
    Ok(console.disconnect(id, &selector).await?)
}

#[tauri::command]
async fn set_draining(console: App<'_>, id: i64, on: bool) -> Res<DrainState> {
    Ok(console.set_draining(id, on).await?)
}

#[tauri::command]
async fn demo_tunnel(console: App<'_>) -> Res<ConnectionOpened> {
    Ok(console.demo_tunnel().await?)
}

#[tauri::command]
fn demo_state(console: App<'_>) -> DemoState {
    console.demo_state()
}

#[tauri::command]
fn cluster_state(console: App<'_>) -> ClusterState {
    console.cluster_state()
}

/// Async: the bring-up is spawned on the runtime this runs on.
#[tauri::command]
async fn start_cluster(console: App<'_>) -> Res<ClusterState> {
    Ok(console.inner().start_cluster())
}

#[tauri::command]
async fn stop_cluster(console: App<'_>) -> Res<ClusterState> {
    Ok(console.stop_cluster().await)
}

#[tauri::command]
fn ui_state(console: App<'_>) -> UiState {
    console.ui_state()
}

#[tauri::command]
fn save_ui_state(console: App<'_>, state: UiState) -> Res<()> {
    Ok(console.save_ui_state(&state)?)
}

#[tauri::command]
async fn stop_demo(console: App<'_>) -> Res<DemoState> {
    Ok(console.stop_demo().await?)
}
