//! Typed wrappers over the desktop app's Tauri commands. Errors arrive as
//! `ConsoleError {code, message}`, never as a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;
use vdi_wire::console::{
    ActionOutcome, AuditFilter, AuditRecord, ConfigPreview, ConsoleError, DeployProgress,
    DeployReport, FleetRow, FleetSummary, GatewayDraft, GatewayEntry, JournalEntry, JournalEvent,
    ServiceAction, UnitStatus,
};
use vdi_wire::{
    ConnectionOpened, Connections, Disconnect, Disconnected, Settings, SettingsChanged,
};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = ["window", "__TAURI__", "core"], catch)]
    async fn invoke(cmd: &str, args: JsValue) -> Result<JsValue, JsValue>;

    /// Tauri's IPC channel: the backend pushes messages, the page listens.
    #[wasm_bindgen(js_namespace = ["window", "__TAURI__", "core"])]
    pub type Channel;
    #[wasm_bindgen(constructor, js_namespace = ["window", "__TAURI__", "core"])]
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

#[derive(Clone, Debug, serde::Deserialize)]
pub struct AppInfo {
    pub version: String,
    pub data_dir: String,
    pub secrets_warning: Option<String>,
}

#[derive(Clone, Debug, serde::Deserialize)]
pub struct FleetUpdate {
    pub rows: Vec<FleetRow>,
    pub summary: FleetSummary,
}

#[derive(Clone, Debug, serde::Deserialize)]
pub struct ConnectionsUpdate {
    pub id: i64,
    pub result: Result<Connections, ConsoleError>,
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

/// Subscribes to fleet updates every `interval_ms`; `on` gets each one.
pub async fn watch_fleet(
    interval_ms: u32,
    on: impl Fn(FleetUpdate) + 'static,
) -> Result<(), ConsoleError> {
    let channel = subscribe("fleet".into(), on);
    call(
        "watch_fleet",
        args(&[
            ("channel", channel.into()),
            ("interval", JsValue::from(interval_ms)),
        ]),
    )
    .await
}

/// Subscribes to one gateway's connections every `interval_ms`.
pub async fn watch_connections(
    id: i64,
    interval_ms: u32,
    on: impl Fn(ConnectionsUpdate) + 'static,
) -> Result<(), ConsoleError> {
    let channel = subscribe("connections".into(), on);
    call(
        "watch_connections",
        args(&[
            ("id", JsValue::from_f64(id as f64)),
            ("channel", channel.into()),
            ("interval", JsValue::from(interval_ms)),
        ]),
    )
    .await
}

/// A channel and the callback it calls. Dropped when a newer subscription
/// of the same kind replaces it: the channel's handler becomes a no-op (a
/// message still on its way is ignored) and the callback is freed.
struct Subscription {
    channel: Channel,
    _callback: Closure<dyn Fn(JsValue)>,
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

/// What the journal view asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JournalAsk {
    pub id: i64,
    pub unit: String,
    pub lines: u32,
    pub priority: Option<u8>,
    pub since: String,
    pub until: String,
}

/// Follows a unit's journal (replacing the previous watch).
pub async fn watch_journal(
    ask: &JournalAsk,
    on: impl Fn(JournalEvent) + 'static,
) -> Result<(), ConsoleError> {
    let channel = subscribe("journal".into(), on);
    call(
        "watch_journal",
        args(&[
            id_arg(ask.id),
            ("unit", JsValue::from_str(&ask.unit)),
            ("lines", JsValue::from(ask.lines)),
            ("priority", to_js(&ask.priority)),
            ("since", to_js(&Some(ask.since.clone()))),
            ("until", to_js(&Some(ask.until.clone()))),
            ("channel", channel.into()),
        ]),
    )
    .await
}

pub async fn stop_journal() -> Result<(), ConsoleError> {
    call("stop_journal", args(&[])).await
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

pub async fn audit_export(filter: &AuditFilter, format: &str) -> Result<String, ConsoleError> {
    call(
        "audit_export",
        args(&[
            ("filter", to_js(filter)),
            ("format", JsValue::from_str(format)),
        ]),
    )
    .await
}
