//! Tauri commands for what the console does on gateway hosts over SSH
//! (services, journal, configuration previews, deploy, host keys, audit).
//! One `vdi_console::Console` call each; streams go through Channels.

use crate::commands::{App, Res};
use tauri::ipc::Channel;
use vdi_console::audit::{AuditFilter, AuditRecord};
use vdi_wire::console::{
    ActionOutcome, AuditFormat, ConfigPreview, DeployProgress, DeployReport, JournalEntry,
    JournalEvent, JournalRequest, RebootPlan, ServiceAction, UnitStatus, WatchId,
};

#[tauri::command]
pub async fn services(console: App<'_>, id: i64) -> Res<Vec<UnitStatus>> {
    Ok(console.services(id).await?)
}

/// How many times the SSH connection to gateway `id` was re-established.
#[tauri::command]
pub async fn ssh_reconnects(console: App<'_>, id: i64) -> Res<u32> {
    Ok(console.ssh_reconnects(id).await)
}

#[tauri::command]
pub async fn service_action(
    console: App<'_>,
    id: i64,
    unit: String,
    action: ServiceAction,
) -> Res<ActionOutcome> {
    Ok(console.service_action(id, &unit, action).await?)
}

/// The host's "reboot when empty or after T" plan.
#[tauri::command]
pub async fn reboot_plan(console: App<'_>, id: i64) -> Res<RebootPlan> {
    Ok(console.reboot_plan(id).await?)
}

#[tauri::command]
pub async fn plan_reboot(console: App<'_>, id: i64, after_secs: u64) -> Res<RebootPlan> {
    Ok(console.plan_reboot(id, after_secs).await?)
}

#[tauri::command]
pub async fn cancel_reboot(console: App<'_>, id: i64) -> Res<RebootPlan> {
    Ok(console.cancel_reboot(id).await?)
}

/// One host after the other; each outcome is pushed as it is known.
#[tauri::command]
pub async fn rolling_action(
    console: App<'_>,
    ids: Vec<i64>,
    unit: String,
    action: ServiceAction,
    channel: Channel<ActionOutcome>,
) -> Res<Vec<ActionOutcome>> {
    let each = |o: &ActionOutcome| drop(channel.send(o.clone()));
    Ok(console.rolling_action(&ids, &unit, action, each).await?)
}

#[tauri::command]
pub async fn trust_host_key(
    console: App<'_>,
    id: i64,
    host: String,
    port: u16,
    fingerprint: String,
) -> Res<()> {
    Ok(console
        .trust_host_key(id, &host, port, &fingerprint)
        .await?)
}

/// Async: the watch runs on the app's Tokio runtime.
#[tauri::command]
pub async fn watch_journal(
    console: App<'_>,
    id: i64,
    request: JournalRequest,
    channel: Channel<JournalEvent>,
) -> Res<WatchId> {
    Ok(console.watch_journal(id, &request, move |e| channel.send(e).is_ok())?)
}

#[tauri::command]
pub async fn journal_earlier(
    console: App<'_>,
    id: i64,
    unit: String,
    before_cursor: String,
    lines: u32,
) -> Res<Vec<JournalEntry>> {
    Ok(console
        .journal_earlier(id, &unit, &before_cursor, lines)
        .await?)
}

#[tauri::command]
pub async fn config_preview(console: App<'_>, id: i64, which: String) -> Res<ConfigPreview> {
    Ok(console.config_preview(id, &which).await?)
}

/// Deploys the gateway package this console bundles.
#[tauri::command]
pub async fn deploy(
    console: App<'_>,
    id: i64,
    force: bool,
    channel: Channel<DeployProgress>,
) -> Res<DeployReport> {
    let progress = |p| drop(channel.send(p));
    Ok(console.deploy(id, None, force, None, progress).await?)
}

#[tauri::command]
pub fn audit_list(console: App<'_>, filter: AuditFilter) -> Res<Vec<AuditRecord>> {
    Ok(console.audit_log(&filter)?)
}

/// The filtered log as text (the page saves it).
#[tauri::command]
pub fn audit_export(console: App<'_>, filter: AuditFilter, format: AuditFormat) -> Res<String> {
    Ok(console.audit_export(&filter, format)?)
}
