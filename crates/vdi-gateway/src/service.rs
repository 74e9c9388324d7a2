//! The service tunnel (*our design*, the original's `VIP:443 -> node:4300`):
//! every TCP connection to port 4300 is relayed to one of `disp_addrs` at
//! `disp_port`, round robin, skipping a dispatcher that refuses or does not
//! answer. With `ssl` on, TLS is terminated here and the dispatcher gets plain
//! TCP.

use crate::metrics::ReasonLabel;
use crate::relay::{self, Counters};
use crate::server::{self, Io};
use crate::state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use vdi_core::settings as rules;

pub async fn handle(gw: Shared, sock: TcpStream, peer: SocketAddr) {
    relay::tune(&sock);
    if gw.tls().is_none() {
        // Plain TCP: relay at once and sniff the PROXY header on the way, so a
        // protocol where the server speaks first works too.
        let trusted = vdi_core::proxy::is_trusted(peer.ip(), &gw.current().internal_addrs);
        let sniff = Some(relay::Sniffing { peer, trusted });
        return to_dispatcher(gw, Box::new(sock), peer, sniff).await;
    }
    // TLS: the client speaks first anyway, so read the PROXY header up front.
    let Some((client, io)) = server::preamble(&gw, sock, peer).await else {
        return;
    };
    let gw2 = gw.clone();
    server::maybe_tls(&gw, io, client, move |io| {
        to_dispatcher(gw2, io, client, None)
    })
    .await;
}

async fn to_dispatcher(
    gw: Shared,
    io: Box<dyn Io>,
    client: SocketAddr,
    sniff: Option<relay::Sniffing>,
) {
    let s = gw.current();
    let timeout = Duration::from_secs(rules::connect_timeout_secs(&s));
    let n = s.disp_addrs.len();
    let start = gw.service_rr.fetch_add(1, Ordering::Relaxed);
    let mut upstream = None;
    for i in 0..n {
        let addr = SocketAddr::new(s.disp_addrs[(start + i) % n], s.disp_port);
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
        count(&gw, "no_dispatcher");
        tracing::error!(%client, "no dispatcher reachable; connection closed");
        return;
    };
    count(&gw, "relayed");
    let counters = Counters::new(client, Arc::clone(&gw.metrics));
    let started = Instant::now();
    tracing::info!(%client, %dispatcher, "service tunnel start");
    let result = tokio::select! {
        r = relay::relay(io, up, &counters, sniff) => r.map_err(|e| e.to_string()),
        _ = gw.shutdown.cancelled() => Err("shutdown".into()),
    };
    let (to_target, to_client) = (
        counters.to_target.load(Ordering::Relaxed),
        counters.to_client.load(Ordering::Relaxed),
    );
    let secs = started.elapsed().as_secs_f64();
    let reason = result.err().unwrap_or_else(|| "closed".into());
    let client = counters.client();
    tracing::info!(%client, %dispatcher, to_target, to_client, secs, %reason, "service tunnel end");
}

fn count(gw: &Shared, reason: &'static str) {
    gw.metrics
        .service_tunnel
        .get_or_create(&ReasonLabel { reason })
        .inc();
}
