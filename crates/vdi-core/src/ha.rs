//! HAProxy and Keepalived configurations, rendered from the settings and this
//! node's identity. Pure text; the daemon validates them with the real tools,
//! writes and reloads (see `docs/ha.md`). The layout follows the original
//! product's example section by section, plus what a working HAProxy needs that
//! the example leaves out (global and defaults, long timeouts, PROXY protocol).

use crate::settings as rules;
use std::fmt::Write;
use std::net::IpAddr;
use vdi_wire::{
    HAPROXY_PEERS_PORT, HAPROXY_STATS_PORT, SERVICE_PUBLIC_PORT, SERVICE_TUNNEL_PORT, Settings,
};

/// Timeouts of desktop sessions: a session may sit idle for hours (a locked
/// screen sends little); TCP keepalive notices dead peers well before this.
const SESSION_TIMEOUT: &str = "8h";
/// Stickiness outlives a working day, so a client comes back to its node.
const STICK_EXPIRE: &str = "24h";

/// The peer name of a node in HAProxy's `peers` section and `localpeer`.
pub fn peer_name(addr: IpAddr) -> String {
    let text = addr.to_string();
    format!("gw_{}", text.replace(['.', ':'], "_"))
}

fn host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `haproxy.cfg` for the node whose internal address is `node`.
pub fn render_haproxy(s: &Settings, node: IpAddr) -> String {
    let vip = s.virtual_addr;
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(
        w,
        "# Written by vdi-gateway for node {node}. Changes here are overwritten;"
    );
    let _ = writeln!(
        w,
        "# change the gateway's settings instead (`vdi-gateway settings`)."
    );
    let max = rules::max_connections(s);
    let _ = writeln!(w, "global");
    let _ = writeln!(w, "    log /dev/log local0");
    // Root only to bind and open the log and admin sockets: the workers run
    // as Debian's haproxy user, inside its empty chroot.
    let _ = writeln!(w, "    chroot /var/lib/haproxy");
    let _ = writeln!(w, "    user haproxy");
    let _ = writeln!(w, "    group haproxy");
    // No global maxconn: HAProxy derives it from its descriptor limit (a
    // fixed one above that limit stops it); each frontend has its own.
    let _ = writeln!(w, "    localpeer {}", peer_name(node));
    let _ = writeln!(
        w,
        "    stats socket {} mode 600 level admin",
        rules::haproxy_admin_socket(s)
    );
    let _ = writeln!(w, "    setenv {CONFIG_DIGEST_VAR} {DIGEST_PLACEHOLDER}");
    let _ = writeln!(w);
    let _ = writeln!(w, "defaults");
    let _ = writeln!(w, "    log global");
    let _ = writeln!(w, "    mode tcp");
    let _ = writeln!(w, "    option dontlognull");
    let _ = writeln!(w, "    option tcplog");
    let _ = writeln!(w, "    timeout connect 5s");
    let _ = writeln!(w, "    timeout client {SESSION_TIMEOUT}");
    let _ = writeln!(w, "    timeout server {SESSION_TIMEOUT}");
    let _ = writeln!(w, "    timeout client-fin 30s");
    let _ = writeln!(w, "    timeout server-fin 30s");
    let _ = writeln!(w, "    timeout check 5s");
    let _ = writeln!(w);
    // Who may reach the stats page and the peers port: the nodes themselves.
    let mut nodes = String::from("127.0.0.0/8");
    for a in &s.internal_addrs {
        let _ = write!(nodes, " {a}");
    }
    let _ = writeln!(w, "listen stats");
    let _ = writeln!(w, "    bind {}", host_port(vip, HAPROXY_STATS_PORT));
    let _ = writeln!(w, "    mode http");
    let _ = writeln!(w, "    maxconn 100");
    let _ = writeln!(w, "    timeout client 30s");
    let _ = writeln!(w, "    acl nodes src {nodes}");
    let _ = writeln!(w, "    http-request deny unless nodes");
    let _ = writeln!(w, "    stats enable");
    let _ = writeln!(w, "    stats uri /");
    let _ = writeln!(
        w,
        "    http-request use-service prometheus-exporter if {{ path /metrics }}"
    );
    let _ = writeln!(w);
    // The peers protocol has no access rules of its own: the nodes' port is a
    // guard that admits only the nodes and hands them to the peers section,
    // which listens on a local address.
    let local_peers = host_port(peers_local_addr(node), HAPROXY_PEERS_PORT + 1);
    let _ = writeln!(w, "listen peers_guard");
    let _ = writeln!(w, "    bind {}", host_port(node, HAPROXY_PEERS_PORT));
    let _ = writeln!(w, "    maxconn 100");
    let _ = writeln!(
        w,
        "    tcp-request connection reject unless {{ src {nodes} }}"
    );
    let _ = writeln!(w, "    server local_peers {local_peers}");
    let _ = writeln!(w);
    let _ = writeln!(w, "peers sticktables");
    let _ = writeln!(w, "    bind {local_peers}");
    for addr in &s.internal_addrs {
        if *addr == node {
            let _ = writeln!(w, "    server {}", peer_name(*addr));
        } else {
            let _ = writeln!(
                w,
                "    server {} {}",
                peer_name(*addr),
                host_port(*addr, HAPROXY_PEERS_PORT)
            );
        }
    }
    let _ = writeln!(
        w,
        "    table sticky-sessions type ip size 1m expire {STICK_EXPIRE}"
    );
    let sticky = |w: &mut String| {
        let _ = writeln!(w, "    stick match src table sticktables/sticky-sessions");
        let _ = writeln!(
            w,
            "    stick store-request src table sticktables/sticky-sessions"
        );
    };
    // Health of a node = its API answers; every server gets the real client via PROXY v2.
    let servers = |w: &mut String, port: Option<u16>| {
        for (i, addr) in s.internal_addrs.iter().enumerate() {
            let target = match port {
                Some(p) => host_port(*addr, p),
                None => host(*addr),
            };
            let check_port = match port {
                Some(_) => String::new(),
                None => format!(" port {}", s.api_port),
            };
            let _ = writeln!(
                w,
                "    server gateway_{i} {target} check{check_port} send-proxy-v2"
            );
        }
    };
    // Every public frontend: a cap on its connections, and on those of one
    // source (the gateway behind sees HAProxy as one trusted source, so the
    // per-client limit is kept here at the edge).
    let limits = |w: &mut String, name: &str, per_source: u32| {
        let _ = writeln!(w, "    maxconn {max}");
        let _ = writeln!(
            w,
            "    tcp-request connection track-sc0 src table per_source_{name}"
        );
        let _ = writeln!(
            w,
            "    tcp-request connection reject if {{ sc0_conn_cur gt {per_source} }}"
        );
    };
    let table = |w: &mut String, name: &str| {
        let _ = writeln!(w, "backend per_source_{name}");
        let _ = writeln!(
            w,
            "    stick-table type ip size 100k expire 1m store conn_cur"
        );
    };
    let per_client = rules::max_connections_per_client(s);
    let _ = writeln!(w);
    let _ = writeln!(w, "frontend service_tunnel");
    let _ = writeln!(w, "    bind {}", host_port(vip, SERVICE_PUBLIC_PORT));
    limits(w, "service_tunnel", per_client);
    let _ = writeln!(w, "    default_backend service_tunnel");
    let _ = writeln!(w, "backend service_tunnel");
    let _ = writeln!(w, "    balance roundrobin");
    servers(w, Some(SERVICE_TUNNEL_PORT));
    table(w, "service_tunnel");
    let _ = writeln!(w);
    let _ = writeln!(w, "frontend client");
    let _ = writeln!(w, "    bind {}", host_port(vip, s.balancer_api_port));
    limits(w, "client", per_client);
    let _ = writeln!(w, "    default_backend client");
    let _ = writeln!(w, "backend client");
    let _ = writeln!(w, "    balance roundrobin");
    sticky(w);
    // New tunnels only where they are taken: a drained or disabled node
    // answers 503 and is down for this backend (a client stuck to it is
    // balanced to another), while the tunnels backend still reaches it.
    // Checked every second, down after two misses: a drain takes effect in
    // about 2 s (HAProxy's default would be up to 6 s).
    let _ = writeln!(w, "    default-server inter 1s fall 2 rise 2");
    let _ = writeln!(w, "    option httpchk");
    let _ = writeln!(
        w,
        "    http-check send meth GET uri /v3/ready/ ver HTTP/1.1 hdr Host vdi-gateway"
    );
    let _ = writeln!(w, "    http-check expect status 200");
    // A node whose gateway just died refuses the connection before its
    // check notices: try another node (an API call is not tied to one).
    let _ = writeln!(w, "    option redispatch 1");
    let _ = writeln!(w, "    retries 2");
    let tls_check = if s.ssl { " check-ssl verify none" } else { "" };
    let start = w.len();
    servers(w, Some(s.api_port));
    if s.ssl {
        let lines = w.split_off(start).replace(
            " check send-proxy-v2",
            &format!(" check{tls_check} send-proxy-v2"),
        );
        w.push_str(&lines);
    }
    table(w, "client");
    let _ = writeln!(w);
    let _ = writeln!(w, "frontend tunnels");
    let _ = writeln!(
        w,
        "    bind {}:{}-{}",
        host(vip),
        s.port_range_start,
        s.port_range_stop
    );
    limits(w, "tunnels", rules::max_streams_per_client(s));
    let _ = writeln!(w, "    default_backend tunnels");
    let _ = writeln!(w, "backend tunnels");
    let _ = writeln!(w, "    balance roundrobin");
    sticky(w);
    servers(w, None);
    table(w, "tunnels");
    let digest = format!("{:016x}", fnv1a(o.as_bytes()));
    o.replace(DIGEST_PLACEHOLDER, &digest)
}

/// Where a node's peers section listens: a loopback address only the local
/// guard reaches (the node's own when it is a loopback one, as on a test bed
/// of one machine).
fn peers_local_addr(node: IpAddr) -> IpAddr {
    if node.is_loopback() {
        node
    } else if node.is_ipv4() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
    }
}

/// The environment variable through which a running HAProxy tells which
/// configuration it loaded (`show env` on its admin socket): a master-worker
/// reload that fails at run time (a port taken, a limit) keeps the old workers
/// and still reports success, so the gateway checks this instead.
pub const CONFIG_DIGEST_VAR: &str = "VDI_GATEWAY_CONFIG";
const DIGEST_PLACEHOLDER: &str = "@digest@";

/// The digest written into `haproxy.cfg` (`setenv VDI_GATEWAY_CONFIG ...`).
pub fn haproxy_digest(cfg: &str) -> Option<&str> {
    let prefix = format!("    setenv {CONFIG_DIGEST_VAR} ");
    cfg.lines().find_map(|l| l.strip_prefix(prefix.as_str()))
}

/// FNV-1a, 64 bit: a stable fingerprint of the text (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// The directory of the database: where the files Keepalived tracks live.
pub const DEFAULT_STATE_DIR: &str = "/opt/vdi-gateway/app";
/// The files Keepalived tracks in it (`1`: the node must not hold the VIP):
/// the drain state (written by the gateway), and whether HAProxy is stopped
/// (written as it starts and stops by the package's drop-in, `ExecStopPost`
/// after any exit, a crash too: no polling delay). A stopped *gateway* is
/// no such file on purpose: the node's HAProxy sends new calls to the other
/// nodes at once (`option redispatch`), and moving the VIP would cut every
/// stream through this HAProxy, to every node, at each restart.
pub const TRACK_FILES: [(&str, &str); 2] = [
    ("gateway_drain", "draining"),
    ("haproxy_stopped", "haproxy-stopped"),
];

/// `keepalived.conf` for the node whose internal address is `node`, putting the
/// VIP on `interface`; `state_dir` holds the [`TRACK_FILES`].
pub fn render_keepalived(s: &Settings, node: IpAddr, interface: &str, state_dir: &str) -> String {
    let mut o = String::new();
    let w = &mut o;
    let advert = rules::vrrp_advert_int(s);
    let _ = writeln!(
        w,
        "# Written by vdi-gateway for node {node}. Changes here are overwritten;"
    );
    let _ = writeln!(
        w,
        "# change the gateway's settings instead (`vdi-gateway settings`)."
    );
    let _ = writeln!(w, "global_defs {{");
    let _ = writeln!(w, "    router_id {}", peer_name(node));
    let _ = writeln!(w, "    enable_script_security");
    let _ = writeln!(w, "    script_user root");
    let _ = writeln!(w, "}}");
    for (name, unit) in [
        ("check_haproxy", "haproxy"),
        ("check_gateway", "vdi-gateway"),
    ] {
        let _ = writeln!(w, "vrrp_script {name} {{");
        let _ = writeln!(
            w,
            "    script \"/usr/bin/systemctl is-active --quiet {unit}\""
        );
        let _ = writeln!(w, "    interval 1");
        let _ = writeln!(w, "    fall 2");
        let _ = writeln!(w, "    rise 2");
        let _ = writeln!(w, "}}");
    }
    // Weight 0: a non-zero value is a fault, so the node gives the VIP up at
    // once (read on inotify, no polling). The drain file is created as `0`
    // when absent (never drained); HAProxy's as `1` (not running until it
    // says so). Never overwritten.
    let dir = state_dir.trim_end_matches('/').replace(['"', '\\'], "");
    for (name, file) in TRACK_FILES {
        let init = if name == "gateway_drain" { 0 } else { 1 };
        let _ = writeln!(w, "track_file {name} {{");
        let _ = writeln!(w, "    file \"{dir}/{file}\"");
        let _ = writeln!(w, "    weight 0");
        let _ = writeln!(w, "    init_file {init}");
        let _ = writeln!(w, "}}");
    }
    let _ = writeln!(w, "vrrp_instance gateway {{");
    let _ = writeln!(w, "    state BACKUP");
    // The VIP stays where it is when a node comes back: moving it again would
    // cut every client of the current master a second time.
    let _ = writeln!(w, "    nopreempt");
    let _ = writeln!(w, "    interface {interface}");
    let _ = writeln!(w, "    virtual_router_id {}", rules::vrrp_router_id(s));
    let _ = writeln!(w, "    priority 100");
    let _ = writeln!(w, "    advert_int {advert}");
    // Unicast between the nodes, and adverts from anyone else ignored: no
    // neighbour on the segment can take the VIP. (A single node has no peer
    // to be unicast with: Keepalived refuses an empty list; see docs/ha.md.)
    let peers: Vec<&IpAddr> = s.internal_addrs.iter().filter(|a| **a != node).collect();
    if !peers.is_empty() {
        let _ = writeln!(w, "    unicast_src_ip {node}");
        let _ = writeln!(w, "    unicast_peer {{");
        for addr in peers {
            let _ = writeln!(w, "        {addr}");
        }
        let _ = writeln!(w, "    }}");
        let _ = writeln!(w, "    check_unicast_src");
    }
    if advert < 1.0 {
        // Sub-second adverts need VRRPv3.
        let _ = writeln!(w, "    version 3");
    }
    let _ = writeln!(w, "    virtual_ipaddress {{");
    let _ = writeln!(w, "        {}", s.virtual_addr);
    let _ = writeln!(w, "    }}");
    let _ = writeln!(w, "    track_script {{");
    let _ = writeln!(w, "        check_haproxy");
    let _ = writeln!(w, "        check_gateway");
    let _ = writeln!(w, "    }}");
    let _ = writeln!(w, "    track_file {{");
    for (name, _) in TRACK_FILES {
        let _ = writeln!(w, "        {name}");
    }
    let _ = writeln!(w, "    }}");
    // Every state change is logged (to the journal) as "INSTANCE gateway MASTER 100".
    let _ = writeln!(
        w,
        "    notify \"/usr/bin/logger -t vdi-gateway-vrrp -p daemon.notice\""
    );
    let _ = writeln!(w, "}}");
    o
}

/// A network interface as the system lists it.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub loopback: bool,
    /// Administratively up (IFF_UP).
    pub up: bool,
}

/// The system's first network interface: the lowest index among those that are
/// up and not loopback (a down helper device such as `ifb0` is no NIC to put a
/// VIP on).
pub fn first_interface(ifaces: &[Interface]) -> Option<&str> {
    ifaces
        .iter()
        .filter(|i| !i.loopback && i.up)
        .min_by_key(|i| i.index)
        .map(|i| i.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = include_str!("settings/seed.json");

    fn seed() -> Settings {
        rules::parse_document_text(SEED).unwrap()
    }

    fn three_nodes() -> Settings {
        let mut s = seed();
        s.internal_addrs = ["10.254.150.132", "10.254.150.133", "10.254.150.134"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        s.vrrp_router_id = Some(51);
        s.vrrp_advert_int = Some(0.5);
        s
    }

    #[test]
    fn haproxy_one_node_like_the_original() {
        let s = seed();
        insta::assert_snapshot!(render_haproxy(&s, s.internal_addrs[0]));
    }

    #[test]
    fn haproxy_three_nodes() {
        let s = three_nodes();
        insta::assert_snapshot!(render_haproxy(&s, s.internal_addrs[1]));
    }

    #[test]
    fn only_the_api_backend_checks_readiness_over_tls_when_ssl_is_on() {
        let mut s = three_nodes();
        s.ssl = true;
        let cfg = render_haproxy(&s, s.internal_addrs[1]);
        let backend = |name: &str| {
            let from = cfg.find(&format!("\nbackend {name}\n")).unwrap() + 1;
            let rest = &cfg[from..];
            rest[..rest[1..].find("\nbackend ").map_or(rest.len(), |i| i + 1)].to_string()
        };
        let client = backend("client");
        assert!(client.contains("uri /v3/ready/"), "{client}");
        assert_eq!(
            client
                .matches("check check-ssl verify none send-proxy-v2")
                .count(),
            3,
            "{client}"
        );
        let tunnels = backend("tunnels");
        assert!(
            !tunnels.contains("httpchk") && !tunnels.contains("check-ssl"),
            "{tunnels}"
        );
    }

    #[test]
    fn keepalived_one_node_like_the_original() {
        let s = seed();
        insta::assert_snapshot!(render_keepalived(
            &s,
            s.internal_addrs[0],
            "eth0",
            DEFAULT_STATE_DIR
        ));
    }

    #[test]
    fn keepalived_three_nodes_fast_adverts() {
        let s = three_nodes();
        insta::assert_snapshot!(render_keepalived(
            &s,
            s.internal_addrs[2],
            "ens18",
            DEFAULT_STATE_DIR
        ));
    }

    #[test]
    fn every_node_is_a_peer_and_a_server() {
        let s = three_nodes();
        for node in &s.internal_addrs {
            let cfg = render_haproxy(&s, *node);
            assert!(cfg.contains(&format!("localpeer {}", peer_name(*node))));
            assert!(
                cfg.contains(&format!("    server {}\n", peer_name(*node))),
                "local peer without address"
            );
            for other in s.internal_addrs.iter().filter(|a| *a != node) {
                assert!(cfg.contains(&format!("server {} {other}:10000", peer_name(*other))));
            }
            assert_eq!(cfg.matches("send-proxy-v2").count(), 9);
        }
    }

    #[test]
    fn the_digest_changes_with_the_configuration() {
        let mut s = seed();
        let a = render_haproxy(&s, s.internal_addrs[0]);
        s.port_range_stop = 5949;
        let b = render_haproxy(&s, s.internal_addrs[0]);
        let (da, db) = (haproxy_digest(&a).unwrap(), haproxy_digest(&b).unwrap());
        assert_eq!(da.len(), 16);
        assert_ne!(da, db);
        assert_eq!(
            haproxy_digest(&render_haproxy(&s, s.internal_addrs[0])),
            Some(db)
        );
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let mut s = seed();
        s.virtual_addr = "fd00::10".parse().unwrap();
        s.internal_addrs = vec!["fd00::1".parse().unwrap()];
        let cfg = render_haproxy(&s, s.internal_addrs[0]);
        assert!(cfg.contains("bind [fd00::10]:443"), "{cfg}");
        assert!(cfg.contains("bind [fd00::10]:5900-5999"), "{cfg}");
        assert!(
            cfg.contains("server gateway_0 [fd00::1] check port 8000"),
            "{cfg}"
        );
        assert!(cfg.contains("localpeer gw_fd00__1"), "{cfg}");
    }

    #[test]
    fn the_first_interface_is_the_lowest_index_that_is_up_and_not_loopback() {
        let iface = |name: &str, index, loopback, up| Interface {
            name: name.into(),
            index,
            loopback,
            up,
        };
        let ifaces = [
            iface("lo", 1, true, true),
            iface("ifb0", 2, false, false),
            iface("ens19", 4, false, true),
            iface("ens18", 3, false, true),
        ];
        assert_eq!(first_interface(&ifaces), Some("ens18"));
        assert_eq!(first_interface(&ifaces[..2]), None);
    }
}
