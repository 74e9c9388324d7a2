//! The fleet overview: every gateway's health, fetched in parallel, each with
//! its own time limit, so one dead host never holds the others up.

use crate::client::GatewayClient;
use std::time::Instant;
use vdi_wire::console::{ConsoleError, FleetRow, GatewayEntry};

pub async fn overview(
    gateways: Vec<(GatewayEntry, Result<GatewayClient, ConsoleError>)>,
) -> Vec<FleetRow> {
    let rows = gateways.into_iter().map(|(g, client)| async move {
        let mut row = FleetRow {
            id: g.id,
            name: g.name,
            api_url: g.api_url,
            tags: g.tags,
            reachable: false,
            error: None,
            health: None,
            latency_ms: None,
        };
        match client {
            Err(e) => row.error = Some(e),
            Ok(c) => {
                let t = Instant::now();
                match c.health().await {
                    Ok(h) => {
                        row.reachable = true;
                        row.latency_ms = Some(t.elapsed().as_millis() as u64);
                        row.health = Some(h);
                    }
                    // A gateway that answers with an error (a wrong key) is reachable.
                    Err(e @ crate::Error::Api(..)) => {
                        row.reachable = true;
                        row.error = Some(e.into());
                    }
                    Err(e) => row.error = Some(e.into()),
                }
            }
        }
        row
    });
    futures_util::future::join_all(rows).await
}
