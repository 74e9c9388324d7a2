//! `vdi-bench`: the data plane side by side, in one run, on this machine.
//!
//! The same load tool (this program: writers, a counting sink, an echo
//! server, ping clients) drives every path: direct, HAProxy `mode tcp`,
//! HAProxy with `option splice-auto`, and a `vdi-gateway` tunnel (splice
//! relay, and the portable copy relay). HAProxy and the gateway run as their
//! own processes. Timed steps run in rounds with the paths interleaved and
//! report the median. Only loopback addresses; every loop is bounded in count
//! and time. `--smoke` runs the same steps in seconds (for CI).

mod faults;
mod fleet;
mod handover;
mod iperf;
mod journal;
mod load;
mod procs;
mod restart;
mod sockperf;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use load::{Latency, connect_many, pct, ping_all, throughput};
use procs::{Gateway, GatewaySpec, Proc, cpu_ticks, haproxy, rss_kib, wait_listening};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Debug)]
#[command(
    about = "Space Gateway benchmarks: throughput, latency, setup, concurrency, API at scale, journal"
)]
struct Args {
    /// A short run of every step (seconds), for CI: the figures mean little.
    #[arg(long)]
    smoke: bool,
    /// The steps to run, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    steps: Vec<Step>,
    /// Rounds of the timed steps (throughput, latency): the paths take turns
    /// in each round and the report gives the median round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Run HAProxy and the gateway on these CPUs (comma-separated) and the
    /// load side (this program and its echo server) on the others. Without
    /// it every process shares every core.
    #[arg(long, value_delimiter = ',')]
    relay_cpus: Vec<usize>,
    /// The gateway binary (default: next to this program).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent streams for the concurrency and API steps, and the tunnels
    /// they use.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    #[arg(long, default_value_t = 100)]
    tunnels: usize,
    /// Streams pinging during the latency step.
    #[arg(long, default_value_t = 1000)]
    latency_streams: usize,
    /// Milliseconds between two pings of one stream in the latency step, one
    /// measurement per value (comma-separated): 1000 streams at 1000 and
    /// 100 ms are 1 000 and 10 000 pings/s.
    #[arg(long, value_delimiter = ',', default_value = "1000,100")]
    ping_ms: Vec<u64>,
    /// Tunnels opened one by one in the setup step.
    #[arg(long, default_value_t = 1000)]
    setups: usize,
    /// `get_connections` calls in the API step.
    #[arg(long, default_value_t = 30)]
    api_calls: usize,
    /// Lines for the console journal stream step (it needs root for the
    /// test bed).
    #[arg(long, default_value_t = 200_000)]
    journal_lines: u64,
    /// Concurrent streams of the soak step, and megabytes each moves each way.
    #[arg(long, default_value_t = 1000)]
    soak_streams: usize,
    #[arg(long, default_value_t = 10)]
    soak_mb: u64,
    /// Bursts of the soak on one gateway: memory after the last must not
    /// have grown from after the first (a leak grows with each).
    #[arg(long, default_value_t = 3)]
    soak_rounds: usize,
    /// The handover step: SIGUSR2s sent to one gateway (each re-executes it
    /// in place), while this many streams over this many tunnels echo a
    /// message every `--handover-ms` each.
    #[arg(long, default_value_t = 20)]
    handovers: usize,
    #[arg(long, default_value_t = 1000)]
    handover_streams: usize,
    #[arg(long, default_value_t = 100)]
    handover_tunnels: usize,
    #[arg(long, default_value_t = 20)]
    handover_ms: u64,
    /// The restart step (a test bed host, needs root): `systemctl restart`s
    /// under the handover's load, then one package upgrade and one failed
    /// upgrade with its rollback.
    #[arg(long, default_value_t = 20)]
    restarts: usize,
    /// Gateway processes of the fleet step (the console's overview).
    #[arg(long, default_value_t = 200)]
    fleet: usize,
    /// Write the results as Markdown here too.
    #[arg(long, default_value = "target/bench/latest.md")]
    out: PathBuf,
    /// (internal) Only run an echo server at this address: the echo side of
    /// the streams lives in its own process, for its own descriptors.
    #[arg(long, hide = true)]
    echo_server: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Step {
    Throughput,
    /// The throughput paths again, measured by iperf3.
    Iperf3,
    Latency,
    /// Round trips again, measured by sockperf (TCP ping-pong).
    Sockperf,
    Setup,
    Concurrency,
    Api,
    Journal,
    Soak,
    Faults,
    /// SIGUSR2 (re-execution in place) under load: stalls, resets, bytes.
    Handover,
    /// `systemctl restart`, a package upgrade and a rollback under load, on
    /// a test bed host (needs root).
    Restart,
    /// The console's fleet overview with `--fleet` gateway processes.
    Fleet,
}

/// Loopback addresses of this run (away from the tests' ranges).
const SINK_IP: [u8; 4] = [127, 0, 61, 1];
const HAPROXY_IP: [u8; 4] = [127, 0, 61, 2];
/// Gateway processes take 127.0.61.10, .11, …: one address each (each binds
/// its API and tunnel ports there).
const GATEWAY_NET: [u8; 3] = [127, 0, 61];
const ECHO_PORT: u16 = 17_200;

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

/// What every step shares: the sink, the echo server, where the relays run.
struct Ctx {
    args: Args,
    dir: PathBuf,
    bin: PathBuf,
    /// Open files one process may hold here.
    fds: u64,
    sunk: Arc<AtomicU64>,
    sink_addr: SocketAddr,
    echo_addr: SocketAddr,
    next_gateway: std::cell::Cell<u8>,
    summary: std::cell::RefCell<Vec<[String; 4]>>,
}

impl Ctx {
    fn relay_cpus(&self) -> Option<&[usize]> {
        (!self.args.relay_cpus.is_empty()).then_some(self.args.relay_cpus.as_slice())
    }

    /// The next gateway process's number and address (127.0.61.10, .11, …).
    fn next_gateway_ip(&self) -> (u8, IpAddr) {
        let n = self.next_gateway.get();
        self.next_gateway.set(n + 1);
        let [a, b, c] = GATEWAY_NET;
        (n, ip([a, b, c, 10 + n]))
    }

    /// A fresh gateway process on its own address.
    async fn gateway(&self, relay: &str) -> Result<Gateway> {
        let (n, addr) = self.next_gateway_ip();
        let name = format!("{n}-{relay}");
        let mut spec = GatewaySpec::new(&self.bin, &self.dir, &name, addr, 17_100);
        spec.relay = relay;
        spec.cpus = self.relay_cpus();
        procs::gateway(spec).await
    }

    /// A gateway set up as `with` says (the fault steps: extra settings, a
    /// descriptor limit, a log), on the next address.
    async fn gateway_with(&self, with: impl FnOnce(&mut GatewaySpec<'_>)) -> Result<Gateway> {
        let (n, addr) = self.next_gateway_ip();
        let name = format!("{n}-faults");
        let mut spec = GatewaySpec::new(&self.bin, &self.dir, &name, addr, 17_100);
        with(&mut spec);
        procs::gateway(spec).await
    }

    fn haproxy(&self, port: u16, target: SocketAddr, splice: bool) -> Result<Proc> {
        haproxy(
            &self.dir,
            SocketAddr::new(ip(HAPROXY_IP), port),
            target,
            splice,
            self.relay_cpus(),
        )
    }

    /// Starts an external tool's server (`serve`, the Debian package
    /// `tool`, listening on `server`) and the paths its client measures:
    /// direct, HAProxy (`mode tcp` on `ports[0]`, `splice-auto` on
    /// `ports[1]`), and a tunnel through a gateway with each of `relays`.
    /// Holds the processes.
    async fn tool_paths(
        &self,
        tool: &str,
        serve: &mut Command,
        server: SocketAddr,
        ports: [u16; 2],
        relays: &[&str],
    ) -> Result<ToolPaths> {
        let server_proc = Proc(
            serve
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .with_context(|| format!("{tool} (apt install {tool})"))?,
        );
        wait_listening(server, tool).await?;
        let keep = vec![
            server_proc,
            self.haproxy(ports[0], server, false)?,
            self.haproxy(ports[1], server, true)?,
        ];
        for p in ports {
            wait_listening(SocketAddr::new(ip(HAPROXY_IP), p), "haproxy").await?;
        }
        let mut paths = vec![
            ("direct".to_string(), server),
            (
                "HAProxy mode tcp".to_string(),
                SocketAddr::new(ip(HAPROXY_IP), ports[0]),
            ),
            (
                "HAProxy + splice-auto".to_string(),
                SocketAddr::new(ip(HAPROXY_IP), ports[1]),
            ),
        ];
        let mut gateways = Vec::new();
        for relay in relays {
            let gw = self.gateway(relay).await?;
            paths.push((
                format!("vdi-gateway tunnel ({relay})"),
                gw.open(server).await?,
            ));
            gateways.push(gw);
        }
        Ok(ToolPaths {
            paths,
            _keep: keep,
            _gateways: gateways,
        })
    }

    fn rounds(&self) -> usize {
        self.args.rounds.max(1)
    }

    /// A line of the final summary table.
    fn summary(&self, figure: &str, measured: String, target: &str) {
        self.summary
            .borrow_mut()
            .push([figure.into(), measured, target.into(), String::new()]);
    }
}

/// [`Ctx::tool_paths`]: (name, address) of each path, and what serves them.
struct ToolPaths {
    paths: Vec<(String, SocketAddr)>,
    _keep: Vec<Proc>,
    _gateways: Vec<Gateway>,
}

/// The report: printed as it goes, written as Markdown at the end.
struct Report(Vec<String>);

impl Report {
    fn line(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("{s}");
        self.0.push(s);
    }
}

fn mbps(b: f64) -> String {
    format!("{:.0} MB/s", b / 1e6)
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn list(v: &[f64], f: impl Fn(f64) -> String) -> String {
    v.iter().map(|x| f(*x)).collect::<Vec<_>>().join(", ")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "✅" } else { "❌" }
}

#[tokio::main(worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if let Some(at) = args.echo_server {
        procs::raise_fd_limit();
        // A backlog above tokio's 1024 (up to net.core.somaxconn): a
        // thousand streams dialled in a burst otherwise meet SYN cookies
        // here, and a few of them a reset (as the soak's desktop).
        let s = if at.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        s.set_reuseaddr(true)?;
        s.bind(at)?;
        load::echo(s.listen(8192)?).await;
        return Ok(());
    }
    if args.steps.is_empty() {
        args.steps = Step::value_variants().to_vec();
    }
    if args.smoke {
        args.secs = 1;
        args.rounds = 1;
        args.streams = args.streams.min(500);
        args.tunnels = args.tunnels.min(10);
        args.latency_streams = args.latency_streams.min(100);
        args.setups = args.setups.min(30);
        args.handovers = args.handovers.min(2);
        args.handover_streams = args.handover_streams.min(20);
        args.handover_tunnels = args.handover_tunnels.min(4);
        args.restarts = args.restarts.min(2);
        args.fleet = args.fleet.min(10);
        args.steps.retain(|s| *s != Step::Journal);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_cpus: Vec<usize> = (0..cores)
        .filter(|c| !args.relay_cpus.contains(c))
        .collect();
    if !args.relay_cpus.is_empty() {
        anyhow::ensure!(
            args.relay_cpus.iter().all(|c| *c < cores) && !load_cpus.is_empty(),
            "--relay-cpus must leave at least one of the {cores} CPUs to the load"
        );
        procs::pin_self(&load_cpus)?;
    }
    let fds = procs::raise_fd_limit();
    let dir = std::env::temp_dir().join(format!("vdi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rep = Report(Vec::new());
    rep.line(format!(
        "# vdi-bench {} — {} cores, {} s per throughput figure, {} round(s){}{}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        cores,
        args.secs,
        args.rounds.max(1),
        if args.relay_cpus.is_empty() {
            String::from(", every process on every core")
        } else {
            format!(
                ", relays on CPU {:?}, load on CPU {:?}",
                args.relay_cpus, load_cpus
            )
        },
        if args.smoke {
            " (SMOKE RUN: figures not meaningful)"
        } else {
            ""
        }
    ));

    // The counting sink (here) and the echo server (its own process).
    let sunk = Arc::new(AtomicU64::new(0));
    let sink_l = TcpListener::bind((ip(SINK_IP), 0)).await?;
    let sink_addr = sink_l.local_addr()?;
    tokio::spawn(load::sink(sink_l, sunk.clone()));
    let echo_addr = SocketAddr::new(ip(SINK_IP), ECHO_PORT);
    let mut echo_cmd = Command::new(std::env::current_exe()?);
    echo_cmd.arg("--echo-server").arg(echo_addr.to_string());
    if !args.relay_cpus.is_empty() {
        procs::pin(&mut echo_cmd, Some(&load_cpus));
    }
    let _echo = Proc(echo_cmd.spawn()?);
    wait_listening(echo_addr, "the echo server").await?;

    let out = args.out.clone();
    let steps = args.steps.clone();
    let ctx = Ctx {
        bin: procs::gateway_bin(args.gateway.clone()),
        args,
        dir: dir.clone(),
        fds,
        sunk,
        sink_addr,
        echo_addr,
        next_gateway: 0.into(),
        summary: Vec::new().into(),
    };
    for step in steps {
        rep.line(String::new());
        let rows = ctx.summary.borrow().len();
        let before = procs::cpu_and_steal();
        match step {
            Step::Throughput => step_throughput(&ctx, &mut rep).await,
            Step::Iperf3 => iperf::step_iperf3(&ctx, &mut rep).await,
            Step::Latency => step_latency(&ctx, &mut rep).await,
            Step::Sockperf => sockperf::step_sockperf(&ctx, &mut rep).await,
            Step::Setup => step_setup(&ctx, &mut rep).await,
            Step::Concurrency => step_concurrency(&ctx, &mut rep).await,
            Step::Api => step_api(&ctx, &mut rep).await,
            Step::Journal => step_journal(&ctx, &mut rep).await,
            Step::Soak => faults::step_soak(&ctx, &mut rep).await,
            Step::Faults => faults::step_faults(&ctx, &mut rep).await,
            Step::Handover => handover::step_handover(&ctx, &mut rep).await,
            Step::Restart => restart::step_restart(&ctx, &mut rep).await,
            Step::Fleet => fleet::step_fleet(&ctx, &mut rep).await,
        }
        .with_context(|| format!("step {step:?}"))?;
        // A shared host's neighbours take CPU time away: said beside every
        // figure, as timed figures mean little when this is high.
        let stolen = format!("{:.1} %", procs::steal_pct(before, procs::cpu_and_steal()));
        rep.line(format!(
            "\n_CPU time stolen by the host during this step: {stolen}._"
        ));
        for row in ctx.summary.borrow_mut()[rows..].iter_mut() {
            row[3] = stolen.clone();
        }
    }

    rep.line(String::new());
    rep.line("## Summary");
    rep.line("| figure | measured | target | CPU stolen by the host |");
    rep.line("|---|---|---|---|");
    for [f, m, t, st] in ctx.summary.borrow().iter() {
        rep.line(format!("| {f} | {m} | {t} | {st} |"));
    }
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&out, rep.0.join("\n") + "\n")?;
    eprintln!("written to {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// 1 and 8 writers per path for `--secs`, the paths taking turns each round.
async fn step_throughput(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let sink = ctx.sink_addr;
    let _hp = ctx.haproxy(17_001, sink, false)?;
    let _hs = ctx.haproxy(17_002, sink, true)?;
    for p in [17_001, 17_002] {
        wait_listening(SocketAddr::new(ip(HAPROXY_IP), p), "haproxy").await?;
    }
    let gw = ctx.gateway("splice").await?;
    let gw_copy = ctx.gateway("copy").await?;
    let paths: Vec<(&str, SocketAddr)> = vec![
        ("direct", sink),
        ("HAProxy mode tcp", SocketAddr::new(ip(HAPROXY_IP), 17_001)),
        (
            "HAProxy + splice-auto",
            SocketAddr::new(ip(HAPROXY_IP), 17_002),
        ),
        ("vdi-gateway tunnel (splice)", gw.open(sink).await?),
        ("vdi-gateway tunnel (copy)", gw_copy.open(sink).await?),
    ];
    let secs = ctx.args.secs as f64;
    // figures[path][round] = (1 stream, 8 streams)
    let mut figures = vec![Vec::new(); paths.len()];
    for _ in 0..ctx.rounds() {
        for (i, (_, addr)) in paths.iter().enumerate() {
            let one = throughput(*addr, 1, secs, ctx.sunk.clone()).await?;
            let eight = throughput(*addr, 8, secs, ctx.sunk.clone()).await?;
            figures[i].push((one, eight));
        }
    }
    let med = |i: usize| -> (f64, f64) {
        let one: Vec<f64> = figures[i].iter().map(|f| f.0).collect();
        let eight: Vec<f64> = figures[i].iter().map(|f| f.1).collect();
        (median(&one), median(&eight))
    };
    rep.line(format!(
        "## Throughput (bytes delivered to the sink; median of {} rounds)",
        ctx.rounds()
    ));
    rep.line("| path | 1 stream | 8 streams |");
    rep.line("|---|---|---|");
    for (i, (name, _)) in paths.iter().enumerate() {
        let (one, eight) = med(i);
        rep.line(format!("| {name} | {} | {} |", mbps(one), mbps(eight)));
    }
    let (direct, splice_hp, gw_splice) = (med(0), med(2), med(3));
    let per_round = |k: fn(&(f64, f64)) -> f64| -> Vec<f64> {
        figures[3]
            .iter()
            .zip(&figures[2])
            .map(|(g, h)| k(g) / k(h))
            .collect()
    };
    let x = |r: f64| format!("{r:.2}x");
    let (r1, r8) = (gw_splice.0 / splice_hp.0, gw_splice.1 / splice_hp.1);
    rep.line(format!(
        "\nRatios of the medians, 1 stream: gateway/HAProxy+splice **{r1:.2}x** (rounds: {}), gateway/direct {:.2}x; 8 streams: gateway/HAProxy+splice **{r8:.2}x** (rounds: {}), gateway/direct {:.2}x.",
        list(&per_round(|f| f.0), x),
        gw_splice.0 / direct.0,
        list(&per_round(|f| f.1), x),
        gw_splice.1 / direct.1
    ));
    ctx.summary(
        "1-stream throughput, gateway / HAProxy + splice",
        format!(
            "**{r1:.2}x** ({} vs {}; {:.2}x of direct)",
            mbps(gw_splice.0),
            mbps(splice_hp.0),
            gw_splice.0 / direct.0
        ),
        &format!("≥ 1.1x {}", verdict(r1 >= 1.1)),
    );
    ctx.summary(
        "8-stream throughput, gateway / HAProxy + splice",
        format!("**{r8:.2}x** ({:.2}x of direct)", gw_splice.1 / direct.1),
        "—",
    );
    Ok(())
}

/// `--latency-streams` pinging streams per path at each `--ping-ms`, the
/// paths taking turns in each round.
async fn step_latency(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    let _hp = ctx.haproxy(17_003, ctx.echo_addr, false)?;
    let hp_addr = SocketAddr::new(ip(HAPROXY_IP), 17_003);
    wait_listening(hp_addr, "haproxy").await?;
    let gw = ctx.gateway("splice").await?;
    let tunnel = gw.open(ctx.echo_addr).await?;
    let paths = [
        ("direct", ctx.echo_addr),
        ("HAProxy mode tcp", hp_addr),
        ("vdi-gateway tunnel", tunnel),
    ];
    let secs = if a.smoke { 1.0 } else { 5.0 };
    for (k, &ms) in a.ping_ms.iter().enumerate() {
        let ms = ms.max(1);
        let rate = a.latency_streams as u64 * 1000 / ms;
        let every = Duration::from_millis(ms);
        let mut rounds: Vec<Vec<Latency>> = vec![Vec::new(); paths.len()];
        let mut steal: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
        for _ in 0..ctx.rounds() {
            for (i, (_, addr)) in paths.iter().enumerate() {
                let conns = connect_many(&[*addr], a.latency_streams).await?;
                let before = procs::cpu_and_steal();
                rounds[i].push(ping_all(conns, every, secs).await);
                steal[i].push(procs::steal_pct(before, procs::cpu_and_steal()));
            }
        }
        if k > 0 {
            rep.line(String::new());
        }
        rep.line(format!(
            "## Round-trip latency, {} active streams, a 64-byte ping every {ms} ms each ({rate} pings/s; median of {} rounds)",
            a.latency_streams,
            ctx.rounds()
        ));
        rep.line("| path | p50 | p99 | p99 of each round | CPU stolen by the host in each round | samples per round |");
        rep.line("|---|---|---|---|---|---|");
        let us = |x: f64| format!("{x:.0} µs");
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for (i, (name, _)) in paths.iter().enumerate() {
            let r = &rounds[i];
            let (a50, a99): (Vec<f64>, Vec<f64>) = r.iter().map(|l| (l.p50, l.p99)).unzip();
            p50.push(median(&a50));
            p99.push(median(&a99));
            let failed: usize = r.iter().map(|l| l.failed).sum();
            rep.line(format!(
                "| {name} | {} | {} | {} | {} | {}{} |",
                us(p50[i]),
                us(p99[i]),
                list(&a99, us),
                list(&steal[i], |x| format!("{x:.1} %")),
                r.first().map_or(0, |l| l.samples),
                if failed > 0 {
                    format!(" ({failed} streams FAILED)")
                } else {
                    String::new()
                }
            ));
        }
        let added99 = p99[2] - p99[0];
        let added = format!(
            "p50 **{:+.0} µs**, p99 **{added99:+.0} µs** (HAProxy adds p50 {:+.0} µs, p99 {:+.0} µs)",
            p50[2] - p50[0],
            p50[1] - p50[0],
            p99[1] - p99[0]
        );
        rep.line(format!("\nAdded by the gateway: {added}."));
        ctx.summary(
            &format!(
                "added round trip at {} active streams, {rate} pings/s",
                a.latency_streams
            ),
            added,
            &format!("p99 ≤ 200 µs {}", verdict(added99 <= 200.0)),
        );
    }
    Ok(())
}

/// `open_connection` → connect → first relayed byte, tunnel after tunnel.
async fn step_setup(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let gw = ctx.gateway("splice").await?;
    let mut setup = Vec::new();
    for _ in 0..ctx.args.setups {
        let t = Instant::now();
        let addr = gw.open(ctx.echo_addr).await?;
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        setup.push(t.elapsed().as_micros() as u32);
        drop(s);
        // Outside the timing, so the port range never runs out.
        if setup.len() % 500 == 0 {
            gw.disconnect_all().await?;
        }
    }
    setup.sort_unstable();
    let (p50, p99) = (pct(&setup, 0.5) / 1000.0, pct(&setup, 0.99) / 1000.0);
    rep.line(format!(
        "## Tunnel setup ({} tunnels, one after another)",
        ctx.args.setups
    ));
    rep.line(format!(
        "open_connection → connect → first byte back: p50 **{p50:.2} ms**, p99 **{p99:.2} ms**."
    ));
    ctx.summary(
        "`open_connection` → first byte, p99",
        format!("**{p99:.2} ms** (p50 {p50:.2} ms)"),
        &format!("≤ 2 ms {}", verdict(p99 <= 2.0)),
    );
    Ok(())
}

/// Streams one gateway process can hold here: two sockets each, plus its
/// listeners (one per tunnel) and a margin for the rest.
fn per_gateway(fds: u64, tunnels: usize) -> usize {
    (fds.saturating_sub(tunnels as u64 + 100) / 2) as usize
}

/// `--streams` over `--tunnels`, one ping a second each: memory, CPU, round
/// trips. When one process may not hold that many descriptors here, the
/// streams are shared by as many gateway processes as it takes (said so).
async fn step_concurrency(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    let procs = a
        .streams
        .div_ceil(per_gateway(ctx.fds, a.tunnels).max(1))
        .max(1);
    anyhow::ensure!(
        a.tunnels >= procs,
        "{} streams need {procs} gateway processes here (descriptor limit): give them at least {procs} tunnels",
        a.streams
    );
    let mut gws = Vec::new();
    for _ in 0..procs {
        gws.push(ctx.gateway("splice").await?);
    }
    let base: Vec<u64> = gws.iter().map(|g| rss_kib(g.pid())).collect();
    // Tunnels and streams dealt out evenly over the processes.
    let mut addrs = Vec::new();
    for t in 0..a.tunnels {
        addrs.push(gws[t % procs].open(ctx.echo_addr).await?);
    }
    let t_open = Instant::now();
    let conns = connect_many(&addrs, a.streams).await?;
    let opened_in = t_open.elapsed();
    for (i, g) in gws.iter().enumerate() {
        let mine = (0..a.streams)
            .filter(|s| (s % a.tunnels) % procs == i)
            .count();
        g.wait_streams(mine).await?;
    }
    let idle: Vec<u64> = gws.iter().map(|g| rss_kib(g.pid())).collect();
    let secs = if a.smoke { 2.0 } else { 10.0 };
    let cpu0: u64 = gws.iter().map(|g| cpu_ticks(g.pid())).sum();
    let pinged = ping_all(conns, Duration::from_secs(1), secs).await;
    let cpu1: u64 = gws.iter().map(|g| cpu_ticks(g.pid())).sum();
    let after: Vec<u64> = gws.iter().map(|g| rss_kib(g.pid())).collect();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let sum = |v: &[u64]| v.iter().sum::<u64>();
    let per_idle = (sum(&idle) - sum(&base)) as f64 / a.streams as f64;
    let per_after = (sum(&after).saturating_sub(sum(&base))) as f64 / a.streams as f64;
    rep.line(format!(
        "## Concurrency: {} streams over {} tunnels, one 64-byte ping per second each",
        a.streams, a.tunnels
    ));
    if procs > 1 {
        rep.line(format!(
            "This machine allows {} open files per process (a hard limit this sandbox cannot raise) and a gateway needs two per stream, so {procs} gateway processes on this host share the streams ({} each).",
            ctx.fds,
            a.streams / procs
        ));
    }
    rep.line(format!(
        "Connected in {:.1} s. Gateway RSS: {} KiB before, {} KiB with the streams idle, {} KiB after pinging: **{per_idle:.1} KiB per idle stream**, {per_after:.1} KiB per stream after traffic.",
        opened_in.as_secs_f64(),
        sum(&base),
        sum(&idle),
        sum(&after),
    ));
    let cpu = (cpu1 - cpu0) as f64 / hz / secs * 100.0;
    rep.line(format!(
        "Gateway CPU while pinging: {cpu:.1}% of one core. Round trips: p50 {:.0} µs, p99 {:.0} µs ({} samples{}).",
        pinged.p50,
        pinged.p99,
        pinged.samples,
        if pinged.failed > 0 {
            format!(", {} streams FAILED", pinged.failed)
        } else {
            String::new()
        }
    ));
    ctx.summary(
        "concurrent streams on this machine",
        format!(
            "**{}**{}, {} pinging (p99 round trip {:.1} ms, {cpu:.0} % of a core)",
            a.streams,
            if procs > 1 {
                format!(" ({procs} gateway processes: descriptor limit)")
            } else {
                String::new()
            },
            if pinged.failed == 0 {
                "all".to_string()
            } else {
                format!("{} FAILED, the rest", pinged.failed)
            },
            pinged.p99 / 1000.0
        ),
        &format!(
            "10 000 {}",
            verdict(a.streams >= 10_000 && pinged.failed == 0)
        ),
    );
    ctx.summary(
        "memory per idle relayed stream",
        format!("**{per_idle:.1} KiB** ({per_after:.1} KiB after traffic)"),
        &format!("≤ 10 KiB {}", verdict(per_idle <= 10.0)),
    );
    for g in &gws {
        g.disconnect_all().await?;
    }
    Ok(())
}

/// `get_connections` on one gateway holding as many streams as it can here
/// (up to `--streams`): the whole HTTP exchange and the server's own time.
async fn step_api(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    let n = a.streams.min(per_gateway(ctx.fds, a.tunnels));
    let gw = ctx.gateway("splice").await?;
    let mut addrs = Vec::new();
    for _ in 0..a.tunnels {
        addrs.push(gw.open(ctx.echo_addr).await?);
    }
    let _conns = connect_many(&addrs, n).await?;
    gw.wait_streams(n).await?;
    let mut whole = Vec::new();
    let mut server = Vec::new();
    let mut len = 0;
    let calls = if a.smoke { 5 } else { a.api_calls };
    for _ in 0..calls {
        let (d, s, body) = gw.get_connections().await?;
        whole.push(d.as_micros() as u32);
        server.extend(procs::server_timing_ms(&s, "app").map(|ms| (ms * 1000.0) as u32));
        len = body.len();
    }
    whole.sort_unstable();
    server.sort_unstable();
    // A broker's poll with nothing new: `?since=` the last answer's cursor.
    let last: serde_json::Value = serde_json::from_slice(&gw.get_connections().await?.2)?;
    let cursor = last["cursor"]
        .as_str()
        .context("get_connections answered no cursor")?
        .to_string();
    let (mut quiet, mut quiet_server, mut quiet_len) = (Vec::new(), Vec::new(), 0);
    // Cheap: ten times the calls, after one uncounted.
    gw.get_connections_since(Some(&cursor)).await?;
    let quiet_calls = calls * 10;
    for _ in 0..quiet_calls {
        let (d, s, body) = gw.get_connections_since(Some(&cursor)).await?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        anyhow::ensure!(
            v["full"] == false && v["tunnels"].as_array().is_some_and(|t| t.is_empty()),
            "a poll with nothing new answered more than an empty delta: {}",
            String::from_utf8_lossy(&body)
        );
        quiet.push(d.as_micros() as u32);
        quiet_server.extend(procs::server_timing_ms(&s, "app").map(|ms| (ms * 1000.0) as u32));
        quiet_len = body.len();
    }
    quiet.sort_unstable();
    quiet_server.sort_unstable();
    let ms = |v: &[u32], p| pct(v, p) / 1000.0;
    rep.line(format!(
        "## API at scale: get_connections with {n} streams open, {calls} calls"
    ));
    if n < a.streams {
        rep.line(format!(
            "{} streams asked; one gateway process holds at most {n} here ({} open files per process, two per stream).",
            a.streams, ctx.fds
        ));
    }
    rep.line(format!(
        "Whole HTTP exchange: p50 **{:.1} ms**, p99 **{:.1} ms**; the server's own time (`Server-Timing`): p50 {:.1} ms, p99 {:.1} ms; {} KiB of JSON.",
        ms(&whole, 0.5),
        ms(&whole, 0.99),
        ms(&server, 0.5),
        ms(&server, 0.99),
        len / 1024
    ));
    ctx.summary(
        &format!("`get_connections` with {n} streams"),
        format!(
            "p50 **{:.1} ms**, p99 **{:.1} ms** (server side p99 {:.1} ms)",
            ms(&whole, 0.5),
            ms(&whole, 0.99),
            ms(&server, 0.99)
        ),
        &format!("≤ 20 ms {}", verdict(ms(&whole, 0.99) <= 20.0)),
    );
    rep.line(format!(
        "`?since=` the last cursor, nothing changed ({quiet_calls} calls, {quiet_len} bytes each): whole exchange p50 **{:.0} µs**, p99 **{:.0} µs**; server side p50 {:.0} µs, p99 {:.0} µs.",
        pct(&quiet, 0.5),
        pct(&quiet, 0.99),
        pct(&quiet_server, 0.5),
        pct(&quiet_server, 0.99),
    ));
    ctx.summary(
        &format!("`get_connections?since=`, nothing new, {n} streams"),
        format!(
            "server side p50 **{:.0} µs**, p99 **{:.0} µs** (whole exchange p50 {:.0} µs, p99 {:.0} µs)",
            pct(&quiet_server, 0.5),
            pct(&quiet_server, 0.99),
            pct(&quiet, 0.5),
            pct(&quiet, 0.99)
        ),
        &format!(
            "server side ≤ 100 µs {}",
            verdict(pct(&quiet_server, 0.99) <= 100.0)
        ),
    );
    gw.disconnect_all().await?;
    Ok(())
}

/// The console's journal stream from a test bed host (needs root).
async fn step_journal(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    rep.line("## Console journal stream (a bed host's journal → the console's follower over SSH)");
    let n = ctx.args.journal_lines;
    match tokio::task::spawn_blocking(move || journal::run(n)).await? {
        Ok(f) => {
            rep.line(format!(
                "{} lines, every one received once and in order: **{:.0} lines/s** end to end (journald itself wrote them at {:.0} lines/s); {} gaps.",
                f.lines, f.console_lines_per_s, f.journald_lines_per_s, f.gaps
            ));
            ctx.summary(
                "console journal stream",
                format!(
                    "**{:.0} lines/s**, all {} received once and in order",
                    f.console_lines_per_s, f.lines
                ),
                &format!(
                    "≥ 10 000 lines/s, none lost {}",
                    verdict(f.console_lines_per_s >= 10_000.0)
                ),
            );
        }
        Err(e) => {
            rep.line(format!("Not measured: {e:#}"));
            ctx.summary(
                "console journal stream",
                format!("not measured: {e:#}"),
                "❌",
            );
        }
    }
    Ok(())
}
