//! Prometheus metrics, served at `GET /metrics` (api_key required).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

/// Which way relayed bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToTarget,
    ToClient,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub tunnels: Gauge,
    pub streams: Gauge,
    pub ports_free: Gauge,
    pub ports_in_use: Gauge,
    pub tunnels_opened: Counter,
    pub streams_accepted: Counter,
    pub bytes: Family<DirectionLabel, Counter>,
    /// The two series of `bytes`, resolved once: the relay adds to them on
    /// every chunk, and a family lookup takes a lock and hashes the labels.
    bytes_to_target: Counter,
    bytes_to_client: Counter,
    pub requests: Family<RequestLabels, Counter>,
    pub auth_failures: Family<ReasonLabel, Counter>,
    pub refused: Family<ReasonLabel, Counter>,
    pub service_tunnel: Family<ReasonLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("vdi_gateway"),
            tunnels: Gauge::default(),
            streams: Gauge::default(),
            ports_free: Gauge::default(),
            ports_in_use: Gauge::default(),
            tunnels_opened: Counter::default(),
            streams_accepted: Counter::default(),
            bytes: Family::default(),
            bytes_to_target: Counter::default(),
            bytes_to_client: Counter::default(),
            requests: Family::default(),
            auth_failures: Family::default(),
            refused: Family::default(),
            service_tunnel: Family::default(),
        };
        m.bytes_to_target = m
            .bytes
            .get_or_create(&DirectionLabel {
                direction: "to_target",
            })
            .clone();
        m.bytes_to_client = m
            .bytes
            .get_or_create(&DirectionLabel {
                direction: "to_client",
            })
            .clone();
        let r = &mut m.registry;
        r.register("tunnels", "Tunnels open", m.tunnels.clone());
        r.register("streams", "Streams being relayed", m.streams.clone());
        r.register(
            "ports_free",
            "Free ports of the tunnel range",
            m.ports_free.clone(),
        );
        r.register(
            "ports_in_use",
            "Ports held by tunnels",
            m.ports_in_use.clone(),
        );
        r.register("tunnels_opened", "Tunnels opened", m.tunnels_opened.clone());
        r.register(
            "streams_accepted",
            "Streams accepted on tunnel ports and /v3/connect/",
            m.streams_accepted.clone(),
        );
        r.register(
            "bytes_relayed",
            "Bytes relayed, by direction",
            m.bytes.clone(),
        );
        r.register(
            "api_requests",
            "API requests by route, method and status",
            m.requests.clone(),
        );
        r.register(
            "auth_failures",
            "Requests refused for a missing, wrong or other-role key",
            m.auth_failures.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused (PROXY header from untrusted peer, allow-list, limits)",
            m.refused.clone(),
        );
        r.register(
            "service_tunnel_connections",
            "Service tunnel connections by result",
            m.service_tunnel.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn bytes(&self, dir: Direction, n: u64) {
        match dir {
            Direction::ToTarget => self.bytes_to_target.inc_by(n),
            Direction::ToClient => self.bytes_to_client.inc_by(n),
        };
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
