//! Tunnels end to end: real sockets, a real gateway, an echo desktop stand-in.

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MB10: usize = 10 * 1024 * 1024;

fn tunnel_addr(g: &TestGateway, opened: &serde_json::Value) -> SocketAddr {
    assert_eq!(opened["address"], g.ip.to_string());
    SocketAddr::new(g.ip, opened["port"].as_u64().unwrap() as u16)
}

#[tokio::test]
async fn ten_megabytes_each_way_counted_then_disconnected() {
    let g = start(json!({})).await;
    let mut desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (s, opened) = g.open(desk.addr, Some("vm-1")).await;
    assert_eq!(s, 200, "{opened}");
    let id = opened["id"].as_str().unwrap().to_string();
    let addr = tunnel_addr(&g, &opened);
    let t = g.tunnel(&id).await.unwrap();
    assert_eq!(t["state"], "waiting");
    assert_eq!(t["target_port"], desk.addr.port());
    assert_eq!(t["vm_id"], "vm-1");

    // 10 MB out, 10 MB back, with checksums; the stream half-closes.
    let data = random_bytes(MB10);
    let sock = TcpStream::connect(addr).await.unwrap();
    let local = sock.local_addr().unwrap();
    let back = echo_round_trip(sock, &data).await;
    assert_eq!(back.len(), MB10);
    assert_eq!(sha(&back), sha(&data));

    // A second, long-lived stream: listed with exact counts while it runs.
    let mut live = TcpStream::connect(addr).await.unwrap();
    live.write_all(b"hello desktop").await.unwrap();
    let mut buf = [0u8; 13];
    live.read_exact(&mut buf).await.unwrap();
    let c = g
        .wait_for("the live stream's counters", |c| {
            c["tunnels"][0]["streams"].as_array().is_some_and(|s| {
                s.len() == 1 && s[0]["bytes_to_target"] == 13 && s[0]["bytes_to_client"] == 13
            })
        })
        .await;
    let t = &c["tunnels"][0];
    assert_eq!(t["state"], "active");
    assert!(
        t.get("expires_at").is_none(),
        "an active tunnel does not expire: {t}"
    );
    assert_eq!(
        t["streams"][0]["client_addr"],
        live.local_addr().unwrap().to_string()
    );
    assert_eq!(t["streams"][0]["via"], "tcp");
    assert_ne!(local, live.local_addr().unwrap());

    // The first stream's totals reached the metrics exactly.
    let metrics = g.metrics().await;
    let total = 13 + MB10;
    assert!(
        metrics.contains(&format!(
            "vdi_gateway_bytes_relayed_total{{direction=\"to_target\"}} {total}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "vdi_gateway_bytes_relayed_total{{direction=\"to_client\"}} {total}"
        )),
        "{metrics}"
    );
    // And health, which the console draws its throughput charts from.
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(
        (h["bytes_to_target"].as_u64(), h["bytes_to_client"].as_u64()),
        (Some(total as u64), Some(total as u64)),
        "{h}"
    );

    // Disconnect the tunnel: both ends close, the port is free again.
    let stream_id = t["streams"][0]["id"].as_str().unwrap().to_string();
    let (s, closed) = g
        .post(
            "/v3/disconnect/",
            "api_key",
            &g.api_key,
            json!({"tunnel_id": id}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(closed, json!({"tunnels": [id], "streams": [stream_id]}));
    let n = live.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the client side was closed");
    desk.wait_ended(2).await; // and the desktop side of both streams
    assert!(g.tunnel(&id).await.is_none());
    assert!(port_is_free(addr), "port {addr} is free again");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens on the old port"
    );
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(
        (h["tunnels"].as_u64(), h["ports_in_use"].as_u64()),
        (Some(0), Some(0))
    );
    g.stop().await;
}

#[tokio::test]
async fn disconnect_one_stream_leaves_the_others() {
    let g = start(json!({})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, None).await;
    let addr = tunnel_addr(&g, &opened);
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    for s in [&mut a, &mut b] {
        s.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
    }
    let c = g
        .wait_for("two streams", |c| {
            c["tunnels"][0]["streams"]
                .as_array()
                .is_some_and(|s| s.len() == 2)
        })
        .await;
    let a_local = a.local_addr().unwrap().to_string();
    let a_id = c["tunnels"][0]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["client_addr"] == a_local)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, closed) = g
        .post(
            "/v3/disconnect/",
            "api_key",
            &g.api_key,
            json!({"stream_id": a_id}),
        )
        .await;
    assert_eq!(
        (s, closed),
        (200, json!({"tunnels": [], "streams": [a_id]}))
    );
    let mut buf = [0u8; 1];
    assert_eq!(a.read(&mut buf).await.unwrap_or(0), 0);
    b.write_all(b"y").await.unwrap();
    b.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"y");
    g.stop().await;
}

#[tokio::test]
async fn many_streams_in_one_tunnel() {
    let g = start(json!({})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, Some("spice-vm")).await;
    let addr = tunnel_addr(&g, &opened);
    let runs = (0..16).map(|i| async move {
        let data = random_bytes(100_000 + i);
        let back = echo_round_trip(TcpStream::connect(addr).await.unwrap(), &data).await;
        assert_eq!(sha(&back), sha(&data));
    });
    futures_util::future::join_all(runs).await;
    assert_eq!(*desk.accepted.borrow(), 16);
    let c = g
        .wait_for("streams to finish", |c| c["tunnels"][0]["state"] == "idle")
        .await;
    assert_eq!(c["tunnels"].as_array().unwrap().len(), 1);
    g.stop().await;
}

#[tokio::test]
async fn stream_limit_per_tunnel() {
    let g = start(json!({"max_streams_per_tunnel": 2})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, None).await;
    let addr = tunnel_addr(&g, &opened);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"k").await.unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        held.push(s);
    }
    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(
        third.read(&mut buf).await.unwrap_or(0),
        0,
        "the third stream is closed at once"
    );
    g.stop().await;
}

#[tokio::test]
async fn same_vm_and_target_reuse_the_tunnel() {
    let g = start(json!({})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, a) = g.open(desk.addr, Some("vm-7")).await;
    let (_, b) = g.open(desk.addr, Some("vm-7")).await;
    let (_, c) = g.open(desk.addr, Some("vm-8")).await;
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["port"], b["port"]);
    assert_ne!(a["id"], c["id"]);
    assert_ne!(a["port"], c["port"]);
    assert_eq!(
        g.connections().await["tunnels"].as_array().unwrap().len(),
        2
    );
    g.stop().await;
}

#[tokio::test]
async fn a_tunnel_no_stream_reached_expires() {
    let g = start(json!({"tunnel_ttl_secs": 1})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, None).await;
    let addr = tunnel_addr(&g, &opened);
    let expires: chrono::DateTime<chrono::Utc> =
        opened["expires_at"].as_str().unwrap().parse().unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(
        ttl <= chrono::Duration::seconds(1) && ttl > chrono::Duration::zero(),
        "{ttl}"
    );
    g.wait_for("the tunnel to expire", |c| {
        c["tunnels"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(port_is_free(addr));
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(h["ports_in_use"], 0);
    g.stop().await;
}

#[tokio::test]
async fn a_tunnel_idles_out_after_its_last_stream() {
    let g = start(json!({"tunnel_ttl_secs": 1, "tunnel_idle_secs": 2})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, None).await;
    let id = opened["id"].as_str().unwrap().to_string();
    let addr = tunnel_addr(&g, &opened);
    let sock = TcpStream::connect(addr).await.unwrap();
    // Hold the stream past the ttl: an active tunnel does not expire.
    g.wait_for("the stream", |c| c["tunnels"][0]["state"] == "active")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        g.tunnel(&id).await.is_some(),
        "active tunnel outlived its ttl"
    );
    assert_eq!(echo_round_trip(sock, b"bye").await, b"bye");
    let idle = g
        .wait_for("idle state", |c| c["tunnels"][0]["state"] == "idle")
        .await;
    assert!(idle["tunnels"][0]["expires_at"].is_string());
    g.wait_for("the tunnel to idle out", |c| {
        c["tunnels"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(port_is_free(addr));
    g.stop().await;
}

#[tokio::test]
async fn port_exhaustion_answers_503() {
    let g = start(json!({"port_range_start": 21000, "port_range_stop": 21001})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    assert_eq!(g.open(desk.addr, Some("a")).await.0, 200);
    assert_eq!(g.open(desk.addr, Some("b")).await.0, 200);
    let (s, body) = g.open(desk.addr, Some("c")).await;
    assert_eq!(s, 503);
    assert_eq!(body["code"], "no_free_port");
    assert!(
        body["message"].as_str().unwrap().contains("21000-21001"),
        "{body}"
    );
    g.stop().await;
}

#[tokio::test]
async fn a_port_taken_by_another_program_is_skipped() {
    let ip = unique_loopback();
    // Another program holds every port of the range but the last.
    let squatters: Vec<_> = (21000..21009)
        .map(|p| std::net::TcpListener::bind((ip, p)).unwrap())
        .collect();
    let g = start_on(ip, json!({})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (s, opened) = g.open(desk.addr, None).await;
    assert_eq!(s, 200);
    assert_eq!(opened["port"], 21009);
    drop(squatters);
    g.stop().await;
}

#[tokio::test]
async fn allow_list_refusals() {
    let g = start(json!({"allowed_targets": ["10.0.0.0/8", "192.168.0.0/16"]})).await;
    for (host, needle) in [
        ("127.0.0.1", "loopback"),
        ("8.8.8.8", "not in the allowed target networks"),
        ("169.254.169.254", "link-local"),
        ("localhost", "loopback"),
    ] {
        let (s, body) = g
            .post(
                "/v3/open_connection/",
                "cli_key",
                &g.cli_key.clone(),
                json!({"target_host": host, "target_port": 5900}),
            )
            .await;
        assert_eq!(
            (s, body["code"].as_str()),
            (403, Some("target_not_allowed")),
            "{host}: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{host}: {body}"
        );
    }
    let (s, body) = g
        .post(
            "/v3/open_connection/",
            "cli_key",
            &g.cli_key.clone(),
            json!({"target_host": "", "target_port": 5900}),
        )
        .await;
    assert_eq!((s, body["code"].as_str()), (400, Some("bad_request")));
    let (s, body) = g
        .post(
            "/v3/open_connection/",
            "cli_key",
            &g.cli_key.clone(),
            json!({"target_host": "no-such-host.invalid", "target_port": 5900}),
        )
        .await;
    assert_eq!(
        (s, body["code"].as_str()),
        (404, Some("unresolvable_target")),
        "{body}"
    );
    assert!(
        g.connections().await["tunnels"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    g.stop().await;
}

#[tokio::test]
async fn own_loopback_address_is_refused_unless_listed() {
    let ip = unique_loopback();
    let broad = start_on(
        ip,
        json!({"allowed_targets": ["127.0.0.1/32", "10.0.0.0/8"]}),
    )
    .await;
    let (s, body) = broad
        .post(
            "/v3/open_connection/",
            "cli_key",
            &broad.cli_key.clone(),
            json!({"target_host": ip.to_string(), "target_port": 8000}),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("loopback"),
        "{body}"
    );
    broad.stop().await;
}

#[tokio::test]
async fn disabled_gateway_refuses_new_tunnels_but_keeps_streams() {
    let g = start(json!({})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, None).await;
    let addr = tunnel_addr(&g, &opened);
    let mut live = TcpStream::connect(addr).await.unwrap();
    live.write_all(b"1").await.unwrap();
    let mut one = [0u8; 1];
    live.read_exact(&mut one).await.unwrap();
    let (s, _) = g.change(json!({"is_enabled": false})).await;
    assert_eq!(s, 200);
    let (s, body) = g.open(desk.addr, Some("other")).await;
    assert_eq!((s, body["code"].as_str()), (503, Some("gateway_disabled")));
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(h["status"], "disabled");
    live.write_all(b"2").await.unwrap();
    live.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"2", "the running stream goes on");
    g.stop().await;
}

#[tokio::test]
async fn narrowing_the_range_keeps_running_tunnels() {
    let g = start(json!({"port_range_stop": 21002})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let mut ports = Vec::new();
    for vm in ["a", "b", "c"] {
        let (_, o) = g.open(desk.addr, Some(vm)).await;
        ports.push(o["port"].as_u64().unwrap() as u16);
    }
    ports.sort();
    assert_eq!(ports, [21000, 21001, 21002]);
    let (s, _) = g.change(json!({"port_range_stop": 21001})).await;
    assert_eq!(s, 200);
    // The tunnel on 21002 is outside the range now, and still relays.
    let back = echo_round_trip(
        TcpStream::connect((g.ip, 21002)).await.unwrap(),
        b"still here",
    )
    .await;
    assert_eq!(back, b"still here");
    let (s, body) = g.open(desk.addr, Some("d")).await;
    assert_eq!((s, body["code"].as_str()), (503, Some("no_free_port")));
    let (_, h) = g.get("/v3/health/", &g.api_key).await;
    assert_eq!(
        (h["ports_in_use"].as_u64(), h["ports_free"].as_u64()),
        (Some(3), Some(0))
    );
    g.stop().await;
}

#[tokio::test]
async fn websocket_streams_relay_bytes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let g = start(json!({})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, None).await;
    let id = opened["id"].as_str().unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(g.ws_request(id, &g.cli_key))
        .await
        .unwrap();
    let data = random_bytes(300_000);
    for chunk in data.chunks(50_000) {
        ws.send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    let mut back = Vec::new();
    while back.len() < data.len() {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => back.extend_from_slice(&b),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(sha(&back), sha(&data));
    let c = g
        .wait_for("the websocket stream", |c| {
            c["tunnels"][0]["streams"][0]["bytes_to_client"] == 300_000
        })
        .await;
    let s = &c["tunnels"][0]["streams"][0];
    assert_eq!(s["via"], "websocket");
    assert_eq!(s["bytes_to_target"], 300_000);
    assert!(
        s["client_addr"].as_str().unwrap().starts_with("127.0.0.1:")
            || s["client_addr"]
                .as_str()
                .unwrap()
                .starts_with(&g.ip.to_string())
    );
    ws.close(None).await.unwrap();
    g.wait_for("the stream to end", |c| c["tunnels"][0]["state"] == "idle")
        .await;
    // Wrong role and unknown tunnel.
    let req = g.ws_request(id, &g.api_key);
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    match tokio_tungstenite::connect_async(g.ws_request("nope", &g.cli_key)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
    g.stop().await;
}

#[tokio::test]
async fn trusted_proxy_header_gives_the_real_client() {
    // The trust rule alone: the header names another client than the opener.
    let g = start(json!({"tunnel_client_binding": "off"})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, None).await;
    let addr = tunnel_addr(&g, &opened);
    // Loopback is a trusted peer (HAProxy on this node).
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let header = v2_header("203.0.113.7:51000", addr);
    sock.write_all(&header).await.unwrap();
    sock.write_all(b"payload").await.unwrap();
    let mut buf = [0u8; 7];
    sock.read_exact(&mut buf).await.unwrap();
    assert_eq!(
        &buf, b"payload",
        "the header is stripped, the payload relayed"
    );
    let c = g
        .wait_for("the real client", |c| {
            c["tunnels"][0]["streams"][0]["client_addr"] == "203.0.113.7:51000"
        })
        .await;
    assert_eq!(c["tunnels"][0]["streams"][0]["bytes_to_target"], 7);
    g.stop().await;
}

#[tokio::test]
async fn a_proxy_header_naming_another_client_ends_a_bound_stream() {
    let g = start(json!({})).await;
    let mut desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, None).await;
    let addr = tunnel_addr(&g, &opened);
    // The opener (loopback, trusted) names a stranger: the stream ends, and
    // not one byte of it reaches the desktop.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&v2_header("203.0.113.7:51000", addr))
        .await
        .unwrap();
    sock.write_all(b"payload").await.unwrap();
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf).await;
    assert!(buf.is_empty(), "{buf:?}");
    desk.wait_ended(1).await;
    let metrics = g.metrics().await;
    assert!(
        metrics.contains("vdi_gateway_connections_refused_total{reason=\"client_mismatch\"} 1"),
        "{metrics}"
    );
    // Naming the opener itself is fine.
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(&v2_header("127.0.0.1:51001", addr))
        .await
        .unwrap();
    let back = echo_round_trip(sock, b"payload").await;
    assert_eq!(back, b"payload");
    g.stop().await;
}

#[tokio::test]
async fn server_first_protocols_work_without_client_bytes() {
    // A VNC-like desktop speaks first; the gateway must not wait for the client.
    let g = start(json!({})).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let desk = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"RFB 003.008\n").await.unwrap();
        let mut keep = [0u8; 1];
        let _ = s.read(&mut keep).await;
    });
    let (_, opened) = g.open(desk, None).await;
    let mut sock = TcpStream::connect(tunnel_addr(&g, &opened)).await.unwrap();
    let mut banner = [0u8; 12];
    sock.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"RFB 003.008\n");
    g.stop().await;
}

#[tokio::test]
async fn an_unreachable_desktop_ends_the_stream_only() {
    let g = start(json!({"connect_timeout_secs": 2})).await;
    // Bind and drop: nothing listens there any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_, opened) = g.open(dead, None).await;
    let mut sock = TcpStream::connect(tunnel_addr(&g, &opened)).await.unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(sock.read(&mut buf).await.unwrap_or(0), 0);
    let c = g
        .wait_for("idle", |c| c["tunnels"][0]["state"] == "idle")
        .await;
    assert_eq!(
        c["tunnels"].as_array().unwrap().len(),
        1,
        "the tunnel stays for a retry"
    );
    g.stop().await;
}

/// `get_connections` writes its answer straight from the registry; it must be
/// exactly the typed `Connections` (what the OpenAPI document promises and
/// the console parses): every field, a waiting tunnel with protocol and
/// vm_id, an active one with plain and PROXY-header streams, live counters.
#[tokio::test]
async fn get_connections_is_the_typed_document() {
    let g = start(json!({"tunnel_client_binding": "off"})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (status, waiting) = g
        .post(
            "/v3/open_connection/",
            "cli_key",
            &g.cli_key.clone(),
            json!({"target_host": "127.0.0.1", "target_port": desk.addr.port(), "protocol": "spice", "vm_id": "vm-7"}),
        )
        .await;
    assert_eq!(status, 200, "{waiting}");
    let (_, active) = g.open(desk.addr, None).await;
    assert_ne!(waiting["port"], active["port"]);
    let addr = tunnel_addr(&g, &active);
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"hello").await.unwrap();
    let mut proxied = TcpStream::connect(addr).await.unwrap();
    let header = v2_header("198.51.100.250:65535", addr);
    proxied.write_all(&header).await.unwrap();
    proxied.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 5];
    plain.read_exact(&mut buf).await.unwrap();
    proxied.read_exact(&mut buf[..2]).await.unwrap();
    let served = g
        .wait_for("both streams counted", |c| {
            c["tunnels"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t["streams"].as_array().map_or(0, |s| s.len()) == 2)
            })
        })
        .await;
    let mut typed = serde_json::to_value(g.gw().connections()).unwrap();
    let mut served = served;
    // `expires_at` is "now + what is left", read a moment apart: the same
    // to within a second, the rest exactly.
    let mut expiries = Vec::new();
    for doc in [&mut typed, &mut served] {
        for t in doc["tunnels"].as_array_mut().unwrap() {
            if let Some(e) = t.as_object_mut().unwrap().remove("expires_at") {
                expiries.push(
                    e.as_str()
                        .unwrap()
                        .parse::<chrono::DateTime<chrono::Utc>>()
                        .unwrap(),
                );
            }
        }
    }
    assert_eq!(
        expiries.len(),
        2,
        "the waiting tunnel has an expiry in both"
    );
    assert!((expiries[0] - expiries[1]).num_milliseconds().abs() < 1000);
    assert_eq!(served, typed);
    let streams = &served["tunnels"][1]["streams"];
    assert_eq!(streams[1]["client_addr"], "198.51.100.250:65535");
    assert_eq!(served["tunnels"][0]["vm_id"], "vm-7");
    assert_eq!(served["tunnels"][0]["protocol"], "spice");
    assert_eq!(streams[0]["bytes_to_target"], 5);
    // The server says how long it took (for the broker and the benchmarks).
    let r = g
        .http
        .get(g.url("/v3/get_connections/"))
        .header("api_key", &g.api_key)
        .send()
        .await
        .unwrap();
    let timing = r.headers()["server-timing"].to_str().unwrap();
    assert!(timing.starts_with("app;dur="), "{timing}");
    assert_eq!(r.headers()["content-type"], "application/json");
    // And it parses as the typed document.
    let _: vdi_wire::Connections = serde_json::from_value(served).unwrap();
    g.stop().await;
}

/// `get_connections?since=CURSOR` answers only what changed: a poll with
/// nothing new is an empty delta at the same cursor, traffic alone is not a
/// change, a new tunnel or stream or a closed one is; a cursor this process
/// cannot answer from gets everything, flagged `full`; garbage is a 400.
#[tokio::test]
async fn get_connections_since_a_cursor_answers_only_what_changed() {
    let g = start(json!({})).await;
    let desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let since = |c: &Value| {
        let c = c["cursor"].as_str().unwrap().to_string();
        let g = &g;
        async move {
            let (st, body) = g
                .get(&format!("/v3/get_connections/?since={c}"), &g.api_key)
                .await;
            assert_eq!(st, 200, "{body}");
            body
        }
    };
    let ids = |c: &Value| -> Vec<String> {
        c["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let c0 = g.connections().await;
    assert_eq!((c0["full"].clone(), ids(&c0).len()), (json!(true), 0));
    let d = since(&c0).await;
    assert_eq!(d["full"], false);
    assert_eq!(d["cursor"], c0["cursor"], "nothing changed");
    assert_eq!((ids(&d).len(), d["removed"].clone()), (0, json!([])));

    let (_, a) = g.open(desk.addr, None).await;
    let a_id = a["id"].as_str().unwrap().to_string();
    let d1 = since(&c0).await;
    assert_eq!(
        (d1["full"].clone(), ids(&d1)),
        (json!(false), vec![a_id.clone()])
    );
    assert_eq!(d1["tunnels"][0]["state"], "waiting");
    assert_ne!(d1["cursor"], c0["cursor"]);

    // A stream starts: the tunnel is reported whole, with it.
    let mut s = TcpStream::connect(tunnel_addr(&g, &a)).await.unwrap();
    assert!(echoes(&mut s, b"first").await);
    let d2 = since(&d1).await;
    assert_eq!(ids(&d2), vec![a_id.clone()]);
    assert_eq!(d2["tunnels"][0]["streams"].as_array().unwrap().len(), 1);
    // Bytes alone are not a change.
    assert!(echoes(&mut s, &[7u8; 4096]).await);
    let d3 = since(&d2).await;
    assert_eq!(
        (ids(&d3).len(), d3["cursor"].clone()),
        (0, d2["cursor"].clone())
    );
    // The whole form still shows the counters moving.
    let full = g.connections().await;
    assert_eq!(
        full["tunnels"][0]["streams"][0]["bytes_to_target"],
        5 + 4096
    );

    // Another tunnel opens, the first is closed: one new, one removed.
    let (_, b) = g.open(desk.addr, Some("vm-b")).await;
    let b_id = b["id"].as_str().unwrap().to_string();
    let (st, body) = g
        .post(
            "/v3/disconnect/",
            "api_key",
            &g.api_key.clone(),
            json!({"tunnel_id": a_id}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let d4 = since(&d3).await;
    assert_eq!(ids(&d4), vec![b_id.clone()]);
    assert_eq!(d4["removed"], json!([a_id]));
    // An older cursor still gets every change since it, once.
    let d5 = since(&c0).await;
    assert_eq!(
        (ids(&d5), d5["removed"].clone()),
        (vec![b_id.clone()], json!([a_id]))
    );

    // Another process's cursor (another epoch): everything.
    let cur = d4["cursor"].as_str().unwrap();
    let (epoch, generation) = cur.split_once('.').unwrap();
    let other = format!(
        "{:08x}.{generation}",
        u32::from_str_radix(epoch, 16).unwrap() ^ 1
    );
    let d6 = since(&json!({"cursor": other})).await;
    assert_eq!(
        (d6["full"].clone(), ids(&d6)),
        (json!(true), vec![b_id.clone()])
    );
    // A settings change moves every expiry: no delta spans it.
    let (st, body) = g.change(json!({"tunnel_idle_secs": 120})).await;
    assert_eq!(st, 200, "{body}");
    let d7 = since(&d4).await;
    assert_eq!(
        (d7["full"].clone(), ids(&d7)),
        (json!(true), vec![b_id.clone()])
    );

    // Well-formed, but a generation past 64 bits (found by schemathesis):
    // a cursor from the future, so everything, never a 400.
    let d8 = since(&json!({"cursor": format!("{epoch}.99999999999999999999")})).await;
    assert_eq!(
        (d8["full"].clone(), ids(&d8)),
        (json!(true), vec![b_id.clone()])
    );

    for bad in [
        "nonsense",
        "0.1",
        "zzzzzzzz.1",
        "00000000.-1",
        "00000000.123456789012345678901",
    ] {
        let (st, body) = g
            .get(&format!("/v3/get_connections/?since={bad}"), &g.api_key)
            .await;
        assert_eq!(st, 400, "{bad}: {body}");
        assert_eq!(body["code"], "bad_request", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("cursor"),
            "{body}"
        );
    }
    g.stop().await;
}

/// A desktop that aborts its stream (RST) is passed on as an abort, not a
/// clean end: a client must not take a cut-off stream for a complete one.
/// (A desktop that closes normally is passed on as EOF: the half-close test.)
#[tokio::test]
async fn a_desktop_reset_reaches_the_client_as_a_reset() {
    for relay_bytes in [1usize, 300 * 1024] {
        let g = start(json!({})).await;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = l.local_addr().unwrap();
        let desk = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; relay_bytes];
            s.read_exact(&mut buf).await.unwrap();
            socket2::SockRef::from(&s)
                .set_linger(Some(std::time::Duration::ZERO))
                .unwrap();
        });
        let (st, opened) = g.open(target, None).await;
        assert_eq!(st, 200, "{opened}");
        let mut c = TcpStream::connect(tunnel_addr(&g, &opened)).await.unwrap();
        c.write_all(&random_bytes(relay_bytes)).await.unwrap();
        desk.await.unwrap();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("the client hears of the reset");
        let e = r.expect_err("a reset, not EOF");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        g.wait_for("the stream gone", |c| {
            c["tunnels"][0]["streams"]
                .as_array()
                .is_some_and(|s| s.is_empty())
        })
        .await;
        g.stop().await;
    }
}
