//! Types the console's library and its UI exchange (Tauri commands).

use crate::{Connections, Health, Secret, UnitStates};
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
    /// Facts the UI acts on: the host key to confirm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Box<HostKeyDetail>>,
}

/// The host key an SSH error is about (`host_key_unknown`,
/// `host_key_changed`): what the trust prompt shows and sends back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKeyDetail {
    pub host: String,
    pub port: u16,
    /// The key's algorithm (an unknown key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// The key the host presents now.
    pub fingerprint: String,
    /// A changed key: the recorded one, and where it is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// The app's version and where it keeps its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub version: String,
    pub data_dir: String,
    pub secrets_warning: Option<String>,
}

/// What the page restores at its next start: the view and the gateway it
/// showed (kept in the console's data directory, so each profile has its own).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UiState {
    #[serde(default)]
    pub view: Option<String>,
    #[serde(default)]
    pub selected: Option<i64>,
}

/// The demo traffic of the embedded gateway: its tunnel and the streams
/// still moving (0 once it was stopped or its tunnel disconnected).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoState {
    pub tunnel_id: Option<String>,
    pub streams: usize,
}

/// Where the local demo cluster is (test-bed hosts the console runs so a
/// newcomer sees every view with real data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterPhase {
    #[default]
    Off,
    Starting,
    Up,
    Stopping,
    Failed,
}

/// The demo cluster now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Why it cannot run on this machine (none: it can).
    pub unavailable: Option<String>,
    pub phase: ClusterPhase,
    /// The step it is at, or what went wrong.
    pub detail: String,
    /// The fleet entries it added, by name.
    pub hosts: Vec<String>,
    /// Demo streams moving through its hosts.
    pub streams: usize,
}

/// What a fleet watch pushes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetUpdate {
    pub rows: Vec<FleetRow>,
    pub summary: FleetSummary,
    /// The whole fleet's throughput (bytes/s, both ways) per bucket of the
    /// last 15 minutes, oldest first (see [`Trend`]).
    #[serde(default)]
    pub throughput: Vec<Option<u64>>,
}

/// A gateway over the last 15 minutes, as the console saw it (its own
/// bounded history of health polls): [`TREND_POINTS`] buckets of
/// [`TREND_BUCKET_SECS`] each, oldest first; `None` where no poll answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trend {
    /// Streams open at the bucket's last poll.
    pub streams: Vec<Option<u64>>,
    /// Bytes per second relayed in the bucket, both ways together.
    pub throughput: Vec<Option<u64>>,
    /// Bytes per second between the last two polls (to target, to client).
    pub rate: Option<[u64; 2]>,
}

pub const TREND_POINTS: usize = 60;
pub const TREND_BUCKET_SECS: u64 = 15;

/// What a connections watch pushes: gateway `id`'s tunnels, or why not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionsUpdate {
    pub id: i64,
    pub result: Result<Connections, ConsoleError>,
    /// Bytes per second (to target, to client) since the previous push.
    #[serde(default)]
    pub rates: Rates,
    /// The gateway's last 15 minutes (its throughput chart).
    #[serde(default)]
    pub trend: Option<Trend>,
    /// Bytes per second of its open streams at each of this watch's last
    /// [`LIVE_POINTS`] pushes, oldest first (the live chart).
    #[serde(default)]
    pub live: Vec<u64>,
}

pub const LIVE_POINTS: usize = 120;

/// Bytes per second [to target, to client] by stream id and by tunnel id
/// (a tunnel's is the sum of its streams'), from two successive polls; a
/// stream or tunnel seen once has none yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub streams: std::collections::BTreeMap<String, [u64; 2]>,
    pub tunnels: std::collections::BTreeMap<String, [u64; 2]>,
}

/// A running watch, as returned by a `watch_*` command; `unwatch` ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WatchId(pub u64);

/// What the journal view asks to follow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRequest {
    pub unit: String,
    pub lines: u32,
    #[serde(default)]
    pub priority: Option<u8>,
    /// journalctl's `--since` / `--until` text; blank means none.
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub until: Option<String>,
}

/// How the audit log is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFormat {
    Csv,
    Json,
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

/// What the add/edit form sends. Keys given here go to the keyring; `Debug`
/// masks them.
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
    pub api_key: Option<Secret>,
    #[serde(default)]
    pub cli_key: Option<Secret>,
    #[serde(default)]
    pub ssh_password: Option<Secret>,
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
    /// Its last 15 minutes (sparklines).
    #[serde(default)]
    pub trend: Option<Trend>,
    /// What an admin should look at, in a few words each (empty: healthy).
    #[serde(default)]
    pub problems: Vec<String>,
    /// A health call to it has been out this long: the row is its last
    /// answer (a slow host never holds up the others' rows).
    #[serde(default)]
    pub pending_ms: Option<u64>,
}

/// The whole fleet in one line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSummary {
    pub gateways: usize,
    pub reachable: usize,
    pub disabled: usize,
    /// Drained for maintenance (no new tunnels).
    #[serde(default)]
    pub draining: usize,
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
            s.draining += usize::from(h.draining);
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
    pub const ALL: [ServiceAction; 4] = [
        ServiceAction::Start,
        ServiceAction::Stop,
        ServiceAction::Restart,
        ServiceAction::Reload,
    ];

    pub fn verb(self) -> &'static str {
        match self {
            ServiceAction::Start => "start",
            ServiceAction::Stop => "stop",
            ServiceAction::Restart => "restart",
            ServiceAction::Reload => "reload",
        }
    }

    /// The action named by its verb.
    pub fn from_verb(verb: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.verb() == verb)
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
    pub outcome: DeployOutcome,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
    /// The package's SHA-256 (hex), as checked on the host before `dpkg -i`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
}

/// How a deployment ended, in the words of the wire (`rolled_back`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOutcome {
    Installed,
    Upgraded,
    Unchanged,
    RolledBack,
    Failed,
}

impl DeployOutcome {
    /// The host runs the package that was asked for.
    pub fn ok(self) -> bool {
        matches!(
            self,
            DeployOutcome::Installed | DeployOutcome::Upgraded | DeployOutcome::Unchanged
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeployOutcome::Installed => "installed",
            DeployOutcome::Upgraded => "upgraded",
            DeployOutcome::Unchanged => "unchanged",
            DeployOutcome::RolledBack => "rolled_back",
            DeployOutcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for DeployOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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

/// An audit record's `params` for `service`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceParams {
    pub unit: String,
    pub action: ServiceAction,
}

/// "Reboot when empty or after T" on one gateway host: the drain runs and
/// the host reboots once no stream is left, or at `deadline` at the latest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootPlan {
    /// A plan is waiting on the host now.
    pub scheduled: bool,
    /// When it was made (Unix seconds).
    pub since: Option<i64>,
    /// Its bound: the reboot comes at `since + after_secs` at the latest.
    pub after_secs: Option<u64>,
    pub deadline: Option<i64>,
    /// A plan that ended without a reboot: why (the drain's exit status,
    /// for example when the gateway was not running). `None` otherwise.
    pub failed: Option<String>,
    /// The plan's last log line on the host (the drain's count of what is
    /// still open, or its error).
    pub last_line: Option<String>,
}

/// The longest bound a reboot plan takes.
pub const REBOOT_AFTER_MAX_SECS: u64 = 86_400;

/// An audit record's `params` for `reboot_plan` and `reboot_cancel`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootParams {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub after_secs: Option<u64>,
}

/// An audit record's `params` for `deploy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployParams {
    pub package: String,
    pub force: bool,
    /// The SHA-256 (hex) of the package that was checked locally and on the
    /// host before `dpkg -i` (absent in records older than the check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// An audit record's `params` for `inventory_add`, `inventory_edit` and
/// `inventory_remove`: the entry as the admin gave it, and which of its
/// secrets were set or cleared (names only, never values).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryParams {
    pub name: String,
    #[serde(default)]
    pub api_url: String,
    #[serde(default)]
    pub ssh_host: Option<String>,
    #[serde(default)]
    pub ssh_port: Option<u16>,
    #[serde(default)]
    pub ssh_user: Option<String>,
    #[serde(default)]
    pub ssh_jump: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// `api_key`, `cli_key`, `ssh_password`: given in this change (set, or
    /// cleared when given empty).
    #[serde(default)]
    pub credentials_changed: Vec<String>,
}

impl InventoryParams {
    /// What an add or edit of `d` records (secret names only).
    pub fn of(d: &GatewayDraft) -> Self {
        let credentials_changed = [
            ("api_key", &d.api_key),
            ("cli_key", &d.cli_key),
            ("ssh_password", &d.ssh_password),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(n, _)| n.to_string())
        .collect();
        Self {
            name: d.name.clone(),
            api_url: d.api_url.clone(),
            ssh_host: d.ssh_host.clone(),
            ssh_port: d.ssh_port,
            ssh_user: d.ssh_user.clone(),
            ssh_jump: d.ssh_jump.clone(),
            tags: d.tags.clone(),
            credentials_changed,
        }
    }
}

/// An audit record's `params` for `change_settings`: field names only (a
/// value may be a key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsParams {
    /// Fields sent through the API.
    pub api: Vec<String>,
    /// Host-local fields (`crate::HOST_LOCAL_FIELDS`), set on the host over SSH.
    pub host: Vec<String>,
}

/// Why a host-local field cannot be changed from the console: they are set
/// on the host, over SSH, and this gateway has no SSH host.
pub const NO_SSH_FOR_HOST_LOCAL: &str =
    "set an SSH host to change host-local fields (Edit in the fleet view)";

/// An audit record's `params` for `trust_host_key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustParams {
    pub port: u16,
    pub fingerprint: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_never_shows_its_keys_through_debug() {
        let d = GatewayDraft {
            name: "gw1".into(),
            api_key: Some("api-0123456789-secret".into()),
            cli_key: Some("cli-0123456789-secret".into()),
            ssh_password: Some("hunter2".into()),
            ..Default::default()
        };
        let shown = format!("{d:?} {d:#?}");
        for key in ["api-0123456789-secret", "cli-0123456789-secret", "hunter2"] {
            assert!(!shown.contains(key), "{shown}");
        }
        assert!(shown.contains("gw1"), "{shown}");
        // ...while the wire text stays plain strings.
        let wire = serde_json::to_value(&d).unwrap();
        assert_eq!(wire["api_key"], "api-0123456789-secret");
        assert_eq!(serde_json::from_value::<GatewayDraft>(wire).unwrap(), d);
    }

    #[test]
    fn closed_sets_keep_their_wire_words() {
        for (o, word) in [
            (DeployOutcome::Installed, "installed"),
            (DeployOutcome::Upgraded, "upgraded"),
            (DeployOutcome::Unchanged, "unchanged"),
            (DeployOutcome::RolledBack, "rolled_back"),
            (DeployOutcome::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), word);
            assert_eq!(o.as_str(), word);
        }
        for a in ServiceAction::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.verb());
            assert_eq!(ServiceAction::from_verb(a.verb()), Some(a));
        }
        assert_eq!(ServiceAction::from_verb("kill"), None);
        assert_eq!(serde_json::to_value(AuditFormat::Csv).unwrap(), "csv");
    }

    #[test]
    fn host_key_detail_has_the_shape_the_prompt_reads() {
        let unknown = HostKeyDetail {
            host: "10.0.0.1".into(),
            port: 22,
            algorithm: Some("ssh-ed25519".into()),
            fingerprint: "SHA256:abc".into(),
            expected: None,
            file: None,
            line: None,
        };
        assert_eq!(
            serde_json::to_string(&unknown).unwrap(),
            r#"{"host":"10.0.0.1","port":22,"algorithm":"ssh-ed25519","fingerprint":"SHA256:abc"}"#
        );
    }
}

/// A settings change for many gateways at once. `set` gives each host the
/// same values; each field of `rotate` (one of `crate::SECRET_FIELDS`) gets a
/// new random key per host, so no two hosts ever share a rotated key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkChange {
    #[serde(default)]
    pub set: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub rotate: Vec<String>,
}

/// One field of one host, before and after; keys never appear (masked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDiff {
    pub field: String,
    pub before: String,
    pub after: String,
}

/// What a bulk change would do on one host (the preview).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    pub gateway: i64,
    pub host: String,
    /// The fields that change, in document order; empty: nothing to do.
    pub diff: Vec<FieldDiff>,
    /// Why this host would not take the change (its rules, unreachable, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ConsoleError>,
    /// A digest of the settings the preview read: the apply refuses a host
    /// whose settings changed since (preview again).
    pub version: String,
}

impl HostPlan {
    /// This host as the apply takes it.
    pub fn planned(&self) -> Planned {
        Planned {
            gateway: self.gateway,
            version: self.version.clone(),
        }
    }
}

/// A host of a previewed change, as the apply takes it: in this order, and
/// only if its settings still have this `version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Planned {
    pub gateway: i64,
    pub version: String,
}

/// One host's result in a rolling operation over several hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkOutcome {
    pub gateway: i64,
    pub host: String,
    pub ok: bool,
    /// In words: "changed: cli_key", "drained, upgraded 0.1.0 → 0.1.1, undrained".
    pub summary: String,
    /// Settings fields changed there (a bulk change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    pub took_ms: u64,
}

/// Maintenance over a group, one host at a time, stopping at the first
/// failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollingOp {
    /// No new tunnels there; its streams go on; the VIP moves away.
    Drain,
    Undrain,
    /// Drain, install the bundled gateway package (zero-drop), wait until
    /// the API is healthy, undrain. A host whose upgrade fails stays drained.
    Upgrade,
}

impl RollingOp {
    pub fn as_str(self) -> &'static str {
        match self {
            RollingOp::Drain => "drain",
            RollingOp::Undrain => "undrain",
            RollingOp::Upgrade => "upgrade",
        }
    }
}

/// An audit record's `params` for a bulk change or a rolling operation:
/// hosts by name, fields by name only (a value may be a key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkParams {
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rotate: Vec<String>,
}
