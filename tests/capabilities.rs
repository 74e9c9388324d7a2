//! The page's permissions: the capability file grants exactly the commands
//! the UI invokes (parsed from `ui/src/api.rs`), which are exactly the
//! commands the app registers (`vdi_console_app::COMMANDS`, the app manifest
//! of `src-tauri/build.rs`); and with the app's real context (its
//! `tauri.conf.json` and capabilities), on Tauri's mock runtime, every one of
//! them passes the ACL while core plugin commands (window, event, app, path,
//! webview) are refused. `withGlobalTauri` stays off.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{INVOKE_KEY, get_ipc_response, mock_builder};
use tauri::webview::InvokeRequest;
use vdi_console::Console;
use vdi_console::secrets::Secrets;
use vdi_gateway::testing::TempDir;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `allow-fleet-add` → `fleet_add`, for every permission of the capability.
fn granted() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("capabilities/default.json")).unwrap();
    let cap: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(cap["windows"], json!(["main"]), "one window: {cap}");
    cap["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let p = p.as_str().expect("permissions by name only");
            p.strip_prefix("allow-")
                .unwrap_or_else(|| panic!("only allow-<command> of the app: {p}"))
                .replace('-', "_")
        })
        .collect()
}

/// The command names the UI passes to `call(…)`/`call::<T>(…)` and
/// `watch(…)` in `ui/src/api.rs` (the only place the page invokes).
fn invoked() -> BTreeSet<String> {
    let src = std::fs::read_to_string(root().join("ui/src/api.rs")).unwrap();
    let mut out = BTreeSet::new();
    for start in ["call(", "call::<", "watch("] {
        for (i, _) in src.match_indices(start) {
            // The definitions (`fn call<…>(cmd: …`) take no literal.
            let rest = &src[i + start.len()..];
            let rest = match start {
                "call::<" => &rest[rest.find(">(").expect("call::<T>(") + 2..],
                _ => rest,
            };
            let rest = rest.trim_start();
            if let Some(lit) = rest.strip_prefix('"') {
                let name = &lit[..lit.find('"').unwrap()];
                assert!(
                    name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                    "{name:?}"
                );
                out.insert(name.to_string());
            }
        }
    }
    assert!(
        !src.contains("\"__TAURI__\""),
        "the page uses ui/ipc.js, not the global object"
    );
    out
}

#[test]
fn the_capability_grants_exactly_what_the_ui_invokes() {
    let registered: BTreeSet<String> = vdi_console_app::COMMANDS
        .iter()
        .map(|c| c.to_string())
        .collect();
    let invoked = invoked();
    assert!(invoked.len() > 20, "parsed the UI's calls: {invoked:?}");
    assert_eq!(
        granted(),
        invoked,
        "capabilities/default.json vs ui/src/api.rs"
    );
    assert_eq!(registered, invoked, "the app's commands vs the UI's");
    let conf: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("tauri.conf.json")).unwrap())
            .unwrap();
    assert_eq!(
        conf["app"]["withGlobalTauri"], false,
        "no global Tauri object"
    );
}

fn invoke(
    w: &tauri::WebviewWindow<tauri::test::MockRuntime>,
    cmd: &str,
    body: Value,
) -> Result<Value, Value> {
    get_ipc_response(
        w,
        InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(body),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().unwrap())
}

/// Refused by the ACL (not by the command: its own errors are `{code, …}`).
fn refused_by_acl(r: &Result<Value, Value>) -> bool {
    matches!(r, Err(Value::String(m)) if m.contains("not allowed"))
}

#[test]
fn the_real_context_lets_the_app_commands_through_and_nothing_else() {
    let dir = TempDir::new();
    let console =
        Arc::new(Console::with_secrets(&dir.0, Secrets::file(dir.0.join("secrets.json"))).unwrap());
    let context = tauri::generate_context!(test = true, assets = tauri::test::noop_assets());
    let app = vdi_console_app::configure(mock_builder(), console)
        .build(context)
        .unwrap();
    let w = tauri::WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();
    // Every app command passes the ACL (some then want arguments: their own error).
    for cmd in vdi_console_app::COMMANDS {
        let r = invoke(&w, cmd, json!({}));
        assert!(!refused_by_acl(&r), "{cmd}: {r:?}");
    }
    assert!(invoke(&w, "app_info", json!({})).unwrap()["version"].is_string());
    // Core plugin commands a `core:default` grant would allow: refused.
    for cmd in [
        "plugin:window|close",
        "plugin:window|set_title",
        "plugin:webview|print",
        "plugin:event|listen",
        "plugin:event|emit",
        "plugin:app|version",
        "plugin:path|resolve_directory",
        "plugin:resources|close",
    ] {
        let r = invoke(&w, cmd, json!({}));
        assert!(refused_by_acl(&r), "{cmd} must be refused: {r:?}");
    }
    // Another window gets nothing.
    let other = tauri::WebviewWindowBuilder::new(&app, "other", Default::default())
        .build()
        .unwrap();
    let r = invoke(&other, "app_info", json!({}));
    assert!(refused_by_acl(&r), "{r:?}");
}
