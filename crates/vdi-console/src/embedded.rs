//! The console's own gateway: the bundled gateway core, run in-process on a
//! loopback address of its own (127.0.77.1) with its settings file in the
//! console's data directory, so a newcomer sees a live gateway at once. A demo
//! desktop (an echo server on 127.0.77.2) gives the connections view something
//! real to show.

use crate::error::{Error, Result};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub const EMBEDDED_ADDR: [u8; 4] = [127, 0, 77, 1];
pub const DEMO_DESKTOP_ADDR: [u8; 4] = [127, 0, 77, 2];

pub struct Embedded {
    shutdown: CancellationToken,
    handle: vdi_gateway::Handle,
    demo: Mutex<Option<SocketAddr>>,
}

impl Embedded {
    /// Starts the gateway core; returns once it listens (or why it cannot).
    pub async fn start(dir: &Path) -> Result<Self> {
        let ip = IpAddr::from(EMBEDDED_ADDR);
        let db = dir.join("embedded/settings.db");
        // Everything on its own loopback address; demo desktops on 127.0.77.0/24.
        let (store, _) = vdi_gateway::Store::open_or_create(&db, move || {
            let mut s = vdi_gateway::first_start_settings();
            s.internal_addrs = vec![ip];
            s.public_addr = ip;
            s.virtual_addr = ip;
            s.disp_addrs = vec![ip];
            s.allowed_targets = Some(vec!["127.0.77.0/24".into()]);
            s.ha_managed = Some(false);
            s
        })
        .map_err(|e| Error::Embedded(e.to_string()))?;
        let handle = vdi_gateway::start(store, vdi_gateway::Options::embedded())
            .await
            .map_err(|e| Error::Embedded(e.to_string()))?;
        Ok(Self {
            shutdown: handle.shutdown_token(),
            handle,
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
        crate::demo::serve_desktop(l, self.shutdown.clone());
        *self.demo.lock().unwrap() = Some(addr);
        Ok(addr)
    }

    /// Its API as it is now: a key rotated or a port changed since the start
    /// is what the console's entry gets (never the values it started with).
    pub fn api_url(&self) -> String {
        self.handle.api_url()
    }

    pub fn api_key(&self) -> String {
        self.handle.api_key()
    }

    pub fn cli_key(&self) -> String {
        self.handle.cli_key()
    }

    /// Cancelled when the embedded gateway stops (its demo stops with it).
    pub fn token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub async fn stop(self) {
        self.handle.stop().await;
    }
}
