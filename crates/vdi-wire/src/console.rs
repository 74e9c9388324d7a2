//! Types the console's library and its UI exchange (Tauri commands).

use crate::{Health, UnitStates};
use serde::{Deserialize, Serialize};

/// Every console error reaches the UI as a code and a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleError {
    /// `unreachable`, `timeout`, `unauthorized`, `invalid_input`, `not_found`, `api`, ...
    pub code: String,
    pub message: String,
    /// Per-field problems, for forms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<crate::FieldError>,
    /// Facts the UI acts on (e.g. the host key fingerprint to confirm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Box<serde_json::Value>>,
}

/// How the console logs in over SSH (used by the SSH features).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum SshAuth {
    Agent,
    KeyFile { path: String },
    Password,
}

/// A gateway of the fleet, as the inventory stores it (secrets live in the OS
/// keyring, never here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayEntry {
    pub id: i64,
    pub name: String,
    /// e.g. `http://10.0.0.11:8000`
    pub api_url: String,
    pub ssh_host: Option<String>,
    pub ssh_port: u16,
    pub ssh_user: String,
    pub ssh_auth: SshAuth,
    /// Jump host (`[user@]host[:port]`, as ProxyJump), if any.
    #[serde(default)]
    pub ssh_jump: Option<String>,
    pub tags: Vec<String>,
    /// The console's own bundled gateway on loopback.
    pub embedded: bool,
    pub has_api_key: bool,
    pub has_cli_key: bool,
}

/// What the add/edit form sends. Keys given here go to the keyring.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayDraft {
    pub name: String,
    pub api_url: String,
    #[serde(default)]
    pub ssh_host: Option<String>,
    #[serde(default)]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub ssh_user: Option<String>,
    #[serde(default)]
    pub ssh_auth: Option<SshAuth>,
    #[serde(default)]
    pub ssh_jump: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `None` keeps the stored key; `Some("")` deletes it.
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub cli_key: Option<String>,
    #[serde(default)]
    pub ssh_password: Option<String>,
}

/// One row of the fleet overview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRow {
    pub id: i64,
    pub name: String,
    pub api_url: String,
    pub tags: Vec<String>,
    pub reachable: bool,
    /// Why not reachable, or what went wrong: a sentence.
    pub error: Option<ConsoleError>,
    pub health: Option<Health>,
    /// Milliseconds the health call took.
    pub latency_ms: Option<u64>,
}

/// The whole fleet in one line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSummary {
    pub gateways: usize,
    pub reachable: usize,
    pub disabled: usize,
    pub tunnels: u64,
    pub streams: u64,
    pub ports_free: u64,
    pub units_not_active: usize,
}

impl FleetSummary {
    pub fn of(rows: &[FleetRow]) -> Self {
        let mut s = FleetSummary {
            gateways: rows.len(),
            ..Default::default()
        };
        for h in rows.iter().filter_map(|r| r.health.as_ref()) {
            s.reachable += 1;
            s.disabled += usize::from(!h.is_enabled);
            s.tunnels += h.tunnels;
            s.streams += h.streams;
            s.ports_free += h.ports_free;
            s.units_not_active += not_active(&h.units);
        }
        s
    }
}

fn not_active(u: &UnitStates) -> usize {
    [&u.vdi_gateway, &u.haproxy, &u.keepalived]
        .iter()
        .filter(|s| s.as_str() != "active" && s.as_str() != "unknown")
        .count()
}

/// The units the console looks after on each gateway host.
pub const UNITS: [&str; 3] = ["vdi-gateway", "haproxy", "keepalived"];

/// A unit's state as `systemctl show` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    pub unit: String,
    /// `loaded`, `not-found`, ...
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, ...
    pub active_state: String,
    pub sub_state: String,
    /// `success` or why it last stopped (`exit-code`, `signal`, ...).
    pub result: String,
    /// Since when it is in its active state (Unix seconds).
    pub since: Option<i64>,
    pub main_pid: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub restarts: Option<u32>,
    /// Changes on each start: tells a completed restart from the old run.
    pub invocation_id: String,
    /// `false` when the unit's start conditions failed (e.g. Keepalived
    /// without a configuration file): systemd skips it without an error.
    pub condition_met: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceAction {
    Start,
    Stop,
    Restart,
    Reload,
}

impl ServiceAction {
    pub fn verb(self) -> &'static str {
        match self {
            ServiceAction::Start => "start",
            ServiceAction::Stop => "stop",
            ServiceAction::Restart => "restart",
            ServiceAction::Reload => "reload",
        }
    }
}

/// How a service action on one host ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    pub gateway: i64,
    pub host: String,
    pub unit: String,
    pub action: ServiceAction,
    pub ok: bool,
    /// In words: "active (running) again after 1.2 s", "failed: exit-code".
    pub summary: String,
    pub status: Option<UnitStatus>,
    /// The unit's last log lines when it failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
    pub took_ms: u64,
}

/// One journal entry (from `journalctl -o json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub cursor: String,
    /// Microseconds since the Unix epoch.
    pub ts_us: i64,
    /// 0 (emerg) ... 7 (debug); 6 when the entry has none.
    pub priority: u8,
    pub unit: String,
    pub pid: Option<u32>,
    pub message: String,
}

/// What the console's journal stream carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JournalEvent {
    Entries {
        entries: Vec<JournalEntry>,
    },
    /// The connection dropped at `at_us`; the stream goes on from the last
    /// cursor, so the lines written meanwhile follow (nothing is lost).
    Gap {
        at_us: i64,
        reason: String,
    },
    Resumed {
        reconnects: u32,
    },
    /// The stream ended for good (a message for the admin).
    Ended {
        reason: String,
    },
}

/// A configuration file on a host beside what its gateway would write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigPreview {
    /// `haproxy` or `keepalived`.
    pub which: String,
    pub path: String,
    /// The gateway writes this file (`ha_managed`); otherwise the diff only
    /// shows what it would write once it manages HA.
    pub managed: bool,
    /// The file on the host (`None`: absent or unreadable, see `read_error`).
    pub on_host: Option<String>,
    pub read_error: Option<String>,
    /// `vdi-gateway render` on the host, from its current settings.
    pub rendered: Option<String>,
    pub render_error: Option<String>,
    /// Unified diff from the rendered file to the one on the host ("" when equal).
    pub diff: String,
    /// The gateway manages the file and it differs from what it would
    /// write (hand edits, drift).
    pub drift: bool,
    /// `haproxy -c` / `keepalived -t` on the host.
    pub check_ok: bool,
    pub check_output: String,
}

/// A step of a deployment, for the progress display.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeployProgress {
    pub step: String,
    pub detail: String,
    /// 0.0..=1.0 while uploading.
    pub fraction: Option<f32>,
}

/// How a deployment ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployReport {
    pub gateway: i64,
    pub host: String,
    pub before: Option<String>,
    pub wanted: String,
    /// The version installed at the end.
    pub after: Option<String>,
    /// `installed`, `upgraded`, `unchanged`, `rolled_back`, `failed`.
    pub outcome: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
}

/// One admin action in the console's local audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub os_user: String,
    pub gateway: Option<i64>,
    pub host: String,
    pub action: String,
    /// JSON, secrets replaced by `***`.
    pub params: String,
    /// `ok` or `failed`.
    pub result: String,
    pub detail: String,
}

/// Which audit records to list (all `None`: the newest 1000).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    #[serde(default)]
    pub host: Option<String>,
    pub action: Option<String>,
    /// Matches params or detail.
    pub text: Option<String>,
    pub limit: Option<u32>,
}
