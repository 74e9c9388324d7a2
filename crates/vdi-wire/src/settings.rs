use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// A key (base64 text in the original). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The key itself; call only where it is compared or sent, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The settings document, stored as one JSON row in SQLite table `settings`.
///
/// The first 13 fields are the original product's, in its order, names and types.
/// The optional fields after them are this project's additions (see
/// `docs/settings.md`); they are omitted from the document while unset, so a
/// document in the original's shape round-trips byte-for-byte.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Settings {
    pub is_enabled: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>, example = json!(["10.254.150.132"])))]
    pub internal_addrs: Vec<IpAddr>,
    pub ssl: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>, example = json!(["10.244.32.32"])))]
    pub disp_addrs: Vec<IpAddr>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub disp_port: u16,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10.254.150.136"))]
    pub public_addr: IpAddr,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "10.254.150.136"))]
    pub virtual_addr: IpAddr,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub api_port: u16,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub balancer_api_port: u16,
    pub port_range_start: u16,
    pub port_range_stop: u16,
    pub api_key: Secret,
    pub cli_key: Secret,

    /// Target networks tunnels may reach (CIDR). Default: RFC 1918 and fc00::/7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_targets: Option<Vec<String>>,
    /// Seconds a new tunnel waits for its first stream before it expires. Default 120.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_ttl_secs: Option<u64>,
    /// Seconds a tunnel stays open after its last stream closed. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_idle_secs: Option<u64>,
    /// Streams one tunnel may carry at once. Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams_per_tunnel: Option<u32>,
    /// Seconds to wait for a target (desktop or dispatcher) to accept. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_secs: Option<u64>,
    /// Whether a tunnel serves only the client address that opened it. Default `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_client_binding: Option<ClientBinding>,
    /// Tunnels one client address may hold open at once. Default 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tunnels_per_client: Option<u32>,
    /// Streams one client address may have at once, over all tunnels. Default 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams_per_client: Option<u32>,
    /// Seconds a client may take to send a request's headers (API). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_timeout_secs: Option<u64>,
    /// Seconds an API connection may stay idle between requests. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_idle_timeout_secs: Option<u64>,
    /// Connections the API port, and the service tunnel port, each accept at once. Default 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Connections one source address may hold on the API port, and on the service
    /// tunnel port (trusted proxies are exempt). Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_client: Option<u32>,
    /// PEM certificate chain for TLS (when `ssl`). Default: `tls/cert.pem` next to the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert_path: Option<String>,
    /// PEM private key for TLS (when `ssl`). Default: `tls/key.pem` next to the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key_path: Option<String>,
    /// Whether this gateway writes and reloads HAProxy and Keepalived. Default true
    /// (as the original); a local first start sets false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_managed: Option<bool>,
    /// VRRP `virtual_router_id` (1-255), the same on every node. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_router_id: Option<u8>,
    /// VRRP advertisement interval in seconds (fractions allowed, VRRPv3). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_advert_int: Option<f64>,
    /// Interface for the VIP. Default: the first non-loopback interface by index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_interface: Option<String>,
    /// Default `/etc/haproxy/haproxy.cfg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy_cfg_path: Option<String>,
    /// Default `/etc/keepalived/keepalived.conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalived_conf_path: Option<String>,
    /// Command (no shell) that reloads HAProxy. Default `systemctl reload-or-restart haproxy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy_reload_cmd: Option<String>,
    /// Command (no shell) that reloads Keepalived. Default `systemctl reload-or-restart keepalived`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalived_reload_cmd: Option<String>,
    /// HAProxy's admin socket, through which the gateway checks that a reload
    /// took effect. Default `/run/haproxy/admin.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy_admin_socket: Option<String>,
}

/// Which client a tunnel serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClientBinding {
    /// Only streams from the address that opened the tunnel (the real client:
    /// from a trusted PROXY header, else the peer).
    Address,
    /// Any client that reaches the port (clients behind NAT pools whose
    /// source address changes between the API call and the stream).
    Off,
}

/// Every settings field once, in document order, with the name of the rule
/// `vdi-core` parses it with: the one list the field names
/// ([`SETTINGS_FIELDS`]) and the parser are generated from. The compiler
/// holds it equal to [`Settings`]: the parser builds the struct from it.
///
/// `settings_fields!(then)` calls `then! { required: [(field, rule), …],
/// optional: [(field, rule), …] }`.
#[macro_export]
macro_rules! settings_fields {
    ($then:ident) => {
        $then! {
            required: [
                (is_enabled, bool_of),
                (internal_addrs, ip_list_of),
                (ssl, bool_of),
                (disp_addrs, ip_list_of),
                (disp_port, port_of),
                (public_addr, ip_of),
                (virtual_addr, ip_of),
                (api_port, port_of),
                (balancer_api_port, port_of),
                (port_range_start, port_of),
                (port_range_stop, port_of),
                (api_key, key_of),
                (cli_key, key_of),
            ],
            optional: [
                (allowed_targets, cidr_list_of),
                (tunnel_ttl_secs, duration_of),
                (tunnel_idle_secs, duration_of),
                (max_streams_per_tunnel, max_streams_of),
                (connect_timeout_secs, timeout_of),
                (tunnel_client_binding, binding_of),
                (max_tunnels_per_client, per_client_of),
                (max_streams_per_client, per_client_of),
                (http_header_timeout_secs, header_timeout_of),
                (http_idle_timeout_secs, idle_timeout_of),
                (max_connections, max_connections_of),
                (max_connections_per_client, per_client_of),
                (tls_cert_path, pem_path_of),
                (tls_key_path, pem_path_of),
                (ha_managed, bool_of),
                (vrrp_router_id, router_id_of),
                (vrrp_advert_int, advert_int_of),
                (vrrp_interface, interface_of),
                (haproxy_cfg_path, cfg_path_of),
                (keepalived_conf_path, conf_path_of),
                (haproxy_reload_cmd, command_of),
                (keepalived_reload_cmd, command_of),
                (haproxy_admin_socket, socket_path_of),
            ],
        }
    };
}

macro_rules! field_names {
    (required: [$(($r:ident, $rc:ident)),* $(,)?], optional: [$(($o:ident, $oc:ident)),* $(,)?] $(,)?) => {
        /// Names of the settings fields, in document order.
        pub const SETTINGS_FIELDS: &[&str] = &[$(stringify!($r),)* $(stringify!($o),)*];
    };
}

settings_fields!(field_names);

/// Fields that are the host's business, not the broker's: files the daemon
/// writes or reads and commands it runs as root. `change_settings` refuses to
/// change them; the host's CLI (`vdi-gateway settings set`) sets them.
pub const HOST_LOCAL_FIELDS: &[&str] = &[
    "tls_cert_path",
    "tls_key_path",
    "haproxy_cfg_path",
    "keepalived_conf_path",
    "haproxy_reload_cmd",
    "keepalived_reload_cmd",
    "haproxy_admin_socket",
];

/// Fields that hold secrets: masked wherever settings are shown to people.
pub const SECRET_FIELDS: &[&str] = &["api_key", "cli_key"];

/// One rejected field of a settings document or change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
