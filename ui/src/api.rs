//! Typed wrappers over the desktop app's Tauri commands. Errors arrive as
//! `ConsoleError {code, message}`, never as a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;
use vdi_wire::console::{
    ActionOutcome, AuditFilter, AuditFormat, AuditRecord, BulkChange, BulkOutcome, ConfigPreview,
    ConsoleError, DeployProgress, DeployReport, GatewayDraft, GatewayEntry, HostPlan, JournalEntry,
    JournalEvent, JournalRequest, Planned, RebootPlan, RollingOp, ServiceAction, UnitStatus,
    WatchId,
};
pub use vdi_wire::console::{
    AppInfo, ClusterState, ConnectionsUpdate, DemoState, FleetUpdate, UiState,
};
use vdi_wire::{ConnectionOpened, Disconnect, Disconnected, DrainState, Settings, SettingsChanged};
use wasm_bindgen::prelude::*;

// Tauri's IPC through our own module on its internal bridge (`ui/ipc.js`),
// not the global `window.__TAURI__` (`withGlobalTauri` is off).
#[wasm_bindgen(module = "/ipc.js")]
extern "C" {
    #[wasm_bindgen(catch)]
    async fn invoke(cmd: &str, args: JsValue) -> Result<JsValue, JsValue>;

    /// Tauri's IPC channel: the backend pushes messages, the page listens.
    pub type Channel;
    #[wasm_bindgen(constructor)]
    pub fn new() -> Channel;
    #[wasm_bindgen(method, setter, js_name = onmessage)]
    pub fn set_onmessage(this: &Channel, f: &js_sys::Function);
}

fn to_js<T: Serialize>(v: &T) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap_or(JsValue::NULL)
}

fn error_of(e: JsValue) -> ConsoleError {
    serde_wasm_bindgen::from_value(e.clone()).unwrap_or_else(|_| ConsoleError {
        code: "ipc".into(),
        message: e.as_string().unwrap_or_else(|| format!("{e:?}")),
        fields: Vec::new(),
        detail: None,
    })
}

async fn call<R: DeserializeOwned>(cmd: &str, args: JsValue) -> Result<R, ConsoleError> {
    let v = invoke(cmd, args).await.map_err(error_of)?;
    serde_wasm_bindgen::from_value(v).map_err(|e| ConsoleError {
        code: "decode".into(),
        message: e.to_string(),
        fields: Vec::new(),
        detail: None,
    })
}

fn args(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = js_sys::Object::new();
    for (k, v) in pairs {
        let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), v);
    }
    o.into()
}

pub async fn app_info() -> Result<AppInfo, ConsoleError> {
    call("app_info", args(&[])).await
}

pub async fn fleet_list() -> Result<Vec<GatewayEntry>, ConsoleError> {
    call("fleet_list", args(&[])).await
}

pub async fn fleet_add(draft: &GatewayDraft) -> Result<GatewayEntry, ConsoleError> {
    call("fleet_add", args(&[("draft", to_js(draft))])).await
}

pub async fn fleet_update(id: i64, draft: &GatewayDraft) -> Result<GatewayEntry, ConsoleError> {
    call(
        "fleet_update",
        args(&[
            ("id", JsValue::from_f64(id as f64)),
            ("draft", to_js(draft)),
        ]),
    )
    .await
}

pub async fn fleet_remove(id: i64) -> Result<(), ConsoleError> {
    call(
        "fleet_remove",
        args(&[("id", JsValue::from_f64(id as f64))]),
    )
    .await
}

pub async fn gateway_settings(id: i64) -> Result<Settings, ConsoleError> {
    call(
        "gateway_settings",
        args(&[("id", JsValue::from_f64(id as f64))]),
    )
    .await
}

pub async fn change_settings(
    id: i64,
    patch: &serde_json::Map<String, serde_json::Value>,
) -> Result<SettingsChanged, ConsoleError> {
    call(
        "change_settings",
        args(&[
            ("id", JsValue::from_f64(id as f64)),
            ("patch", to_js(patch)),
        ]),
    )
    .await
}

pub async fn demo_tunnel() -> Result<ConnectionOpened, ConsoleError> {
    call("demo_tunnel", args(&[])).await
}

pub async fn demo_state() -> Result<DemoState, ConsoleError> {
    call("demo_state", args(&[])).await
}

pub async fn stop_demo() -> Result<DemoState, ConsoleError> {
    call("stop_demo", args(&[])).await
}

pub async fn cluster_state() -> Result<ClusterState, ConsoleError> {
    call("cluster_state", args(&[])).await
}

pub async fn start_cluster() -> Result<ClusterState, ConsoleError> {
    call("start_cluster", args(&[])).await
}

pub async fn stop_cluster() -> Result<ClusterState, ConsoleError> {
    call("stop_cluster", args(&[])).await
}

pub async fn ui_state() -> Result<UiState, ConsoleError> {
    call("ui_state", args(&[])).await
}

pub async fn save_ui_state(state: &UiState) -> Result<(), ConsoleError> {
    call("save_ui_state", args(&[("state", to_js(state))])).await
}

pub async fn disconnect(id: i64, selector: &Disconnect) -> Result<Disconnected, ConsoleError> {
    call(
        "disconnect",
        args(&[
            ("id", JsValue::from_f64(id as f64)),
            ("selector", to_js(selector)),
        ]),
    )
    .await
}

pub async fn set_draining(id: i64, on: bool) -> Result<DrainState, ConsoleError> {
    call(
        "set_draining",
        args(&[
            ("id", JsValue::from_f64(id as f64)),
            ("on", JsValue::from_bool(on)),
        ]),
    )
    .await
}

/// Watches the fleet (every `interval_ms`) for as long as the calling view.
pub fn watch_fleet(
    interval_ms: u32,
    on: impl Fn(FleetUpdate) + 'static,
    on_error: impl Fn(ConsoleError) + 'static,
) {
    let pairs = vec![("interval", JsValue::from(interval_ms))];
    watch("watch_fleet", pairs, on, on_error);
}

/// Watches one gateway's connections (every `interval_ms`) for as long as
/// the calling view or effect run.
pub fn watch_connections(
    id: i64,
    interval_ms: u32,
    on: impl Fn(ConnectionsUpdate) + 'static,
    on_error: impl Fn(ConsoleError) + 'static,
) {
    let pairs = vec![id_arg(id), ("interval", JsValue::from(interval_ms))];
    watch("watch_connections", pairs, on, on_error);
}

/// Starts the backend's watch `cmd` (its other arguments in `pairs`) with a
/// channel to `on`; a refused start goes to `on_error`. The watch lasts as
/// long as the calling reactive owner: at its cleanup (the view goes, or
/// the effect that started it runs again) the page drops the callback and
/// the backend ends its loop, even when the backend had not answered yet.
fn watch<T: DeserializeOwned + 'static>(
    cmd: &'static str,
    mut pairs: Vec<(&'static str, JsValue)>,
    on: impl Fn(T) + 'static,
    on_error: impl Fn(ConsoleError) + 'static,
) {
    let key = NEXT_WATCH.with(|n| {
        n.set(n.get() + 1);
        format!("watch:{}", n.get())
    });
    let channel = subscribe(key.clone(), on);
    let ended = key.clone();
    leptos::prelude::on_cleanup(move || end_watch(&ended));
    pairs.push(("channel", channel.into()));
    leptos::task::spawn_local(async move {
        match call::<WatchId>(cmd, args(&pairs)).await {
            Ok(id) => {
                let held = SUBSCRIPTIONS.with(|s| {
                    s.borrow_mut()
                        .get_mut(&key)
                        .map(|sub| sub.backend = Some(id))
                        .is_some()
                });
                if !held {
                    unwatch(id);
                }
            }
            Err(e) => {
                end_watch(&key);
                on_error(e);
            }
        }
    });
}

/// Ends the watch held as `key`: no more callbacks, and the backend stops.
fn end_watch(key: &str) {
    let sub = SUBSCRIPTIONS.with(|s| s.borrow_mut().remove(key));
    if let Some(id) = sub.and_then(|s| s.backend) {
        unwatch(id);
    }
}

fn unwatch(id: WatchId) {
    leptos::task::spawn_local(async move {
        let _ = call::<bool>("unwatch", args(&[("watch", to_js(&id))])).await;
    });
}

/// A channel and the callback it calls (and the backend's watch, if it is
/// one). Dropped when it ends or a newer subscription of the same kind
/// replaces it: the channel's handler becomes a no-op (a message still on
/// its way is ignored) and the callback is freed.
struct Subscription {
    channel: Channel,
    _callback: Closure<dyn Fn(JsValue)>,
    backend: Option<WatchId>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // A shared Rust no-op: the page's CSP forbids `new Function`.
        NOOP.with(|f| self.channel.set_onmessage(f.as_ref().unchecked_ref()));
    }
}

thread_local! {
    static SUBSCRIPTIONS: std::cell::RefCell<std::collections::HashMap<String, Subscription>> =
        Default::default();
    static NOOP: Closure<dyn Fn(JsValue)> = Closure::new(|_: JsValue| {});
    static NEXT_WATCH: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A channel whose messages go to `on`, replacing the previous subscription
/// of `kind` (the backend has ended that watch too).
fn subscribe<T: DeserializeOwned + 'static>(kind: String, on: impl Fn(T) + 'static) -> Channel {
    let channel = Channel::new();
    let callback = Closure::<dyn Fn(JsValue)>::new(move |v: JsValue| {
        if let Ok(t) = serde_wasm_bindgen::from_value::<T>(v) {
            on(t);
        }
    });
    channel.set_onmessage(callback.as_ref().unchecked_ref());
    let kept = Subscription {
        channel: JsValue::from(&channel).unchecked_into(),
        _callback: callback,
        backend: None,
    };
    // The old one is dropped after the new one is in place.
    let old = SUBSCRIPTIONS.with(|s| s.borrow_mut().insert(kind, kept));
    drop(old);
    channel
}

// ---- Over SSH: services, journal, configuration, deploy, host keys, audit.

fn id_arg(id: i64) -> (&'static str, JsValue) {
    ("id", JsValue::from_f64(id as f64))
}

pub async fn services(id: i64) -> Result<Vec<UnitStatus>, ConsoleError> {
    call("services", args(&[id_arg(id)])).await
}

pub async fn ssh_reconnects(id: i64) -> Result<u32, ConsoleError> {
    call("ssh_reconnects", args(&[id_arg(id)])).await
}

pub async fn service_action(
    id: i64,
    unit: &str,
    action: ServiceAction,
) -> Result<ActionOutcome, ConsoleError> {
    call(
        "service_action",
        args(&[
            id_arg(id),
            ("unit", JsValue::from_str(unit)),
            ("action", to_js(&action)),
        ]),
    )
    .await
}

/// The host's "reboot when empty or after T" plan.
pub async fn reboot_plan(id: i64) -> Result<RebootPlan, ConsoleError> {
    call("reboot_plan", args(&[id_arg(id)])).await
}

/// Drains the gateway and reboots its host once no stream is left, or
/// after `after_secs` at the latest.
pub async fn plan_reboot(id: i64, after_secs: u64) -> Result<RebootPlan, ConsoleError> {
    call(
        "plan_reboot",
        args(&[
            id_arg(id),
            ("afterSecs", JsValue::from_f64(after_secs as f64)),
        ]),
    )
    .await
}

pub async fn cancel_reboot(id: i64) -> Result<RebootPlan, ConsoleError> {
    call("cancel_reboot", args(&[id_arg(id)])).await
}

/// One host after the other; `on` gets each host's outcome as it is known.
pub async fn rolling_action(
    ids: &[i64],
    unit: &str,
    action: ServiceAction,
    on: impl Fn(ActionOutcome) + 'static,
) -> Result<Vec<ActionOutcome>, ConsoleError> {
    let channel = subscribe("rolling".into(), on);
    call(
        "rolling_action",
        args(&[
            ("ids", to_js(&ids)),
            ("unit", JsValue::from_str(unit)),
            ("action", to_js(&action)),
            ("channel", channel.into()),
        ]),
    )
    .await
}

/// What a settings change would do on each gateway of `ids` (changes nothing).
pub async fn plan_bulk_change(
    ids: &[i64],
    change: &BulkChange,
) -> Result<Vec<HostPlan>, ConsoleError> {
    call(
        "plan_bulk_change",
        args(&[("ids", to_js(&ids)), ("change", to_js(change))]),
    )
    .await
}

/// Applies a previewed change host after host; `on` gets each outcome.
pub async fn apply_bulk_change(
    change: &BulkChange,
    plan: &[Planned],
    on: impl Fn(BulkOutcome) + 'static,
) -> Result<Vec<BulkOutcome>, ConsoleError> {
    let channel = subscribe("bulk".into(), on);
    call(
        "apply_bulk_change",
        args(&[
            ("change", to_js(change)),
            ("plan", to_js(&plan)),
            ("channel", channel.into()),
        ]),
    )
    .await
}

/// Drain, undrain or upgrade `ids` one host at a time; `on` gets each outcome.
pub async fn rolling_maintenance(
    ids: &[i64],
    op: RollingOp,
    on: impl Fn(BulkOutcome) + 'static,
) -> Result<Vec<BulkOutcome>, ConsoleError> {
    let channel = subscribe("bulk".into(), on);
    call(
        "rolling_maintenance",
        args(&[
            ("ids", to_js(&ids)),
            ("op", to_js(&op)),
            ("channel", channel.into()),
        ]),
    )
    .await
}

pub async fn trust_host_key(
    id: i64,
    host: &str,
    port: u16,
    fingerprint: &str,
) -> Result<(), ConsoleError> {
    call(
        "trust_host_key",
        args(&[
            id_arg(id),
            ("host", JsValue::from_str(host)),
            ("port", JsValue::from(port)),
            ("fingerprint", JsValue::from_str(fingerprint)),
        ]),
    )
    .await
}

/// Follows a unit's journal for as long as the calling view or effect run.
pub fn watch_journal(
    id: i64,
    request: &JournalRequest,
    on: impl Fn(JournalEvent) + 'static,
    on_error: impl Fn(ConsoleError) + 'static,
) {
    let pairs = vec![id_arg(id), ("request", to_js(request))];
    watch("watch_journal", pairs, on, on_error);
}

pub async fn journal_earlier(
    id: i64,
    unit: &str,
    before_cursor: &str,
    lines: u32,
) -> Result<Vec<JournalEntry>, ConsoleError> {
    call(
        "journal_earlier",
        args(&[
            id_arg(id),
            ("unit", JsValue::from_str(unit)),
            ("beforeCursor", JsValue::from_str(before_cursor)),
            ("lines", JsValue::from(lines)),
        ]),
    )
    .await
}

pub async fn config_preview(id: i64, which: &str) -> Result<ConfigPreview, ConsoleError> {
    call(
        "config_preview",
        args(&[id_arg(id), ("which", JsValue::from_str(which))]),
    )
    .await
}

pub async fn deploy(
    id: i64,
    force: bool,
    on: impl Fn(DeployProgress) + 'static,
) -> Result<DeployReport, ConsoleError> {
    let channel = subscribe(format!("deploy:{id}"), on);
    call(
        "deploy",
        args(&[
            id_arg(id),
            ("force", JsValue::from_bool(force)),
            ("channel", channel.into()),
        ]),
    )
    .await
}

pub async fn audit_list(filter: &AuditFilter) -> Result<Vec<AuditRecord>, ConsoleError> {
    call("audit_list", args(&[("filter", to_js(filter))])).await
}

pub async fn audit_export(
    filter: &AuditFilter,
    format: AuditFormat,
) -> Result<String, ConsoleError> {
    call(
        "audit_export",
        args(&[("filter", to_js(filter)), ("format", to_js(&format))]),
    )
    .await
}
