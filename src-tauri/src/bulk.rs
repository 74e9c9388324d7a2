//! Tauri commands for changes over many gateways: a previewed settings change
//! and rolling maintenance, one host at a time. One `vdi_console::Console`
//! call each; every host's outcome goes through a Channel as it is known.

use crate::commands::{App, Res};
use tauri::ipc::Channel;
use vdi_wire::console::{BulkChange, BulkOutcome, HostPlan, Planned, RollingOp};

#[tauri::command]
pub async fn plan_bulk_change(
    console: App<'_>,
    ids: Vec<i64>,
    change: BulkChange,
) -> Res<Vec<HostPlan>> {
    Ok(console.plan_bulk_change(&ids, &change).await?)
}

#[tauri::command]
pub async fn apply_bulk_change(
    console: App<'_>,
    change: BulkChange,
    plan: Vec<Planned>,
    channel: Channel<BulkOutcome>,
) -> Res<Vec<BulkOutcome>> {
    let each = |o: &BulkOutcome| drop(channel.send(o.clone()));
    Ok(console.apply_bulk_change(&change, &plan, each).await?)
}

#[tauri::command]
pub async fn rolling_maintenance(
    console: App<'_>,
    ids: Vec<i64>,
    op: RollingOp,
    channel: Channel<BulkOutcome>,
) -> Res<Vec<BulkOutcome>> {
    let each = |o: &BulkOutcome| drop(channel.send(o.clone()));
    Ok(console.rolling_maintenance(&ids, op, None, each).await?)
}
