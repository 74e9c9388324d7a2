//! The app's Tauri commands on Tauri's mock runtime (no window, no display):
//! the IPC layer, argument names and the `{code, message}` error shape.

use serde_json::{Value, json};
use std::sync::Arc;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{INVOKE_KEY, get_ipc_response, mock_builder, mock_context, noop_assets};
use tauri::webview::InvokeRequest;
use vdi_console::Console;
use vdi_console::secrets::Secrets;

use vdi_gateway::testing::TempDir;

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
            // `http://tauri.localhost` counts as a remote origin on Linux.
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(body),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().unwrap())
}

#[test]
fn commands_wrap_the_console() {
    let dir = TempDir::new();
    let console =
        Arc::new(Console::with_secrets(&dir.0, Secrets::file(dir.0.join("secrets.json"))).unwrap());
    let app = vdi_console_app::configure(mock_builder(), console)
        .build(mock_context(noop_assets()))
        .unwrap();
    let w = tauri::WebviewWindowBuilder::new(&app, "main", Default::default())
        .build()
        .unwrap();

    let info = invoke(&w, "app_info", json!({})).unwrap();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        info["secrets_warning"]
            .as_str()
            .unwrap()
            .contains("secrets.json")
    );

    let added = invoke(
        &w,
        "fleet_add",
        json!({"draft": {"name": "gw1", "api_url": "http://10.9.0.1:8000", "tags": ["lab"]}}),
    )
    .unwrap();
    assert_eq!(added["name"], "gw1");
    assert_eq!(added["has_api_key"], false);
    let list = invoke(&w, "fleet_list", json!({})).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Errors reach the page as {code, message, fields}.
    let err = invoke(
        &w,
        "fleet_add",
        json!({"draft": {"name": "gw1", "api_url": "ftp://x"}}),
    )
    .unwrap_err();
    assert_eq!(err["code"], "invalid_input");
    let fields: Vec<&str> = err["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["api_url"]);
    let id = added["id"].as_i64().unwrap();
    let err = invoke(&w, "gateway_settings", json!({"id": id})).unwrap_err();
    assert_eq!(err["code"], "missing_key", "{err}");
    let err = invoke(&w, "fleet_remove", json!({"id": 999})).unwrap_err();
    assert_eq!(err["code"], "not_found");
    invoke(&w, "fleet_remove", json!({"id": id})).unwrap();
    assert_eq!(invoke(&w, "fleet_list", json!({})).unwrap(), json!([]));
}
