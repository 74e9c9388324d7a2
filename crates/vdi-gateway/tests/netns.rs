//! Trust and own-address rules need non-loopback addresses: these tests run in
//! a network namespace of their own (root needed; under CI=true missing root
//! is a failure, not a skip). Addresses 10.77.0.x exist only inside it.

mod common;

use common::*;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const GW: &str = "10.77.0.1";
const OTHER: &str = "10.77.0.2";
const DESK: &str = "10.77.0.3";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs `body` on a thread inside a fresh network namespace (loopback up, the
/// three test addresses on it) with its own single-threaded runtime, so every
/// socket the test and the gateway open lives in that namespace.
fn in_namespace<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "network namespace tests need root under CI"
        );
        eprintln!("SKIPPED: network namespace tests need root");
        return;
    }
    std::thread::spawn(move || {
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        let mut cmds = vec!["ip link set lo up".to_string()];
        for a in [GW, OTHER, DESK] {
            cmds.push(format!("ip addr add {a}/32 dev lo"));
        }
        for c in cmds {
            let args: Vec<&str> = c.split(' ').collect();
            let st = std::process::Command::new(args[0])
                .args(&args[1..])
                .status()
                .expect("iproute2 is installed");
            assert!(st.success(), "{c}");
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body());
    })
    .join()
    .unwrap();
}

async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(ip(src), 0)).unwrap();
    s.connect(to).await.unwrap()
}

#[test]
fn proxy_header_is_accepted_from_trusted_peers_only() {
    in_namespace(|| async {
        // The trust rule alone (client binding is tested below).
        let g = start_on(
            ip(GW),
            json!({"allowed_targets": ["10.77.0.0/24"], "tunnel_client_binding": "off"}),
        )
        .await;
        let desk = echo_server(ip(DESK)).await;
        let (s, opened) = g.open(desk.addr, None).await;
        assert_eq!(s, 200, "{opened}");
        let port = SocketAddr::new(ip(GW), opened["port"].as_u64().unwrap() as u16);

        // An untrusted peer sending a PROXY header is refused.
        let mut bad = connect_from(OTHER, port).await;
        bad.write_all(&v2_header("203.0.113.66:1", port))
            .await
            .unwrap();
        bad.write_all(b"spoofed").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            bad.read(&mut buf).await.unwrap_or(0),
            0,
            "refused stream is closed"
        );
        let metrics = g.metrics().await;
        assert!(
            metrics.contains("vdi_gateway_connections_refused_total{reason=\"proxy_header\"} 1"),
            "{metrics}"
        );

        // The same peer without a header is relayed and listed as itself.
        let mut plain = connect_from(OTHER, port).await;
        plain.write_all(b"plain").await.unwrap();
        let mut five = [0u8; 5];
        plain.read_exact(&mut five).await.unwrap();
        let me = plain.local_addr().unwrap().to_string();
        assert!(me.starts_with(OTHER));
        g.wait_for("the untrusted client", |c| {
            c["tunnels"][0]["streams"][0]["client_addr"] == me
        })
        .await;
        drop(plain);

        // A trusted, non-loopback peer (a gateway node's own address: HAProxy).
        let mut good = connect_from(GW, port).await;
        good.write_all(&v2_header("198.51.100.23:40000", port))
            .await
            .unwrap();
        good.write_all(b"real").await.unwrap();
        let mut four = [0u8; 4];
        good.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"real");
        g.wait_for("the real client", |c| {
            c["tunnels"][0]["streams"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["client_addr"] == "198.51.100.23:40000")
        })
        .await;
        g.stop().await;
    });
}

#[test]
fn api_port_honours_the_same_trust_rule() {
    in_namespace(|| async {
        let g = start_on(
            ip(GW),
            json!({"allowed_targets": ["10.77.0.0/24"], "tunnel_client_binding": "off"}),
        )
        .await;
        let desk = echo_server(ip(DESK)).await;
        let (_, opened) = g.open(desk.addr, None).await;
        let api = SocketAddr::new(ip(GW), 8000);

        // Untrusted peer with a PROXY header: the connection is closed unanswered.
        let mut bad = connect_from(OTHER, api).await;
        bad.write_all(
            b"PROXY TCP4 203.0.113.9 10.77.0.1 4444 8000\r\nGET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        let _ = bad.read_to_end(&mut buf).await;
        assert!(
            buf.is_empty(),
            "got an answer: {}",
            String::from_utf8_lossy(&buf)
        );

        // Trusted peer with a PROXY header: the WebSocket stream shows the real client.
        let mut sock = connect_from(GW, api).await;
        sock.write_all(b"PROXY TCP4 198.51.100.77 10.77.0.1 5555 8000\r\n")
            .await
            .unwrap();
        let req = g.ws_request(opened["id"].as_str().unwrap(), &g.cli_key);
        let (_ws, _) = tokio_tungstenite::client_async(req, sock).await.unwrap();
        g.wait_for("the websocket stream's real client", |c| {
            c["tunnels"][0]["streams"][0]["client_addr"] == "198.51.100.77:5555"
        })
        .await;
        g.stop().await;
    });
}

#[test]
fn the_gateways_own_address_is_refused_unless_listed_alone() {
    in_namespace(|| async {
        let g = start_on(ip(GW), json!({"allowed_targets": ["10.0.0.0/8"]})).await;
        for port in [8000, 4300, 22] {
            let (s, body) = g
                .post(
                    "/v3/open_connection/",
                    "cli_key",
                    &g.cli_key.clone(),
                    json!({"target_host": GW, "target_port": port}),
                )
                .await;
            assert_eq!(s, 403, "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("an address of this gateway"),
                "{body}"
            );
        }
        let (s, _) = g
            .post(
                "/v3/open_connection/",
                "cli_key",
                &g.cli_key.clone(),
                json!({"target_host": DESK, "target_port": 5900}),
            )
            .await;
        assert_eq!(s, 200, "other addresses in the network are allowed");
        let (s, _) = g
            .change(json!({"allowed_targets": ["10.0.0.0/8", "10.77.0.1/32"]}))
            .await;
        assert_eq!(s, 200);
        let (s, body) = g
            .post(
                "/v3/open_connection/",
                "cli_key",
                &g.cli_key.clone(),
                json!({"target_host": GW, "target_port": 22}),
            )
            .await;
        assert_eq!(s, 200, "listed explicitly: {body}");
        g.stop().await;
    });
}

#[test]
fn service_tunnel_honours_the_same_trust_rule() {
    in_namespace(|| async {
        // The dispatcher stand-in: an echo server on the dispatcher's port.
        let l = tokio::net::TcpListener::bind((ip(DESK), 4200))
            .await
            .unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let g = start_on(ip(GW), json!({"disp_addrs": [DESK], "disp_port": 4200})).await;
        let svc = SocketAddr::new(ip(GW), 4300);

        let mut bad = connect_from(OTHER, svc).await;
        bad.write_all(&v2_header("203.0.113.66:1", svc))
            .await
            .unwrap();
        bad.write_all(b"spoofed").await.unwrap();
        let mut buf = Vec::new();
        let _ = bad.read_to_end(&mut buf).await;
        assert!(
            buf.is_empty(),
            "an untrusted PROXY header got through: {buf:?}"
        );

        let mut good = connect_from(GW, svc).await;
        good.write_all(&v2_header("198.51.100.5:777", svc))
            .await
            .unwrap();
        good.write_all(b"hello").await.unwrap();
        let mut five = [0u8; 5];
        good.read_exact(&mut five).await.unwrap();
        assert_eq!(
            &five, b"hello",
            "the header was stripped before the dispatcher"
        );
        g.stop().await;
    });
}

/// `open_connection` as the client at `from` (its own source address).
async fn open_as(
    g: &TestGateway,
    from: &str,
    target: SocketAddr,
    vm: &str,
) -> (u16, serde_json::Value) {
    let http = reqwest::Client::builder()
        .local_address(ip(from))
        .build()
        .unwrap();
    let r = http
        .post(g.url("/v3/open_connection/"))
        .header("cli_key", &g.cli_key)
        .json(&json!({"target_host": target.ip().to_string(), "target_port": target.port(), "vm_id": vm}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// True when the gateway closed `s` without relaying anything.
async fn closed_unanswered(mut s: TcpStream) -> bool {
    let _ = s.write_all(b"hello?").await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    buf.is_empty()
}

#[test]
fn a_tunnel_serves_only_the_client_that_opened_it() {
    in_namespace(|| async {
        let g = start_on(ip(GW), json!({"allowed_targets": ["10.77.0.0/24"]})).await;
        let desk = echo_server(ip(DESK)).await;
        let (s, opened) = open_as(&g, OTHER, desk.addr, "vm-1").await;
        assert_eq!(s, 200, "{opened}");
        let port = SocketAddr::new(ip(GW), opened["port"].as_u64().unwrap() as u16);

        // The opener's stream flows.
        let mut mine = connect_from(OTHER, port).await;
        assert!(echoes(&mut mine, b"mine").await);
        assert_eq!(*desk.accepted.borrow(), 1);

        // A stranger's plain stream is closed and never reaches the desktop.
        assert!(closed_unanswered(connect_from(DESK, port).await).await);
        // Through a trusted proxy (a node's own address, as HAProxy): a header
        // naming a stranger is refused before dialling, one naming the opener
        // is relayed.
        let mut stranger = connect_from(GW, port).await;
        stranger
            .write_all(&v2_header("198.51.100.9:4000", port))
            .await
            .unwrap();
        assert!(closed_unanswered(stranger).await);
        let mut proxied = connect_from(GW, port).await;
        proxied
            .write_all(&v2_header(&format!("{OTHER}:4001"), port))
            .await
            .unwrap();
        assert!(echoes(&mut proxied, b"via proxy").await);
        assert_eq!(
            *desk.accepted.borrow(),
            2,
            "only the opener's streams reached the desktop"
        );
        // The opener's first stream went on meanwhile.
        assert!(echoes(&mut mine, b"still mine").await);

        // The WebSocket path is bound the same way.
        let req = g.ws_request(opened["id"].as_str().unwrap(), &g.cli_key);
        let sock = connect_from(DESK, SocketAddr::new(ip(GW), 8000)).await;
        let refused = tokio_tungstenite::client_async(req, sock)
            .await
            .unwrap_err();
        let tokio_tungstenite::tungstenite::Error::Http(resp) = refused else {
            panic!("expected an HTTP refusal, got {refused}");
        };
        assert_eq!(resp.status().as_u16(), 403);
        let body: serde_json::Value =
            serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
        assert_eq!(body["code"], "client_mismatch", "{body}");
        assert_eq!(*desk.accepted.borrow(), 2);

        let metrics = g.metrics().await;
        assert!(
            metrics.contains("vdi_gateway_connections_refused_total{reason=\"client_mismatch\"} 3"),
            "{metrics}"
        );

        // Another client asking for the same vm gets a tunnel of its own.
        let (s, theirs) = open_as(&g, DESK, desk.addr, "vm-1").await;
        assert_eq!(s, 200, "{theirs}");
        assert_ne!(theirs["id"], opened["id"]);

        // Off (clients behind NAT pools): anyone reaching the port is served.
        let (s, _) = g.change(json!({"tunnel_client_binding": "off"})).await;
        assert_eq!(s, 200);
        let mut anyone = connect_from(DESK, port).await;
        assert!(echoes(&mut anyone, b"anyone").await);
        g.stop().await;
    });
}

#[test]
fn per_client_quotas_refuse_the_greedy_client_only() {
    in_namespace(|| async {
        let g = start_on(
            ip(GW),
            json!({"allowed_targets": ["10.77.0.0/24"], "max_tunnels_per_client": 2, "max_streams_per_client": 2}),
        )
        .await;
        let desk = echo_server(ip(DESK)).await;
        let (a, first) = open_as(&g, OTHER, desk.addr, "vm-a").await;
        let (b, _) = open_as(&g, OTHER, desk.addr, "vm-b").await;
        assert_eq!((a, b), (200, 200));
        let (s, body) = open_as(&g, OTHER, desk.addr, "vm-c").await;
        assert_eq!(s, 429, "{body}");
        assert_eq!(body["code"], "too_many_tunnels");
        // Reuse is not a new tunnel; another client is still served.
        let (s, again) = open_as(&g, OTHER, desk.addr, "vm-a").await;
        assert_eq!((s, &again["id"]), (200, &first["id"]));
        let (s, body) = open_as(&g, GW, desk.addr, "vm-c").await;
        assert_eq!(s, 200, "{body}");

        // Streams: two per client over all its tunnels; the third is closed.
        let port = SocketAddr::new(ip(GW), first["port"].as_u64().unwrap() as u16);
        let mut one = connect_from(OTHER, port).await;
        let mut two = connect_from(OTHER, port).await;
        assert!(echoes(&mut one, b"1").await && echoes(&mut two, b"2").await);
        assert!(closed_unanswered(connect_from(OTHER, port).await).await);
        assert!(
            g.metrics().await.contains(
                "vdi_gateway_connections_refused_total{reason=\"client_stream_limit\"} 1"
            )
        );
        // A stream ending gives its place back.
        drop(one);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut three = connect_from(OTHER, port).await;
            if echoes(&mut three, b"3").await {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the freed place never came back"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // A trusted proxy carries many clients: with binding off its
        // connections are admitted as its own and not capped as one client.
        let (s, _) = g.change(json!({"tunnel_client_binding": "off"})).await;
        assert_eq!(s, 200);
        let mut via_proxy = Vec::new();
        for i in 0..3u8 {
            let mut p = connect_from(GW, port).await;
            assert!(echoes(&mut p, &[b'p', i]).await, "proxied stream {i}");
            via_proxy.push(p);
        }
        g.stop().await;
    });
}

#[test]
fn one_source_cannot_take_every_connection() {
    in_namespace(|| async {
        let g = start_on(ip(GW), json!({"max_connections_per_client": 5})).await;
        for port in [8000, 4300] {
            let to = SocketAddr::new(ip(GW), port);
            let mut held = Vec::new();
            for _ in 0..5 {
                held.push(connect_from(OTHER, to).await);
            }
            // The sixth from the same source is closed at once ...
            assert!(
                closed_unanswered(connect_from(OTHER, to).await).await,
                "port {port}"
            );
            // ... while others, and trusted proxies, are served.
            let _other = connect_from(DESK, to).await;
            let (status, _) = g.get("/v3/health/", &g.api_key).await;
            assert_eq!(status, 200);
            drop(held);
        }
        let metrics = g.metrics().await;
        assert!(
            metrics.contains(
                "vdi_gateway_connections_refused_total{reason=\"client_connection_limit\"} 2"
            ),
            "{metrics}"
        );
        g.stop().await;
    });
}
