//! The console's own gateway: the bundled gateway core, run in-process on a
//! loopback address of its own (127.0.77.1) with its settings file in the
//! console's data directory, so a newcomer sees a live gateway at once. A demo
//! desktop (an echo server on 127.0.77.2) gives the connections view something
//! real to show.

use crate::error::{Error, Result};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

pub const EMBEDDED_ADDR: [u8; 4] = [127, 0, 77, 1];
pub const DEMO_DESKTOP_ADDR: [u8; 4] = [127, 0, 77, 2];

pub struct Embedded {
    pub api_url: String,
    pub api_key: String,
    pub cli_key: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    demo: Mutex<Option<SocketAddr>>,
}

impl Embedded {
    /// Starts the gateway core; returns once it listens (or why it cannot).
    pub async fn start(dir: &Path) -> Result<Self> {
        let ip = IpAddr::from(EMBEDDED_ADDR);
        let db = dir.join("embedded/settings.db");
        let (store, created) =
            vdi_gateway::Store::open_or_create(&db, vdi_gateway::store::first_start_settings)
                .map_err(|e| Error::Embedded(e.to_string()))?;
        if created {
            let patch = json!({
                "internal_addrs": [ip.to_string()],
                "public_addr": ip.to_string(),
                "virtual_addr": ip.to_string(),
                "disp_addrs": [ip.to_string()],
                "allowed_targets": ["127.0.77.0/24"],
                "ha_managed": false,
            });
            store
                .update(patch.as_object().unwrap())
                .map_err(|e| Error::Embedded(e.to_string()))?;
        }
        let settings = store.load().map_err(|e| Error::Embedded(e.to_string()))?;
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<std::result::Result<(), String>>();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let (ready_tx, token) = (tx.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            let r = vdi_gateway::run(store, token, move |_| {
                if let Some(tx) = ready_tx.lock().unwrap().take() {
                    let _ = tx.send(Ok(()));
                }
            })
            .await;
            if let Err(e) = r
                && let Some(tx) = tx.lock().unwrap().take()
            {
                let _ = tx.send(Err(e.to_string()));
            }
        });
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Embedded(e)),
            Err(_) => {
                return Err(Error::Embedded(
                    "the gateway core stopped during start".into(),
                ));
            }
        }
        let scheme = if settings.ssl { "https" } else { "http" };
        Ok(Self {
            api_url: format!("{scheme}://{}", SocketAddr::new(ip, settings.api_port)),
            api_key: settings.api_key.expose().to_string(),
            cli_key: settings.cli_key.expose().to_string(),
            shutdown,
            task,
            demo: Mutex::new(None),
        })
    }

    /// The demo desktop: an echo server that greets first (started once).
    pub async fn demo_desktop(&self) -> Result<SocketAddr> {
        if let Some(addr) = *self.demo.lock().unwrap() {
            return Ok(addr);
        }
        let l = tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::from(DEMO_DESKTOP_ADDR), 0))
            .await
            .map_err(|e| Error::Embedded(format!("demo desktop: {e}")))?;
        let addr = l.local_addr().map_err(|e| Error::Embedded(e.to_string()))?;
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    a = l.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                tokio::spawn(async move {
                    let _ = s
                        .write_all(
                            b"Space Gateway demo desktop: everything you type comes back\r\n",
                        )
                        .await;
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        *self.demo.lock().unwrap() = Some(addr);
        Ok(addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}
