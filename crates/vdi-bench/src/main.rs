//! `vdi-bench`: the data plane side by side, in one run, on this machine.
//!
//! The same load tool (this program: writers, a counting sink, an echo
//! server, ping clients) drives every path: direct, HAProxy `mode tcp`,
//! HAProxy with `option splice-auto`, and a `vdi-gateway` tunnel (splice
//! relay, and the portable copy relay). HAProxy and the gateway run as their
//! own processes. Only loopback addresses; every loop is bounded in count
//! and time. `--smoke` runs the same steps in seconds (for CI).

mod journal;

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser, Debug)]
#[command(
    about = "Space Gateway benchmarks: throughput, concurrency, latency, setup, API at scale"
)]
struct Args {
    /// A short run of every step (seconds), for CI: the figures mean little.
    #[arg(long)]
    smoke: bool,
    /// The gateway binary (default: next to this program).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent streams for the concurrency step, and tunnels they use.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    #[arg(long, default_value_t = 100)]
    tunnels: usize,
    /// Streams pinging during the latency step.
    #[arg(long, default_value_t = 1000)]
    latency_streams: usize,
    /// Milliseconds between two pings of one stream in the latency step.
    #[arg(long, default_value_t = 100)]
    ping_ms: u64,
    /// Tunnels opened one by one in the setup step.
    #[arg(long, default_value_t = 1000)]
    setups: usize,
    /// Lines for the console journal stream step (0 skips it; it needs root
    /// for the test bed).
    #[arg(long, default_value_t = 200_000)]
    journal_lines: u64,
    /// Write the results as Markdown here too.
    #[arg(long, default_value = "target/bench/latest.md")]
    out: PathBuf,
    /// (internal) Only run an echo server at this address: the echo side of
    /// the streams lives in its own process, for its own descriptors.
    #[arg(long, hide = true)]
    echo_server: Option<SocketAddr>,
}

/// Loopback addresses of this run (away from the tests' ranges).
const SINK_IP: [u8; 4] = [127, 0, 61, 1];
const HAPROXY_IP: [u8; 4] = [127, 0, 61, 2];
/// One address per gateway process (each binds its service ports there too).
const GATEWAY_IPS: [[u8; 4]; 2] = [[127, 0, 61, 3], [127, 0, 61, 4]];

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

/// Kills the child on drop.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: plain libc calls on a local struct.
    unsafe {
        // As root the hard limit itself can go up (to fs.nr_open); else the
        // soft limit goes up to the hard one. HAProxy and the gateway inherit it.
        let want = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

async fn wait_listening(addr: SocketAddr, what: &str) -> Result<()> {
    let t = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!("{what} does not listen on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------- servers

/// Accepts and discards, counting every byte.
async fn sink(listener: TcpListener, bytes: Arc<AtomicU64>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let bytes = bytes.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
    }
}

/// Echoes back (small buffers: many idle connections).
async fn echo(listener: TcpListener) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let (mut r, mut w) = s.into_split();
            let mut buf = [0u8; 512];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

// ---------------------------------------------------------------- load

/// `streams` writers to `addr` for `secs`; returns bytes/s the sink received
/// in the window (the first 10% is warm-up).
async fn throughput(
    addr: SocketAddr,
    streams: usize,
    secs: f64,
    sunk: Arc<AtomicU64>,
) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for _ in 0..streams {
        let mut s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let buf = vec![0x5au8; 64 * 1024];
            while !stop.load(Ordering::Relaxed) {
                if s.write_all(&buf).await.is_err() {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs * 0.1)).await;
    let (b0, t0) = (sunk.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs * 0.9)).await;
    let (b1, t1) = (sunk.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.abort();
    }
    Ok((b1 - b0) as f64 / (t1 - t0).as_secs_f64())
}

/// One pinging stream: a 64-byte message every `every`, round-trip times
/// collected until `deadline`.
async fn pinger(mut s: TcpStream, every: Duration, deadline: Instant) -> Vec<u32> {
    let _ = s.set_nodelay(true);
    let msg = [0x42u8; 64];
    let mut back = [0u8; 64];
    let mut rtts = Vec::new();
    // Spread the streams' phases so they do not all fire at once.
    tokio::time::sleep(every.mul_f64(rand_fraction())).await;
    let mut tick = tokio::time::interval(every);
    while Instant::now() < deadline {
        tick.tick().await;
        let t = Instant::now();
        if s.write_all(&msg).await.is_err() || s.read_exact(&mut back).await.is_err() {
            break;
        }
        rtts.push(t.elapsed().as_micros() as u32);
    }
    rtts
}

fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() % 10_000) as f64 / 10_000.0
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
}

struct Latency {
    p50: f64,
    p99: f64,
    samples: usize,
}

async fn ping_all(conns: Vec<TcpStream>, every: Duration, secs: f64) -> Latency {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|s| tokio::spawn(pinger(s, every, deadline)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_unstable();
    Latency {
        p50: pct(&all, 0.5),
        p99: pct(&all, 0.99),
        samples: all.len(),
    }
}

async fn connect_many(addrs: &[SocketAddr], n: usize) -> Result<Vec<TcpStream>> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let a = addrs[i % addrs.len()];
        v.push(
            TcpStream::connect(a)
                .await
                .with_context(|| format!("stream {i} to {a}"))?,
        );
    }
    Ok(v)
}

// ---------------------------------------------------------------- haproxy

fn haproxy(dir: &std::path::Path, port: u16, target: SocketAddr, splice: bool) -> Result<Proc> {
    let cfg = dir.join(format!("haproxy-{port}.cfg"));
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 4000\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n\nfrontend f\n    bind {}:{port}\n{}    default_backend b\n\nbackend b\n    server s {target}\n",
            ip(HAPROXY_IP),
            if splice {
                "    option splice-auto\n"
            } else {
                ""
            }
        ),
    )?;
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            dir.join(format!("haproxy-{port}.log")),
        )?)
        .spawn()
        .context("haproxy (apt install haproxy)")?;
    Ok(Proc(child))
}

// ---------------------------------------------------------------- gateway

struct Gateway {
    proc: Proc,
    ip: IpAddr,
    api: String,
    api_key: String,
    cli_key: String,
    http: reqwest::Client,
}

fn gateway_bin(args: &Args) -> PathBuf {
    args.gateway.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("own path")
            .with_file_name("vdi-gateway")
    })
}

async fn gateway(
    args: &Args,
    dir: &std::path::Path,
    relay: &str,
    g: IpAddr,
    range: (u16, u16),
    api_port: u16,
) -> Result<Gateway> {
    let bin = gateway_bin(args);
    let db = dir.join(format!("gw-{relay}.db"));
    let _ = std::fs::remove_file(&db);
    let run = |a: &[&str]| -> Result<String> {
        let out = Command::new(&bin)
            .arg("--db")
            .arg(&db)
            .args(a)
            .output()
            .with_context(|| format!("{}", bin.display()))?;
        if !out.status.success() {
            bail!(
                "vdi-gateway {a:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&["init"])?;
    run(&[
        "settings",
        "set",
        &format!("internal_addrs={g}"),
        &format!("public_addr={g}"),
        &format!("virtual_addr={g}"),
        &format!("disp_addrs={g}"),
        &format!("api_port={api_port}"),
        &format!("balancer_api_port={}", api_port + 1),
        &format!("port_range_start={}", range.0),
        &format!("port_range_stop={}", range.1),
        "allowed_targets=127.0.61.0/24",
        "max_streams_per_tunnel=100000",
        "tunnel_idle_secs=3600",
        "tunnel_ttl_secs=3600",
        "ha_managed=false",
    ])?;
    let doc: serde_json::Value = serde_json::from_str(&run(&["settings", "show", "--reveal"])?)?;
    let child = Command::new(&bin)
        .arg("--db")
        .arg(&db)
        .arg("serve")
        .env("VDI_GATEWAY_RELAY", relay)
        .env("VDI_GATEWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let gw = Gateway {
        proc: Proc(child),
        ip: g,
        api: format!("http://{g}:{api_port}"),
        api_key: doc["api_key"].as_str().unwrap_or_default().into(),
        cli_key: doc["cli_key"].as_str().unwrap_or_default().into(),
        http: reqwest::Client::new(),
    };
    wait_listening(SocketAddr::new(g, api_port), "the gateway's API").await?;
    Ok(gw)
}

impl Gateway {
    async fn open(&self, target: SocketAddr) -> Result<SocketAddr> {
        let r: serde_json::Value = self
            .http
            .post(format!("{}/v3/open_connection/", self.api))
            .header("cli_key", &self.cli_key)
            .json(&serde_json::json!({"target_host": target.ip().to_string(), "target_port": target.port()}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let port = r["port"].as_u64().context("a port")? as u16;
        Ok(SocketAddr::new(self.ip, port))
    }

    async fn disconnect_all(&self) -> Result<()> {
        self.http
            .post(format!("{}/v3/disconnect/", self.api))
            .header("api_key", &self.api_key)
            .json(&serde_json::json!({"all": true}))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// `get_connections`: time taken and body size.
    async fn get_connections(&self) -> Result<(Duration, usize)> {
        let t = Instant::now();
        let body = self
            .http
            .get(format!("{}/v3/get_connections/", self.api))
            .header("api_key", &self.api_key)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok((t.elapsed(), body.len()))
    }

    fn pid(&self) -> u32 {
        self.proc.0.id()
    }
}

/// Resident memory (KiB) and CPU time (ticks) of a process.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------- report

struct Report(Vec<String>);

impl Report {
    fn line(&mut self, s: String) {
        println!("{s}");
        self.0.push(s);
    }
}

fn mbps(b: f64) -> String {
    format!("{:.0} MB/s", b / 1e6)
}

#[tokio::main(worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = Args::parse();
    if let Some(at) = args.echo_server {
        raise_fd_limit();
        let l = TcpListener::bind(at).await?;
        echo(l).await;
        return Ok(());
    }
    if args.smoke {
        args.secs = 1;
        args.streams = args.streams.min(500);
        args.tunnels = args.tunnels.min(10);
        args.latency_streams = args.latency_streams.min(100);
        args.setups = args.setups.min(30);
        args.journal_lines = 0;
    }
    let fds = raise_fd_limit();
    // The gateway holds two sockets per stream (this process and the echo
    // process one each): the limit caps the streams one gateway can carry.
    let fit = (fds.saturating_sub(600) / 2) as usize;
    let wanted = args.streams;
    if args.streams > fit {
        args.streams = fit;
    }
    let dir = std::env::temp_dir().join(format!("vdi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rep = Report(Vec::new());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    rep.line(format!(
        "# vdi-bench {} — {} cores, {} s per throughput figure{}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        cores,
        args.secs,
        if args.smoke {
            " (SMOKE RUN: figures not meaningful)"
        } else {
            ""
        }
    ));

    // The counting sink and the echo server.
    let sunk = Arc::new(AtomicU64::new(0));
    let sink_l = TcpListener::bind((ip(SINK_IP), 0)).await?;
    let sink_addr = sink_l.local_addr()?;
    tokio::spawn(sink(sink_l, sunk.clone()));
    let echo_addr = SocketAddr::new(ip(SINK_IP), 17_200);
    let _echo = Proc(
        Command::new(std::env::current_exe()?)
            .arg("--echo-server")
            .arg(echo_addr.to_string())
            .spawn()?,
    );
    wait_listening(echo_addr, "the echo server").await?;
    if args.streams < wanted {
        rep.line(format!(
            "\nNote: {wanted} concurrent streams asked, {} run: this machine allows {fds} descriptors per process (hard limit, not raisable here) and the gateway needs two per stream.",
            args.streams
        ));
    }

    // Relays under test.
    let hp = haproxy(&dir, 17_001, sink_addr, false)?;
    let hs = haproxy(&dir, 17_002, sink_addr, true)?;
    let hp_echo = haproxy(&dir, 17_003, echo_addr, false)?;
    for p in [17_001, 17_002, 17_003] {
        wait_listening(SocketAddr::new(ip(HAPROXY_IP), p), "haproxy").await?;
    }
    let gw = gateway(
        &args,
        &dir,
        "splice",
        ip(GATEWAY_IPS[0]),
        (20_000, 21_999),
        17_100,
    )
    .await?;
    let gw_copy = gateway(
        &args,
        &dir,
        "copy",
        ip(GATEWAY_IPS[1]),
        (22_000, 22_099),
        17_110,
    )
    .await?;

    // 1. Throughput.
    rep.line(String::new());
    rep.line("## Throughput (bytes delivered to the sink)".into());
    rep.line("| path | 1 stream | 8 streams |".into());
    rep.line("|---|---|---|".into());
    let paths: Vec<(&str, SocketAddr)> = vec![
        ("direct", sink_addr),
        ("HAProxy mode tcp", SocketAddr::new(ip(HAPROXY_IP), 17_001)),
        (
            "HAProxy + splice-auto",
            SocketAddr::new(ip(HAPROXY_IP), 17_002),
        ),
        ("vdi-gateway tunnel (splice)", gw.open(sink_addr).await?),
        ("vdi-gateway tunnel (copy)", gw_copy.open(sink_addr).await?),
    ];
    let mut figures = Vec::new();
    for (name, addr) in &paths {
        let one = throughput(*addr, 1, args.secs as f64, sunk.clone()).await?;
        let eight = throughput(*addr, 8, args.secs as f64, sunk.clone()).await?;
        rep.line(format!("| {name} | {} | {} |", mbps(one), mbps(eight)));
        figures.push((one, eight));
    }
    let (direct, splice_hp, gw_splice) = (figures[0], figures[2], figures[3]);
    rep.line(format!(
        "\nRatios, 1 stream: gateway/HAProxy+splice **{:.2}x**, gateway/direct {:.2}x; 8 streams: gateway/HAProxy+splice **{:.2}x**, gateway/direct {:.2}x.",
        gw_splice.0 / splice_hp.0,
        gw_splice.0 / direct.0,
        gw_splice.1 / splice_hp.1,
        gw_splice.1 / direct.1
    ));
    gw.disconnect_all().await?;
    gw_copy.disconnect_all().await?;

    // 2. Latency at `latency_streams` active streams: direct, HAProxy, gateway.
    rep.line(String::new());
    rep.line(format!(
        "## Round-trip latency, {} active streams, a 64-byte ping every {} ms each ({} pings/s)",
        args.latency_streams,
        args.ping_ms,
        args.latency_streams as u64 * 1000 / args.ping_ms
    ));
    rep.line("| path | p50 | p99 | samples |".into());
    rep.line("|---|---|---|---|".into());
    let lat_secs = if args.smoke { 1.0 } else { 5.0 };
    let direct_l = ping_all(
        connect_many(&[echo_addr], args.latency_streams).await?,
        Duration::from_millis(args.ping_ms),
        lat_secs,
    )
    .await;
    let hp_l = ping_all(
        connect_many(
            &[SocketAddr::new(ip(HAPROXY_IP), 17_003)],
            args.latency_streams,
        )
        .await?,
        Duration::from_millis(args.ping_ms),
        lat_secs,
    )
    .await;
    let t = gw.open(echo_addr).await?;
    let gw_l = ping_all(
        connect_many(&[t], args.latency_streams).await?,
        Duration::from_millis(args.ping_ms),
        lat_secs,
    )
    .await;
    for (name, l) in [
        ("direct", &direct_l),
        ("HAProxy mode tcp", &hp_l),
        ("vdi-gateway tunnel", &gw_l),
    ] {
        rep.line(format!(
            "| {name} | {:.0} µs | {:.0} µs | {} |",
            l.p50, l.p99, l.samples
        ));
    }
    rep.line(format!(
        "\nAdded by the gateway: p50 **{:+.0} µs**, p99 **{:+.0} µs** (HAProxy adds p50 {:+.0} µs, p99 {:+.0} µs).",
        gw_l.p50 - direct_l.p50,
        gw_l.p99 - direct_l.p99,
        hp_l.p50 - direct_l.p50,
        hp_l.p99 - direct_l.p99
    ));
    gw.disconnect_all().await?;

    // 3. Tunnel setup: open_connection -> connect -> first relayed byte.
    let mut setup = Vec::new();
    for _ in 0..args.setups {
        let t = Instant::now();
        let addr = gw.open(echo_addr).await?;
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        setup.push(t.elapsed().as_micros() as u32);
        drop(s);
        if setup.len() % 500 == 0 {
            gw.disconnect_all().await?;
        }
    }
    gw.disconnect_all().await?;
    setup.sort_unstable();
    rep.line(String::new());
    rep.line(format!(
        "## Tunnel setup ({} tunnels, one after another)",
        args.setups
    ));
    rep.line(format!(
        "open_connection → connect → first byte back: p50 **{:.2} ms**, p99 **{:.2} ms**.",
        pct(&setup, 0.5) / 1000.0,
        pct(&setup, 0.99) / 1000.0
    ));

    // 4. Concurrency: `streams` streams over `tunnels` tunnels, 1 ping/s each.
    let base_rss = rss_kib(gw.pid());
    let mut addrs = Vec::new();
    for _ in 0..args.tunnels {
        addrs.push(gw.open(echo_addr).await?);
    }
    let t_open = Instant::now();
    let conns = connect_many(&addrs, args.streams).await?;
    let opened_in = t_open.elapsed();
    // Let the gateway accept and connect every stream before measuring.
    let t = Instant::now();
    loop {
        let body: serde_json::Value = gw
            .http
            .get(format!("{}/v3/get_connections/", gw.api))
            .header("api_key", &gw.api_key)
            .send()
            .await?
            .json()
            .await?;
        let n: usize = body["tunnels"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| t["streams"].as_array().map_or(0, |s| s.len()))
                    .sum()
            })
            .unwrap_or(0);
        if n >= args.streams || t.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idle_rss = rss_kib(gw.pid());
    let mut api = Vec::new();
    let mut body_len = 0;
    for _ in 0..if args.smoke { 5 } else { 20 } {
        let (d, len) = gw.get_connections().await?;
        api.push(d.as_micros() as u32);
        body_len = len;
    }
    api.sort_unstable();
    let conc_secs = if args.smoke { 2.0 } else { 10.0 };
    let cpu0 = cpu_ticks(gw.pid());
    let conc = ping_all(conns, Duration::from_secs(1), conc_secs).await;
    let cpu1 = cpu_ticks(gw.pid());
    let active_rss = rss_kib(gw.pid());
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    rep.line(String::new());
    rep.line(format!(
        "## Concurrency: {} streams over {} tunnels, one 64-byte ping per second each",
        args.streams, args.tunnels
    ));
    rep.line(format!(
        "Connected in {:.1} s. Gateway RSS: {} KiB before, {} KiB with the streams idle, {} KiB after pinging: **{:.1} KiB per idle stream**, {:.1} KiB per stream after traffic.",
        opened_in.as_secs_f64(),
        base_rss,
        idle_rss,
        active_rss,
        (idle_rss.saturating_sub(base_rss)) as f64 / args.streams as f64,
        (active_rss.saturating_sub(base_rss)) as f64 / args.streams as f64
    ));
    rep.line(format!(
        "Gateway CPU while pinging: {:.1}% of one core. Round trips: p50 {:.0} µs, p99 {:.0} µs ({} samples).",
        (cpu1 - cpu0) as f64 / hz / conc_secs * 100.0,
        conc.p50,
        conc.p99,
        conc.samples
    ));
    rep.line(String::new());
    rep.line(format!(
        "## API at scale: get_connections with {} streams open",
        args.streams
    ));
    rep.line(format!(
        "p50 **{:.1} ms**, p99 **{:.1} ms**, {} KiB of JSON.",
        pct(&api, 0.5) / 1000.0,
        pct(&api, 0.99) / 1000.0,
        body_len / 1024
    ));
    gw.disconnect_all().await?;

    drop((hp, hs, hp_echo, gw, gw_copy));

    // 5. The console's journal stream, from a test bed host.
    rep.line(String::new());
    rep.line(
        "## Console journal stream (a bed host's journal → the console's follower over SSH)".into(),
    );
    if args.journal_lines == 0 {
        rep.line("Skipped (smoke run or --journal-lines 0).".into());
    } else {
        let n = args.journal_lines;
        match tokio::task::spawn_blocking(move || journal::run(n)).await? {
            Ok(f) => rep.line(format!(
                "{} lines, every one received once and in order: **{:.0} lines/s** end to end (journald itself wrote them at {:.0} lines/s); {} gaps.",
                f.lines, f.console_lines_per_s, f.journald_lines_per_s, f.gaps
            )),
            Err(e) => rep.line(format!("Not measured: {e:#}")),
        }
    }
    if let Some(d) = args.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&args.out, rep.0.join("\n") + "\n")?;
    eprintln!("written to {}", args.out.display());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
