//! The fleet overview: every gateway's health, polled on its own with its
//! own time limit, so a dead or slow host never holds the others up. A view
//! is pushed at its deadline with what has answered; a host whose poll is
//! still out shows its last answer, flagged slow once that is overdue.

use crate::client::GatewayClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vdi_wire::HaStatus;
use vdi_wire::console::{ConsoleError, FleetRow, GatewayEntry};

/// One gateway's row from one health call.
async fn poll(g: GatewayEntry, client: Result<GatewayClient, ConsoleError>) -> FleetRow {
    let mut row = blank(&g);
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
}

fn blank(g: &GatewayEntry) -> FleetRow {
    FleetRow {
        id: g.id,
        name: g.name.clone(),
        api_url: g.api_url.clone(),
        tags: g.tags.clone(),
        reachable: false,
        error: None,
        health: None,
        latency_ms: None,
        trend: None,
        problems: Vec::new(),
        pending_ms: None,
    }
}

#[derive(Default)]
struct Host {
    /// The last answer and when it came.
    last: Option<(FleetRow, Instant)>,
    /// When the poll still out began.
    inflight: Option<Instant>,
}

/// The polls of every gateway, each at most one at a time.
#[derive(Default, Clone)]
pub struct Poller {
    hosts: Arc<Mutex<HashMap<i64, Host>>>,
}

/// A row of [`Poller::refresh`] and when its answer came (`None`: no
/// answer yet).
pub struct Polled {
    pub row: FleetRow,
    pub answered: Option<Instant>,
}

impl Poller {
    /// Polls every gateway not being polled already and waits for them, at
    /// most `deadline` (not at all for one whose last call timed out); then
    /// one row per gateway, in order: its newest answer (flagged
    /// `pending_ms`, and slow past `deadline`, while a poll is out).
    pub async fn refresh(
        &self,
        gateways: Vec<(GatewayEntry, Result<GatewayClient, ConsoleError>)>,
        deadline: Duration,
    ) -> Vec<Polled> {
        let started = Instant::now();
        let mut running = Vec::new();
        let entries: Vec<GatewayEntry> = gateways.iter().map(|(g, _)| g.clone()).collect();
        {
            let mut hosts = self.hosts.lock().unwrap();
            hosts.retain(|id, _| entries.iter().any(|g| g.id == *id));
            for (g, client) in gateways {
                let host = hosts.entry(g.id).or_default();
                if host.inflight.is_some() {
                    continue;
                }
                host.inflight = Some(started);
                // A host whose last call timed out is asked again, but not
                // waited for: it would hold every push to the deadline.
                let wait = host
                    .last
                    .as_ref()
                    .and_then(|(r, _)| r.error.as_ref())
                    .is_none_or(|e| e.code != "timeout");
                let poller = self.clone();
                let task = tokio::spawn(async move {
                    let id = g.id;
                    let row = poll(g, client).await;
                    if let Some(h) = poller.hosts.lock().unwrap().get_mut(&id) {
                        h.last = Some((row, Instant::now()));
                        h.inflight = None;
                    }
                });
                if wait {
                    running.push(task);
                }
            }
        }
        let _ = tokio::time::timeout(deadline, futures_util::future::join_all(running)).await;
        let hosts = self.hosts.lock().unwrap();
        entries
            .iter()
            .map(|g| {
                let host = hosts.get(&g.id);
                let (mut row, answered) = match host.and_then(|h| h.last.clone()) {
                    Some((row, at)) => (row, Some(at)),
                    None => (blank(g), None),
                };
                // The entry as it is now (renamed, retagged).
                row.name = g.name.clone();
                row.tags = g.tags.clone();
                row.api_url = g.api_url.clone();
                if let Some(out) = host.and_then(|h| h.inflight) {
                    let ms = out.elapsed().as_millis() as u64;
                    row.pending_ms = Some(ms);
                    if out.elapsed() >= deadline {
                        row.problems
                            .push(format!("slow: no answer for {:.1} s", ms as f64 / 1000.0));
                    }
                }
                Polled { row, answered }
            })
            .collect()
    }
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
            pending_ms: None,
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
