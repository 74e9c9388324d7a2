//! The servers: the router and the accept loops of the API ports and the
//! service tunnel ports. The gateway binds the sockets (a settings change may
//! add or close some) and hands each new one over through [`serve`]'s receiver.

use crate::api::{self, ClientAddr};
use crate::conn::{self, Io};
use crate::gateway::{Bound, Kind, Shared};
use crate::metrics::Refusal;
use crate::service::ServiceTunnel;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tracing::Instrument;
use vdi_core::settings as rules;
use vdi_wire::Settings;

/// What the accept loops share: the gateway, its router and service tunnel,
/// and the connection counts of each kind of port.
#[derive(Clone)]
struct Servers {
    gw: Shared,
    router: axum::Router,
    service: Arc<ServiceTunnel>,
    api_conns: Arc<Mutex<Conns>>,
    service_conns: Arc<Mutex<Conns>>,
}

/// Open connections of one kind of port: in all, and per source address.
#[derive(Default)]
struct Conns {
    total: usize,
    per_source: HashMap<IpAddr, u32>,
}

/// A connection's place in the counts, given back when it closes.
struct ConnSlot {
    conns: Arc<Mutex<Conns>>,
    source: Option<IpAddr>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.conns.lock().unwrap();
        c.total -= 1;
        if let Some(ip) = self.source
            && let Some(n) = c.per_source.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&ip);
            }
        }
    }
}

/// Takes a place for a new connection from `peer`, or says which limit
/// refuses it. Trusted proxies (HAProxy) carry many clients: no per-source cap.
fn admit(conns: &Arc<Mutex<Conns>>, peer: SocketAddr, s: &Settings) -> Result<ConnSlot, Refusal> {
    let trusted = vdi_core::proxy::is_trusted(peer.ip(), &s.internal_addrs);
    let mut c = conns.lock().unwrap();
    if c.total >= rules::max_connections(s) as usize {
        return Err(Refusal::ConnectionLimit);
    }
    let source = (!trusted).then_some(peer.ip());
    if let Some(ip) = source {
        let n = c.per_source.entry(ip).or_insert(0);
        if *n >= rules::max_connections_per_client(s) {
            return Err(Refusal::ClientConnectionLimit);
        }
        *n += 1;
    }
    c.total += 1;
    Ok(ConnSlot {
        conns: conns.clone(),
        source,
    })
}

/// Serves every socket the gateway binds until its shutdown. The router (and
/// with it the last reference from the servers to the gateway) goes with it.
pub async fn serve(gw: Shared, mut bound: mpsc::UnboundedReceiver<Bound>) {
    let servers = Servers {
        router: api::router(gw.clone()),
        service: ServiceTunnel::new(gw.clone()),
        gw: gw.clone(),
        api_conns: Default::default(),
        service_conns: Default::default(),
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
    let mut backoff = crate::accept::Backoff::default();
    loop {
        let (sock, peer) = tokio::select! {
            _ = token.cancelled() => return,
            // The gateway keeps a duplicate of the socket for the next process.
            _ = s.gw.tunnels.handover().cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => { backoff.ok(); a }
                Err(e) => {
                    let pause = backoff.failed(&format_args!("{kind:?} {addr}"), &e);
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        // Accepted and closed at once when over a limit: a flood neither
        // fills the backlog nor the journal (counted, logged at debug).
        let settings = s.gw.current();
        let conns = match kind {
            Kind::Api => &s.api_conns,
            Kind::ServiceTunnel => &s.service_conns,
        };
        let slot = match admit(conns, peer, &settings) {
            Ok(slot) => slot,
            Err(reason) => {
                s.gw.metrics.refused(reason);
                tracing::debug!(?kind, %peer, %reason, "connection refused");
                continue;
            }
        };
        match kind {
            Kind::Api => {
                let span = tracing::debug_span!("api_conn", %peer);
                let serve = serve_api(s.clone(), sock, peer);
                s.gw.tasks.spawn(
                    async move {
                        serve.await;
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
            Kind::ServiceTunnel => {
                let span = tracing::info_span!("service_tunnel", %peer);
                let serve = s.service.clone().handle(sock, peer);
                s.gw.tasks.spawn(
                    async move {
                        serve.await;
                        drop(slot);
                    }
                    .instrument(span),
                );
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
    let settings = s.gw.current();
    let header_timeout = Duration::from_secs(rules::http_header_timeout_secs(&settings));
    let idle = Duration::from_secs(rules::http_idle_timeout_secs(&settings));
    let router = s.router;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ClientAddr(client));
        router.clone().call(req)
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A request's headers must arrive in time however slowly they trickle,
    // and stay small; HTTP/2 peers are pinged and may not open many streams.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(32)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let last = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    let io = Watched {
        inner: io,
        last: last.clone(),
        started,
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let idle_out = async {
        loop {
            let quiet_since = started + Duration::from_millis(last.load(Ordering::Relaxed));
            if tokio::time::Instant::now() >= quiet_since + idle {
                return;
            }
            tokio::time::sleep_until(quiet_since + idle).await;
        }
    };
    let stop = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%client, error = %e, "HTTP connection ended with an error");
            }
            return;
        },
        _ = s.gw.shutdown.cancelled() => "shutdown",
        _ = idle_out => "idle",
    };
    tracing::debug!(%client, reason = stop, "closing the HTTP connection");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
}

/// Most bytes of request headers (HTTP/1 buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// An API connection's stream that notes when bytes last moved (for the
/// idle timeout: hyper has none for HTTP/1 keep-alive).
struct Watched {
    inner: Box<dyn Io>,
    /// Milliseconds after `started`.
    last: Arc<AtomicU64>,
    started: tokio::time::Instant,
}

impl Watched {
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
