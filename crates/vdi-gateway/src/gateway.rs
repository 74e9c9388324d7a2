//! The running gateway, below any transport: settings in force, tunnels,
//! listeners, TLS, the HA state, and the domain calls the API only translates
//! (open a tunnel, disconnect, health, change the settings). A change prepares
//! everything that can fail, persists, then switches: never half-applied.
//!
//! The gateway binds listening sockets but does not serve them: each new one
//! goes to the server (`Gateway::new`'s receiver) with a token that closes it.

use crate::drain::{self, Drain, DrainError};
use crate::handover::{Blob, Inherited, ListenerRec, Snapshot};
use crate::metrics::{Metrics, Refusal};
use crate::store::{Store, StoreError};
use crate::tunnel::{NoTunnel, OpenRequest, Registry, Tunnel};
use crate::{ha, tls, units};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vdi_core::allow::AllowList;
use vdi_core::settings::{self as rules, Change, SettingsError};
use vdi_wire::{
    Connections, Disconnected, DrainState, HaState, HaStatus, Health, HealthStatus, OpenConnection,
    PRODUCT_VERSION, SERVICE_TUNNEL_PORT, Settings,
};

pub type Shared = Arc<Gateway>;

/// Which server a listening socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Api,
    ServiceTunnel,
}

/// A socket the gateway bound for the server to accept on until `token` is
/// cancelled (a settings change closed it, or shutdown).
pub struct Bound {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub listener: TcpListener,
    pub token: CancellationToken,
}

/// A listening socket the server accepts on: the token closes it; the
/// descriptor (a duplicate of the server's) is what a handover passes on.
struct Listening {
    token: CancellationToken,
    fd: Option<std::os::fd::OwnedFd>,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Api => "api",
            Kind::ServiceTunnel => "service",
        }
    }

    fn from_name(s: &str) -> Option<Kind> {
        [Kind::Api, Kind::ServiceTunnel]
            .into_iter()
            .find(|k| k.name() == s)
    }
}

/// How this gateway runs: as the host's daemon, or inside another program.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether it may write HAProxy's and Keepalived's files and run their
    /// reload commands. Off, `ha_managed: true` is refused.
    pub manage_ha: bool,
    /// Directories the path settings may point into besides their tools'
    /// own (`VDI_GATEWAY_CONFIG_ROOTS` for the daemon).
    pub config_roots: Vec<PathBuf>,
}

impl Options {
    /// The daemon of a gateway host.
    pub fn daemon() -> Self {
        Self {
            manage_ha: cfg!(feature = "daemon"),
            config_roots: crate::paths::roots_from_env(),
        }
    }

    /// A gateway inside another program (the console's own): never touches
    /// the host's HAProxy or Keepalived.
    pub fn embedded() -> Self {
        Self {
            manage_ha: false,
            config_roots: Vec::new(),
        }
    }
}

/// Who asks for a settings change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The broker, through the API (`api_key`): host-local fields are not its.
    Broker,
    /// Root on the host (the CLI, the console over SSH through the CLI).
    Host,
}

pub struct Gateway {
    /// Private: every change goes through [`Gateway::change`] or
    /// [`Gateway::reload`].
    settings: watch::Sender<Arc<Settings>>,
    store: Store,
    pub(crate) tunnels: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    started: Instant,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    units: units::UnitCache,
    options: Options,
    local_addrs: RwLock<Vec<IpAddr>>,
    tls: RwLock<Option<TlsAcceptor>>,
    db_dir: PathBuf,
    change_lock: tokio::sync::Mutex<()>,
    listeners: Mutex<BTreeMap<(Kind, SocketAddr), Listening>>,
    /// Listening sockets a previous process handed over, taken by `prepare`
    /// instead of binding anew (no instant without a listener).
    inherited: Mutex<BTreeMap<(Kind, SocketAddr), TcpListener>>,
    bound: mpsc::UnboundedSender<Bound>,
    ha: Mutex<(HaState, Option<ha::Rendered>)>,
    drain: Drain,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Invalid(#[from] SettingsError),
    #[error("cannot apply: {0}")]
    Apply(String),
    #[error("host-local fields are set on the host, not through the API: {}", .0.join(", "))]
    HostLocal(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why `open_connection` opens nothing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the gateway is disabled (is_enabled = false); running streams go on")]
    Disabled,
    #[error("this node is drained for maintenance: no new tunnels here; try another node")]
    Draining,
    #[error("this node is handing its streams to a new process (a few milliseconds): try again")]
    Restarting,
    #[error(transparent)]
    BadRequest(#[from] vdi_core::open::BadRequest),
    #[error("cannot resolve target_host {0:?}")]
    Unresolvable(String),
    #[error("target refused: {0}")]
    NotAllowed(String),
    #[error(transparent)]
    NoTunnel(#[from] NoTunnel),
}

/// What `disconnect` closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    Tunnel(String),
    Stream(String),
    All,
}

#[derive(Debug, thiserror::Error)]
pub enum NotFound {
    #[error("no tunnel {0}")]
    Tunnel(String),
    #[error("no stream {0}")]
    Stream(String),
}

/// Everything a new settings document needs, acquired before it is persisted.
pub struct Prepared {
    local_addrs: Vec<IpAddr>,
    tls: Option<TlsAcceptor>,
    new_listeners: Vec<(Kind, SocketAddr, TcpListener)>,
}

impl Gateway {
    /// A gateway with `settings` in force (nothing bound yet: [`Gateway::start`]),
    /// and the receiver of the listening sockets it binds, for the server.
    pub fn new(
        store: Store,
        settings: Settings,
        options: Options,
        shutdown: CancellationToken,
    ) -> (Shared, mpsc::UnboundedReceiver<Bound>) {
        let metrics = Arc::new(Metrics::default());
        let range = settings.port_range_start..=settings.port_range_stop;
        let db_dir = store
            .path()
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("."));
        let (bound, listeners) = mpsc::unbounded_channel();
        let drain = Drain::load(drain::file_for(store.path()));
        let gw = Arc::new(Gateway {
            settings: watch::Sender::new(Arc::new(settings)),
            store,
            tunnels: Arc::new(Registry::new(range, metrics.clone())),
            metrics,
            started: Instant::now(),
            shutdown,
            tasks: TaskTracker::new(),
            units: units::UnitCache::default(),
            options,
            local_addrs: RwLock::new(Vec::new()),
            tls: RwLock::new(None),
            db_dir,
            change_lock: tokio::sync::Mutex::new(()),
            listeners: Mutex::new(BTreeMap::new()),
            inherited: Mutex::new(BTreeMap::new()),
            bound,
            ha: Mutex::new((HaState::default(), None)),
            drain,
        });
        (gw, listeners)
    }

    pub fn current(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    /// The settings in force, as they change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Settings>> {
        self.settings.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How long a tunnel without streams stays open.
    pub(crate) fn idle(&self) -> Duration {
        Duration::from_secs(rules::tunnel_idle_secs(&self.current()))
    }

    pub fn local_addrs(&self) -> Vec<IpAddr> {
        self.local_addrs.read().unwrap().clone()
    }

    pub fn tls(&self) -> Option<TlsAcceptor> {
        self.tls.read().unwrap().clone()
    }

    /// The addresses the API listens on, for messages to people.
    pub fn api_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .lock()
            .unwrap()
            .keys()
            .filter(|(k, _)| *k == Kind::Api)
            .map(|(_, a)| *a)
            .collect()
    }

    /// Binds the listeners of the settings in force and applies the HAProxy and
    /// Keepalived configurations. Called once at start; an HA failure does not
    /// stop the gateway (tunnels work without it), it shows in health.
    pub async fn start(&self) -> Result<(), ChangeError> {
        let settings = self.current();
        let prepared = self.prepare(&settings)?;
        let local = prepared.local_addrs.clone();
        self.commit((*settings).clone(), prepared);
        if let Err(e) = self.apply_ha(&settings, &local).await {
            tracing::error!(error = %e, "HAProxy/Keepalived configuration not applied");
        }
        Ok(())
    }

    /// Applies a partial update: validate, prepare, persist, configure HA, switch.
    pub async fn change(
        &self,
        patch: &Map<String, Value>,
        caller: Caller,
    ) -> Result<Change, ChangeError> {
        let _serial = self.change_lock.lock().await;
        let text = self.store.load_text()?;
        let current = rules::parse_document_text(&text).map_err(|source| StoreError::Invalid {
            path: self.store.path().to_path_buf(),
            source,
        })?;
        if caller == Caller::Broker {
            let refused = host_local_changes(&current, patch);
            if !refused.is_empty() {
                tracing::warn!(fields = ?refused, "change of host-local fields refused");
                return Err(ChangeError::HostLocal(refused));
            }
        }
        let change = rules::apply_patch(&current, patch)?;
        let prepared = self.prepare(&change.settings)?;
        let rendered = self
            .validate_ha(&change.settings, &prepared.local_addrs)
            .await?;
        if !change.changed.is_empty() {
            self.store.compare_and_swap(&text, &change.settings)?;
        }
        if let Some(r) = rendered
            && let Err(e) = self.write_ha(&change.settings, r).await
        {
            // The files were put back; put the settings back too.
            if !change.changed.is_empty() {
                let new_text = rules::render_document(&change.settings);
                if let Err(undo) = self.store.compare_and_swap(&new_text, &current) {
                    tracing::error!(error = %undo, "could not restore the previous settings");
                }
            }
            return Err(ChangeError::Apply(e.to_string()));
        }
        self.commit(change.settings.clone(), prepared);
        Ok(change)
    }

    /// Re-reads the database (SIGHUP, after `vdi-gateway settings set`).
    pub async fn reload(&self) -> Result<(), ChangeError> {
        let _serial = self.change_lock.lock().await;
        let settings = self.store.load()?;
        let prepared = self.prepare(&settings)?;
        if let Some(r) = self.validate_ha(&settings, &prepared.local_addrs).await? {
            self.write_ha(&settings, r)
                .await
                .map_err(|e| ChangeError::Apply(e.to_string()))?;
        }
        self.commit(settings, prepared);
        Ok(())
    }

    /// The state of the HAProxy and Keepalived configurations, for health.
    pub fn ha_state(&self) -> HaState {
        self.ha.lock().unwrap().0.clone()
    }

    /// Renders and validates the HA configurations when they differ from what is
    /// applied; `None` when there is nothing to write (unchanged, or unmanaged).
    async fn validate_ha(
        &self,
        s: &Settings,
        local: &[IpAddr],
    ) -> Result<Option<ha::Rendered>, ChangeError> {
        if !rules::ha_managed(s) {
            return Ok(None);
        }
        let rendered = ha::render(s, local, self.state_dir()).map_err(|e| {
            // No interface for the VIP: Keepalived's configuration cannot be made.
            self.metrics.ha_apply("keepalived", false);
            ChangeError::Apply(e.to_string())
        })?;
        if self.ha.lock().unwrap().1.as_ref() == Some(&rendered) {
            return Ok(None);
        }
        let (s2, r2, m) = (s.clone(), rendered.clone(), self.metrics.clone());
        blocking(move || ha::validate(&s2, &r2, &m))
            .await
            .map_err(|e| ChangeError::Apply(e.to_string()))?;
        Ok(Some(rendered))
    }

    /// Writes and reloads; records the outcome for health.
    async fn write_ha(&self, s: &Settings, r: ha::Rendered) -> Result<(), ha::HaError> {
        let (s2, r2, m) = (s.clone(), r.clone(), self.metrics.clone());
        let result = blocking(move || ha::apply(&s2, &r2, &m)).await;
        let mut state = self.ha.lock().unwrap();
        match &result {
            Ok(applied) => {
                tracing::info!(reloaded = ?applied.reloaded, node = %r.node, interface = %r.interface,
                    "HAProxy/Keepalived configuration applied");
                state.0 = HaState {
                    status: HaStatus::Ok,
                    message: None,
                    applied_at: Some(chrono::Utc::now()),
                    node: Some(r.node.to_string()),
                    interface: Some(r.interface.clone()),
                };
                state.1 = Some(r);
            }
            Err(e) => {
                tracing::error!(error = %e,
                    "HAProxy/Keepalived configuration refused; the previous one stays in force");
                state.0.status = HaStatus::Error;
                state.0.message = Some(e.to_string());
            }
        }
        result.map(|_| ())
    }

    async fn apply_ha(&self, s: &Settings, local: &[IpAddr]) -> Result<(), ChangeError> {
        if !rules::ha_managed(s) {
            self.ha.lock().unwrap().0 = HaState {
                status: HaStatus::Unmanaged,
                ..Default::default()
            };
            return Ok(());
        }
        let outcome = match self.validate_ha(s, local).await {
            Ok(Some(r)) => self
                .write_ha(s, r)
                .await
                .map_err(|e| ChangeError::Apply(e.to_string())),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            let mut state = self.ha.lock().unwrap();
            state.0.status = HaStatus::Error;
            state.0.message = Some(e.to_string());
        }
        outcome
    }

    fn prepare(&self, s: &Settings) -> Result<Prepared, ChangeError> {
        if rules::ha_managed(s) && !self.options.manage_ha {
            return Err(ChangeError::Apply(
                "this gateway does not manage HAProxy and Keepalived (ha_managed must be false)"
                    .into(),
            ));
        }
        let misplaced = crate::paths::check(s, self.store.path(), &self.options.config_roots);
        if !misplaced.is_empty() {
            return Err(SettingsError::Invalid(misplaced).into());
        }
        let local_addrs = local_addrs(&s.internal_addrs).map_err(ChangeError::Apply)?;
        let tls = if s.ssl {
            Some(tls::acceptor(s, &self.db_dir).map_err(|e| ChangeError::Apply(e.to_string()))?)
        } else {
            None
        };
        let current = self.listeners.lock().unwrap();
        let mut new_listeners = Vec::new();
        for (kind, addr) in wanted_listeners(s, &local_addrs) {
            if current.contains_key(&(kind, addr)) {
                continue;
            }
            let handed = self.inherited.lock().unwrap().remove(&(kind, addr));
            let l = match handed {
                Some(l) => l,
                None => crate::tunnel::bind(addr)
                    .map_err(|e| ChangeError::Apply(format!("cannot listen on {addr}: {e}")))?,
            };
            new_listeners.push((kind, addr, l));
        }
        Ok(Prepared {
            local_addrs,
            tls,
            new_listeners,
        })
    }

    fn commit(&self, s: Settings, p: Prepared) {
        let wanted: Vec<_> = wanted_listeners(&s, &p.local_addrs);
        self.tunnels
            .set_range(s.port_range_start..=s.port_range_stop);
        self.tunnels.settings_changed();
        *self.local_addrs.write().unwrap() = p.local_addrs;
        *self.tls.write().unwrap() = p.tls;
        self.settings.send_replace(Arc::new(s));
        let mut listeners = self.listeners.lock().unwrap();
        listeners.retain(|key, l| {
            let keep = wanted.contains(key);
            if !keep {
                tracing::info!(kind = ?key.0, addr = %key.1, "listener closed");
                l.token.cancel();
            }
            keep
        });
        for (kind, addr, listener) in p.new_listeners {
            let token = self.shutdown.child_token();
            use std::os::fd::AsFd;
            let fd = listener.as_fd().try_clone_to_owned().ok();
            listeners.insert(
                (kind, addr),
                Listening {
                    token: token.clone(),
                    fd,
                },
            );
            tracing::info!(?kind, %addr, "listening");
            // The server may be gone only at shutdown; the socket closes then.
            let _ = self.bound.send(Bound {
                kind,
                addr,
                listener,
                token,
            });
        }
    }

    /// Opens a tunnel for `req` (or reuses the open one for the same vm,
    /// target and protocol), on behalf of `client`. The target is resolved
    /// once and every address it resolves to must pass the allow-list; the
    /// tunnel keeps that address (no DNS rebinding later).
    pub async fn open_tunnel(
        &self,
        req: OpenConnection,
        client: SocketAddr,
    ) -> Result<Arc<Tunnel>, OpenError> {
        let started = Instant::now();
        let result = self.open_or_reuse(req, client).await;
        let how = match &result {
            Ok((_, how)) => *how,
            Err(_) => "failed",
        };
        self.metrics.tunnel_setup(how, started.elapsed());
        result.map(|(t, _)| t)
    }

    /// [`Gateway::open_tunnel`], saying whether it was `opened` or `reused`.
    async fn open_or_reuse(
        &self,
        req: OpenConnection,
        client: SocketAddr,
    ) -> Result<(Arc<Tunnel>, &'static str), OpenError> {
        let s = self.current();
        if !s.is_enabled {
            return Err(OpenError::Disabled);
        }
        // Reuse too: the broker retries through the VIP and lands elsewhere.
        if self.drain.since().is_some() {
            return Err(OpenError::Draining);
        }
        // A tunnel opened now would miss the snapshot.
        if self.tunnels.handover().is_cancelled() {
            return Err(OpenError::Restarting);
        }
        vdi_core::open::check(&req)?;
        let target_addr = self.resolve_allowed(&s, &req).await?;
        let ttl = Duration::from_secs(rules::tunnel_ttl_secs(&s));
        let opener = rules::client_binding(&s).then_some(client.ip());
        if let Some(t) = self.tunnels.reuse(&req, opener, ttl) {
            return Ok((t, "reused"));
        }
        let open = OpenRequest {
            open: req,
            target_addr,
            opened_by: client,
        };
        let t = self
            .tunnels
            .open(open, &self.local_addrs(), self.subscribe(), &self.shutdown)?;
        Ok((t, "opened"))
    }

    async fn resolve_allowed(
        &self,
        s: &Settings,
        req: &OpenConnection,
    ) -> Result<SocketAddr, OpenError> {
        let addrs: Vec<SocketAddr> = match req.target_host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, req.target_port)],
            // An IPv6 literal that does not parse is no name to look up.
            Err(_) if req.target_host.contains(':') => Vec::new(),
            Err(_) => {
                let timeout = Duration::from_secs(rules::connect_timeout_secs(s));
                let lookup = tokio::net::lookup_host((req.target_host.as_str(), req.target_port));
                match tokio::time::timeout(timeout, lookup).await {
                    Ok(Ok(it)) => it.collect(),
                    _ => Vec::new(),
                }
            }
        };
        let Some(first) = addrs.first().copied() else {
            return Err(OpenError::Unresolvable(req.target_host.clone()));
        };
        let mut own = s.internal_addrs.clone();
        own.extend([s.public_addr, s.virtual_addr]);
        let allow = AllowList::new(&rules::allowed_targets(s), &own);
        for a in &addrs {
            if let Err(refusal) = allow.check(a.ip()) {
                self.metrics.refused(Refusal::AllowList);
                tracing::warn!(target_host = %req.target_host, error = %refusal, "tunnel refused");
                return Err(OpenError::NotAllowed(refusal.to_string()));
            }
        }
        Ok(first)
    }

    /// Closes a tunnel (with its streams), one stream, or everything, and
    /// waits until the sockets are closed.
    pub async fn disconnect(&self, what: Closing) -> Result<Disconnected, NotFound> {
        let mut done = Disconnected::default();
        match what {
            Closing::Tunnel(id) => {
                let t = self.tunnels.get(&id).ok_or(NotFound::Tunnel(id.clone()))?;
                done.streams = t.close().await;
                done.tunnels.push(id);
            }
            Closing::Stream(id) => {
                let (t, s) = self
                    .tunnels
                    .find_stream(&id)
                    .ok_or(NotFound::Stream(id.clone()))?;
                t.close_stream(&s).await;
                done.streams.push(id);
            }
            Closing::All => {
                let all = self.tunnels.all();
                let closed = futures_util::future::join_all(all.iter().map(|t| t.close())).await;
                for (t, streams) in all.iter().zip(closed) {
                    done.tunnels.push(t.id.clone());
                    done.streams.extend(streams);
                }
            }
        }
        tracing::info!(tunnels = ?done.tunnels, streams = ?done.streams, "disconnected");
        Ok(done)
    }

    /// Health of this node.
    pub async fn health(&self) -> Health {
        let s = self.current();
        let (tunnels, streams, ports_in_use, ports_free) = self.tunnels.counts();
        let draining = self.drain.since().is_some();
        let (bytes_to_target, bytes_to_client) = self.metrics.bytes_relayed();
        Health {
            status: match (s.is_enabled, draining) {
                (false, _) => HealthStatus::Disabled,
                (true, true) => HealthStatus::Draining,
                (true, false) => HealthStatus::Ok,
            },
            version: PRODUCT_VERSION.into(),
            uptime_secs: self.started.elapsed().as_secs(),
            is_enabled: s.is_enabled,
            tunnels: tunnels as u64,
            streams: streams as u64,
            ports_in_use: ports_in_use as u64,
            ports_free: ports_free as u64,
            units: self.units.get().await,
            ha: self.ha_state(),
            holds_vip: rules::ha_managed(&s) && holds(s.virtual_addr),
            draining,
            bytes_to_target,
            bytes_to_client,
        }
    }

    /// Whether this node takes new tunnels: enabled and not drained.
    pub fn ready(&self) -> bool {
        self.current().is_enabled && self.drain.since().is_none()
    }

    /// The drain state with what still runs here.
    pub fn drain_state(&self) -> DrainState {
        let (tunnels, streams, _, _) = self.tunnels.counts();
        let since = self.drain.since();
        DrainState {
            draining: since.is_some(),
            since,
            tunnels: tunnels as u64,
            streams: streams as u64,
        }
    }

    /// Where the files Keepalived tracks live (the database's directory).
    pub fn state_dir(&self) -> &std::path::Path {
        self.drain.dir()
    }

    /// Drains (no new tunnels; running streams go on; the VIP leaves this
    /// node through Keepalived's `track_file`) or undrains. Persisted first:
    /// an error changes nothing.
    /// (A two-byte file and an fsync: short enough for a worker thread.)
    pub fn set_draining(&self, on: bool) -> Result<DrainState, DrainError> {
        let was = self.drain.since().is_some();
        self.drain.set(on)?;
        let state = self.drain_state();
        if was != on {
            tracing::warn!(
                draining = on,
                tunnels = state.tunnels,
                streams = state.streams,
                "{}",
                if on {
                    "drained: no new tunnels here; running streams go on"
                } else {
                    "undrained: taking new tunnels again"
                }
            );
        }
        Ok(state)
    }

    /// Every tunnel with its streams, typed. The API writes the same document
    /// straight from the registry instead (`api::ConnectionsView`).
    pub fn connections(&self) -> Connections {
        let idle = self.idle();
        let delta = self.tunnels.changes().read(None);
        Connections {
            tunnels: self.tunnels.all().iter().map(|t| t.info(idle)).collect(),
            cursor: delta.cursor.to_string(),
            full: true,
            removed: Vec::new(),
        }
    }

    /// Brings the gauges of `/metrics` up to date and encodes every family.
    pub fn metrics_text(&self) -> String {
        let (tunnels, streams, in_use, free) = self.tunnels.counts();
        self.metrics.tunnels.set(tunnels as i64);
        self.metrics.streams.set(streams as i64);
        self.metrics.ports_in_use.set(in_use as i64);
        self.metrics.ports_free.set(free as i64);
        let s = self.current();
        self.metrics.enabled.set(i64::from(s.is_enabled));
        self.metrics
            .draining
            .set(i64::from(self.drain.since().is_some()));
        self.metrics
            .holds_vip
            .set(i64::from(rules::ha_managed(&s) && holds(s.virtual_addr)));
        self.metrics.set_ha_status(self.ha_state().status.as_str());
        self.metrics.encode()
    }

    /// Takes what a previous process handed over: its API and service
    /// listeners (used by `start` instead of binding anew). Call before
    /// `start`; the tunnels and streams follow with [`Gateway::restore`].
    pub fn inherit_listeners(&self, inh: &mut Inherited) {
        let recs = std::mem::take(&mut inh.snapshot.listeners);
        let mut inherited = self.inherited.lock().unwrap();
        for rec in recs {
            let listener = Kind::from_name(&rec.kind)
                .ok_or_else(|| format!("unknown listener kind {:?}", rec.kind))
                .and_then(|kind| {
                    let fd = inh.take(rec.fd).map_err(|e| e.to_string())?;
                    let l = crate::tunnel::tokio_listener(fd).map_err(|e| e.to_string())?;
                    Ok((kind, l))
                });
            match listener {
                Ok((kind, l)) => {
                    inherited.insert((kind, rec.addr), l);
                }
                Err(e) => {
                    tracing::error!(addr = %rec.addr, error = %e, "a listener was not taken over")
                }
            }
        }
    }

    /// Restores the handed-over tunnels and streams (after `start`), and
    /// closes whatever was handed over and not wanted any more.
    pub fn restore(&self, mut inh: Inherited) -> crate::tunnel::Restored {
        self.tunnels.continue_ids_from(inh.snapshot.next_stream);
        let done = self
            .tunnels
            .restore(&mut inh, self.subscribe(), &self.shutdown);
        let unwanted = std::mem::take(&mut *self.inherited.lock().unwrap());
        for (kind, addr) in unwanted.keys() {
            tracing::info!(?kind, %addr, "a handed-over listener is not in the settings any more; closed");
        }
        let leftover = inh.leftover();
        if leftover > 0 {
            tracing::warn!(
                descriptors = leftover,
                "descriptors handed over but named by nothing restored; closed"
            );
        }
        done
    }

    /// Stops for a handover: no new tunnel, every accept loop stops, every
    /// spliced stream parks at a chunk boundary (the rest end with reason
    /// `restart`). False when something was still running after `limit`.
    pub async fn quiesce(&self, limit: Duration) -> bool {
        let all = self.tunnels.begin_handover();
        for t in &all {
            t.tasks().close();
        }
        let parked = futures_util::future::join_all(all.iter().map(|t| t.tasks().wait()));
        tokio::time::timeout(limit, parked).await.is_ok()
    }

    /// After [`Gateway::quiesce`]: the snapshot for the next process, its
    /// blob, and every descriptor it names (open until the exec).
    pub fn handover_snapshot(&self) -> (Snapshot, Blob, Vec<std::os::fd::OwnedFd>) {
        use std::os::fd::AsRawFd;
        let mut fds = Vec::new();
        let mut blob = Blob::default();
        let mut listeners = Vec::new();
        for ((kind, addr), l) in self.listeners.lock().unwrap().iter_mut() {
            if let Some(fd) = l.fd.take() {
                listeners.push(ListenerRec {
                    kind: kind.name().into(),
                    addr: *addr,
                    fd: fd.as_raw_fd(),
                });
                fds.push(fd);
            }
        }
        let parked = self.tunnels.take_parked();
        let (tunnels, streams) = self.tunnels.handover_records(parked, &mut blob, &mut fds);
        let snapshot = Snapshot {
            written_at_ms: chrono::Utc::now().timestamp_millis(),
            next_stream: self.tunnels.next_stream_id(),
            listeners,
            tunnels,
            streams,
        };
        (snapshot, blob, fds)
    }

    /// Closes every listener, tunnel and stream and waits for them, at most
    /// `grace`; false when something was still open then.
    pub(crate) async fn close_all(&self, grace: Duration) -> bool {
        self.shutdown.cancel();
        self.tasks.close();
        let all_closed = async {
            let closing = self.tunnels.all();
            futures_util::future::join_all(closing.iter().map(|t| t.close())).await;
            self.tasks.wait().await;
        };
        tokio::time::timeout(grace, all_closed).await.is_ok()
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ha::HaError> + Send + 'static,
) -> Result<T, ha::HaError> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("the HA task does not panic")
}

fn wanted_listeners(s: &Settings, local: &[IpAddr]) -> Vec<(Kind, SocketAddr)> {
    local
        .iter()
        .flat_map(|ip| {
            [
                (Kind::Api, SocketAddr::new(*ip, s.api_port)),
                (
                    Kind::ServiceTunnel,
                    SocketAddr::new(*ip, SERVICE_TUNNEL_PORT),
                ),
            ]
        })
        .collect()
}

/// This node's own addresses among `internal_addrs`: those assigned to one of
/// its interfaces (any 127/8 address counts on loopback).
pub fn local_addrs(internal: &[IpAddr]) -> Result<Vec<IpAddr>, String> {
    let mine: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map_err(|e| format!("cannot list network interfaces: {e}"))?
        .into_iter()
        .map(|i| i.ip())
        .collect();
    let local: Vec<IpAddr> = internal
        .iter()
        .copied()
        .filter(|ip| ip.is_loopback() || mine.contains(ip))
        .collect();
    if local.is_empty() {
        let list: Vec<String> = internal.iter().map(|i| i.to_string()).collect();
        return Err(format!(
            "none of internal_addrs ({}) is an address of this host",
            list.join(", ")
        ));
    }
    Ok(local)
}

/// Whether `ip` is assigned to one of this host's interfaces.
fn holds(ip: IpAddr) -> bool {
    if_addrs::get_if_addrs().is_ok_and(|all| all.iter().any(|i| i.ip() == ip))
}

/// The host-local fields `patch` would change (naming one with its current
/// value is no change: a broker may send back what it read).
fn host_local_changes(current: &Settings, patch: &Map<String, Value>) -> Vec<String> {
    let now = serde_json::to_value(current).unwrap_or(Value::Null);
    patch
        .iter()
        .filter(|(k, v)| {
            vdi_wire::HOST_LOCAL_FIELDS.contains(&k.as_str())
                && now.get(k.as_str()).unwrap_or(&Value::Null) != *v
        })
        .map(|(k, _)| k.clone())
        .collect()
}
