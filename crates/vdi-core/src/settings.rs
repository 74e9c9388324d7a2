//! The settings document: defaults, parsing with per-field errors, validation,
//! partial updates and rendering in the original's layout.

use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::str::FromStr;
use vdi_wire::{
    ClientBinding, FieldError, HAPROXY_PEERS_PORT, HAPROXY_STATS_PORT, SERVICE_PUBLIC_PORT,
    SERVICE_TUNNEL_PORT, SETTINGS_FIELDS, Secret, Settings,
};

pub const DEFAULT_ALLOWED_TARGETS: &[&str] =
    &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];
pub const DEFAULT_TUNNEL_TTL_SECS: u64 = 120;
pub const DEFAULT_TUNNEL_IDLE_SECS: u64 = 60;
pub const DEFAULT_MAX_STREAMS_PER_TUNNEL: u32 = 64;
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
/// Shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;
const MAX_DURATION_SECS: u64 = 7 * 24 * 3600;

/// Settings for a gateway running alone on loopback (first start, local runs).
pub fn local_defaults(api_key: String, cli_key: String) -> Settings {
    let lo: IpAddr = IpAddr::from([127, 0, 0, 1]);
    Settings {
        is_enabled: true,
        internal_addrs: vec![lo],
        ssl: false,
        disp_addrs: vec![lo],
        disp_port: 4200,
        public_addr: lo,
        virtual_addr: lo,
        api_port: 8000,
        balancer_api_port: 8002,
        port_range_start: 5900,
        port_range_stop: 5999,
        api_key: Secret::new(api_key),
        cli_key: Secret::new(cli_key),
        allowed_targets: None,
        tunnel_ttl_secs: None,
        tunnel_idle_secs: None,
        max_streams_per_tunnel: None,
        connect_timeout_secs: None,
        tunnel_client_binding: None,
        max_tunnels_per_client: None,
        max_streams_per_client: None,
        http_header_timeout_secs: None,
        http_idle_timeout_secs: None,
        max_connections: None,
        max_connections_per_client: None,
        tls_cert_path: None,
        tls_key_path: None,
        // A local run must not rewrite the host's HAProxy and Keepalived.
        ha_managed: Some(false),
        vrrp_router_id: None,
        vrrp_advert_int: None,
        vrrp_interface: None,
        haproxy_cfg_path: None,
        keepalived_conf_path: None,
        haproxy_reload_cmd: None,
        keepalived_reload_cmd: None,
        haproxy_admin_socket: None,
    }
}

/// The values in force, with this project's defaults filled in.
pub fn allowed_targets(s: &Settings) -> Vec<String> {
    s.allowed_targets.clone().unwrap_or_else(|| {
        DEFAULT_ALLOWED_TARGETS
            .iter()
            .map(|s| s.to_string())
            .collect()
    })
}
pub fn tunnel_ttl_secs(s: &Settings) -> u64 {
    s.tunnel_ttl_secs.unwrap_or(DEFAULT_TUNNEL_TTL_SECS)
}
pub fn tunnel_idle_secs(s: &Settings) -> u64 {
    s.tunnel_idle_secs.unwrap_or(DEFAULT_TUNNEL_IDLE_SECS)
}
pub fn max_streams_per_tunnel(s: &Settings) -> u32 {
    s.max_streams_per_tunnel
        .unwrap_or(DEFAULT_MAX_STREAMS_PER_TUNNEL)
}
pub const DEFAULT_MAX_TUNNELS_PER_CLIENT: u32 = 16;
pub const DEFAULT_MAX_STREAMS_PER_CLIENT: u32 = 256;
/// Whether a tunnel serves only the address that opened it.
pub fn client_binding(s: &Settings) -> bool {
    s.tunnel_client_binding.unwrap_or(ClientBinding::Address) == ClientBinding::Address
}
pub fn max_tunnels_per_client(s: &Settings) -> u32 {
    s.max_tunnels_per_client
        .unwrap_or(DEFAULT_MAX_TUNNELS_PER_CLIENT)
}
pub fn max_streams_per_client(s: &Settings) -> u32 {
    s.max_streams_per_client
        .unwrap_or(DEFAULT_MAX_STREAMS_PER_CLIENT)
}
pub const DEFAULT_HTTP_HEADER_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_HTTP_IDLE_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u32 = 64;
pub fn http_header_timeout_secs(s: &Settings) -> u64 {
    s.http_header_timeout_secs
        .unwrap_or(DEFAULT_HTTP_HEADER_TIMEOUT_SECS)
}
pub fn http_idle_timeout_secs(s: &Settings) -> u64 {
    s.http_idle_timeout_secs
        .unwrap_or(DEFAULT_HTTP_IDLE_TIMEOUT_SECS)
}
pub fn max_connections(s: &Settings) -> u32 {
    s.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
}
pub fn max_connections_per_client(s: &Settings) -> u32 {
    s.max_connections_per_client
        .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_CLIENT)
}
pub fn connect_timeout_secs(s: &Settings) -> u64 {
    s.connect_timeout_secs
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT_SECS)
}

pub const DEFAULT_HAPROXY_CFG: &str = "/etc/haproxy/haproxy.cfg";
pub const DEFAULT_KEEPALIVED_CONF: &str = "/etc/keepalived/keepalived.conf";
pub const DEFAULT_HAPROXY_RELOAD: &str = "systemctl reload-or-restart haproxy";
pub const DEFAULT_KEEPALIVED_RELOAD: &str = "systemctl reload-or-restart keepalived";

pub const DEFAULT_HAPROXY_ADMIN_SOCKET: &str = "/run/haproxy/admin.sock";

pub fn haproxy_admin_socket(s: &Settings) -> &str {
    s.haproxy_admin_socket
        .as_deref()
        .unwrap_or(DEFAULT_HAPROXY_ADMIN_SOCKET)
}

pub fn ha_managed(s: &Settings) -> bool {
    s.ha_managed.unwrap_or(true)
}
pub fn vrrp_router_id(s: &Settings) -> u8 {
    s.vrrp_router_id.unwrap_or(1)
}
pub fn vrrp_advert_int(s: &Settings) -> f64 {
    s.vrrp_advert_int.unwrap_or(1.0)
}
pub fn haproxy_cfg_path(s: &Settings) -> &str {
    s.haproxy_cfg_path.as_deref().unwrap_or(DEFAULT_HAPROXY_CFG)
}
pub fn keepalived_conf_path(s: &Settings) -> &str {
    s.keepalived_conf_path
        .as_deref()
        .unwrap_or(DEFAULT_KEEPALIVED_CONF)
}
/// The reload commands as argument vectors (run without a shell).
pub fn haproxy_reload_cmd(s: &Settings) -> Vec<String> {
    split_command(
        s.haproxy_reload_cmd
            .as_deref()
            .unwrap_or(DEFAULT_HAPROXY_RELOAD),
    )
}
pub fn keepalived_reload_cmd(s: &Settings) -> Vec<String> {
    split_command(
        s.keepalived_reload_cmd
            .as_deref()
            .unwrap_or(DEFAULT_KEEPALIVED_RELOAD),
    )
}
fn split_command(c: &str) -> Vec<String> {
    c.split_whitespace().map(str::to_string).collect()
}

/// Why a settings document could not be taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("settings document is not valid JSON: {0}")]
    Json(String),
    #[error("settings document must be a JSON object")]
    NotAnObject,
    #[error("invalid settings: {}", join(.0))]
    Invalid(Vec<FieldError>),
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl SettingsError {
    /// Per-field errors, or one error for the whole document.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            SettingsError::Invalid(errors) => errors.clone(),
            other => vec![FieldError::new("document", other.to_string())],
        }
    }
}

/// Parses and validates the stored text.
pub fn parse_document_text(text: &str) -> Result<Settings, SettingsError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| SettingsError::Json(e.to_string()))?;
    parse_document(value)
}

/// Parses and validates a whole document given as JSON, collecting every problem.
pub fn parse_document(value: Value) -> Result<Settings, SettingsError> {
    let Value::Object(map) = value else {
        return Err(SettingsError::NotAnObject);
    };
    let mut errors = Vec::new();
    for key in map.keys() {
        if !SETTINGS_FIELDS.contains(&key.as_str()) {
            errors.push(FieldError::new(key, "unknown field"));
        }
    }
    let mut f = Fields {
        map: &map,
        errors: &mut errors,
    };
    let settings = match parse_fields(&mut f) {
        Some(s) if errors.is_empty() => s,
        _ => return Err(SettingsError::Invalid(errors)),
    };
    let cross = validate(&settings);
    if cross.is_empty() {
        Ok(settings)
    } else {
        Err(SettingsError::Invalid(cross))
    }
}

/// `parse_fields`: each field through its rule (every problem recorded), then
/// the struct, generated from `vdi_wire::settings_fields!`.
macro_rules! parse_fields {
    (required: [$(($r:ident, $rc:ident)),* $(,)?], optional: [$(($o:ident, $oc:ident)),* $(,)?] $(,)?) => {
        fn parse_fields(f: &mut Fields) -> Option<Settings> {
            $(let $r = f.required(stringify!($r), $rc);)*
            $(let $o = f.optional(stringify!($o), $oc);)*
            Some(Settings {
                $($r: $r?,)*
                $($o: $o?,)*
            })
        }
    };
}

vdi_wire::settings_fields!(parse_fields);

macro_rules! field_rules {
    (required: [$(($r:ident, $rc:ident)),* $(,)?], optional: [$(($o:ident, $oc:ident)),* $(,)?] $(,)?) => {
        /// Each field with the name of the rule that parses it, in document order.
        pub const FIELD_RULES: &[(&str, &str)] =
            &[$((stringify!($r), stringify!($rc)),)* $((stringify!($o), stringify!($oc)),)*];
    };
}

vdi_wire::settings_fields!(field_rules);

/// What a field's rule accepts, for the API's schema (bounds inclusive).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Hints {
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub pattern: Option<&'static str>,
    /// A list with at least one item, none twice.
    pub non_empty_unique: bool,
    /// An IP address (or a list of them).
    pub ip: bool,
    /// A list of networks: addresses or CIDR ([`CIDR_V4_PATTERN`], [`CIDR_V6_PATTERN`]).
    pub cidr_list: bool,
}

const H16: &str = "[0-9A-Fa-f]{1,4}";

/// An IPv4 network in CIDR notation, as ECMA-262 (no leading zeros, as the
/// parser). Host bits set are refused too, which no pattern can state.
pub const CIDR_V4_PATTERN: &str = "^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(?:3[0-2]|[12]?[0-9])$";

/// An IPv6 network in CIDR notation: the hexadecimal forms (no embedded
/// IPv4), a subset of what the parser takes.
pub fn cidr_v6_pattern() -> String {
    let h = H16;
    let forms = [
        format!("(?:{h}:){{7}}{h}"),
        format!("(?:{h}:){{1,7}}:"),
        format!("(?:{h}:){{1,6}}:{h}"),
        format!("(?:{h}:){{1,5}}(?::{h}){{1,2}}"),
        format!("(?:{h}:){{1,4}}(?::{h}){{1,3}}"),
        format!("(?:{h}:){{1,3}}(?::{h}){{1,4}}"),
        format!("(?:{h}:){{1,2}}(?::{h}){{1,5}}"),
        format!("{h}:(?::{h}){{1,6}}"),
        format!(":(?:(?::{h}){{1,7}}|:)"),
    ];
    format!(
        "^(?:{})/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9])$",
        forms.join("|")
    )
}

/// The [`Hints`] of `field`, from the rule that parses it.
pub fn hints(field: &str) -> Hints {
    let rule = FIELD_RULES
        .iter()
        .find(|(f, _)| *f == field)
        .map_or("", |(_, r)| *r);
    let range = |min: f64, max: f64| Hints {
        minimum: Some(min),
        maximum: Some(max),
        ..Hints::default()
    };
    match rule {
        "port_of" => range(1.0, 65535.0),
        "duration_of" => range(1.0, MAX_DURATION_SECS as f64),
        "timeout_of" => range(1.0, 300.0),
        "max_streams_of" | "per_client_of" => range(1.0, 100_000.0),
        "router_id_of" => range(1.0, 255.0),
        "advert_int_of" => range(0.01, 255.0),
        "header_timeout_of" => range(1.0, 30.0),
        "idle_timeout_of" => range(1.0, 3600.0),
        "max_connections_of" => range(1.0, 1_000_000.0),
        "key_of" => Hints {
            min_length: Some(MIN_KEY_LEN),
            pattern: Some("^[!-~]+$"),
            ..Hints::default()
        },
        "interface_of" => Hints {
            min_length: Some(1),
            max_length: Some(15),
            pattern: Some("^[A-Za-z0-9._@-]+$"),
            ..Hints::default()
        },
        "ip_of" => Hints {
            ip: true,
            ..Hints::default()
        },
        "ip_list_of" => Hints {
            ip: true,
            non_empty_unique: true,
            ..Hints::default()
        },
        "cidr_list_of" => Hints {
            cidr_list: true,
            ..Hints::default()
        },
        _ => Hints::default(),
    }
}

struct Fields<'a> {
    map: &'a Map<String, Value>,
    errors: &'a mut Vec<FieldError>,
}

impl Fields<'_> {
    fn required<T>(&mut self, name: &str, conv: fn(&Value) -> Result<T, String>) -> Option<T> {
        match self.map.get(name) {
            None => {
                self.errors.push(FieldError::new(name, "missing"));
                None
            }
            Some(v) => self.convert(name, v, conv),
        }
    }

    /// Absent or null means "use the default".
    fn optional<T>(
        &mut self,
        name: &str,
        conv: fn(&Value) -> Result<T, String>,
    ) -> Option<Option<T>> {
        match self.map.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(v) => self.convert(name, v, conv).map(Some),
        }
    }

    fn convert<T>(
        &mut self,
        name: &str,
        v: &Value,
        conv: fn(&Value) -> Result<T, String>,
    ) -> Option<T> {
        match conv(v) {
            Ok(t) => Some(t),
            Err(message) => {
                self.errors.push(FieldError::new(name, message));
                None
            }
        }
    }
}

fn bool_of(v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected true or false, got {v}"))
}

fn uint_of(v: &Value, min: u64, max: u64) -> Result<u64, String> {
    let n = v
        .as_u64()
        .ok_or_else(|| format!("expected a whole number, got {v}"))?;
    if n < min || n > max {
        return Err(format!("{n} is out of range {min}..={max}"));
    }
    Ok(n)
}

fn port_of(v: &Value) -> Result<u16, String> {
    uint_of(v, 1, 65535).map(|n| n as u16)
}

fn duration_of(v: &Value) -> Result<u64, String> {
    uint_of(v, 1, MAX_DURATION_SECS)
}

fn timeout_of(v: &Value) -> Result<u64, String> {
    uint_of(v, 1, 300)
}

fn max_streams_of(v: &Value) -> Result<u32, String> {
    uint_of(v, 1, 100_000).map(|n| n as u32)
}

fn per_client_of(v: &Value) -> Result<u32, String> {
    uint_of(v, 1, 100_000).map(|n| n as u32)
}

fn header_timeout_of(v: &Value) -> Result<u64, String> {
    uint_of(v, 1, 30)
}

fn idle_timeout_of(v: &Value) -> Result<u64, String> {
    uint_of(v, 1, 3600)
}

fn max_connections_of(v: &Value) -> Result<u32, String> {
    uint_of(v, 1, 1_000_000).map(|n| n as u32)
}

fn binding_of(v: &Value) -> Result<ClientBinding, String> {
    match str_of(v)? {
        "address" => Ok(ClientBinding::Address),
        "off" => Ok(ClientBinding::Off),
        other => Err(format!("{other:?} is not one of \"address\", \"off\"")),
    }
}

fn str_of(v: &Value) -> Result<&str, String> {
    v.as_str()
        .ok_or_else(|| format!("expected a string, got {v}"))
}

fn ip_of(v: &Value) -> Result<IpAddr, String> {
    let s = str_of(v)?;
    IpAddr::from_str(s).map_err(|_| format!("{s:?} is not an IP address"))
}

fn list_of<T>(v: &Value, item: fn(&Value) -> Result<T, String>) -> Result<Vec<T>, String> {
    let items = v
        .as_array()
        .ok_or_else(|| format!("expected a list, got {v}"))?;
    items.iter().map(item).collect()
}

fn ip_list_of(v: &Value) -> Result<Vec<IpAddr>, String> {
    let list = list_of(v, ip_of)?;
    if list.is_empty() {
        return Err("must list at least one address".into());
    }
    let unique: BTreeSet<_> = list.iter().collect();
    if unique.len() != list.len() {
        return Err("lists an address twice".into());
    }
    Ok(list)
}

fn cidr_list_of(v: &Value) -> Result<Vec<String>, String> {
    list_of(v, |item| {
        let s = str_of(item)?;
        crate::allow::parse_net(s)?;
        Ok(s.to_string())
    })
}

fn key_of(v: &Value) -> Result<Secret, String> {
    // Never echo the value: it is a key.
    let s = v.as_str().ok_or("expected a string")?;
    if s.chars().count() < MIN_KEY_LEN {
        return Err(format!("must be at least {MIN_KEY_LEN} characters"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces (it travels in a header)".into());
    }
    Ok(Secret::new(s))
}

fn router_id_of(v: &Value) -> Result<u8, String> {
    uint_of(v, 1, 255).map(|n| n as u8)
}

fn advert_int_of(v: &Value) -> Result<f64, String> {
    let n = v
        .as_f64()
        .ok_or_else(|| format!("expected a number of seconds, got {v}"))?;
    if !(0.01..=255.0).contains(&n) {
        return Err(format!("{n} is out of range 0.01..=255"));
    }
    Ok(n)
}

fn interface_of(v: &Value) -> Result<String, String> {
    let s = str_of(v)?;
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !ok {
        return Err(format!("{s:?} is not a network interface name"));
    }
    Ok(s.to_string())
}

fn command_of(v: &Value) -> Result<String, String> {
    let s = str_of(v)?;
    let first = s.split_whitespace().next().unwrap_or("");
    if first.is_empty() {
        return Err("must name a command".into());
    }
    if s.contains(['\n', '\r', ';', '|', '&', '`', '$']) {
        return Err("is run without a shell: give one command and its arguments".into());
    }
    Ok(s.to_string())
}

/// An absolute path in canonical form: no `.`, `..` or empty components, no
/// trailing slash, no whitespace or control characters (they end up in
/// configuration files and command lines).
fn path_of(v: &Value) -> Result<String, String> {
    let s = str_of(v)?;
    if !s.starts_with('/') {
        return Err(format!("{s:?} must be an absolute path"));
    }
    if s.len() > 4096 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} must not contain whitespace or control characters"
        ));
    }
    // Paths are written into haproxy.cfg and keepalived.conf, where these
    // quote, escape or start a comment.
    if s.contains(['\'', '"', '#', '\\']) {
        return Err(format!("{s:?} must not contain quotes, '#' or '\\'"));
    }
    if s[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{s:?} must be a plain path to a file (no \".\", \"..\", \"//\" or trailing \"/\")"
        ));
    }
    Ok(s.to_string())
}

fn path_ending(v: &Value, endings: &[&str]) -> Result<String, String> {
    let p = path_of(v)?;
    if endings.iter().any(|e| p.ends_with(e)) {
        Ok(p)
    } else {
        Err(format!("{p:?} must end in {}", endings.join(" or ")))
    }
}

fn cfg_path_of(v: &Value) -> Result<String, String> {
    path_ending(v, &[".cfg"])
}

fn conf_path_of(v: &Value) -> Result<String, String> {
    path_ending(v, &[".conf"])
}

fn socket_path_of(v: &Value) -> Result<String, String> {
    path_ending(v, &[".sock"])
}

fn pem_path_of(v: &Value) -> Result<String, String> {
    path_ending(v, &[".pem", ".crt", ".key"])
}

/// Rules that involve more than one field. Field rules are checked while parsing.
pub fn validate(s: &Settings) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if s.port_range_start > s.port_range_stop {
        errors.push(FieldError::new(
            "port_range_start",
            format!(
                "{} is above port_range_stop {}",
                s.port_range_start, s.port_range_stop
            ),
        ));
    } else {
        let range = s.port_range_start..=s.port_range_stop;
        let reserved = [
            ("api_port", s.api_port),
            ("balancer_api_port", s.balancer_api_port),
            ("the service port", SERVICE_PUBLIC_PORT),
            ("the service tunnel port", SERVICE_TUNNEL_PORT),
            ("the HAProxy stats port", HAPROXY_STATS_PORT),
            ("the HAProxy peers port", HAPROXY_PEERS_PORT),
        ];
        for (what, port) in reserved {
            if range.contains(&port) {
                errors.push(FieldError::new(
                    "port_range_start",
                    format!(
                        "range {}-{} overlaps {what} ({port})",
                        s.port_range_start, s.port_range_stop
                    ),
                ));
            }
        }
    }
    for (port, what) in [
        (SERVICE_TUNNEL_PORT, "the service tunnel port"),
        (HAPROXY_PEERS_PORT, "the HAProxy peers port"),
    ] {
        if s.api_port == port {
            errors.push(FieldError::new("api_port", format!("{port} is {what}")));
        }
    }
    for (port, what) in [
        (SERVICE_PUBLIC_PORT, "the service port"),
        (HAPROXY_STATS_PORT, "the HAProxy stats port"),
        (HAPROXY_PEERS_PORT, "the HAProxy peers port"),
    ] {
        if s.balancer_api_port == port {
            errors.push(FieldError::new(
                "balancer_api_port",
                format!("{port} is {what}"),
            ));
        }
    }
    if s.api_key.expose() == s.cli_key.expose() {
        errors.push(FieldError::new(
            "cli_key",
            "must differ from api_key (the two keys grant different rights)",
        ));
    }
    errors
}

/// A validated partial update.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub settings: Settings,
    /// Fields whose value differs from before, in document order.
    pub changed: Vec<String>,
}

/// Applies a partial update (only the fields given; `null` resets an optional
/// field to its default) and validates the result as a whole.
pub fn apply_patch(
    current: &Settings,
    patch: &Map<String, Value>,
) -> Result<Change, SettingsError> {
    let unknown: Vec<FieldError> = patch
        .keys()
        .filter(|k| !SETTINGS_FIELDS.contains(&k.as_str()))
        .map(|k| FieldError::new(k, "unknown field"))
        .collect();
    if !unknown.is_empty() {
        return Err(SettingsError::Invalid(unknown));
    }
    let before = to_map(current);
    let mut merged = before.clone();
    for (k, v) in patch {
        if v.is_null() {
            merged.remove(k);
        } else {
            merged.insert(k.clone(), v.clone());
        }
    }
    let settings = parse_document(Value::Object(merged))?;
    let after = to_map(&settings);
    let changed = SETTINGS_FIELDS
        .iter()
        .filter(|f| before.get(**f) != after.get(**f))
        .map(|f| f.to_string())
        .collect();
    Ok(Change { settings, changed })
}

fn to_map(s: &Settings) -> Map<String, Value> {
    match serde_json::to_value(s) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("Settings serializes to an object"),
    }
}

/// The document as stored and printed: one field per line, lists inline, as the
/// original shows it (`select * from settings`).
pub fn render_document(s: &Settings) -> String {
    let map = to_map(s);
    let mut out = String::from("{\n");
    let last = map.len().saturating_sub(1);
    for (i, (k, v)) in map.iter().enumerate() {
        out.push_str("  ");
        out.push_str(&Value::String(k.clone()).to_string());
        out.push_str(": ");
        out.push_str(&inline(v));
        if i != last {
            out.push(',');
        }
        out.push('\n');
    }
    out.push('}');
    out
}

fn inline(v: &Value) -> String {
    match v {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(inline).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// The document with both keys replaced by `***`, for showing to people.
pub fn masked(s: &Settings) -> Settings {
    let mut m = s.clone();
    m.api_key = Secret::new("***");
    m.cli_key = Secret::new("***");
    m
}

/// Turns `KEY=VALUE` (command line) into a patch entry. VALUE is JSON when it
/// parses as JSON of the field's kind; lists also take `a,b,c`; strings may be bare.
pub fn parse_assignment(arg: &str) -> Result<(String, Value), FieldError> {
    let (key, raw) = arg
        .split_once('=')
        .ok_or_else(|| FieldError::new(arg, "expected KEY=VALUE"))?;
    let key = key.trim();
    if !SETTINGS_FIELDS.contains(&key) {
        return Err(FieldError::new(key, "unknown field"));
    }
    let list_field = matches!(key, "internal_addrs" | "disp_addrs" | "allowed_targets");
    let value = match serde_json::from_str::<Value>(raw) {
        Ok(v @ Value::Array(_)) if list_field => v,
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::Null)) if !list_field => v,
        Ok(v @ Value::String(_)) if !list_field => v,
        _ if list_field => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        _ => Value::String(raw.to_string()),
    };
    Ok((key.to_string(), value))
}

#[cfg(test)]
mod tests;
