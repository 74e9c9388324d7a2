//! The harness the gateway's tests, the console's tests and the app's tests
//! share (feature `testing`): a temporary directory, a loopback address no
//! other test uses, and a real gateway started on it.

use crate::{Handle, Options, Store};
use serde_json::{Map, Value, json};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let p = std::env::temp_dir().join(format!("vdi-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&p).expect("temporary directory");
        Self(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback address no other test (thread or process) uses: any 127/8
/// address is local on Linux, so every gateway can use the product's fixed
/// ports. 127.128.0.0/9 keeps clear of the embedded gateway (127.0.77.x) and
/// the benchmarks (127.0.61.x).
pub fn unique_loopback() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = (std::process::id() * 64 + NEXT.fetch_add(1, Ordering::Relaxed) % 64) % (1 << 23);
    let n = if n < 256 { n + 256 } else { n };
    IpAddr::from([127, 128 | (n >> 16) as u8, (n >> 8) as u8, n as u8])
}

/// The daemon's options, with the temporary directory as a place the path
/// settings may point into (tests keep their HAProxy files there).
pub fn options() -> Options {
    let mut o = Options::daemon();
    o.config_roots.push(std::env::temp_dir());
    o
}

/// A real gateway on its own loopback address, with its database in a
/// temporary directory (removed after the gateway).
pub struct LocalGateway {
    pub ip: IpAddr,
    pub db: PathBuf,
    pub handle: Handle,
    pub dir: TempDir,
}

/// The settings every test gateway starts from: this address everywhere,
/// ports 21000-21009, desktops on 127.0.0.1 allowed, HA not managed.
pub fn base_patch(ip: IpAddr) -> Map<String, Value> {
    let ip = ip.to_string();
    let v = json!({
        "internal_addrs": [ip],
        "public_addr": ip,
        "virtual_addr": ip,
        "port_range_start": 21000,
        "port_range_stop": 21009,
        "allowed_targets": ["127.0.0.1/32"],
        "ha_managed": false,
    });
    v.as_object().expect("an object").clone()
}

impl LocalGateway {
    /// Starts on a fresh loopback address with `patch` over [`base_patch`].
    pub async fn start(patch: Value) -> Result<Self, crate::ServeError> {
        Self::start_on(unique_loopback(), patch, options()).await
    }

    pub async fn start_on(
        ip: IpAddr,
        patch: Value,
        options: Options,
    ) -> Result<Self, crate::ServeError> {
        let dir = TempDir::new();
        let db = dir.path().join("settings.db");
        let (store, _) = Store::open_or_create(&db, crate::first_start_settings)?;
        let mut all = base_patch(ip);
        if let Value::Object(m) = patch {
            all.extend(m);
        }
        store.update(&all)?;
        let handle = crate::start(store, options).await?;
        Ok(Self {
            ip,
            db,
            handle,
            dir,
        })
    }

    /// Stops the gateway, waits until its sockets are closed, and removes
    /// its directory.
    pub async fn stop(self) {
        self.handle.stop().await;
    }
}
