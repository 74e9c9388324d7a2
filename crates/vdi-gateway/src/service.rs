//! The service tunnel (*our design*, the original's `VIP:443 -> node:4300`):
//! every TCP connection to port 4300 is relayed to one of `disp_addrs` at
//! `disp_port`, round robin, skipping a dispatcher that refuses or does not
//! answer. With `ssl` on, TLS is terminated here and the dispatcher gets plain
//! TCP. The dispatcher is dialled only once the client has spoken.

use crate::conn::{self, Io};
use crate::gateway::Shared;
use crate::metrics::ReasonLabel;
use crate::relay::{self, Counters};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use vdi_core::settings as rules;

/// The service tunnel of one gateway: which dispatcher is tried first next.
pub struct ServiceTunnel {
    gw: Shared,
    next: AtomicUsize,
}

impl ServiceTunnel {
    pub fn new(gw: Shared) -> Arc<Self> {
        Arc::new(Self {
            gw,
            next: AtomicUsize::new(0),
        })
    }

    pub async fn handle(self: Arc<Self>, sock: TcpStream, peer: SocketAddr) {
        relay::tune(&sock);
        // Nothing is dialled before the client speaks (or completes its TLS
        // handshake): silent connections cost the dispatchers nothing. The
        // PROXY header, if any, is decided on those first bytes.
        let Some((client, io)) = conn::preamble(&self.gw, sock, peer).await else {
            return;
        };
        let this = self.clone();
        conn::maybe_tls(&self.gw, io, client, move |io| {
            this.to_dispatcher(io, client)
        })
        .await;
    }

    async fn to_dispatcher(self: Arc<Self>, io: Box<dyn Io>, client: SocketAddr) {
        let gw = &self.gw;
        let s = gw.current();
        let timeout = Duration::from_secs(rules::connect_timeout_secs(&s));
        let n = s.disp_addrs.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut upstream = None;
        for i in 0..n {
            let addr = SocketAddr::new(s.disp_addrs[(first + i) % n], s.disp_port);
            match relay::connect(addr, timeout).await {
                Ok(up) => {
                    upstream = Some((addr, up));
                    break;
                }
                Err(e) => {
                    tracing::warn!(dispatcher = %addr, error = %e, "dispatcher unreachable; trying the next")
                }
            }
        }
        let Some((dispatcher, up)) = upstream else {
            self.count("no_dispatcher");
            tracing::error!(%client, "no dispatcher reachable; connection closed");
            return;
        };
        self.count("relayed");
        let counters = Counters::new(client, Arc::clone(&gw.metrics));
        tracing::info!(%client, %dispatcher, "service tunnel start");
        let handover = gw.tunnels.handover().clone();
        // Its TLS or PROXY state lives in this process: not handed over.
        let body = async {
            tokio::select! {
                r = relay::relay(io, up, &counters, relay::Start::Known(Vec::new())) => r,
                _ = handover.cancelled() => Err(relay::RelayError::Stopped("restart")),
            }
        };
        relay::run_accounted(
            relay::StreamKind::ServiceTunnel,
            &counters,
            dispatcher,
            &gw.shutdown,
            "shutdown",
            body,
        )
        .await;
    }

    fn count(&self, reason: &'static str) {
        self.gw
            .metrics
            .service_tunnel
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}
