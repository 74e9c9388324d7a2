//! The throughput step again with a load tool this project did not write:
//! iperf3 (Debian's), through the same paths (direct, HAProxy with and
//! without splice, the gateway's splice and copy relays), 1 and 8 streams,
//! both directions (`-R`: the server sends). iperf3 serves one test at a
//! time, so one server, the paths taking turns in each round.

use crate::{Ctx, Report, SINK_IP, ip, median, verdict};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::process::Command;

const SERVER_PORT: u16 = 17_300;
/// (parallel streams, reverse)
const CASES: [(u32, bool); 4] = [(1, false), (8, false), (1, true), (8, true)];

pub async fn step_iperf3(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let secs = if ctx.args.smoke {
        1
    } else {
        ctx.args.secs.max(1)
    };
    let server = SocketAddr::new(ip(SINK_IP), SERVER_PORT);
    let tools = ctx
        .tool_paths(
            "iperf3",
            Command::new("iperf3")
                .args(["-s", "-B", &server.ip().to_string()])
                .args(["-p", &SERVER_PORT.to_string()]),
            server,
            [17_301, 17_302],
            &["splice", "copy"],
        )
        .await?;
    let paths = &tools.paths;
    // runs[path][case] = Gbit/s of each round
    let mut runs = vec![vec![Vec::new(); CASES.len()]; paths.len()];
    for _ in 0..ctx.rounds() {
        for (i, (_, addr)) in paths.iter().enumerate() {
            for (j, (streams, reverse)) in CASES.iter().enumerate() {
                let g = client(*addr, *streams, *reverse, secs).await?;
                runs[i][j].push(g);
            }
        }
    }
    let med: Vec<Vec<f64>> = runs
        .iter()
        .map(|p| p.iter().map(|r| median(r)).collect())
        .collect();
    rep.line(format!(
        "## iperf3 (Debian's iperf3 {}, Gbit/s received; median of {} rounds, {secs} s each)",
        version(),
        ctx.rounds()
    ));
    rep.line("| path | 1 stream → | 8 streams → | 1 stream ← (-R) | 8 streams ← (-R) |");
    rep.line("|---|---|---|---|---|");
    for (i, (name, _)) in paths.iter().enumerate() {
        let cells: Vec<String> = med[i].iter().map(|g| format!("{g:.1}")).collect();
        rep.line(format!("| {name} | {} |", cells.join(" | ")));
    }
    // HAProxy's best mode for each case, against the gateway's splice relay.
    let best = |j: usize| med[1][j].max(med[2][j]);
    let ratios: Vec<f64> = (0..CASES.len()).map(|j| med[3][j] / best(j)).collect();
    rep.line(format!(
        "\nGateway (splice) / HAProxy's best mode: {}; gateway / direct, 1 stream: {:.2}x.",
        CASES
            .iter()
            .zip(&ratios)
            .map(|((n, r), x)| format!("{n} stream(s) {} **{x:.2}x**", if *r { "←" } else { "→" }))
            .collect::<Vec<_>>()
            .join(", "),
        med[3][0] / med[0][0]
    ));
    for (j, (n, r)) in CASES.iter().enumerate().filter(|(_, c)| !c.1) {
        let _ = r;
        ctx.summary(
            &format!("iperf3 {n}-stream throughput, gateway / HAProxy's best mode"),
            format!(
                "**{:.2}x** ({:.1} vs {:.1} Gbit/s; {:.2}x of direct)",
                ratios[j],
                med[3][j],
                best(j),
                med[3][j] / med[0][j]
            ),
            &format!("≥ 1.1x {}", verdict(ratios[j] >= 1.1)),
        );
    }
    Ok(())
}

/// One iperf3 client run; Gbit/s the receiving side counted.
async fn client(to: SocketAddr, streams: u32, reverse: bool, secs: u64) -> Result<f64> {
    let mut cmd = tokio::process::Command::new("iperf3");
    cmd.args(["-c", &to.ip().to_string(), "-p", &to.port().to_string()])
        .args(["-t", &secs.to_string(), "-P", &streams.to_string(), "-J"]);
    if reverse {
        cmd.arg("-R");
    }
    // Bounded: the test's time, its start and end, and slack.
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(secs + 30),
        cmd.kill_on_drop(true).output(),
    )
    .await
    .context("iperf3 client ran past its time")??;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3's JSON through {to}"))?;
    if let Some(e) = doc["error"].as_str() {
        bail!("iperf3 through {to}: {e}");
    }
    let bps = doc["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("no end.sum_received in iperf3's answer through {to}"))?;
    Ok(bps / 1e9)
}

fn version() -> String {
    Command::new("iperf3")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}
