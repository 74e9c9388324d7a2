//! What every connection to the API port and to the service tunnel port (4300)
//! goes through first: learn the real client (PROXY header from a trusted
//! peer), then TLS when `ssl` is on.

use crate::gateway::Gateway;
use crate::relay::{self, RelayError, Rewind, Sniffing};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How long a new connection may take to send its first bytes (API, 4300).
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream the servers speak over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Whether PROXY headers from `peer` are believed.
pub fn sniffing(gw: &Gateway, peer: SocketAddr) -> Sniffing {
    let trusted = vdi_core::proxy::is_trusted(peer.ip(), &gw.current().internal_addrs);
    Sniffing {
        peer,
        trusted,
        bound_to: None,
    }
}

/// Reads a PROXY header if there is one and decides on it. Returns the real
/// client and the stream with any bytes read after the header put back.
pub async fn preamble(
    gw: &Gateway,
    mut sock: TcpStream,
    peer: SocketAddr,
) -> Option<(SocketAddr, Rewind<TcpStream>)> {
    let how = sniffing(gw, peer);
    let sniffed = tokio::select! {
        _ = gw.shutdown.cancelled() => return None,
        v = tokio::time::timeout(PREAMBLE_TIMEOUT, relay::sniff_client(&mut sock, how, &gw.metrics)) => v,
    };
    match sniffed {
        Ok(Ok(s)) => Some((s.client.unwrap_or(peer), Rewind::new(s.rest, sock))),
        // Counted and logged where it was decided.
        Ok(Err(RelayError::Refused(_))) => None,
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

/// TLS handshake when `ssl` is on, then `then` on the resulting stream.
pub async fn maybe_tls<F, Fut>(gw: &Gateway, io: Rewind<TcpStream>, client: SocketAddr, then: F)
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
