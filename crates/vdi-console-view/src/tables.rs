//! What the fleet and connections tables show, and in which order.

use vdi_wire::TunnelInfo;
use vdi_wire::console::FleetRow;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetOrder {
    Name,
    /// What needs an eye first: unreachable, then with a problem, then healthy.
    Status,
    /// Most tunnels first.
    Tunnels,
}

/// The rows whose name or a tag contains `filter` (any case), in `order`.
pub fn fleet_rows(rows: Vec<FleetRow>, filter: &str, order: FleetOrder) -> Vec<FleetRow> {
    let ids = fleet_order(&rows, filter, order);
    let mut by_id: std::collections::HashMap<i64, FleetRow> =
        rows.into_iter().map(|r| (r.id, r)).collect();
    ids.iter().filter_map(|id| by_id.remove(id)).collect()
}

/// The ids of [`fleet_rows`], without copying a row (what the page keys its
/// table by, on every push and keystroke).
pub fn fleet_order(rows: &[FleetRow], filter: &str, order: FleetOrder) -> Vec<i64> {
    let f = filter.to_lowercase();
    let mut v: Vec<&FleetRow> = rows
        .iter()
        .filter(|r| {
            f.is_empty()
                || r.name.to_lowercase().contains(&f)
                || r.tags.iter().any(|t| t.to_lowercase().contains(&f))
        })
        .collect();
    match order {
        FleetOrder::Name => v.sort_by(|a, b| a.name.cmp(&b.name)),
        FleetOrder::Status => v.sort_by_key(|r| (r.reachable, r.problems.is_empty())),
        FleetOrder::Tunnels => {
            v.sort_by_key(|r| std::cmp::Reverse(r.health.as_ref().map_or(0, |h| h.tunnels)))
        }
    }
    v.into_iter().map(|r| r.id).collect()
}

/// The rows of a long table worth rendering: those in the viewport (`top`,
/// `viewport` in pixels, rows `row_h` high) and `overscan` more on each
/// side, so a scroll step shows rows already there.
pub fn visible_range(
    len: usize,
    top: f64,
    viewport: f64,
    row_h: f64,
    overscan: usize,
) -> std::ops::Range<usize> {
    let row_h = row_h.max(1.0);
    let first = ((top.max(0.0) / row_h).floor() as usize).saturating_sub(overscan);
    let count = (viewport.max(0.0) / row_h).ceil() as usize + 2 * overscan + 1;
    first.min(len)..(first + count).min(len)
}

/// Every tag in the fleet, once each, sorted (the bulk selector's choices).
pub fn fleet_tags(rows: &[FleetRow]) -> Vec<String> {
    let mut tags: Vec<String> = rows.iter().flat_map(|r| r.tags.iter().cloned()).collect();
    tags.sort();
    tags.dedup();
    tags
}

/// A bulk operation's hosts: the `chosen` ids still in the fleet, by name (the
/// order the roll goes in, shown before it starts); `tag` adds every gateway
/// with it.
pub fn bulk_hosts(rows: &[FleetRow], chosen: &[i64], tag: Option<&str>) -> Vec<i64> {
    let mut v: Vec<&FleetRow> = rows
        .iter()
        .filter(|r| chosen.contains(&r.id) || tag.is_some_and(|t| r.tags.iter().any(|x| x == t)))
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    v.into_iter().map(|r| r.id).collect()
}

/// The tunnels the filter matches (id, target, port, VM, protocol, or any
/// stream's client or id), in the chosen order: `port`, `traffic`, else
/// newest first.
pub fn tunnels(mut tunnels: Vec<TunnelInfo>, filter: &str, sort: &str) -> Vec<TunnelInfo> {
    let f = filter.trim().to_lowercase();
    if !f.is_empty() {
        tunnels.retain(|t| {
            let mut hay = vec![t.id.clone(), t.target_host.clone(), t.port.to_string()];
            hay.extend(t.vm_id.clone());
            hay.extend(t.protocol.clone());
            for s in &t.streams {
                hay.push(s.client_addr.clone());
                hay.push(s.id.clone());
            }
            hay.iter().any(|h| h.to_lowercase().contains(&f))
        });
    }
    let traffic = |t: &TunnelInfo| {
        t.streams
            .iter()
            .map(|s| s.bytes_to_target + s.bytes_to_client)
            .sum::<u64>()
    };
    match sort {
        "port" => tunnels.sort_by_key(|t| t.port),
        "traffic" => tunnels.sort_by_key(|t| std::cmp::Reverse(traffic(t))),
        _ => tunnels.sort_by_key(|t| std::cmp::Reverse(t.created_at)),
    }
    tunnels
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(id: i64, name: &str, tags: &[&str], reachable: bool, tunnels: u64) -> FleetRow {
        let health = reachable.then(|| {
            serde_json::from_value(json!({
                "status": "ok", "version": "0.1.0", "uptime_secs": 1, "is_enabled": true,
                "tunnels": tunnels, "streams": 0, "ports_in_use": 0, "ports_free": 10,
                "units": {"vdi_gateway": "active", "haproxy": "active", "keepalived": "active"},
                "ha": {"status": "unmanaged"}
            }))
            .unwrap()
        });
        FleetRow {
            id,
            name: name.into(),
            api_url: String::new(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            reachable,
            error: None,
            problems: if reachable {
                vec![]
            } else {
                vec!["unreachable".into()]
            },
            health,
            latency_ms: None,
            trend: None,
            pending_ms: None,
        }
    }

    #[test]
    fn only_the_rows_in_view_and_some_around_them() {
        // 200 rows of 44 px, a 500 px viewport.
        assert_eq!(visible_range(200, 0.0, 500.0, 44.0, 10), 0..33);
        assert_eq!(visible_range(200, 4400.0, 500.0, 44.0, 10), 90..123);
        assert_eq!(visible_range(200, 1e9, 500.0, 44.0, 10), 200..200);
        assert_eq!(visible_range(5, 0.0, 500.0, 44.0, 10), 0..5);
        assert_eq!(visible_range(0, 0.0, 500.0, 44.0, 10), 0..0);
        // A row height not measured yet (0) is not a division by zero.
        assert_eq!(visible_range(3, 10.0, 100.0, 0.0, 0), 3..3);
    }

    #[test]
    fn bulk_hosts_by_choice_and_tag_in_name_order() {
        let rows = vec![
            row(1, "gw-b", &["dc1", "edge"], false, 0),
            row(2, "gw-a", &["edge"], true, 3),
            row(3, "core", &["dc1"], true, 9),
        ];
        assert_eq!(fleet_tags(&rows), ["dc1", "edge"]);
        assert_eq!(bulk_hosts(&rows, &[1, 3], None), [3, 1]);
        assert_eq!(bulk_hosts(&rows, &[], Some("edge")), [2, 1]);
        assert_eq!(bulk_hosts(&rows, &[3], Some("edge")), [3, 2, 1]);
        // A chosen gateway that left the fleet is not in the run.
        assert_eq!(bulk_hosts(&rows, &[7, 2], None), [2]);
        assert!(bulk_hosts(&rows, &[], Some("none")).is_empty());
    }

    #[test]
    fn fleet_filters_and_orders() {
        let rows = vec![
            row(1, "gw-b", &["DC1"], false, 0),
            row(2, "gw-a", &["dc2"], true, 3),
            row(3, "edge", &[], true, 9),
        ];
        let ids = |v: Vec<FleetRow>| v.iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(fleet_rows(rows.clone(), "", FleetOrder::Name)),
            [3, 2, 1]
        );
        assert_eq!(
            ids(fleet_rows(rows.clone(), "dc", FleetOrder::Name)),
            [2, 1]
        );
        assert_eq!(
            ids(fleet_rows(rows.clone(), "GW", FleetOrder::Status)),
            [1, 2]
        );
        let mut with_problem = rows.clone();
        with_problem[2].problems = vec!["haproxy failed".into()];
        assert_eq!(
            ids(fleet_rows(with_problem, "", FleetOrder::Status)),
            [1, 3, 2],
            "unreachable, then a problem, then healthy"
        );
        assert_eq!(ids(fleet_rows(rows, "", FleetOrder::Tunnels)), [3, 2, 1]);
    }

    /// A tunnel opened at `created` (RFC 3339) with `streams` (client, bytes).
    fn tunnel(id: &str, port: u16, vm: &str, created: &str, streams: &[(&str, u64)]) -> TunnelInfo {
        serde_json::from_value(json!({
            "id": id, "port": port, "target_host": "10.1.0.5", "target_port": 5900,
            "target_addr": "10.1.0.5:5900", "vm_id": vm, "protocol": "vnc", "state": "active",
            "created_at": created,
            "streams": streams.iter().map(|(client, bytes)| json!({
                "id": format!("{id}-s"), "client_addr": client, "via": "tcp",
                "started_at": created, "last_activity": created,
                "bytes_to_target": bytes, "bytes_to_client": 1
            })).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    #[test]
    fn tunnels_filter_on_streams_too_and_sort() {
        let all = vec![
            tunnel(
                "aaaa",
                5902,
                "vm-1",
                "2026-11-28T10:00:00Z",
                &[("10.9.0.7:5000", 10)],
            ),
            tunnel(
                "bbbb",
                5900,
                "vm-2",
                "2026-11-28T10:00:20Z",
                &[("10.9.0.8:5000", 99)],
            ),
            tunnel("cccc", 5901, "vm-3", "2026-11-28T10:00:10Z", &[]),
        ];
        let ids = |v: Vec<TunnelInfo>| v.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(tunnels(all.clone(), "", "newest")),
            ["bbbb", "cccc", "aaaa"]
        );
        assert_eq!(
            ids(tunnels(all.clone(), "", "port")),
            ["bbbb", "cccc", "aaaa"]
        );
        assert_eq!(
            ids(tunnels(all.clone(), "", "traffic")),
            ["bbbb", "aaaa", "cccc"]
        );
        assert_eq!(ids(tunnels(all.clone(), " 10.9.0.7 ", "port")), ["aaaa"]);
        assert_eq!(ids(tunnels(all.clone(), "VM-3", "port")), ["cccc"]);
        assert_eq!(ids(tunnels(all, "5901", "port")), ["cccc"]);
    }
}
