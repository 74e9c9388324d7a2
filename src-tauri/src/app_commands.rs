/// Every command the app registers (`commands::handler`). Tauri's build step
/// makes an `allow-<command>` permission of each (`build.rs` includes this
/// file), and only those granted in `capabilities/default.json` reach the
/// page: exactly the commands `ui/src/api.rs` invokes (`tests/capabilities.rs`
/// holds the three lists equal).
pub const COMMANDS: &[&str] = &[
    "app_info",
    "fleet_list",
    "fleet_add",
    "fleet_update",
    "fleet_remove",
    "watch_fleet",
    "gateway_settings",
    "change_settings",
    "watch_connections",
    "unwatch",
    "disconnect",
    "set_draining",
    "demo_tunnel",
    "demo_state",
    "stop_demo",
    "ui_state",
    "save_ui_state",
    "services",
    "ssh_reconnects",
    "service_action",
    "reboot_plan",
    "plan_reboot",
    "cancel_reboot",
    "rolling_action",
    "trust_host_key",
    "watch_journal",
    "journal_earlier",
    "config_preview",
    "deploy",
    "audit_list",
    "audit_export",
];
