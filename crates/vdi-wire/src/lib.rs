//! Wire types of the Space Gateway HTTP API v3.
//!
//! Shared by the gateway daemon and the console UI (which compiles this crate to
//! WebAssembly), so it holds data and serde attributes only: no I/O, no validation
//! (that lives in `vdi-core`), no runtime.

mod api;
pub mod console;
mod settings;

pub use api::*;
pub use settings::*;

/// Version of the gateway product, shown by `/v3/health/` and the docs page.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Port of the service tunnel on every gateway node (HAProxy forwards `VIP:443` here).
pub const SERVICE_TUNNEL_PORT: u16 = 4300;
/// Port of HAProxy's stats page and Prometheus exporter on the virtual address.
pub const HAPROXY_STATS_PORT: u16 = 8003;
/// Port HAProxy's `peers` section binds to share stick tables between nodes.
pub const HAPROXY_PEERS_PORT: u16 = 10000;
/// Public HTTPS port forwarded to the service tunnel.
pub const SERVICE_PUBLIC_PORT: u16 = 443;
