//! Tauri commands for what the console does on gateway hosts over SSH
//! (services, journal, configuration previews, deploy, host keys, audit).
//! Thin wrappers over `vdi_console::Console`; streams go through Channels.

use crate::commands::{AppState, Res};
use std::sync::Mutex;
use tauri::State;
use tauri::ipc::Channel;
use tokio_util::sync::CancellationToken;
use vdi_console::audit::{AuditFilter, AuditRecord};
use vdi_console::journal::Query;
use vdi_wire::console::{
    ActionOutcome, ConfigPreview, ConsoleError, DeployProgress, DeployReport, JournalEntry,
    JournalEvent, ServiceAction, UnitStatus,
};

/// The running journal watch (one at a time, like the other watches).
#[derive(Default)]
pub struct JournalWatch(Mutex<CancellationToken>);

#[tauri::command]
pub async fn services(state: State<'_, AppState>, id: i64) -> Res<Vec<UnitStatus>> {
    Ok(state.console.services(id).await?)
}

/// How many times the SSH connection to gateway `id` was re-established.
#[tauri::command]
pub async fn ssh_reconnects(state: State<'_, AppState>, id: i64) -> Res<u32> {
    Ok(state.console.ssh_reconnects(id).await)
}

#[tauri::command]
pub async fn service_action(
    state: State<'_, AppState>,
    id: i64,
    unit: String,
    action: ServiceAction,
) -> Res<ActionOutcome> {
    Ok(state.console.service_action(id, &unit, action).await?)
}

/// One host after the other; each outcome is pushed as it is known.
#[tauri::command]
pub async fn rolling_action(
    state: State<'_, AppState>,
    ids: Vec<i64>,
    unit: String,
    action: ServiceAction,
    channel: Channel<ActionOutcome>,
) -> Res<Vec<ActionOutcome>> {
    Ok(state
        .console
        .rolling_action(&ids, &unit, action, |o| {
            let _ = channel.send(o.clone());
        })
        .await?)
}

#[tauri::command]
pub async fn trust_host_key(
    state: State<'_, AppState>,
    id: i64,
    host: String,
    port: u16,
    fingerprint: String,
) -> Res<()> {
    Ok(state
        .console
        .trust_host_key(id, &host, port, &fingerprint)
        .await?)
}

#[allow(clippy::too_many_arguments)]
#[tauri::command]
pub fn watch_journal(
    state: State<'_, AppState>,
    watch: State<'_, JournalWatch>,
    id: i64,
    unit: String,
    lines: u32,
    priority: Option<u8>,
    since: Option<String>,
    until: Option<String>,
    channel: Channel<JournalEvent>,
) -> Res<()> {
    let q = Query {
        unit: vdi_console::unit(&unit)?,
        lines: lines.min(100_000),
        priority,
        since: since.filter(|s| !s.trim().is_empty()),
        until: until.filter(|s| !s.trim().is_empty()),
        after_cursor: None,
    };
    q.validate()
        .map_err(|m| vdi_console::Error::invalid("journal", m))?;
    let token = CancellationToken::new();
    std::mem::replace(&mut *watch.0.lock().unwrap(), token.clone()).cancel();
    let console = state.console.clone();
    tauri::async_runtime::spawn(async move {
        let r = console
            .follow_journal(id, q, token, |e| channel.send(e).is_ok())
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "journal watch");
        }
    });
    Ok(())
}

#[tauri::command]
pub fn stop_journal(watch: State<'_, JournalWatch>) {
    watch.0.lock().unwrap().cancel();
}

#[tauri::command]
pub async fn journal_earlier(
    state: State<'_, AppState>,
    id: i64,
    unit: String,
    before_cursor: String,
    lines: u32,
) -> Res<Vec<JournalEntry>> {
    let q = Query {
        unit: vdi_console::unit(&unit)?,
        lines: lines.min(10_000),
        ..Default::default()
    };
    Ok(state.console.journal(id, &q, Some(&before_cursor)).await?)
}

#[tauri::command]
pub async fn config_preview(
    state: State<'_, AppState>,
    id: i64,
    which: String,
) -> Res<ConfigPreview> {
    Ok(state.console.config_preview(id, &which).await?)
}

#[tauri::command]
pub async fn deploy(
    state: State<'_, AppState>,
    id: i64,
    force: bool,
    channel: Channel<DeployProgress>,
) -> Res<DeployReport> {
    let deb = vdi_console::bundled_gateway_deb().ok_or_else(|| ConsoleError {
        code: "no_package".into(),
        message: "this console has no bundled gateway package (install the console's .deb, or set VDI_GATEWAY_DEB)".into(),
        fields: vec![],
        detail: None,
    })?;
    Ok(state
        .console
        .deploy(id, &deb, force, |p| {
            let _ = channel.send(p);
        })
        .await?)
}

#[tauri::command]
pub fn audit_list(state: State<'_, AppState>, filter: AuditFilter) -> Res<Vec<AuditRecord>> {
    Ok(state.console.audit_log(&filter)?)
}

/// The filtered log as `csv` or `json` text (the page saves it).
#[tauri::command]
pub fn audit_export(
    state: State<'_, AppState>,
    filter: AuditFilter,
    format: String,
) -> Res<String> {
    let records = state.console.audit_log(&filter)?;
    Ok(match format.as_str() {
        "json" => serde_json::to_string_pretty(&records).expect("records serialize"),
        _ => vdi_console::audit::to_csv(&records),
    })
}
