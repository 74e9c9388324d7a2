//! The console at fleet scale: `--fleet` gateway processes, each on its own
//! loopback address (127.0.62.1, .2, …), plus a dead host (nothing listens)
//! and a silent one (accepts, never answers), in one console's inventory.
//! The console library's overview runs as the fleet view runs it (a push by
//! `FLEET_PUSH_WITHIN`, one shared HTTP client), round after round; the
//! figures are the time to each push, how many rows were fresh, the TCP
//! connections the console holds to the gateways (one per host when they
//! are reused) and the cost of the table's filter and sort on the rows.

use crate::procs::{Gateway, GatewaySpec, wait_listening};
use crate::{Ctx, Report, verdict};
use anyhow::{Context, Result, ensure};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use vdi_console::Console;
use vdi_console::secrets::Secrets;
use vdi_console_view::tables::{FleetOrder, fleet_rows};
use vdi_wire::Secret;
use vdi_wire::console::GatewayDraft;

const API_PORT: u16 = 17_500;

fn host(i: usize) -> IpAddr {
    IpAddr::from([127, 0, 62, 1 + i as u8])
}

pub async fn step_fleet(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let n = ctx.args.fleet.clamp(1, 250);
    let rounds = if ctx.args.smoke { 3 } else { 30 };
    rep.line(format!(
        "## Console at fleet scale: {n} gateway processes + 1 dead + 1 silent host, {rounds} refreshes as the fleet view runs them"
    ));
    let t = Instant::now();
    let mut gateways: Vec<Gateway> = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("fleet-{i}");
        let mut spec = GatewaySpec::new(&ctx.bin, &ctx.dir, &name, host(i), API_PORT);
        spec.range = (17_510, 17_519);
        gateways.push(
            crate::procs::gateway(spec)
                .await
                .with_context(|| format!("gateway {i}"))?,
        );
    }
    rep.line(format!(
        "{n} gateways up in {:.1} s",
        t.elapsed().as_secs_f64()
    ));

    let data = ctx.dir.join("fleet-console");
    std::fs::create_dir_all(&data)?;
    let console = Console::with_secrets(&data, Secrets::file(data.join("secrets.json")))?;
    for (i, g) in gateways.iter().enumerate() {
        console.add(&GatewayDraft {
            name: format!("gw-{i:03}"),
            api_url: g.api.clone(),
            api_key: Some(Secret::new(g.api_key.clone())),
            cli_key: Some(Secret::new(g.cli_key.clone())),
            tags: vec![format!("rack-{}", i % 10)],
            ..Default::default()
        })?;
    }
    // Dead: an address where nothing listens. Silent: accepts, never answers.
    let dead = IpAddr::from([127, 0, 62, 251]);
    let silent_l =
        tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::from([127, 0, 62, 252]), API_PORT))
            .await?;
    let silent_addr = silent_l.local_addr()?;
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent_l.accept().await {
            held.push(s);
        }
    });
    for (name, addr) in [
        ("dead", SocketAddr::new(dead, API_PORT)),
        ("silent", silent_addr),
    ] {
        console.add(&GatewayDraft {
            name: name.into(),
            api_url: format!("http://{addr}"),
            api_key: Some(Secret::new("AAAAAAAAAAAAAAAAAAAAAA==".to_string())),
            cli_key: Some(Secret::new("AAAAAAAAAAAAAAAAAAAAAA==".to_string())),
            ..Default::default()
        })?;
    }
    wait_listening(silent_addr, "the silent host").await?;

    let within = vdi_console::FLEET_PUSH_WITHIN;
    let mut times = Vec::with_capacity(rounds);
    let mut cold = Duration::ZERO;
    let mut fresh_min = usize::MAX;
    let mut last_rows = Vec::new();
    let mut used = std::collections::HashSet::new();
    for round in 0..rounds {
        let t = Instant::now();
        let (rows, _) = console.overview_within(within).await?;
        let took = t.elapsed();
        let fresh = rows
            .iter()
            .filter(|r| r.reachable && r.pending_ms.is_none() && r.error.is_none())
            .count();
        if round == 0 {
            cold = took;
        } else {
            times.push(took);
            fresh_min = fresh_min.min(fresh);
        }
        last_rows = rows;
        used.extend(connections_to(API_PORT));
        // The fleet view's pace.
        tokio::time::sleep(Duration::from_secs(2).saturating_sub(took)).await;
    }
    times.sort();
    let pick = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let (p50, p99, max) = (pick(0.5), pick(0.99), *times.last().unwrap());
    let by = |name: &str| last_rows.iter().find(|r| r.name == name);
    let silent_flagged = by("silent").is_some_and(|r| {
        r.pending_ms.is_some() || r.error.as_ref().is_some_and(|e| e.code == "timeout")
    });
    let dead_down = by("dead").is_some_and(|r| !r.reachable);
    let held_now = connections_to(API_PORT).len();

    // The table's work on these rows (the page runs the same functions).
    let t = Instant::now();
    let mut shown = 0;
    for (filter, order) in [
        ("", FleetOrder::Name),
        ("rack-3", FleetOrder::Name),
        ("", FleetOrder::Status),
        ("gw-1", FleetOrder::Tunnels),
    ] {
        shown += fleet_rows(last_rows.clone(), filter, order).len();
    }
    let table = t.elapsed() / 4;
    let update_bytes = serde_json::to_vec(&last_rows)?.len();

    rep.line("| figure | value |");
    rep.line("|---|---|");
    rep.line(format!(
        "| first refresh (new connections) | {} ms |",
        cold.as_millis()
    ));
    rep.line(format!(
        "| refresh p50 / p99 / max (rounds 2…{rounds}) | {} / {} / {} ms |",
        p50.as_millis(),
        p99.as_millis(),
        max.as_millis()
    ));
    rep.line(format!(
        "| live rows fresh in every refresh | {fresh_min} of {n} |"
    ));
    rep.line(format!(
        "| dead host shown down; silent host flagged, not waited for | {} ; {} |",
        dead_down, silent_flagged
    ));
    rep.line(format!(
        "| TCP connections to the {n} live gateways: held now; distinct ones seen over the {rounds} refreshes | {held_now}; {} |",
        used.len()
    ));
    rep.line(format!(
        "| the table's filter + sort on {} rows (native; {shown} rows shown over 4 runs) | {} µs |",
        last_rows.len(),
        table.as_micros()
    ));
    rep.line(format!(
        "| one fleet update as JSON | {} KiB |",
        update_bytes / 1024
    ));
    ensure!(
        dead_down && silent_flagged,
        "the dead and silent hosts were not shown as such"
    );
    let ok = max < Duration::from_secs(1) && fresh_min == n;
    ctx.summary(
        &format!("console: fleet refresh with {n} gateways + a dead and a silent host, max"),
        format!(
            "{} {} ms ({fresh_min}/{n} fresh)",
            verdict(ok),
            max.as_millis()
        ),
        "≤ 1 s, every live row fresh",
    );
    ctx.summary(
        &format!("console: TCP connections used over {rounds} refreshes of {n} gateways (reuse)"),
        format!("{} {}", verdict(used.len() == n), used.len()),
        "one per host",
    );
    held.abort();
    drop(gateways);
    Ok(())
}

/// The console's established TCP connections to the gateways' APIs
/// (`port` on 127.0.62.1 … .250, the live hosts), as their local ports.
fn connections_to(port: u16) -> std::collections::HashSet<String> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut out = std::collections::HashSet::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(rem), Some(st)) = (f.get(1), f.get(2), f.get(3)) else {
            continue;
        };
        let Some((ip_hex, port_hex)) = rem.split_once(':') else {
            continue;
        };
        // /proc/net/tcp writes the IPv4 address as a little-endian word:
        // 127.0.62.x reads as xx3E007F.
        let last = u8::from_str_radix(ip_hex.get(..2).unwrap_or(""), 16).unwrap_or(0);
        if *st == "01"
            && u16::from_str_radix(port_hex, 16) == Ok(port)
            && ip_hex.ends_with("3E007F")
            && (1..=250).contains(&last)
        {
            out.insert(local.to_string());
        }
    }
    out
}
