//! `GET /v3/connect/?id=TUNNEL` (*our design*): a WebSocket whose binary frames
//! are relayed to the tunnel's target as one more stream of that tunnel, for
//! clients that can only reach HTTP(S) ports.

use super::{ApiError, ClientAddr, ConnectQuery};
use crate::gateway::Shared;
use crate::relay::{self, Counters, Direction, RelayError};
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vdi_core::settings as rules;
use vdi_wire::{ErrorBody, StreamVia};

/// Largest WebSocket frame and message accepted (the relay sends at most
/// `relay::BUF_SIZE` per frame).
pub const WS_MAX_FRAME: usize = 64 * 1024;

/// The handshake as RFC 6455 4.2.1 says it and the OpenAPI document
/// (`UpgradeHeaders`) states it: `Connection` lists `upgrade`, `Upgrade` is
/// `websocket`, version 13, and a key of 16 bytes in base64. (axum's
/// extractor checks less: any `Connection` containing "upgrade", any key.)
pub(super) fn handshake_check(headers: &HeaderMap) -> Result<(), String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let connection = text("connection").is_some_and(|c| {
        c.split(',')
            .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case("upgrade"))
    });
    let upgrade = text("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if !connection || !upgrade {
        return Err(
            "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)".into(),
        );
    }
    if text("sec-websocket-version") != Some("13") {
        return Err("Sec-WebSocket-Version must be 13".into());
    }
    let key = text("sec-websocket-key").unwrap_or("");
    let b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    if !(key.len() == 24 && key.ends_with("==") && key.bytes().take(22).all(b64)) {
        return Err("Sec-WebSocket-Key must be 16 bytes in base64".into());
    }
    Ok(())
}

/// WebSocket relay to the tunnel's target (binary frames both ways).
#[utoipa::path(get, path = "/v3/connect/", tag = "client",
    security(("cli_key" = []), ("bearer" = [])),
    params(ConnectQuery, super::UpgradeHeaders),
    responses((status = 101, description = "Switching to WebSocket; binary frames are relayed"),
        (status = 400, body = ErrorBody, description = "Not a WebSocket upgrade"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such tunnel"),
        (status = 503, body = ErrorBody, description = "The tunnel carries max_streams_per_tunnel streams")))]
pub async fn connect(
    State(gw): State<Shared>,
    client: Option<Extension<ClientAddr>>,
    query: Result<Query<ConnectQuery>, QueryRejection>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::BadRequest(format!("{}: give ?id=TUNNEL", e.body_text())))?;
    handshake_check(&headers).map_err(ApiError::BadRequest)?;
    let upgrade =
        upgrade.map_err(|e| ApiError::BadRequest(format!("expected a WebSocket upgrade: {e}")))?;
    // Frames are relayed as they come: nothing needs a large message, so no
    // client makes the gateway buffer megabytes (tungstenite's defaults are
    // 16 MiB frames and 64 MiB messages).
    let upgrade = upgrade
        .max_frame_size(WS_MAX_FRAME)
        .max_message_size(WS_MAX_FRAME)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * WS_MAX_FRAME);
    let tunnel = gw
        .tunnels
        .get(&q.id)
        .ok_or_else(|| ApiError::NotFound(format!("no tunnel {}", q.id)))?;
    let client = client
        .map(|c| c.0.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let s = gw.current();
    let timeout = Duration::from_secs(rules::connect_timeout_secs(&s));
    // Admitted before the upgrade (the one admission path, as for TCP), so a
    // full tunnel answers 503 instead of a WebSocket that closes at once.
    let stream = gw
        .tunnels
        .admit(&tunnel, client, StreamVia::Websocket, &s)
        .map_err(|why| {
            let msg = format!("tunnel {}: {why}", q.id);
            match why {
                crate::tunnel::Refused::ClientMismatch => ApiError::ClientMismatch(msg),
                _ => ApiError::StreamLimit(msg),
            }
        })?;
    let admitted = Admitted {
        tunnel: tunnel.clone(),
        stream: Some(stream),
    };
    Ok(upgrade.on_upgrade(move |socket| async move {
        let mut admitted = admitted;
        let stream = admitted.stream.take().expect("taken once");
        let target = tunnel.req.target_addr;
        let span = tracing::info_span!("stream", id = %crate::tunnel::stream_id(stream.id), via = "websocket");
        span.in_scope(|| tracing::info!(%client, %target, "stream start"));
        let body = async {
            let upstream = relay::connect(target, timeout).await?;
            relay_ws(socket, upstream, &stream.counters).await
        };
        let run = tunnel.run_stream(stream.clone(), body);
        tunnel.tasks().track_future(tracing::Instrument::instrument(run, span)).await;
    }))
}

/// A stream admitted before the upgrade; if the upgrade never completes, it
/// leaves the tunnel again.
struct Admitted {
    tunnel: std::sync::Arc<crate::tunnel::Tunnel>,
    stream: Option<std::sync::Arc<crate::tunnel::Stream>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            self.tunnel.forget_stream(&s);
        }
    }
}

async fn relay_ws(
    socket: WebSocket,
    target: TcpStream,
    counters: &Counters,
) -> Result<(), RelayError> {
    let (mut ws_tx, mut ws_rx) = socket.split();
    let (mut tr, mut tw) = target.into_split();
    let upstream = async {
        while let Some(msg) = ws_rx.next().await {
            match msg.map_err(std::io::Error::other)? {
                Message::Binary(b) => {
                    tw.write_all(&b).await?;
                    counters.add(Direction::ToTarget, b.len());
                }
                Message::Close(_) => break,
                Message::Text(_) => {
                    return Err(RelayError::Refused(
                        "text frames are not relayed; send binary frames".into(),
                    ));
                }
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
        tw.shutdown().await?;
        Ok::<_, RelayError>(())
    };
    let downstream = async {
        let mut buf = vec![0u8; relay::BUF_SIZE];
        loop {
            let n = tr.read(&mut buf).await?;
            if n == 0 {
                let _ = ws_tx.send(Message::Close(None)).await;
                return Ok::<_, RelayError>(());
            }
            ws_tx
                .send(Message::Binary(axum::body::Bytes::copy_from_slice(
                    &buf[..n],
                )))
                .await
                .map_err(std::io::Error::other)?;
            counters.add(Direction::ToClient, n);
        }
    };
    tokio::try_join!(upstream, downstream)?;
    Ok(())
}
