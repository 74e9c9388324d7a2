//! Prometheus metrics, served at `GET /metrics` (api_key required) in the
//! Prometheus text format (0.0.4). Every family is listed in docs/api.md and
//! explained in docs/monitoring.md.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::ToTarget => "to_target",
            Direction::ToClient => "to_client",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Why a connection, a stream or a tunnel was refused: the `reason` label of
/// `vdi_gateway_connections_refused_total`, every one present from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A PROXY header from a peer that may not send one, or a malformed one.
    ProxyHeader,
    /// A stream from another client than the tunnel's opener.
    ClientMismatch,
    /// The tunnel is closing or carries `max_streams_per_tunnel` streams.
    StreamLimit,
    /// The client has `max_streams_per_client` streams.
    ClientStreamLimit,
    /// The client holds `max_tunnels_per_client` tunnels.
    TooManyTunnels,
    /// No port of the tunnel range is free.
    NoFreePort,
    /// The target is not in the allow-list (or is a guarded address).
    AllowList,
    /// The API or the service tunnel is at `max_connections`.
    ConnectionLimit,
    /// One source is at `max_connections_per_client`.
    ClientConnectionLimit,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::ProxyHeader,
        Refusal::ClientMismatch,
        Refusal::StreamLimit,
        Refusal::ClientStreamLimit,
        Refusal::TooManyTunnels,
        Refusal::NoFreePort,
        Refusal::AllowList,
        Refusal::ConnectionLimit,
        Refusal::ClientConnectionLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ProxyHeader => "proxy_header",
            Refusal::ClientMismatch => "client_mismatch",
            Refusal::StreamLimit => "stream_limit",
            Refusal::ClientStreamLimit => "client_stream_limit",
            Refusal::TooManyTunnels => "too_many_tunnels",
            Refusal::NoFreePort => "no_free_port",
            Refusal::AllowList => "allow_list",
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::ClientConnectionLimit => "client_connection_limit",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reasons of `vdi_gateway_auth_failures_total`, present from the start.
pub const AUTH_FAILURE_REASONS: [&str; 3] = ["missing", "wrong_key", "wrong_role"];
/// The results of `vdi_gateway_service_tunnel_connections_total`.
pub const SERVICE_TUNNEL_RESULTS: [&str; 2] = ["relayed", "no_dispatcher"];
/// The tools of `vdi_gateway_ha_apply_total`.
pub const HA_TOOLS: [&str; 2] = ["haproxy", "keepalived"];
/// The results of `vdi_gateway_tunnel_setup_duration_seconds`.
pub const SETUP_RESULTS: [&str; 3] = ["opened", "reused", "failed"];
/// The values of `vdi_gateway_ha_status`'s `status` label (`HaStatus::as_str`).
pub const HA_STATUSES: [&str; 4] = ["ok", "error", "unmanaged", "pending"];

/// What a relayed stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A stream of a tunnel (a tunnel port or `/v3/connect/`).
    Tunnel,
    /// A connection of the service tunnel (4300) to a dispatcher.
    ServiceTunnel,
}

impl StreamKind {
    pub fn label(self) -> &'static str {
        match self {
            StreamKind::Tunnel => "tunnel",
            StreamKind::ServiceTunnel => "service_tunnel",
        }
    }

    /// How the journal names it.
    pub fn log_name(self) -> &'static str {
        match self {
            StreamKind::Tunnel => "stream",
            StreamKind::ServiceTunnel => "service tunnel",
        }
    }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Both sides closed.
    Closed,
    /// Refused by its first bytes (a PROXY header), counted in
    /// `connections_refused_total` too.
    Refused,
    /// An I/O error on either side (reset, timeout).
    Error,
    /// Ended from outside: `disconnect`, the tunnel closed, shutdown.
    Stopped,
}

impl StreamEnd {
    const ALL: [StreamEnd; 4] = [
        StreamEnd::Closed,
        StreamEnd::Refused,
        StreamEnd::Error,
        StreamEnd::Stopped,
    ];

    fn label(self) -> &'static str {
        match self {
            StreamEnd::Closed => "closed",
            StreamEnd::Refused => "refused",
            StreamEnd::Error => "error",
            StreamEnd::Stopped => "stopped",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub kind: &'static str,
    pub end: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamBytesLabels {
    pub kind: &'static str,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HaApplyLabels {
    pub tool: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// API requests: 0.25 ms to 10 s.
const REQUEST_BUCKETS: [f64; 14] = [
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// `open_connection`'s work (checks, name lookup, binding): 0.1 ms to 10 s
/// (a lookup may take `connect_timeout_secs`).
const SETUP_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];
/// Desktop sessions: a second to a day.
const STREAM_SECONDS_BUCKETS: [f64; 14] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0,
    172800.0,
];
/// Bytes one way of one stream: 1 KiB to 64 GiB, times 4.
fn stream_bytes_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(1024.0, 4.0, 14)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

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
    pub request_seconds: HistogramFamily<RequestLabels>,
    pub auth_failures: Family<ReasonLabel, Counter>,
    refused: [Counter; Refusal::ALL.len()],
    pub service_tunnel: Family<ReasonLabel, Counter>,
    pub setup_seconds: HistogramFamily<ResultLabel>,
    pub stream_seconds: HistogramFamily<StreamLabels>,
    pub stream_bytes: HistogramFamily<StreamBytesLabels>,
    pub ha_apply: Family<HaApplyLabels, Counter>,
    pub ha_status: Family<StatusLabel, Gauge>,
    pub holds_vip: Gauge,
    pub enabled: Gauge,
    pub draining: Gauge,
    /// Relayed streams running now and ended so far, kept live (the
    /// `streams` gauge is set when scraped).
    running: AtomicI64,
    ended: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let refused_family: Family<ReasonLabel, Counter> = Family::default();
        let refused = Refusal::ALL.map(|r| {
            refused_family
                .get_or_create(&ReasonLabel { reason: r.as_str() })
                .clone()
        });
        let bytes: Family<DirectionLabel, Counter> = Family::default();
        let resolved = |d: Direction| {
            bytes
                .get_or_create(&DirectionLabel {
                    direction: d.label(),
                })
                .clone()
        };
        let (bytes_to_target, bytes_to_client) =
            (resolved(Direction::ToTarget), resolved(Direction::ToClient));
        let mut m = Metrics {
            registry: Registry::default(),
            tunnels: Gauge::default(),
            streams: Gauge::default(),
            ports_free: Gauge::default(),
            ports_in_use: Gauge::default(),
            tunnels_opened: Counter::default(),
            streams_accepted: Counter::default(),
            bytes,
            bytes_to_target,
            bytes_to_client,
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS)),
            auth_failures: Family::default(),
            refused,
            service_tunnel: Family::default(),
            setup_seconds: Family::new_with_constructor(|| Histogram::new(SETUP_BUCKETS)),
            stream_seconds: Family::new_with_constructor(|| Histogram::new(STREAM_SECONDS_BUCKETS)),
            stream_bytes: Family::new_with_constructor(|| Histogram::new(stream_bytes_buckets())),
            ha_apply: Family::default(),
            ha_status: Family::default(),
            holds_vip: Gauge::default(),
            enabled: Gauge::default(),
            draining: Gauge::default(),
            running: AtomicI64::new(0),
            ended: AtomicU64::new(0),
        };
        for reason in AUTH_FAILURE_REASONS {
            let _ = m.auth_failures.get_or_create(&ReasonLabel { reason });
        }
        for reason in SERVICE_TUNNEL_RESULTS {
            let _ = m.service_tunnel.get_or_create(&ReasonLabel { reason });
        }
        for tool in HA_TOOLS {
            for result in ["success", "failure"] {
                let _ = m.ha_apply.get_or_create(&HaApplyLabels { tool, result });
            }
        }
        for status in HA_STATUSES {
            let _ = m.ha_status.get_or_create(&StatusLabel { status });
        }
        // Histograms at zero too: a series born at its first observation
        // shows no increase, so `rate` would miss that first one.
        for result in SETUP_RESULTS {
            let _ = m.setup_seconds.get_or_create(&ResultLabel { result });
        }
        for kind in [StreamKind::Tunnel, StreamKind::ServiceTunnel] {
            for end in StreamEnd::ALL {
                let _ = m.stream_seconds.get_or_create(&StreamLabels {
                    kind: kind.label(),
                    end: end.label(),
                });
            }
            for dir in [Direction::ToTarget, Direction::ToClient] {
                let _ = m.stream_bytes.get_or_create(&StreamBytesLabels {
                    kind: kind.label(),
                    direction: dir.label(),
                });
            }
        }
        let mut root = Registry::default();
        #[cfg(target_os = "linux")]
        root.register_collector(Box::new(Process));
        let r = root.sub_registry_with_prefix("vdi_gateway");
        r.register(
            "build",
            "The running build (always 1)",
            Info::new(VersionLabel {
                version: vdi_wire::PRODUCT_VERSION,
            }),
        );
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
            "api_request_duration_seconds",
            "Time from a request's arrival to its answer's head, by route, method and status",
            m.request_seconds.clone(),
        );
        r.register(
            "auth_failures",
            "Requests refused for a missing, wrong or other-role key",
            m.auth_failures.clone(),
        );
        r.register(
            "connections_refused",
            "Connections, streams and tunnels refused, by reason (PROXY header, client binding, limits, allow-list, no free port)",
            refused_family,
        );
        r.register(
            "service_tunnel_connections",
            "Service tunnel connections by result",
            m.service_tunnel.clone(),
        );
        r.register(
            "tunnel_setup_duration_seconds",
            "Time open_connection took (checks, name lookup, port binding), by result (opened, reused, failed)",
            m.setup_seconds.clone(),
        );
        r.register(
            "stream_duration_seconds",
            "Lifetime of ended streams, by kind and how they ended",
            m.stream_seconds.clone(),
        );
        r.register(
            "stream_size_bytes",
            "Bytes one ended stream carried, by kind and direction",
            m.stream_bytes.clone(),
        );
        r.register(
            "ha_apply",
            "HAProxy/Keepalived configurations checked, written and reloaded, by tool and result",
            m.ha_apply.clone(),
        );
        r.register(
            "ha_status",
            "State of the HA configuration as health reports it (1 for the current status)",
            m.ha_status.clone(),
        );
        r.register(
            "holds_vip",
            "Whether this node holds the virtual address (1) or not (0; also when ha_managed is false)",
            m.holds_vip.clone(),
        );
        r.register(
            "enabled",
            "Whether the gateway opens new tunnels (is_enabled)",
            m.enabled.clone(),
        );
        r.register(
            "draining",
            "Whether this node is drained for maintenance (1: no new tunnels, running streams go on)",
            m.draining.clone(),
        );
        m.registry = root;
        m
    }
}

impl Metrics {
    /// Bytes relayed so far (to the target, to the client).
    pub fn bytes_relayed(&self) -> (u64, u64) {
        (self.bytes_to_target.get(), self.bytes_to_client.get())
    }

    pub fn bytes(&self, dir: Direction, n: u64) {
        match dir {
            Direction::ToTarget => self.bytes_to_target.inc_by(n),
            Direction::ToClient => self.bytes_to_client.inc_by(n),
        };
    }

    pub fn refused(&self, reason: Refusal) {
        // `ALL` lists the variants in declaration order (a test holds it).
        self.refused[reason as usize].inc();
    }

    pub fn request(&self, labels: RequestLabels, took: Duration) {
        self.request_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    /// `open_connection`'s outcome: `opened`, `reused` or `failed`.
    pub fn tunnel_setup(&self, result: &'static str, took: Duration) {
        self.setup_seconds
            .get_or_create(&ResultLabel { result })
            .observe(took.as_secs_f64());
    }

    /// A relayed stream began (its end is [`Metrics::stream_ended`]).
    pub fn stream_started(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// A relayed stream went on in the next process (not an end: it is
    /// neither observed nor counted as ended).
    pub fn stream_handed_over(&self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
    }

    /// Streams running now and ended so far.
    pub fn stream_counts(&self) -> (i64, u64) {
        (
            self.running.load(Ordering::Relaxed),
            self.ended.load(Ordering::Relaxed),
        )
    }

    /// One ended stream's account.
    pub fn stream_ended(
        &self,
        kind: StreamKind,
        end: StreamEnd,
        took: Duration,
        to_target: u64,
        to_client: u64,
    ) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        self.ended.fetch_add(1, Ordering::Relaxed);
        let kind = kind.label();
        self.stream_seconds
            .get_or_create(&StreamLabels {
                kind,
                end: end.label(),
            })
            .observe(took.as_secs_f64());
        for (dir, n) in [
            (Direction::ToTarget, to_target),
            (Direction::ToClient, to_client),
        ] {
            self.stream_bytes
                .get_or_create(&StreamBytesLabels {
                    kind,
                    direction: dir.label(),
                })
                .observe(n as f64);
        }
    }

    /// One HA tool's configuration applied (`ok`) or not (refused by its
    /// check, not written, not reloaded or not loaded).
    pub fn ha_apply(&self, tool: &'static str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.ha_apply
            .get_or_create(&HaApplyLabels { tool, result })
            .inc();
    }

    /// Sets `ha_status` to 1 for `current` and 0 for the others.
    pub fn set_ha_status(&self, current: &str) {
        for status in HA_STATUSES {
            self.ha_status
                .get_or_create(&StatusLabel { status })
                .set(i64::from(status == current));
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The process metrics every Prometheus client exports (`process_*`, the
/// names of client_golang's process collector), read from `/proc` at each
/// scrape.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Process;

#[cfg(target_os = "linux")]
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub start_time_seconds: f64,
    pub threads: f64,
}

/// Parses `/proc/self/stat` (proc(5)): the fields after the command name,
/// which is in parentheses and may hold spaces and parentheses itself.
#[cfg(target_os = "linux")]
pub(crate) fn parse_stat(
    stat: &str,
    ticks_per_sec: f64,
    page_bytes: f64,
    boot_time: f64,
) -> Option<ProcessFigures> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name: index i is field i + 3.
    let f: Vec<&str> = after.split_whitespace().collect();
    let num = |field: usize| f.get(field - 3)?.parse::<f64>().ok();
    Some(ProcessFigures {
        cpu_seconds: (num(14)? + num(15)?) / ticks_per_sec,
        threads: num(20)?,
        start_time_seconds: boot_time + num(22)? / ticks_per_sec,
        virtual_bytes: num(23)?,
        resident_bytes: num(24)? * page_bytes,
    })
}

#[cfg(target_os = "linux")]
fn read_process() -> Option<ProcessFigures> {
    // SAFETY: sysconf only reads configuration values.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let boot = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<f64>()
        .ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat, ticks as f64, page as f64, boot)
}

#[cfg(target_os = "linux")]
fn open_fds() -> Option<f64> {
    // Counts the descriptor reading the directory too, as client_golang does.
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as f64)
}

#[cfg(target_os = "linux")]
fn max_fds() -> Option<f64> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return None;
    }
    Some(l.rlim_cur as f64)
}

#[cfg(target_os = "linux")]
impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut gauge = |name: &str, help: &str, v: Option<f64>| {
            let Some(v) = v else { return Ok(()) };
            let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(e)
        };
        let p = read_process();
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.as_ref().map(|p| p.resident_bytes),
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            p.as_ref().map(|p| p.virtual_bytes),
        )?;
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            p.as_ref().map(|p| p.start_time_seconds),
        )?;
        gauge(
            "process_threads",
            "Threads of the process",
            p.as_ref().map(|p| p.threads),
        )?;
        gauge("process_open_fds", "Open file descriptors", open_fds())?;
        gauge(
            "process_max_fds",
            "Limit of open file descriptors (RLIMIT_NOFILE, soft)",
            max_fds(),
        )?;
        if let Some(p) = &p {
            let e = encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(p.cpu_seconds).encode(e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn stat_with_a_strange_name_parses() {
        // proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt
        // cminflt majflt cmajflt utime stime cutime cstime priority nice
        // num_threads itrealvalue starttime vsize rss ...
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456789 300 18446744073709551615";
        let p = parse_stat(stat, 100.0, 4096.0, 1_700_000_000.0).unwrap();
        assert_eq!(
            p,
            ProcessFigures {
                cpu_seconds: 3.0,
                threads: 7.0,
                start_time_seconds: 1_700_000_010.0,
                virtual_bytes: 123456789.0,
                resident_bytes: 300.0 * 4096.0,
            }
        );
        assert!(read_process().is_some_and(|p| p.resident_bytes > 0.0));
    }

    #[test]
    fn refusals_are_listed_in_order() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r}");
        }
    }

    #[test]
    fn every_family_is_there_from_the_start() {
        let text = Metrics::default().encode();
        for reason in Refusal::ALL {
            let line = format!("vdi_gateway_connections_refused_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        for tool in HA_TOOLS {
            for result in ["success", "failure"] {
                let line = format!(
                    "vdi_gateway_ha_apply_total{{tool=\"{tool}\",result=\"{result}\"}} 0\n"
                );
                assert!(text.contains(&line), "{line} missing");
            }
        }
        let build = format!(
            "vdi_gateway_build_info{{version=\"{}\"}} 1\n",
            vdi_wire::PRODUCT_VERSION
        );
        assert!(text.contains(&build), "{text}");
        #[cfg(target_os = "linux")]
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(&format!("\n{name}")), "{name} missing");
        }
        // One TYPE line per family, and the Prometheus format (no `# EOF`).
        assert!(!text.contains("# EOF"));
    }
}
