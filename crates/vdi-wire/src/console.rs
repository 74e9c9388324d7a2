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
