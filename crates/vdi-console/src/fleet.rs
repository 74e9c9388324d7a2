//! The fleet overview: every gateway's health, fetched in parallel, each with
//! its own time limit, so one dead host never holds the others up.

use crate::client::GatewayClient;
use std::time::Instant;
use vdi_wire::HaStatus;
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
            trend: None,
            problems: Vec::new(),
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
        row.problems = problems(&row);
        row
    });
    futures_util::future::join_all(rows).await
}

/// Free ports below this share of the range count as nearly exhausted.
pub const PORTS_LOW_PERCENT: u64 = 10;

/// What should catch an admin's eye in `row`, a few words each: the host
/// unreachable or refusing the console, an HA apply failing, a unit not
/// running, the port range nearly used up. A drain or `is_enabled: false`
/// is a state an admin chose, shown as such, not a problem.
pub fn problems(row: &FleetRow) -> Vec<String> {
    let mut out = Vec::new();
    let Some(h) = &row.health else {
        out.push(if row.reachable {
            "API refuses the console".to_string()
        } else {
            "unreachable".to_string()
        });
        return out;
    };
    if h.ha.status == HaStatus::Error {
        out.push("HA apply failing".into());
    }
    // HAProxy and Keepalived matter only where the gateway manages them.
    let ha = h.ha.status != HaStatus::Unmanaged;
    for (unit, state, matters) in [
        ("vdi-gateway", &h.units.vdi_gateway, true),
        ("haproxy", &h.units.haproxy, ha),
        ("keepalived", &h.units.keepalived, ha),
    ] {
        if matters && state != "active" && state != "unknown" {
            out.push(format!("{unit} {state}"));
        }
    }
    let total = h.ports_free + h.ports_in_use;
    if total > 0 && h.ports_free * 100 < total * PORTS_LOW_PERCENT {
        out.push(format!("{} ports free", h.ports_free));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdi_wire::{HaState, Health, HealthStatus, UnitStates};

    fn row(health: Option<Health>, reachable: bool) -> FleetRow {
        FleetRow {
            id: 1,
            name: "gw".into(),
            api_url: "http://127.0.0.1:1".into(),
            tags: vec![],
            reachable,
            error: None,
            health,
            latency_ms: None,
            trend: None,
            problems: vec![],
        }
    }

    fn health(ha: HaStatus, haproxy: &str, in_use: u64, free: u64) -> Health {
        Health {
            status: HealthStatus::Ok,
            version: "0.1.0".into(),
            uptime_secs: 1,
            is_enabled: true,
            tunnels: 0,
            streams: 0,
            ports_in_use: in_use,
            ports_free: free,
            units: UnitStates {
                vdi_gateway: "active".into(),
                haproxy: haproxy.into(),
                keepalived: "active".into(),
            },
            ha: HaState {
                status: ha,
                ..Default::default()
            },
            holds_vip: false,
            draining: true,
            bytes_to_target: 0,
            bytes_to_client: 0,
        }
    }

    #[test]
    fn what_stands_out() {
        assert_eq!(problems(&row(None, false)), ["unreachable"]);
        assert_eq!(problems(&row(None, true)), ["API refuses the console"]);
        let fine = health(HaStatus::Ok, "active", 10, 90);
        assert!(
            problems(&row(Some(fine), true)).is_empty(),
            "a drain is not a problem"
        );
        assert_eq!(
            problems(&row(Some(health(HaStatus::Error, "failed", 95, 5)), true)),
            ["HA apply failing", "haproxy failed", "5 ports free"]
        );
        // Without HA, HAProxy being stopped is how it should be.
        assert!(
            problems(&row(
                Some(health(HaStatus::Unmanaged, "inactive", 0, 10)),
                true
            ))
            .is_empty()
        );
        assert!(problems(&row(Some(health(HaStatus::Ok, "active", 0, 0)), true)).is_empty());
    }
}
