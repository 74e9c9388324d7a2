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
        let g = start_on(ip(GW), json!({"allowed_targets": ["10.77.0.0/24"]})).await;
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
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    in_namespace(|| async {
        let g = start_on(ip(GW), json!({"allowed_targets": ["10.77.0.0/24"]})).await;
        let desk = echo_server(ip(DESK)).await;
        let (_, opened) = g.open(desk.addr, None).await;
        let api = SocketAddr::new(ip(GW), 8000);
        let url = format!(
            "ws://{GW}:8000/v3/connect/?id={}",
            opened["id"].as_str().unwrap()
        );

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
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("cli_key", g.cli_key.parse().unwrap());
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
