//! Writing and reloading HAProxy and Keepalived (see `docs/ha.md`).
//!
//! render (pure, `vdi-core::ha`) -> validate with the real tools on a temp file
//! -> write atomically (temp file + rename, previous copy kept as `.prev`) ->
//! reload. If validation or a reload fails, the previous files are put back and
//! reloaded: nothing is ever half-applied.

use std::net::IpAddr;

#[cfg(not(feature = "daemon"))]
use crate::metrics::Metrics;

use vdi_core::ha::{self, Interface};
use vdi_wire::Settings;

#[cfg(feature = "daemon")]
mod apply;
#[cfg(feature = "daemon")]
mod files;
#[cfg(feature = "daemon")]
pub use apply::{apply, validate};

#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("no network interface for the VIP (none but loopback); set vrrp_interface")]
    NoInterface,
    #[cfg(feature = "daemon")]
    #[error("{what} rejected the rendered configuration: {output}")]
    Invalid { what: &'static str, output: String },
    #[cfg(feature = "daemon")]
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[cfg(feature = "daemon")]
    #[error("`{command}` failed: {output}")]
    Reload { command: String, output: String },
    #[cfg(feature = "daemon")]
    #[error(
        "HAProxy did not load the new configuration within {secs} s ({last}); see `journalctl -u haproxy`"
    )]
    NotLoaded { secs: u64, last: String },
    #[cfg(feature = "daemon")]
    #[error("{0}: not a plain file (a directory, a link or a device is never replaced)")]
    NotAFile(std::path::PathBuf),
    #[cfg(not(feature = "daemon"))]
    #[error("this build of the gateway does not manage HAProxy and Keepalived")]
    NotManaged,
}

/// Without the `daemon` feature there is no apply path.
#[cfg(not(feature = "daemon"))]
pub fn validate(_: &Settings, _: &Rendered, _: &Metrics) -> Result<(), HaError> {
    Err(HaError::NotManaged)
}

#[cfg(not(feature = "daemon"))]
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub reloaded: Vec<&'static str>,
}

#[cfg(not(feature = "daemon"))]
pub fn apply(_: &Settings, _: &Rendered, _: &Metrics) -> Result<Applied, HaError> {
    Err(HaError::NotManaged)
}

/// Both configurations as they would be written for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub node: IpAddr,
    pub interface: String,
    pub haproxy: String,
    pub keepalived: String,
}

/// Renders for this node: its first own internal address, and the VIP's
/// interface (`vrrp_interface`, else the first non-loopback interface).
pub fn render(
    s: &Settings,
    local_addrs: &[IpAddr],
    state_dir: &std::path::Path,
) -> Result<Rendered, HaError> {
    let node = *local_addrs.first().unwrap_or(&s.internal_addrs[0]);
    let interface = match &s.vrrp_interface {
        Some(i) => i.clone(),
        None => ha::first_interface(&interfaces())
            .ok_or(HaError::NoInterface)?
            .to_string(),
    };
    Ok(Rendered {
        node,
        haproxy: ha::render_haproxy(s, node),
        keepalived: ha::render_keepalived(s, node, &interface, &state_dir.to_string_lossy()),
        interface,
    })
}

/// The system's interfaces from `/sys/class/net`.
pub fn interfaces() -> Vec<Interface> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let index = std::fs::read_to_string(e.path().join("ifindex"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let flags = std::fs::read_to_string(e.path().join("flags")).unwrap_or_default();
            let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
            // IFF_UP = 0x1, IFF_LOOPBACK = 0x8 (linux/if.h)
            Some(Interface {
                name,
                index,
                loopback: flags & 0x8 != 0,
                up: flags & 0x1 != 0,
            })
        })
        .collect()
}
