//! Restart and upgrade under load on real systemd: a test bed host runs the
//! package as shipped (the unit's descriptor store), the bed's client
//! namespace holds `--handover-streams` streams over `--handover-tunnels`
//! tunnels to an echo desktop in the desk namespace, every stream echoing a
//! numbered message every `--handover-ms` (each byte checked), while the
//! host goes through `--restarts` × `systemctl restart vdi-gateway`, one
//! package upgrade (`dpkg -i`, postinst re-executes in place) and one
//! upgrade to a build that cannot serve followed by the rollback to the
//! previous package. Reported per operation kind: the stall per stream
//! (p50/p99/max of the gap an operation fell in), resets, corrupted bytes,
//! whether ids and counters continue, the MainPID, and a new tunnel after
//! each. Needs root (the bed). Every loop bounded in count and time.

use crate::handover::{
    Failure, Flow, Load, Streams, Takeover, Tally, all_move, continued, counts, field, ms,
    new_stream, q, still_echo, streams,
};
use crate::load::{connect_many, pct};
use crate::procs::Api;
use crate::{Ctx, Report, verdict};
use anyhow::{Result, anyhow, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use vdi_e2e::Bed;

/// The desktop stand-in's port in the desk namespace.
const DESK_PORT: u16 = 5901;
/// One operation (the command on the host) at most.
const OP_LIMIT: Duration = Duration::from_secs(90);
/// After an operation, every stream must echo again within this.
const MOVE_LIMIT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Restart,
    Upgrade,
    /// An upgrade to a build that cannot serve, then the previous package.
    FailedUpgrade,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Restart => "`systemctl restart`",
            Kind::Upgrade => "package upgrade (`dpkg -i`)",
            Kind::FailedUpgrade => "failed upgrade + rollback",
        }
    }
}

pub struct Params {
    pub restarts: usize,
    pub streams: usize,
    pub tunnels: usize,
    pub pace: Duration,
    pub dir: PathBuf,
}

/// One operation as the client saw it.
pub struct Op {
    pub kind: Kind,
    /// The command on the host, start to end.
    pub took: Duration,
    /// From the operation's start until every stream echoed again; or how
    /// many had not within `MOVE_LIMIT` after its end.
    pub all_echo: Result<Duration, usize>,
    pub new_tunnel: Option<Duration>,
    /// MainPID as it should be: a new one after a restart and a rollback,
    /// the same after an upgrade (re-executed in place).
    pub pid_ok: bool,
    /// What the command printed says what it should (postinst's line).
    pub said_ok: bool,
    /// (streams before, missing, moved, counters lower)
    pub ids: Option<(usize, usize, usize, usize)>,
    pub error: Option<String>,
}

pub struct Outcome {
    pub ops: Vec<Op>,
    pub flows: Vec<Flow>,
    pub ran: Duration,
    pub fresh: usize,
    pub fresh_ok: usize,
    /// The journal's "taken over" lines.
    pub taken: Vec<Takeover>,
    /// Each start's exec → serving (`serving startup_ms`), in order.
    pub startup_ms: Vec<u64>,
    pub parked: usize,
    /// Warnings and errors the unit logged, without repeats: (count, line).
    pub odd: Vec<(usize, String)>,
    pub active_at_end: bool,
    pub systemd: String,
}

fn pid(bed: &Bed) -> String {
    bed.ssh("h1", "systemctl show -p MainPID --value vdi-gateway")
        .1
        .trim()
        .to_string()
}

/// Runs the whole step; blocking (it brings a bed up and down).
pub fn run(p: Params) -> Result<Outcome> {
    let deb = vdi_e2e::build_deb();
    std::fs::create_dir_all(&p.dir)?;
    let up = vdi_e2e::deb_variant(&deb, &p.dir, "0.1.0+bench1", false);
    let broken = vdi_e2e::deb_variant(&deb, &p.dir, "0.1.0+bench2", true);
    let bed = Arc::new(Bed::up("rbench", 1, &deb));
    bed.copy_to("h1", &up, "/root/up.deb");
    bed.copy_to("h1", &broken, "/root/broken.deb");
    let desk = bed.ip("desk");
    let h1 = bed.ip("h1");
    let target = SocketAddr::new(desk, DESK_PORT);
    // Room for every stream on one client address, and tunnels that stay.
    bed.sh(
        "h1",
        &format!(
            "vdi-gateway settings set allowed_targets={desk}/32 max_streams_per_tunnel=100000 max_streams_per_client=100000 max_tunnels_per_client=100000 port_range_start=5900 port_range_stop=6999 tunnel_idle_secs=3600 tunnel_ttl_secs=3600 && systemctl reload vdi-gateway"
        ),
    );
    let doc: serde_json::Value =
        serde_json::from_str(&bed.sh("h1", "vdi-gateway settings show --reveal"))?;
    let key = |k: &str| doc[k].as_str().unwrap_or_default().to_string();
    let (api_key, cli_key) = (key("api_key"), key("cli_key"));
    let systemd = bed
        .sh("h1", "systemctl --version | head -1")
        .trim()
        .to_string();

    let desk_stop = CancellationToken::new();
    let stop = desk_stop.clone();
    let desk_thread = bed.in_ns("desk", move || async move {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.set_reuseaddr(true)?;
        s.bind(target)?;
        let l = s.listen(8192)?;
        tokio::select! {
            _ = crate::load::echo(l) => {}
            _ = stop.cancelled() => {}
        }
        Result::<()>::Ok(())
    });

    let b = bed.clone();
    let client = bed.in_ns("client", move || async move {
        let api = Api {
            ip: h1,
            api: format!("http://{h1}:8000"),
            api_key,
            cli_key,
            // The process behind the port changes: no pooled connection.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        drive(&b, &api, target, &p).await
    });
    let out = client
        .join()
        .map_err(|_| anyhow!("the client side panicked"));
    desk_stop.cancel();
    let _ = desk_thread.join();
    // A failed run says what the unit logged last (the bed goes down after).
    let mut out = out?.map_err(|e| {
        let tail = bed
            .ssh(
                "h1",
                "systemctl status vdi-gateway --no-pager -n 0; journalctl -u vdi-gateway -o cat --no-pager -n 25",
            )
            .1;
        e.context(format!("the unit on h1:\n{tail}"))
    })?;

    let taken = bed.sh(
        "h1",
        &format!(
            "journalctl -u vdi-gateway -o cat --no-pager -g '{}'",
            Takeover::MARK
        ),
    );
    out.taken = taken.lines().filter_map(Takeover::parse).collect();
    out.startup_ms = bed
        .sh(
            "h1",
            "journalctl -u vdi-gateway -o cat --no-pager -g 'serving startup_ms='",
        )
        .lines()
        .filter_map(|l| field(l, "startup_ms"))
        .collect();
    out.parked = bed
        .sh(
            "h1",
            "journalctl -u vdi-gateway -o cat --no-pager -g \"parked in systemd's descriptor store\" | wc -l",
        )
        .trim()
        .parse()
        .unwrap_or(0);
    let mut odd: std::collections::BTreeMap<String, usize> = Default::default();
    for l in bed
        .ssh(
            "h1",
            "journalctl -u vdi-gateway -o cat --no-pager -p warning",
        )
        .1
        .lines()
    {
        *odd.entry(l.trim().to_string()).or_default() += 1;
    }
    out.odd = odd.into_iter().map(|(l, n)| (n, l)).collect();
    out.active_at_end = bed.ssh("h1", "systemctl is-active vdi-gateway").1.trim() == "active";
    out.systemd = systemd;
    Ok(out)
}

/// The client namespace's side: tunnels, streams, the operations, the end.
async fn drive(bed: &Arc<Bed>, api: &Api, target: SocketAddr, p: &Params) -> Result<Outcome> {
    let streams_n = p.streams.max(1);
    let tunnels = p.tunnels.clamp(1, streams_n);
    let mut addrs = Vec::new();
    for t in 0..tunnels {
        addrs.push(api.open_vm(target, Some(&format!("bench-{t}"))).await?);
    }
    let conns = connect_many(&addrs, streams_n).await?;
    api.wait_streams(streams_n).await?;
    let plan: Vec<Kind> = std::iter::repeat_n(Kind::Restart, p.restarts)
        .chain([Kind::Upgrade, Kind::FailedUpgrade])
        .collect();
    // Bounded: the writers stop at the end or after this many messages.
    let run_limit = Duration::from_secs(120) + (OP_LIMIT + MOVE_LIMIT) * plan.len() as u32;
    let max_msgs = (run_limit.as_millis() / p.pace.as_millis().max(1)) as u64;
    let load = Load::start(conns, p.pace, max_msgs);
    let started = Instant::now();
    let load = load
        .first_echoes("any operation", Duration::from_secs(60))
        .await?;
    let (sh, counters) = (load.sh.clone(), load.counters.clone());
    // A baseline without operations.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut ops = Vec::new();
    let mut fresh: Vec<TcpStream> = Vec::new();
    for (n, kind) in plan.into_iter().enumerate() {
        let before: Streams = streams(api).await?;
        let pid_before = {
            let b = bed.clone();
            tokio::task::spawn_blocking(move || pid(&b)).await?
        };
        let moved_before = counts(&counters);
        let t = Instant::now();
        sh.signals.fetch_add(1, Ordering::Relaxed);
        sh.active.store(true, Ordering::Relaxed);
        let b = bed.clone();
        let ran = tokio::time::timeout(
            OP_LIMIT,
            tokio::task::spawn_blocking(move || operate(&b, kind)),
        )
        .await;
        let took = t.elapsed();
        let mut op = Op {
            kind,
            took,
            all_echo: Err(0),
            new_tunnel: None,
            pid_ok: false,
            said_ok: false,
            ids: None,
            error: None,
        };
        match ran {
            Ok(Ok(Ok(said))) => op.said_ok = said,
            Ok(Ok(Err(e))) => op.error = Some(format!("{e:#}")),
            Ok(Err(e)) => op.error = Some(format!("the operation panicked: {e}")),
            Err(_) => op.error = Some(format!("the operation took over {OP_LIMIT:?}")),
        }
        op.all_echo = match all_move(&counters, &moved_before, MOVE_LIMIT).await {
            None => Ok(t.elapsed()),
            Some(still) => Err(still),
        };
        sh.active.store(false, Ordering::Relaxed);
        match new_stream(api, target, n + 1).await {
            Ok((d, s)) => {
                op.new_tunnel = Some(d);
                fresh.push(s);
            }
            Err(e) => {
                op.error.get_or_insert(format!("new tunnel: {e:#}"));
            }
        }
        match streams(api).await {
            Ok(after) => {
                let (missing, moved, lower) = continued(&before, &after);
                op.ids = Some((before.len(), missing, moved, lower));
            }
            Err(e) => {
                op.error.get_or_insert(format!("get_connections: {e:#}"));
            }
        }
        let pid_after = {
            let b = bed.clone();
            tokio::task::spawn_blocking(move || pid(&b)).await?
        };
        let live = pid_after != "0" && !pid_after.is_empty();
        op.pid_ok = live
            && match kind {
                Kind::Upgrade => pid_after == pid_before,
                Kind::Restart | Kind::FailedUpgrade => pid_after != pid_before,
            };
        ops.push(op);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ran = started.elapsed();
    let flows = load.finish(Duration::from_secs(60)).await?;
    let fresh_ok = still_echo(&mut fresh).await;
    Ok(Outcome {
        ops,
        flows,
        ran,
        fresh: fresh.len(),
        fresh_ok,
        taken: Vec::new(),
        startup_ms: Vec::new(),
        parked: 0,
        odd: Vec::new(),
        active_at_end: false,
        systemd: String::new(),
    })
}

/// Runs one operation on h1; true when what it printed says it did what it
/// should.
fn operate(bed: &Bed, kind: Kind) -> Result<bool> {
    let run = |cmd: &str| -> Result<String> {
        let (code, out, err) = bed.ssh("h1", cmd);
        if code != 0 {
            bail!("`{cmd}` exited {code}: {out}{err}");
        }
        Ok(out)
    };
    Ok(match kind {
        Kind::Restart => {
            run("systemctl restart vdi-gateway")?;
            true
        }
        Kind::Upgrade => run("dpkg -i /root/up.deb 2>&1")?.contains("took the new version"),
        Kind::FailedUpgrade => {
            // postinst: the re-execution is refused, the fallback restart
            // starts a build that dies; the streams wait in the store while
            // systemd retries. The rollback: the previous package again.
            let bad = run("dpkg -i /root/broken.deb 2>&1")?;
            let back = run("dpkg -i /root/up.deb 2>&1")?;
            bad.contains("did not take the new version") && !back.contains("did not start")
        }
    })
}

fn row(op: &Op, i: usize, gaps: &[u32], taken: Option<&Takeover>) -> String {
    let dash = || "—".to_string();
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        i + 1,
        op.kind.label(),
        ms(op.took),
        match op.all_echo {
            Ok(d) => ms(d),
            Err(n) => format!("❌ {n} silent {} s after", MOVE_LIMIT.as_secs()),
        },
        if gaps.is_empty() {
            dash()
        } else {
            format!("{:.0} / {:.0} ms", q(gaps, 0.99), q(gaps, 1.0))
        },
        taken.map_or_else(dash, Takeover::to_string),
        op.new_tunnel.map_or_else(dash, ms),
        match op.ids {
            Some((n, 0, 0, 0)) => format!("✅ {n}/{n}"),
            Some((n, m, mv, l)) => format!("❌ of {n}: {m} missing, {mv} moved, {l} lower"),
            None => dash(),
        },
        verdict(op.pid_ok),
        verdict(op.said_ok && op.error.is_none()),
    )
}

pub async fn step_restart(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    rep.line(format!(
        "## Restart and upgrade under load (systemd, test bed): {} × `systemctl restart`, one package upgrade, one failed upgrade + rollback; {} streams over {} tunnels, each echoing a 64-byte message every {} ms",
        a.restarts, a.handover_streams, a.handover_tunnels, a.handover_ms
    ));
    // The bed needs root; under CI its absence fails (can_run panics).
    let can = tokio::task::spawn_blocking(vdi_e2e::can_run).await;
    match can {
        Ok(true) => {}
        Ok(false) => {
            rep.line("Not measured: the test bed needs root.".to_string());
            ctx.summary(
                "restart: streams intact",
                "not measured (needs root)".into(),
                "❌",
            );
            return Ok(());
        }
        Err(_) => bail!("the restart step needs root under CI (the test bed)"),
    }
    let p = Params {
        restarts: a.restarts,
        streams: a.handover_streams,
        tunnels: a.handover_tunnels,
        pace: Duration::from_millis(a.handover_ms.max(1)),
        dir: ctx.dir.join("restart"),
    };
    let o = tokio::task::spawn_blocking(move || run(p)).await??;
    let t = Tally::of(&o.flows);
    rep.line(format!(
        "Debian's {} on the bed host; every echoed byte checked; {:.1} s of traffic, {} messages ({:.1} MB each way). Stall: the gap an operation fell in (last echo before or during it → first echo after), per stream; the pace is included.",
        o.systemd,
        o.ran.as_secs_f64(),
        t.echoed,
        t.echoed as f64 * 64.0 / 1e6
    ));
    rep.line("| # | operation | command on the host | every stream echoing again (from the start) | stall per stream p99 / max | taken over: tunnels / streams / failed, restore time (journal) | new tunnel → first echo | ids kept, counters not lower | MainPID | the command said so |".to_string());
    rep.line("|---|---|---|---|---|---|---|---|---|---|".to_string());
    // One "taken over" line per start after the first (the bed's own start
    // took nothing): restarts, the upgrade's re-execution, the rollback.
    let takeovers: Vec<&Takeover> = o.taken.iter().filter(|t| t.tunnels > 0).collect();
    for (i, op) in o.ops.iter().enumerate() {
        let gaps = t.by_op.get(i).map(Vec::as_slice).unwrap_or(&[]);
        rep.line(row(op, i, gaps, takeovers.get(i).copied()));
        if let Some(e) = &op.error {
            rep.line(format!("| | ❌ {e} | | | | | | | | |"));
        }
    }
    rep.line(String::new());
    let kind_gaps = |k: Kind| {
        let mut v: Vec<u32> = o
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.kind == k)
            .flat_map(|(i, _)| t.by_op.get(i).cloned().unwrap_or_default())
            .collect();
        v.sort_unstable();
        v
    };
    let lost = t.total - t.intact;
    let ops_ok = o.ops.iter().all(|op| {
        op.error.is_none()
            && op.all_echo.is_ok()
            && op.pid_ok
            && op.said_ok
            && op.new_tunnel.is_some()
            && matches!(op.ids, Some((_, 0, 0, 0)))
    });
    rep.line(format!(
        "- streams intact: **{}/{}**; resets {}, corrupted {} ({} bytes), ended early {}, stalled {}",
        t.intact, t.total, t.resets, t.corrupt_streams, t.corrupted_bytes, t.ended, t.stalled
    ));
    rep.line(format!(
        "- without an operation (baseline, same load): p99 {:.0} ms, max {:.0} ms",
        q(&t.base, 0.99),
        q(&t.base, 1.0)
    ));
    for k in [Kind::Restart, Kind::Upgrade, Kind::FailedUpgrade] {
        let g = kind_gaps(k);
        rep.line(format!(
            "- {}: stall per stream p50 {:.0} ms, p99 **{:.0} ms**, max **{:.0} ms** ({} stream-operations)",
            k.label(),
            q(&g, 0.5),
            q(&g, 0.99),
            q(&g, 1.0),
            g.len()
        ));
    }
    rep.line(format!(
        "- journal: {} parkings in the descriptor store, {} takeovers; the unit active at the end: {}; new tunnels still echoing at the end: {}/{}",
        o.parked,
        takeovers.len(),
        verdict(o.active_at_end),
        o.fresh_ok,
        o.fresh
    ));
    // The new process's own share of each stall: exec → serving, and the
    // restore inside it (the rest is systemd's stop and start).
    let mut starts: Vec<u32> = o.startup_ms.iter().skip(1).map(|&v| v as u32).collect();
    let mut restores: Vec<u32> = takeovers
        .iter()
        .filter_map(|t| t.restore_ms)
        .map(|v| v as u32)
        .collect();
    starts.sort_unstable();
    restores.sort_unstable();
    if !starts.is_empty() {
        rep.line(format!(
            "- the new process, exec → serving (journal `startup_ms`, {} starts): p50 {:.0} ms, max {:.0} ms; of it the takeover (`restore_ms`): p50 {:.0} ms, max {:.0} ms",
            starts.len(),
            pct(&starts, 0.5),
            pct(&starts, 1.0),
            pct(&restores, 0.5),
            pct(&restores, 1.0)
        ));
    }
    for why in Tally::failures(&o.flows) {
        rep.line(format!("- {why}"));
    }
    for (n, l) in o.odd.iter().take(10) {
        rep.line(format!("- journal, warning or worse ({n}×): `{l}`"));
    }
    let restart = kind_gaps(Kind::Restart);
    let (p99, max) = (q(&restart, 0.99), q(&restart, 1.0));
    ctx.summary(
        &format!(
            "restart (systemd): streams intact over {} restarts, an upgrade, a rollback",
            a.restarts
        ),
        format!("{} {}/{}", verdict(lost == 0 && ops_ok), t.intact, t.total),
        "all",
    );
    ctx.summary(
        "restart (systemd): resets / corrupted bytes",
        format!(
            "{} {} / {}",
            verdict(t.resets == 0 && t.corrupted_bytes == 0),
            t.resets,
            t.corrupted_bytes
        ),
        "0 / 0",
    );
    ctx.summary(
        "restart (systemd): stall per stream through `systemctl restart`, p99 / max",
        format!("**{p99:.0} ms** / **{max:.0} ms**"),
        &format!(
            "≤ 300 ms / ≤ 1 s {}",
            verdict(p99 <= 300.0 && max <= 1000.0)
        ),
    );
    let up = kind_gaps(Kind::Upgrade);
    ctx.summary(
        "restart (systemd): stall per stream through a package upgrade, p99 / max",
        format!("**{:.0} ms** / **{:.0} ms**", q(&up, 0.99), q(&up, 1.0)),
        &format!(
            "≤ 300 ms / ≤ 1 s {}",
            verdict(q(&up, 0.99) <= 300.0 && q(&up, 1.0) <= 1000.0)
        ),
    );
    let rb = kind_gaps(Kind::FailedUpgrade);
    ctx.summary(
        "restart (systemd): stall per stream through a failed upgrade and its rollback, max",
        format!("**{:.0} ms** (the broken build's window)", q(&rb, 1.0)),
        "no stream lost",
    );
    if lost > 0 || !ops_ok || !o.active_at_end {
        let first = o
            .ops
            .iter()
            .find_map(|op| op.error.clone())
            .unwrap_or_default();
        let kinds: Vec<Failure> = o
            .flows
            .iter()
            .filter_map(|f| f.failure.as_ref().map(|x| x.0))
            .collect();
        bail!(
            "restart: {lost} of {} streams lost or corrupted ({:?}…), operations all as expected: {ops_ok} {first}",
            t.total,
            kinds.first()
        );
    }
    Ok(())
}
