//! Accept loops of the API port and the service tunnel port (4300), and what
//! both do first: learn the real client (PROXY header from a trusted peer),
//! then TLS when `ssl` is on.

use crate::relay::{self, Rewind, Sniffing};
use crate::state::{Kind, Shared};
use crate::{api::ClientAddr, service};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::Instrument;
use vdi_core::proxy::{self, Verdict};

/// How long a new connection may take to send its first bytes (API, 4300).
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn accept_loop(gw: Shared, kind: Kind, listener: TcpListener, token: CancellationToken) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = token.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(?kind, error = %e, "accept failed");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let gw2 = gw.clone();
        match kind {
            Kind::Api => {
                let span = tracing::debug_span!("api_conn", %peer);
                gw.tasks.spawn(serve_api(gw2, sock, peer).instrument(span));
            }
            Kind::ServiceTunnel => {
                let span = tracing::info_span!("service_tunnel", %peer);
                gw.tasks
                    .spawn(service::handle(gw2, sock, peer).instrument(span));
            }
        }
    }
}

/// Reads a PROXY header if there is one and decides on it. Returns the real
/// client and the stream with any bytes read after the header put back.
pub async fn preamble(
    gw: &Shared,
    mut sock: TcpStream,
    peer: SocketAddr,
) -> Option<(SocketAddr, Rewind<TcpStream>)> {
    let trusted = proxy::is_trusted(peer.ip(), &gw.current().internal_addrs);
    let mut first = Vec::new();
    let sniffing = Sniffing { peer, trusted };
    let verdict = tokio::select! {
        _ = gw.shutdown.cancelled() => return None,
        v = tokio::time::timeout(PREAMBLE_TIMEOUT, relay::sniff_from(&mut sock, &mut first, sniffing)) => v,
    };
    match verdict {
        Ok(Ok(Verdict::Plain)) => Some((peer, Rewind::new(first, sock))),
        Ok(Ok(Verdict::Proxied { len, client })) => {
            first.drain(..len);
            Some((client, Rewind::new(first, sock)))
        }
        Ok(Ok(Verdict::Refuse(why))) => {
            gw.metrics.refused("proxy_header");
            tracing::warn!(%peer, reason = %why, "connection refused");
            None
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection failed before its first bytes");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "no bytes within {PREAMBLE_TIMEOUT:?}; closed");
            None
        }
    }
}

/// TLS handshake when `ssl` is on.
pub async fn maybe_tls<F, Fut>(gw: &Shared, io: Rewind<TcpStream>, client: SocketAddr, then: F)
where
    F: FnOnce(Box<dyn Io>) -> Fut,
    Fut: Future<Output = ()>,
{
    match gw.tls() {
        None => then(Box::new(io)).await,
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(tls)) => then(Box::new(tls)).await,
                Ok(Err(e)) => tracing::info!(%client, error = %e, "TLS handshake failed"),
                Err(_) => tracing::info!(%client, "TLS handshake timed out"),
            }
        }
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn serve_api(gw: Shared, sock: TcpStream, peer: SocketAddr) {
    let _ = sock.set_nodelay(true);
    let Some((client, io)) = preamble(&gw, sock, peer).await else {
        return;
    };
    let gw2 = gw.clone();
    maybe_tls(&gw, io, client, move |io| serve_http(gw2, io, client)).await;
}

async fn serve_http(gw: Shared, io: Box<dyn Io>, client: SocketAddr) {
    let router = gw
        .router
        .get()
        .expect("router is set at construction")
        .clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ClientAddr(client));
        router.clone().call(req)
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r {
            tracing::debug!(%client, error = %e, "HTTP connection ended with an error");
        },
        _ = gw.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
