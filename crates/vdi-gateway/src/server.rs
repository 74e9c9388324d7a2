//! The servers: the router and the accept loops of the API ports and the
//! service tunnel ports. The gateway binds the sockets (a settings change may
//! add or close some) and hands each new one over through [`serve`]'s receiver.

use crate::api::{self, ClientAddr};
use crate::conn::{self, Io};
use crate::gateway::{Bound, Kind, Shared};
use crate::service::ServiceTunnel;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::Instrument;

/// What the accept loops share: the gateway, its router and service tunnel.
#[derive(Clone)]
struct Servers {
    gw: Shared,
    router: axum::Router,
    service: Arc<ServiceTunnel>,
}

/// Serves every socket the gateway binds until its shutdown. The router (and
/// with it the last reference from the servers to the gateway) goes with it.
pub async fn serve(gw: Shared, mut bound: mpsc::UnboundedReceiver<Bound>) {
    let servers = Servers {
        router: api::router(gw.clone()),
        service: ServiceTunnel::new(gw.clone()),
        gw: gw.clone(),
    };
    loop {
        let b = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            b = bound.recv() => match b { Some(b) => b, None => return },
        };
        let s = servers.clone();
        gw.tasks
            .spawn(accept_loop(s, b.kind, b.addr, b.listener, b.token));
    }
}

async fn accept_loop(
    s: Servers,
    kind: Kind,
    addr: SocketAddr,
    listener: TcpListener,
    token: CancellationToken,
) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = token.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(?kind, %addr, error = %e, "accept failed");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        match kind {
            Kind::Api => {
                let span = tracing::debug_span!("api_conn", %peer);
                s.gw.tasks
                    .spawn(serve_api(s.clone(), sock, peer).instrument(span));
            }
            Kind::ServiceTunnel => {
                let span = tracing::info_span!("service_tunnel", %peer);
                s.gw.tasks
                    .spawn(s.service.clone().handle(sock, peer).instrument(span));
            }
        }
    }
}

async fn serve_api(s: Servers, sock: TcpStream, peer: SocketAddr) {
    let _ = sock.set_nodelay(true);
    let Some((client, io)) = conn::preamble(&s.gw, sock, peer).await else {
        return;
    };
    let gw = s.gw.clone();
    conn::maybe_tls(&gw, io, client, move |io| serve_http(s, io, client)).await;
}

async fn serve_http(s: Servers, io: Box<dyn Io>, client: SocketAddr) {
    let router = s.router;
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
        _ = s.gw.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
