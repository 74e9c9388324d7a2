use crate::{FieldError, Settings};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The one error shape every endpoint answers with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `unauthorized`, `invalid_settings`, `no_free_port`.
    pub code: String,
    /// Sentence for people.
    pub message: String,
    /// Per-field problems (settings validation only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

/// State of a systemd unit as `systemctl is-active` reports it, or `unknown`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitStates {
    pub vdi_gateway: String,
    pub haproxy: String,
    pub keepalived: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`, or `disabled` while `is_enabled` is false.
    pub status: HealthStatus,
    pub version: String,
    pub uptime_secs: u64,
    pub is_enabled: bool,
    pub tunnels: u64,
    pub streams: u64,
    pub ports_in_use: u64,
    pub ports_free: u64,
    pub units: UnitStates,
    pub ha: HaState,
    /// This node holds the virtual IP right now (HA managed and the VIP is on
    /// one of its interfaces).
    #[serde(default)]
    pub holds_vip: bool,
    /// Drained for maintenance: no new tunnels, running streams go on
    /// (`POST /v3/drain/`, `vdi-gateway drain`).
    #[serde(default)]
    pub draining: bool,
    /// Bytes relayed client → desktop since this process started, counted
    /// as they move (a restart starts again at 0, like the `/metrics` counter
    /// `vdi_gateway_bytes_relayed_total`). Rates are differences of two polls.
    #[serde(default)]
    pub bytes_to_target: u64,
    /// Bytes relayed desktop → client, the same way.
    #[serde(default)]
    pub bytes_to_client: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    /// `is_enabled` is false: no new tunnels, running streams go on.
    Disabled,
    /// Drained for maintenance: no new tunnels, running streams go on.
    Draining,
}

/// Whether this node takes new tunnels, and what still runs on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DrainState {
    /// No new tunnels here until undrained; kept across restarts and reboots.
    pub draining: bool,
    /// When the drain began (absent when not draining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Tunnels and streams still open on this node.
    pub tunnels: u64,
    pub streams: u64,
}

/// Answer of `GET /v3/ready/`: this node takes new tunnels (HAProxy's check).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ready {
    pub ready: bool,
}

/// Where the HAProxy and Keepalived configurations stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HaStatus {
    /// In force as rendered for the settings in force.
    Ok,
    /// The last apply failed; the previous files stay in force.
    Error,
    /// `ha_managed` is false: the gateway does not touch them.
    Unmanaged,
    /// Not applied yet.
    #[default]
    Pending,
}

impl HaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HaStatus::Ok => "ok",
            HaStatus::Error => "error",
            HaStatus::Unmanaged => "unmanaged",
            HaStatus::Pending => "pending",
        }
    }
}

impl std::fmt::Display for HaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the HAProxy and Keepalived configurations are in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HaState {
    pub status: HaStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<DateTime<Utc>>,
    /// This node's internal address the configurations were rendered for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The interface Keepalived puts the VIP on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// Answer of `change_settings`: which fields changed and the document now in force.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingsChanged {
    pub changed: Vec<String>,
    pub settings: Settings,
}

/// The grammar of `target_host` (ECMA-262, as the OpenAPI document says it):
/// dot-separated labels of letters, digits, `-` and `_` (IPv4 literals are
/// such names) or an IPv6 literal's characters; at most 253 characters.
/// `vdi_core::open::is_target_host` is the check, tested equal.
pub const TARGET_HOST_PATTERN: &str =
    r"^(?:[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)$";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenConnection {
    /// Desktop address: IP or DNS name (resolved once, at open). A name
    /// that does not resolve is `404 unresolvable_target`.
    #[cfg_attr(
        feature = "openapi",
        // TARGET_HOST_PATTERN (utoipa takes a literal; a gateway test holds them equal)
        schema(
            min_length = 1,
            max_length = 253,
            pattern = r"^(?:[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)$"
        )
    )]
    pub target_host: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub target_port: u16,
    /// Informational: `spice`, `rdp`, `vnc`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 128))]
    pub vm_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionOpened {
    pub id: String,
    /// The gateway's public address (`public_addr`), to which the client connects.
    pub address: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u16,
    /// When the tunnel expires if no stream reaches it.
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TunnelState {
    /// Open, no stream has reached it yet.
    Waiting,
    /// At least one stream is running.
    Active,
    /// Its streams have all closed; it idles out unless a new one comes.
    Idle,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StreamVia {
    Tcp,
    Websocket,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamInfo {
    pub id: String,
    /// The real client address (from the PROXY header when HAProxy sent one).
    pub client_addr: String,
    pub via: StreamVia,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub started_at: DateTime<Utc>,
    pub bytes_to_target: u64,
    pub bytes_to_client: u64,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub last_activity: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TunnelInfo {
    pub id: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u16,
    pub target_host: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub target_port: u16,
    /// The address `target_host` resolved to at open; streams go there.
    pub target_addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    #[serde(serialize_with = "crate::ts::serialize")]
    pub created_at: DateTime<Utc>,
    pub state: TunnelState,
    /// When it expires unless a stream comes; absent while streams run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub streams: Vec<StreamInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Connections {
    /// With `?since=`: only the tunnels that changed after that cursor
    /// (each whole, with its streams), unless `full`.
    pub tunnels: Vec<TunnelInfo>,
    /// Pass it as `?since=` on the next poll. Opaque.
    #[serde(default)]
    pub cursor: String,
    /// `tunnels` is every tunnel (no `since`, or one this process cannot
    /// answer from: a restart, a settings change, too old).
    #[serde(default = "yes")]
    pub full: bool,
    /// Tunnels closed after `since` (empty when `full`).
    #[serde(default)]
    pub removed: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Exactly one of the three selectors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Disconnect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
}

/// What a disconnect closed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Disconnected {
    pub tunnels: Vec<String>,
    pub streams: Vec<String>,
}
