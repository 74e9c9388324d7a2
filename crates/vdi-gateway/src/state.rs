//! The running gateway: settings in force, tunnels, listeners, TLS, and how a
//! settings change is applied (prepare everything that can fail, then persist,
//! then switch: never half-applied).

use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::tunnel::Registry;
use crate::{ha, server, tls, units};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vdi_core::settings::{self as rules, Change, SettingsError};
use vdi_wire::{HaState, SERVICE_TUNNEL_PORT, Settings};

pub type Shared = Arc<Gateway>;

/// Which server a listening socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Api,
    ServiceTunnel,
}

pub struct Gateway {
    pub settings: watch::Sender<Arc<Settings>>,
    pub store: Store,
    pub tunnels: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub units: units::UnitCache,
    local_addrs: RwLock<Vec<IpAddr>>,
    tls: RwLock<Option<TlsAcceptor>>,
    db_dir: PathBuf,
    change_lock: tokio::sync::Mutex<()>,
    listeners: Mutex<BTreeMap<(Kind, SocketAddr), CancellationToken>>,
    ha: Mutex<(HaState, Option<ha::Rendered>)>,
    pub(crate) router: OnceLock<axum::Router>,
    pub(crate) service_rr: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Invalid(#[from] SettingsError),
    #[error("cannot apply: {0}")]
    Apply(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything a new settings document needs, acquired before it is persisted.
pub struct Prepared {
    local_addrs: Vec<IpAddr>,
    tls: Option<TlsAcceptor>,
    new_listeners: Vec<(Kind, SocketAddr, tokio::net::TcpListener)>,
}

impl Gateway {
    pub fn new(store: Store, settings: Settings, shutdown: CancellationToken) -> Shared {
        let metrics = Arc::new(Metrics::default());
        let range = settings.port_range_start..=settings.port_range_stop;
        let db_dir = store
            .path()
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("."));
        let gw = Arc::new(Gateway {
            settings: watch::Sender::new(Arc::new(settings)),
            store,
            tunnels: Arc::new(Registry::new(range, metrics.clone())),
            metrics,
            started: Instant::now(),
            shutdown,
            tasks: TaskTracker::new(),
            units: units::UnitCache::default(),
            local_addrs: RwLock::new(Vec::new()),
            tls: RwLock::new(None),
            db_dir,
            change_lock: tokio::sync::Mutex::new(()),
            listeners: Mutex::new(BTreeMap::new()),
            ha: Mutex::new((
                HaState {
                    status: "pending".into(),
                    ..Default::default()
                },
                None,
            )),
            router: OnceLock::new(),
            service_rr: Default::default(),
        });
        let _ = gw.router.set(crate::api::router(gw.clone()));
        gw
    }

    pub fn current(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
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
    pub async fn start(self: &Arc<Self>) -> Result<(), ChangeError> {
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
        self: &Arc<Self>,
        patch: &Map<String, Value>,
    ) -> Result<Change, ChangeError> {
        let _serial = self.change_lock.lock().await;
        let text = self.store.load_text()?;
        let current = rules::parse_document_text(&text).map_err(|source| StoreError::Invalid {
            path: self.store.path().to_path_buf(),
            source,
        })?;
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
    pub async fn reload(self: &Arc<Self>) -> Result<(), ChangeError> {
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
        let rendered = ha::render(s, local).map_err(|e| ChangeError::Apply(e.to_string()))?;
        if self.ha.lock().unwrap().1.as_ref() == Some(&rendered) {
            return Ok(None);
        }
        let (s2, r2) = (s.clone(), rendered.clone());
        blocking(move || ha::validate(&s2, &r2))
            .await
            .map_err(|e| ChangeError::Apply(e.to_string()))?;
        Ok(Some(rendered))
    }

    /// Writes and reloads; records the outcome for health.
    async fn write_ha(&self, s: &Settings, r: ha::Rendered) -> Result<(), ha::HaError> {
        let (s2, r2) = (s.clone(), r.clone());
        let result = blocking(move || ha::apply(&s2, &r2)).await;
        let mut state = self.ha.lock().unwrap();
        match &result {
            Ok(applied) => {
                tracing::info!(reloaded = ?applied.reloaded, node = %r.node, interface = %r.interface,
                    "HAProxy/Keepalived configuration applied");
                state.0 = HaState {
                    status: "ok".into(),
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
                state.0.status = "error".into();
                state.0.message = Some(e.to_string());
            }
        }
        result.map(|_| ())
    }

    async fn apply_ha(&self, s: &Settings, local: &[IpAddr]) -> Result<(), ChangeError> {
        if !rules::ha_managed(s) {
            self.ha.lock().unwrap().0 = HaState {
                status: "unmanaged".into(),
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
            state.0.status = "error".into();
            state.0.message = Some(e.to_string());
        }
        outcome
    }

    fn prepare(&self, s: &Settings) -> Result<Prepared, ChangeError> {
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
            let l = crate::tunnel::bind(addr)
                .map_err(|e| ChangeError::Apply(format!("cannot listen on {addr}: {e}")))?;
            new_listeners.push((kind, addr, l));
        }
        Ok(Prepared {
            local_addrs,
            tls,
            new_listeners,
        })
    }

    fn commit(self: &Arc<Self>, s: Settings, p: Prepared) {
        let wanted: Vec<_> = wanted_listeners(&s, &p.local_addrs);
        self.tunnels
            .set_range(s.port_range_start..=s.port_range_stop);
        *self.local_addrs.write().unwrap() = p.local_addrs;
        *self.tls.write().unwrap() = p.tls;
        self.settings.send_replace(Arc::new(s));
        let mut listeners = self.listeners.lock().unwrap();
        listeners.retain(|key, token| {
            let keep = wanted.contains(key);
            if !keep {
                tracing::info!(kind = ?key.0, addr = %key.1, "listener closed");
                token.cancel();
            }
            keep
        });
        for (kind, addr, l) in p.new_listeners {
            let token = self.shutdown.child_token();
            listeners.insert((kind, addr), token.clone());
            tracing::info!(?kind, %addr, "listening");
            let gw = self.clone();
            self.tasks.spawn(server::accept_loop(gw, kind, l, token));
        }
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
