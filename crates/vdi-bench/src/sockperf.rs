//! Round trips measured by a tool this project did not write: sockperf
//! (Debian's), `ping-pong` over TCP with 64-byte messages, through the same
//! paths as the latency step (direct, HAProxy with and without splice, the
//! gateway's splice relay). Two loads: back to back (the next request as
//! soon as the answer is in, like netperf's TCP_RR) and paced at 1 000
//! requests a second. sockperf reports half the round trip ("latency");
//! this step doubles it, so every figure here is a whole round trip.

use crate::{Ctx, Report, SINK_IP, ip, median, verdict};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::process::Command;

const SERVER_PORT: u16 = 17_400;
/// (label, `--pps` or none for back to back)
const LOADS: [(&str, Option<u32>); 2] = [("back to back", None), ("1 000/s", Some(1000))];

/// One sockperf run: round trips in µs and how many it measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rtt {
    pub p50: f64,
    pub p99: f64,
    /// Round trips per second over the measured part of the run.
    pub per_sec: f64,
}

pub async fn step_sockperf(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let secs = if ctx.args.smoke {
        1
    } else {
        ctx.args.secs.clamp(2, 10)
    };
    let server = SocketAddr::new(ip(SINK_IP), SERVER_PORT);
    let tools = ctx
        .tool_paths(
            "sockperf",
            Command::new("sockperf")
                .args(["server", "--tcp", "-i", &server.ip().to_string()])
                .args(["-p", &SERVER_PORT.to_string()]),
            server,
            [17_401, 17_402],
            &["splice"],
        )
        .await?;
    let paths = &tools.paths;
    // runs[path][load] = each round's figures
    let mut runs = vec![vec![Vec::new(); LOADS.len()]; paths.len()];
    for _ in 0..ctx.rounds() {
        for (i, (_, addr)) in paths.iter().enumerate() {
            for (j, (_, pps)) in LOADS.iter().enumerate() {
                runs[i][j].push(client(*addr, *pps, secs).await?);
            }
        }
    }
    let med = |i: usize, j: usize, f: fn(&Rtt) -> f64| {
        median(&runs[i][j].iter().map(f).collect::<Vec<_>>())
    };
    rep.line(format!(
        "## sockperf round trips (Debian's sockperf {}, TCP ping-pong, 64-byte messages; median of {} rounds, {secs} s each; µs for the whole round trip)",
        version(),
        ctx.rounds()
    ));
    rep.line("| path | back to back p50 | p99 | round trips/s | 1 000/s p50 | p99 |");
    rep.line("|---|---|---|---|---|---|");
    for (i, (name, _)) in paths.iter().enumerate() {
        rep.line(format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            med(i, 0, |r| r.p50),
            med(i, 0, |r| r.p99),
            med(i, 0, |r| r.per_sec),
            med(i, 1, |r| r.p50),
            med(i, 1, |r| r.p99),
        ));
    }
    // What each relay adds over direct; HAProxy's best mode is its lower
    // figure for each load and percentile.
    let gw_i = 3;
    for (j, (load, _)) in LOADS.iter().enumerate() {
        let added = |i: usize, f: fn(&Rtt) -> f64| med(i, j, f) - med(0, j, f);
        let hap = |f: fn(&Rtt) -> f64| added(1, f).min(added(2, f));
        let (g50, g99) = (added(gw_i, |r| r.p50), added(gw_i, |r| r.p99));
        let (h50, h99) = (hap(|r| r.p50), hap(|r| r.p99));
        rep.line(format!(
            "- {load}: added over direct, gateway p50 **{g50:+.0} µs**, p99 **{g99:+.0} µs**; HAProxy's best mode p50 {h50:+.0} µs, p99 {h99:+.0} µs"
        ));
        ctx.summary(
            &format!(
                "sockperf round trip, one stream {load}: added p99, gateway vs HAProxy's best mode"
            ),
            format!("**{g99:+.0} µs** vs {h99:+.0} µs (p50 {g50:+.0} vs {h50:+.0} µs)"),
            &format!("≤ HAProxy {}", verdict(g99 <= h99)),
        );
    }
    Ok(())
}

/// One sockperf client run through `to`.
async fn client(to: SocketAddr, pps: Option<u32>, secs: u64) -> Result<Rtt> {
    let mut cmd = tokio::process::Command::new("sockperf");
    cmd.args(["ping-pong", "--tcp", "-i", &to.ip().to_string()])
        .args([
            "-p",
            &to.port().to_string(),
            "-m",
            "64",
            "-t",
            &secs.to_string(),
        ]);
    if let Some(pps) = pps {
        cmd.args(["--pps", &pps.to_string()]);
    }
    // Bounded: the run, its warm-up and slack.
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(secs + 30),
        cmd.kill_on_drop(true).output(),
    )
    .await
    .context("sockperf client ran past its time")??;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("sockperf through {to} failed ({}): {text}", out.status);
    }
    parse(&text).with_context(|| format!("sockperf's report through {to}: {text}"))
}

/// The figures of sockperf's ping-pong report (its colour codes and all).
/// Its "latency" is half a round trip: doubled here.
pub fn parse(text: &str) -> Result<Rtt> {
    let mut p50 = None;
    let mut p99 = None;
    let mut per_sec = None;
    for line in text.lines() {
        let value = |key: &str| {
            line.split_once(key)
                .and_then(|(_, v)| v.trim().trim_start_matches('=').split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        if line.contains("percentile 50.000") {
            p50 = value("percentile 50.000");
        } else if line.contains("percentile 99.000") {
            p99 = value("percentile 99.000");
        } else if line.contains("[Valid Duration]") {
            let secs = value("RunTime=").context("no RunTime in [Valid Duration]")?;
            let got = value("ReceivedMessages=").context("no ReceivedMessages")?;
            if secs > 0.0 {
                per_sec = Some(got / secs);
            }
        }
    }
    let half = |v: Option<f64>, what: &str| v.with_context(|| format!("no {what} in the report"));
    Ok(Rtt {
        p50: 2.0 * half(p50, "percentile 50")?,
        p99: 2.0 * half(p99, "percentile 99")?,
        per_sec: per_sec.context("no [Valid Duration] line")?,
    })
}

fn version() -> String {
    Command::new("sockperf")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.split("version")
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.split('-').next())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sockperf 3.7's report as it prints it (colour codes included).
    const REPORT: &str = "sockperf: [Total Run] RunTime=2.000 sec; Warm up time=400 msec; SentMessages=35892; ReceivedMessages=35891
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=26287; ReceivedMessages=26287
sockperf: \x1b[2;35m====> avg-latency=29.470 (std-dev=13.831)\x1b[0m
sockperf: ---> percentile 99.900 =  100.704
sockperf: ---> percentile 99.000 =   46.528
sockperf: ---> percentile 90.000 =   35.061
sockperf: ---> percentile 50.000 =   28.121
sockperf: ---> <MIN> observation =    7.015";

    #[test]
    fn the_report_gives_whole_round_trips_and_the_measured_rate() {
        let r = parse(REPORT).unwrap();
        assert!((r.p50 - 56.242).abs() < 1e-9, "{r:?}");
        assert!((r.p99 - 93.056).abs() < 1e-9, "{r:?}");
        assert!((r.per_sec - 26287.0 / 1.55).abs() < 1e-6, "{r:?}");
        // A report cut short is an error, not a zero.
        assert!(parse(&REPORT.replace("percentile 99.000", "percentile 98.000")).is_err());
        assert!(parse("sockperf: Test ended").is_err());
    }
}
