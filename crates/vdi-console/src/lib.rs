//! The console's logic, with no window: the fleet inventory, the secrets, a
//! client of each gateway's API, the fleet overview and the embedded gateway.
//! The desktop app's Tauri commands are thin wrappers over [`Console`]; so is
//! the `vdi-console` command line.

pub mod audit;
pub mod bulk;
pub mod client;
pub mod cluster;
pub mod demo;
pub mod deploy;
pub mod embedded;
mod error;
pub mod fleet;
pub mod history;
pub mod host_local;
pub mod inventory;
pub mod journal;
pub mod maintenance;
pub mod netns;
pub mod preview;
mod remote;
pub mod secrets;
pub mod services;
pub mod ssh;
pub mod watch;

pub use error::{Error, Result};
pub use remote::unit;

use client::GatewayClient;
use inventory::Inventory;
use secrets::{Kind, Secrets};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vdi_wire::console::{
    AppInfo, ConnectionsUpdate, FleetRow, FleetSummary, FleetUpdate, GatewayDraft, GatewayEntry,
    InventoryParams, SettingsParams, WatchId,
};
use vdi_wire::{
    ConnectionOpened, Connections, Disconnect, Disconnected, DrainState, FieldError,
    OpenConnection, Secret, Settings, SettingsChanged,
};

/// A fleet view's push comes at most this long after its polls began,
/// whatever a slow host does.
pub const FLEET_PUSH_WITHIN: Duration = Duration::from_millis(800);

/// Default per-host time limit of API calls.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Console {
    data_dir: PathBuf,
    inventory: Mutex<Inventory>,
    secrets: Secrets,
    timeout: Duration,
    /// One connection pool for every gateway's API.
    http: reqwest::Client,
    /// API clients by gateway, forgotten when the entry or its keys change.
    clients: Mutex<HashMap<i64, GatewayClient>>,
    watches: watch::Watches,
    /// Every gateway's last 15 minutes, from the console's health polls.
    history: Mutex<history::History>,
    /// The history's clock (monotonic: rates never see a wall-clock jump).
    started: std::time::Instant,
    /// Each gateway's health poll, one at a time per host.
    poller: fleet::Poller,
    /// When the last overview ran (the sampler polls only when none did).
    last_overview: Mutex<Option<std::time::Instant>>,
    embedded: tokio::sync::Mutex<Option<embedded::Embedded>>,
    demo: Mutex<Option<demo::Demo>>,
    cluster: cluster::Cluster,
    hostkeys: std::sync::Arc<ssh::hostkeys::HostKeys>,
    pending_keys: std::sync::Arc<ssh::PendingKeys>,
    ssh_pool: ssh::Pool,
    ssh_options: ssh::Options,
    audit: audit::Audit,
}

/// The gateway package the console deploys: `$VDI_GATEWAY_DEB`, else the
/// one the console's own package ships.
pub fn bundled_gateway_deb() -> Option<PathBuf> {
    std::env::var_os("VDI_GATEWAY_DEB")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/share/vdi-console/vdi-gateway.deb")))
        .filter(|p| p.is_file())
}

/// The data directory: `$VDI_CONSOLE_DATA`, else the platform's data dir.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("VDI_CONSOLE_DATA")
        .map(PathBuf::from)
        .or_else(|| dirs::data_dir().map(|d| d.join("vdi-console")))
        .unwrap_or_else(|| PathBuf::from(".vdi-console"))
}

impl Console {
    /// Opens the console's state in `data_dir`, with the OS keyring (or the warned fallback).
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::with_secrets(data_dir, Secrets::detect(data_dir))
    }

    pub fn with_secrets(data_dir: &Path, secrets: Secrets) -> Result<Self> {
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            inventory: Mutex::new(Inventory::open(&data_dir.join("inventory.db"))?),
            secrets,
            timeout: DEFAULT_TIMEOUT,
            http: reqwest::Client::new(),
            clients: Mutex::default(),
            watches: Default::default(),
            history: Default::default(),
            started: std::time::Instant::now(),
            last_overview: Mutex::new(None),
            poller: Default::default(),
            embedded: tokio::sync::Mutex::new(None),
            demo: Mutex::new(None),
            cluster: Default::default(),
            hostkeys: std::sync::Arc::new(ssh::hostkeys::HostKeys::standard(data_dir)),
            pending_keys: Default::default(),
            ssh_pool: Default::default(),
            ssh_options: Default::default(),
            audit: audit::Audit::open(&data_dir.join("audit.db"))?,
        })
    }

    pub fn secrets_warning(&self) -> Option<String> {
        self.secrets.warning()
    }

    /// The version, the data directory and the secrets warning, for the UI.
    pub fn app_info(&self) -> AppInfo {
        AppInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            data_dir: self.data_dir.display().to_string(),
            secrets_warning: self.secrets_warning(),
        }
    }

    /// The entry with its key flags from the secret store.
    fn entry(&self, mut g: GatewayEntry) -> Result<GatewayEntry> {
        g.has_api_key = self.secrets.get(g.id, Kind::ApiKey)?.is_some();
        g.has_cli_key = self.secrets.get(g.id, Kind::CliKey)?.is_some();
        Ok(g)
    }

    pub fn list(&self) -> Result<Vec<GatewayEntry>> {
        let all = self.inventory.lock().unwrap().list()?;
        all.into_iter().map(|g| self.entry(g)).collect()
    }

    pub fn get(&self, id: i64) -> Result<GatewayEntry> {
        let g = self.inventory.lock().unwrap().get(id)?;
        self.entry(g)
    }

    /// Adds a gateway (audited as `inventory_add`, secrets by name only).
    pub fn add(&self, d: &GatewayDraft) -> Result<GatewayEntry> {
        let r = self.add_as(d, false);
        let v = remote::verdict(&r, |g| (true, format!("added gateway {}", g.id)));
        let id = r.as_ref().ok().map(|g| g.id);
        self.audited(id, &d.name, "inventory_add", &InventoryParams::of(d), v);
        r
    }

    fn add_as(&self, d: &GatewayDraft, embedded: bool) -> Result<GatewayEntry> {
        let id = self.inventory.lock().unwrap().add(d, embedded)?;
        self.store_secrets(id, d)?;
        self.get(id)
    }

    /// Changes gateway `id` (audited as `inventory_edit`).
    pub fn update(&self, id: i64, d: &GatewayDraft) -> Result<GatewayEntry> {
        let before = self.host_label(id);
        let r = self.update_unaudited(id, d);
        let v = remote::verdict(&r, |g| {
            let renamed = (g.name != before).then(|| format!(" (was {before:?})"));
            (true, format!("edited{}", renamed.unwrap_or_default()))
        });
        self.audited(
            Some(id),
            &d.name,
            "inventory_edit",
            &InventoryParams::of(d),
            v,
        );
        r
    }

    /// The console's own edits (the embedded gateway's keys at each start).
    fn update_unaudited(&self, id: i64, d: &GatewayDraft) -> Result<GatewayEntry> {
        self.inventory.lock().unwrap().update(id, d)?;
        self.store_secrets(id, d)?;
        self.get(id)
    }

    fn store_secrets(&self, id: i64, d: &GatewayDraft) -> Result<()> {
        // The entry (URL, SSH login) or its keys change: its client and its
        // SSH session are made again.
        self.clients.lock().unwrap().remove(&id);
        self.ssh_pool.forget(id);
        for (kind, value) in [
            (Kind::ApiKey, &d.api_key),
            (Kind::CliKey, &d.cli_key),
            (Kind::SshPassword, &d.ssh_password),
        ] {
            if let Some(v) = value {
                self.secrets.set(id, kind, v.expose().trim())?;
            }
        }
        Ok(())
    }

    /// Removes gateway `id` and its secrets (audited as `inventory_remove`).
    pub fn remove(&self, id: i64) -> Result<()> {
        let params = match self.get(id) {
            Ok(g) => InventoryParams {
                name: g.name,
                api_url: g.api_url,
                ssh_host: g.ssh_host,
                ssh_port: Some(g.ssh_port),
                ssh_user: Some(g.ssh_user),
                ssh_jump: g.ssh_jump,
                tags: g.tags,
                credentials_changed: vec![],
            },
            Err(_) => InventoryParams {
                name: id.to_string(),
                ..Default::default()
            },
        };
        let r = (|| {
            self.inventory.lock().unwrap().remove(id)?;
            self.clients.lock().unwrap().remove(&id);
            // SQLite may give the id to the next entry: never its session.
            self.ssh_pool.forget(id);
            self.secrets.forget(id)
        })();
        let v = remote::verdict(&r, |_| (true, "removed with its secrets".into()));
        let host = params.name.clone();
        self.audited(Some(id), &host, "inventory_remove", &params, v);
        r
    }

    /// The API client of gateway `id`, with its keys from the secret store.
    pub fn client(&self, id: i64) -> Result<GatewayClient> {
        if let Some(c) = self.clients.lock().unwrap().get(&id) {
            return Ok(c.clone());
        }
        let g = self.inventory.lock().unwrap().get(id)?;
        self.client_of(&g)
    }

    fn client_of(&self, g: &GatewayEntry) -> Result<GatewayClient> {
        if let Some(c) = self.clients.lock().unwrap().get(&g.id) {
            return Ok(c.clone());
        }
        let c = GatewayClient::new(
            self.http.clone(),
            &g.api_url,
            self.secrets.get(g.id, Kind::ApiKey)?,
            self.secrets.get(g.id, Kind::CliKey)?,
            self.timeout,
        );
        self.clients.lock().unwrap().insert(g.id, c.clone());
        Ok(c)
    }

    /// Health of every gateway (in parallel, each bounded) and the fleet's
    /// summary, once every call has answered or timed out.
    pub async fn overview(&self) -> Result<(Vec<FleetRow>, FleetSummary)> {
        self.overview_within(self.timeout + Duration::from_secs(1))
            .await
    }

    /// The overview as it stands `deadline` after the polls began: a host
    /// still out shows its last answer, flagged (see [`fleet::Poller`]).
    pub async fn overview_within(
        &self,
        deadline: Duration,
    ) -> Result<(Vec<FleetRow>, FleetSummary)> {
        let all = self.inventory.lock().unwrap().list()?;
        let with_clients = all
            .into_iter()
            .map(|g| {
                let c = self.client_of(&g).map_err(Into::into);
                (g, c)
            })
            .collect();
        let polled = self.poller.refresh(with_clients, deadline).await;
        *self.last_overview.lock().unwrap() = Some(std::time::Instant::now());
        let now = self.now_ms();
        let mut history = self.history.lock().unwrap();
        history.retain(&polled.iter().map(|p| p.row.id).collect::<Vec<_>>());
        let mut rows = Vec::with_capacity(polled.len());
        for fleet::Polled { mut row, answered } in polled {
            // At the time it answered: a row shown again is not a new sample.
            if let (Some(h), Some(at)) = (&row.health, answered) {
                let at = at.saturating_duration_since(self.started).as_millis() as i64;
                history.record(row.id, history::Sample::of(at, h));
            }
            row.trend = history.trend(row.id, now);
            rows.push(row);
        }
        let summary = FleetSummary::of(&rows);
        Ok((rows, summary))
    }

    /// Milliseconds on the history's clock.
    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// The fleet's throughput over the last 15 minutes (see [`history`]).
    pub fn fleet_throughput(&self) -> Vec<Option<u64>> {
        self.history.lock().unwrap().fleet_throughput(self.now_ms())
    }

    /// Keeps the history going while no view polls: an overview every
    /// `every` unless one ran since, until `stop`.
    pub async fn sample(
        self: Arc<Self>,
        every: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let recent = self
                .last_overview
                .lock()
                .unwrap()
                .is_some_and(|t| t.elapsed() < every);
            if !recent && let Err(e) = self.overview().await {
                tracing::warn!(error = %e, "history sample failed");
            }
        }
    }

    pub async fn settings(&self, id: i64) -> Result<Settings> {
        self.client(id)?.get_settings().await
    }

    /// Changes settings of gateway `id`: host-local fields
    /// (`vdi_wire::HOST_LOCAL_FIELDS`) on the host over SSH, the others
    /// through the API (see [`host_local`]). Audited with field names only.
    pub async fn change_settings(
        &self,
        id: i64,
        patch: Map<String, Value>,
    ) -> Result<SettingsChanged> {
        let (api, host) = host_local::split(patch.clone());
        let params = SettingsParams {
            api: api.keys().cloned().collect(),
            host: host.keys().cloned().collect(),
        };
        let r = self.change_settings_unaudited(id, patch, api, host).await;
        let v = remote::verdict(&r, |c| (true, format!("changed: {}", c.changed.join(", "))));
        self.audited(
            Some(id),
            &self.host_label(id),
            "change_settings",
            &params,
            v,
        );
        r
    }

    pub(crate) fn host_label(&self, id: i64) -> String {
        self.get(id)
            .map(|g| g.name)
            .unwrap_or_else(|_| id.to_string())
    }

    /// Every check first (the gateway's rules on the whole patch, an SSH host
    /// for host-local fields), then the host-local half (the host's CLI may
    /// still refuse: nothing is applied then), then the API half; a failure
    /// after the host half reports what is in force ([`Error::Partial`]).
    async fn change_settings_unaudited(
        &self,
        id: i64,
        patch: Map<String, Value>,
        api: Map<String, Value>,
        host: Map<String, Value>,
    ) -> Result<SettingsChanged> {
        let current = self.settings(id).await?;
        let (whole, assignments) = self.check_patch(id, &current, &patch, &host)?;
        let mut on_host = Vec::new();
        let mut settings = current.clone();
        if !host.is_empty() {
            let fields: Vec<String> = host.keys().cloned().collect();
            settings = self
                .set_on_host(id, &assignments, &current, &whole.settings, &fields)
                .await?;
            on_host = whole
                .changed
                .iter()
                .filter(|f| host.contains_key(*f))
                .cloned()
                .collect();
        }
        if api.is_empty() {
            return Ok(SettingsChanged {
                changed: on_host,
                settings,
            });
        }
        let mut changed = match self.client(id)?.change_settings(api).await {
            Ok(c) => c,
            Err(e) if on_host.is_empty() => return Err(e),
            Err(e) => {
                return Err(Error::Partial {
                    applied: on_host,
                    source: Box::new(e),
                });
            }
        };
        // A rotated key: keep talking to the gateway with the new one.
        for (kind, field, value) in [
            (Kind::ApiKey, "api_key", &changed.settings.api_key),
            (Kind::CliKey, "cli_key", &changed.settings.cli_key),
        ] {
            if changed.changed.iter().any(|c| c == field) {
                self.clients.lock().unwrap().remove(&id);
                self.secrets.set(id, kind, value.expose())?;
            }
        }
        // Both halves, in document order.
        changed.changed = vdi_wire::SETTINGS_FIELDS
            .iter()
            .filter(|f| on_host.iter().chain(&changed.changed).any(|c| c == *f))
            .map(|f| f.to_string())
            .collect();
        Ok(changed)
    }

    /// `patch` for gateway `id` checked as a change would be, changing
    /// nothing: the gateway's rules on the whole patch, the host's CLI
    /// assignments for its host-local half (`host`), and an SSH host for
    /// them. The settings it makes and the assignments, or every field's
    /// problem (the bulk preview asks the same).
    pub(crate) fn check_patch(
        &self,
        id: i64,
        current: &Settings,
        patch: &Map<String, Value>,
        host: &Map<String, Value>,
    ) -> Result<(vdi_core::settings::Change, Vec<String>)> {
        let mut errors = Vec::new();
        let whole = match vdi_core::settings::apply_patch(current, patch) {
            Ok(c) => Some(c),
            Err(e) => {
                errors = e.field_errors();
                None
            }
        };
        let assignments = host_local::assignments(host).unwrap_or_else(|e| {
            errors.extend(e);
            Vec::new()
        });
        if !host.is_empty() && self.get(id)?.ssh_host.is_none() {
            errors.extend(
                host.keys()
                    .map(|f| FieldError::new(f, vdi_wire::console::NO_SSH_FOR_HOST_LOCAL)),
            );
        }
        match whole.filter(|_| errors.is_empty()) {
            Some(whole) => Ok((whole, assignments)),
            None => Err(Error::of_fields(errors)),
        }
    }

    pub async fn connections(&self, id: i64) -> Result<Connections> {
        self.client(id)?.get_connections().await
    }

    pub async fn disconnect(&self, id: i64, d: &Disconnect) -> Result<Disconnected> {
        let r = self.client(id)?.disconnect(d).await;
        let v = remote::verdict(&r, |x| (true, format!("{x:?}")));
        self.audited(Some(id), &self.host_label(id), "disconnect", d, v);
        r
    }

    /// Drains a gateway for maintenance (no new tunnels there, its streams go
    /// on, the VIP moves away) or ends the drain; audited.
    pub async fn set_draining(&self, id: i64, on: bool) -> Result<DrainState> {
        let r = self.client(id)?.set_draining(on).await;
        let v = remote::verdict(&r, |x| {
            (
                true,
                format!("{} tunnel(s), {} stream(s) open", x.tunnels, x.streams),
            )
        });
        let action = if on { "drain" } else { "undrain" };
        self.audited(
            Some(id),
            &self.host_label(id),
            action,
            &serde_json::json!({}),
            v,
        );
        r
    }

    /// With no gateway in the fleet, starts the bundled gateway core on loopback
    /// and adds it; with an embedded entry already, (re)starts it. Returns it.
    pub async fn ensure_embedded(&self) -> Result<Option<GatewayEntry>> {
        let existing = self.inventory.lock().unwrap().embedded()?;
        // The demo cluster's entries do not count: the embedded gateway
        // runs beside them (and a dead console's are reclaimed).
        let empty = self
            .inventory
            .lock()
            .unwrap()
            .list()?
            .iter()
            .all(|g| g.tags.iter().any(|t| t == cluster::TAG));
        if existing.is_none() && !empty {
            return Ok(None);
        }
        let mut slot = self.embedded.lock().await;
        if slot.is_none() {
            *slot = Some(embedded::Embedded::start(&self.data_dir).await?);
        }
        let e = slot.as_ref().expect("started above");
        let draft = GatewayDraft {
            name: "local (embedded)".into(),
            api_url: e.api_url(),
            api_key: Some(Secret::new(e.api_key())),
            cli_key: Some(Secret::new(e.cli_key())),
            tags: vec!["embedded".into()],
            ..Default::default()
        };
        let entry = match existing {
            Some(g) => self.update_unaudited(
                g.id,
                &GatewayDraft {
                    name: g.name,
                    tags: g.tags,
                    ..draft
                },
            )?,
            None => self.add_as(&draft, true)?,
        };
        Ok(Some(entry))
    }

    /// Opens a tunnel from the embedded gateway to the demo desktop and
    /// starts the demo traffic through it (see [`demo`]), replacing a
    /// running demo.
    pub async fn demo_tunnel(&self) -> Result<ConnectionOpened> {
        let entry = self
            .ensure_embedded()
            .await?
            .ok_or_else(|| Error::Embedded("the fleet has no embedded gateway".into()))?;
        let (desk, token) = {
            let slot = self.embedded.lock().await;
            let e = slot.as_ref().expect("ensured above");
            (e.demo_desktop().await?, e.token().clone())
        };
        let open = OpenConnection {
            target_host: desk.ip().to_string(),
            target_port: desk.port(),
            protocol: Some("demo".into()),
            vm_id: Some("demo-desktop".into()),
        };
        let opened = self.client(entry.id)?.open_connection(&open).await?;
        let addr = tokio::net::lookup_host((opened.address.as_str(), opened.port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                Error::Embedded(format!("demo tunnel: {} does not resolve", opened.address))
            })?;
        let old = self.demo.lock().unwrap().replace(demo::Demo::start(
            opened.id.clone(),
            addr,
            netns::Net::Here,
            &token,
        ));
        drop(old);
        Ok(opened)
    }

    /// What the page showed last (`ui.json` in the data directory; a file
    /// that does not parse counts as none).
    pub fn ui_state(&self) -> vdi_wire::console::UiState {
        std::fs::read(self.data_dir.join("ui.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Keeps what the page shows for its next start (written whole, then
    /// renamed into place: never a half-written file).
    pub fn save_ui_state(&self, s: &vdi_wire::console::UiState) -> Result<()> {
        if s.view.as_ref().is_some_and(|v| v.len() > 64) {
            return Err(Error::invalid("view", "at most 64 characters"));
        }
        let path = self.data_dir.join("ui.json");
        let tmp = self.data_dir.join("ui.json.new");
        let text = serde_json::to_vec(s).expect("plain data");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::DataDir(format!("{}: {e}", path.display())))
    }

    /// The demo traffic now.
    pub fn demo_state(&self) -> vdi_wire::console::DemoState {
        // One read of the count: a stream ending between two reads would
        // give a tunnel with 0 streams.
        match &*self.demo.lock().unwrap() {
            Some(d) => match d.streams() {
                0 => Default::default(),
                streams => vdi_wire::console::DemoState {
                    tunnel_id: Some(d.tunnel_id.clone()),
                    streams,
                },
            },
            None => Default::default(),
        }
    }

    /// Stops the demo traffic and closes its tunnel.
    pub async fn stop_demo(&self) -> Result<vdi_wire::console::DemoState> {
        let demo = self.demo.lock().unwrap().take();
        if let Some(d) = demo {
            d.stop();
            let embedded = self.inventory.lock().unwrap().embedded()?;
            if let Some(g) = embedded {
                let close = Disconnect {
                    tunnel_id: Some(d.tunnel_id.clone()),
                    ..Default::default()
                };
                // Gone already (disconnected by hand) is as good as closed.
                match self.client(g.id)?.disconnect(&close).await {
                    Ok(_) | Err(Error::Api(..)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(self.demo_state())
    }

    /// Pushes the fleet overview to `sink` now and every `interval_ms` (see
    /// [`watch`]). Runs on the current Tokio runtime.
    pub fn watch_fleet(
        self: &Arc<Self>,
        interval_ms: u64,
        sink: impl FnMut(FleetUpdate) -> bool + Send + 'static,
    ) -> WatchId {
        let (id, stop) = self.watches.start(watch::Kind::Fleet);
        let console = self.clone();
        let next = move || {
            let console = console.clone();
            async move {
                match console.overview_within(FLEET_PUSH_WITHIN).await {
                    Ok((rows, summary)) => FleetUpdate {
                        rows,
                        summary,
                        throughput: console.fleet_throughput(),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "fleet overview failed");
                        FleetUpdate {
                            rows: Vec::new(),
                            summary: FleetSummary::default(),
                            throughput: Vec::new(),
                        }
                    }
                }
            }
        };
        tokio::spawn(watch::repeat(
            watch::interval(interval_ms),
            stop,
            next,
            sink,
        ));
        id
    }

    /// Pushes gateway `gateway`'s connections now and every `interval_ms`.
    pub fn watch_connections(
        self: &Arc<Self>,
        gateway: i64,
        interval_ms: u64,
        sink: impl FnMut(ConnectionsUpdate) -> bool + Send + 'static,
    ) -> WatchId {
        let (id, stop) = self.watches.start(watch::Kind::Connections);
        let console = self.clone();
        // The previous poll's counters, for the rates.
        // The previous poll's counters (for the rates) and the live series.
        let last = Arc::new(Mutex::new((
            None::<history::Counters>,
            std::collections::VecDeque::new(),
        )));
        let next = move || {
            let (console, last) = (console.clone(), last.clone());
            async move {
                let result = console.connections(gateway).await;
                let mut rates = vdi_wire::console::Rates::default();
                let live = {
                    let mut last = last.lock().unwrap();
                    let (before, live) = &mut *last;
                    if let Ok(c) = &result {
                        let now = history::Counters::of(console.now_ms(), c);
                        if let Some(before) = before.as_ref() {
                            rates = before.rates(&now);
                            history::push_live(live, &rates);
                        }
                        *before = Some(now);
                    }
                    live.iter().copied().collect()
                };
                let trend = console
                    .history
                    .lock()
                    .unwrap()
                    .trend(gateway, console.now_ms());
                ConnectionsUpdate {
                    id: gateway,
                    result: result.map_err(Into::into),
                    rates,
                    trend,
                    live,
                }
            }
        };
        tokio::spawn(watch::repeat(
            watch::interval(interval_ms),
            stop,
            next,
            sink,
        ));
        id
    }

    /// Ends watch `id` (its loop stops); false when it had ended already.
    pub fn unwatch(&self, id: WatchId) -> bool {
        self.watches.stop(id)
    }

    /// Whether watch `id` still runs.
    pub fn watching(&self, id: WatchId) -> bool {
        self.watches.is_running(id)
    }

    /// Takes the demo cluster down and stops the embedded gateway (at exit).
    pub async fn shutdown(&self) {
        self.stop_cluster().await;
        if let Some(e) = self.embedded.lock().await.take() {
            e.stop().await;
        }
    }
}
