//! No client pins the gateway with slow or greedy connections: header and
//! idle timeouts, connection caps, body and WebSocket message limits, and a
//! service tunnel that dials nobody for a silent connection. Real sockets.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Whether the gateway closes `s` within `within` (reads until EOF or error).
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn slow_headers_are_cut_off_while_the_api_answers() {
    let g = start(json!({"http_header_timeout_secs": 1})).await;
    let api = (g.ip, 8000);
    let mut slow = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(api).await.unwrap();
        s.write_all(b"GET /v3/health/ HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    // They trickle a header byte every 200 ms: never a whole request.
    let trickle = async {
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for s in &mut slow {
                let _ = s.write_all(b"X").await;
            }
        }
    };
    let answers = async {
        // Meanwhile the API keeps answering.
        for _ in 0..5 {
            let (status, _) = g.get("/v3/health/", &g.api_key).await;
            assert_eq!(status, 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::join!(trickle, answers);
    for s in &mut slow {
        assert!(
            closed_within(s, Duration::from_secs(3)).await,
            "a slow header connection stayed open"
        );
    }
    g.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let g = start(json!({"http_idle_timeout_secs": 1})).await;
    let mut s = TcpStream::connect((g.ip, 8000)).await.unwrap();
    let req = format!(
        "GET /v3/health/ HTTP/1.1\r\nHost: x\r\napi_key: {}\r\n\r\n",
        g.api_key
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "the idle connection stayed open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the idle time"
    );
    g.stop().await;
}

#[tokio::test]
async fn a_full_api_port_closes_new_connections_at_once() {
    let g = start(json!({"max_connections": 5})).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect((g.ip, 8000)).await.unwrap());
    }
    let mut sixth = TcpStream::connect((g.ip, 8000)).await.unwrap();
    assert!(closed_within(&mut sixth, Duration::from_secs(2)).await);
    drop(held);
    // Places come back as connections close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = g.get("/v3/health/", &g.api_key).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At least the sixth (a retry above may have met a place not yet given back).
    let metrics = g.metrics().await;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("vdi_gateway_connections_refused_total{reason=\"connection_limit\"} ")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "{metrics}");
    g.stop().await;
}

#[tokio::test]
async fn oversized_bodies_answer_413_in_the_error_shape() {
    let g = start(json!({})).await;
    let big = json!({"allowed_targets": vec!["10.0.0.0/8"; 20_000]});
    let before = g.stored_text();
    let (status, body) = g.change(big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "too_large");
    assert_eq!(g.stored_text(), before);
    g.stop().await;
}

#[tokio::test]
async fn an_oversized_websocket_message_ends_only_its_stream() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let g = start(json!({})).await;
    let mut desk = echo_server("127.0.0.1".parse().unwrap()).await;
    let (_, opened) = g.open(desk.addr, None).await;
    let req = g.ws_request(opened["id"].as_str().unwrap(), &g.cli_key);
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // 4 MiB in one message: refused by size, never buffered whole.
    let _ = ws.send(Message::Binary(vec![7u8; 4 << 20].into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the oversized stream was not ended");
    desk.wait_ended(1).await;
    let c = g
        .wait_for("the stream gone", |c| {
            c["tunnels"][0]["streams"]
                .as_array()
                .is_some_and(|s| s.is_empty())
        })
        .await;
    assert_eq!(c["tunnels"][0]["streams"].as_array().unwrap().len(), 0);
    // The tunnel serves the next stream.
    let mut tcp = TcpStream::connect((g.ip, opened["port"].as_u64().unwrap() as u16))
        .await
        .unwrap();
    assert!(echoes(&mut tcp, b"next").await);
    g.stop().await;
}

#[tokio::test]
async fn silent_service_tunnel_connections_dial_nobody() {
    let disp = unique_loopback();
    let l = TcpListener::bind((disp, 4200)).await.unwrap();
    let (tx, accepted) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tx.send_modify(|n| *n += 1);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let g = start(json!({"disp_addrs": [disp.to_string()], "disp_port": 4200})).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect((g.ip, 4300)).await.unwrap());
    }
    // One that speaks is relayed at once; the silent ones reached nobody.
    let mut speaker = TcpStream::connect((g.ip, 4300)).await.unwrap();
    speaker.write_all(b"hello").await.unwrap();
    let mut five = [0u8; 5];
    speaker.read_exact(&mut five).await.unwrap();
    assert_eq!(&five, b"hello");
    assert_eq!(
        *accepted.borrow(),
        1,
        "a silent connection was dialled through"
    );
    drop(silent);
    g.stop().await;
}
