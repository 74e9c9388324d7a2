//! The handover under load: `SIGUSR2` makes a running `vdi-gateway serve`
//! execute the binary on disk in place (same PID), handing over every
//! listener, tunnel and spliced stream. Here one gateway carries
//! `--handover-streams` streams over `--handover-tunnels` tunnels, every
//! stream echoing a numbered 64-byte message every `--handover-ms` (checked
//! byte by byte on its way back), while the gateway is handed over
//! `--handovers` times, one after another. Reported: streams intact, resets,
//! corrupted bytes, the longest gap between two echoes of each stream (the
//! stall), what the gateway logs of each handover (`quiesced_ms`), whether
//! `get_connections` keeps every stream's id and counters, and a new tunnel
//! after each. Loopback only; every loop is bounded in count and time.

use crate::faults::strip_ansi;
use crate::load::{connect_many, pct};
use crate::procs::{self, Api, GatewaySpec};
use crate::{Ctx, Report, verdict};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixDatagram};

/// Bytes per message.
const MSG: usize = 64;
/// A stream that echoes nothing for this long (or cannot write) has failed.
const STREAM_LIMIT: Duration = Duration::from_secs(15);
/// One handover, `SIGUSR2` to `READY=1`, at most (the daemon's own limits
/// are 10 s for the binary's check and 5 s for quiescing).
const HANDOVER_LIMIT: Duration = Duration::from_secs(30);
/// Between two handovers, from `READY=1`.
const BETWEEN: Duration = Duration::from_secs(1);

/// Message `k` of stream `id`: the stream, the number, then bytes generated
/// from both (xorshift64), so the reader checks every byte without keeping
/// what was sent.
pub(crate) fn message(id: u64, k: u64) -> [u8; MSG] {
    let mut m = [0u8; MSG];
    m[..4].copy_from_slice(&(id as u32).to_le_bytes());
    m[4..8].copy_from_slice(&(k as u32).to_le_bytes());
    let mut x =
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03)) | 1;
    for c in m[8..].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    m
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Failure {
    /// A socket error (RST, broken pipe, …) on either half.
    Reset,
    /// An echoed byte differs from the one sent.
    Corrupted,
    /// The end (EOF) came before every message was echoed.
    Ended,
    /// Nothing echoed, or a write blocked, for `STREAM_LIMIT`.
    Stalled,
}

/// What one stream saw over the whole run.
#[derive(Default)]
pub(crate) struct Flow {
    sent: u64,
    echoed: u64,
    /// The longest time between two consecutive echoes: in the whole run,
    /// before the first `SIGUSR2`, and of the gaps a `SIGUSR2` fell in.
    max_gap: Duration,
    max_gap_before: Duration,
    max_gap_handover: Duration,
    /// The gap each operation fell in (index: the operation's number − 1),
    /// when this stream saw one across it.
    gap_by_op: Vec<Duration>,
    corrupted_bytes: u64,
    pub(crate) failure: Option<(Failure, String)>,
}

impl Flow {
    fn fail(&mut self, f: Failure, why: String) {
        if self.failure.is_none() {
            self.failure = Some((f, why));
        }
    }
}

fn io_failure(e: &std::io::Error) -> Failure {
    use std::io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof => Failure::Ended,
        _ => Failure::Reset,
    }
}

/// What the streams share with the step.
#[derive(Clone)]
pub(crate) struct Shared {
    /// Writers stop (and half-close) when set.
    pub(crate) stop: Arc<AtomicBool>,
    /// Operations (`SIGUSR2`s, restarts, …) started so far: a gap across
    /// which it changed had one in it; gaps while it is 0 are the baseline.
    pub(crate) signals: Arc<AtomicU64>,
    /// Set while an operation runs that may take a while (a restart, a
    /// package install): every gap that overlaps it belongs to it, not only
    /// the one `signals` changed in.
    pub(crate) active: Arc<AtomicBool>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            stop: Arc::new(AtomicBool::new(false)),
            signals: Arc::new(AtomicU64::new(0)),
            active: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The load both steps carry: one checking writer per stream, each with the
/// count of its messages echoed so far.
pub(crate) struct Load {
    pub(crate) sh: Shared,
    pub(crate) counters: Vec<Arc<AtomicU64>>,
    tasks: Vec<tokio::task::JoinHandle<Flow>>,
}

impl Load {
    pub(crate) fn start(conns: Vec<TcpStream>, pace: Duration, max_msgs: u64) -> Load {
        let sh = Shared::new();
        let counters: Vec<Arc<AtomicU64>> = (0..conns.len())
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        let tasks = conns
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                tokio::spawn(run_flow(
                    s,
                    i as u64,
                    pace,
                    max_msgs,
                    sh.clone(),
                    counters[i].clone(),
                ))
            })
            .collect();
        Load {
            sh,
            counters,
            tasks,
        }
    }

    /// Every stream echoes within 30 s, before `first` (the first
    /// operation); else the load stops and the error says how many did not
    /// and the first reasons they ended (each waited for within `each`).
    pub(crate) async fn first_echoes(self, first: &str, each: Duration) -> Result<Load> {
        let n = self.counters.len();
        let Some(still) = all_move(&self.counters, &vec![0; n], Duration::from_secs(30)).await
        else {
            return Ok(self);
        };
        self.sh.stop.store(true, Ordering::Relaxed);
        let mut why = Vec::new();
        for (i, t) in self.tasks.into_iter().enumerate() {
            if let Ok(Ok(f)) = tokio::time::timeout(each, t).await
                && let Some((_, w)) = f.failure
            {
                why.push(format!("stream {i}: {w}"));
            }
        }
        why.truncate(5);
        bail!(
            "{still} of {n} streams echoed nothing in 30 s, before {first}: {}",
            why.join("; ")
        )
    }

    /// Stops the writers and collects every stream's account, each within `limit`.
    pub(crate) async fn finish(self, limit: Duration) -> Result<Vec<Flow>> {
        self.sh.stop.store(true, Ordering::Relaxed);
        let mut flows = Vec::new();
        for t in self.tasks {
            match tokio::time::timeout(limit, t).await {
                Ok(Ok(f)) => flows.push(f),
                Ok(Err(e)) => bail!("a stream's task: {e}"),
                Err(_) => bail!("a stream did not end within {limit:?}"),
            }
        }
        Ok(flows)
    }
}

/// How many of the streams opened after each operation still echo.
pub(crate) async fn still_echo(fresh: &mut [TcpStream]) -> usize {
    let mut ok = 0;
    for (i, s) in fresh.iter_mut().enumerate() {
        if echoes(s, format!("still there {i}").as_bytes())
            .await
            .is_ok()
        {
            ok += 1;
        }
    }
    ok
}

/// One stream: the writer sends message after message at `pace` until told
/// to stop, then half-closes; the reader checks every echoed byte, to the end.
pub(crate) async fn run_flow(
    s: TcpStream,
    id: u64,
    pace: Duration,
    max_msgs: u64,
    sh: Shared,
    echoed: Arc<AtomicU64>,
) -> Flow {
    let _ = s.set_nodelay(true);
    let (mut r, mut w) = s.into_split();
    let stop = sh.stop.clone();
    let writer = async move {
        // Spread the streams' phases over one period.
        tokio::time::sleep(pace.mul_f64((id.wrapping_mul(7919) % 1000) as f64 / 1000.0)).await;
        let mut tick = tokio::time::interval(pace);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut k = 0u64;
        while k < max_msgs && !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            match tokio::time::timeout(STREAM_LIMIT, w.write_all(&message(id, k))).await {
                Ok(Ok(())) => k += 1,
                Ok(Err(e)) => return (k, Some((io_failure(&e), format!("write {k}: {e}")))),
                Err(_) => {
                    return (
                        k,
                        Some((
                            Failure::Stalled,
                            format!("write {k} blocked {STREAM_LIMIT:?}"),
                        )),
                    );
                }
            }
        }
        match w.shutdown().await {
            Ok(()) => (k, None),
            Err(e) => (k, Some((io_failure(&e), format!("shutdown: {e}")))),
        }
    };
    let (signals, active) = (sh.signals.clone(), sh.active.clone());
    let reader = async move {
        let mut f = Flow::default();
        let mut buf = [0u8; MSG];
        let mut last: Option<Instant> = None;
        let (mut last_signals, mut last_active) = (0, false);
        loop {
            let mut filled = 0;
            while filled < MSG {
                match tokio::time::timeout(STREAM_LIMIT, r.read(&mut buf[filled..])).await {
                    Err(_) => {
                        f.fail(
                            Failure::Stalled,
                            format!("no echo for {STREAM_LIMIT:?} after {}", f.echoed),
                        );
                        return f;
                    }
                    Ok(Err(e)) => {
                        f.fail(io_failure(&e), format!("read after {}: {e}", f.echoed));
                        return f;
                    }
                    Ok(Ok(0)) => {
                        if filled > 0 {
                            f.fail(
                                Failure::Ended,
                                format!("EOF inside message {} ({filled} bytes)", f.echoed),
                            );
                        }
                        return f;
                    }
                    Ok(Ok(n)) => filled += n,
                }
            }
            let want = message(id, f.echoed);
            let bad = buf.iter().zip(&want).filter(|(a, b)| a != b).count() as u64;
            if bad > 0 {
                // Everything after is out of step: counted up to here.
                f.corrupted_bytes += bad;
                f.fail(
                    Failure::Corrupted,
                    format!("message {}: {bad} of {MSG} bytes differ", f.echoed),
                );
                return f;
            }
            let now = Instant::now();
            let sent = signals.load(Ordering::Relaxed);
            let running = active.load(Ordering::Relaxed);
            if let Some(l) = last {
                let gap = now - l;
                f.max_gap = f.max_gap.max(gap);
                if sent == 0 {
                    f.max_gap_before = f.max_gap_before.max(gap);
                }
                if sent > 0 && (sent != last_signals || running || last_active) {
                    f.max_gap_handover = f.max_gap_handover.max(gap);
                    let op = sent as usize - 1;
                    if f.gap_by_op.len() <= op {
                        f.gap_by_op.resize(op + 1, Duration::ZERO);
                    }
                    f.gap_by_op[op] = f.gap_by_op[op].max(gap);
                }
            }
            last = Some(now);
            last_signals = sent;
            last_active = running;
            f.echoed += 1;
            echoed.store(f.echoed, Ordering::Relaxed);
        }
    };
    let ((sent, werr), mut f) = tokio::join!(writer, reader);
    f.sent = sent;
    if let Some((kind, why)) = werr {
        f.fail(kind, why);
    }
    if f.failure.is_none() && f.echoed != f.sent {
        f.fail(
            Failure::Ended,
            format!("{} of {} messages echoed", f.echoed, f.sent),
        );
    }
    f
}

/// Waits (bounded) for a line `what` on the notify socket.
async fn expect_notify(sock: &UnixDatagram, what: &str, limit: Duration) -> Result<()> {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, sock.recv(&mut buf))
            .await
            .map_err(|_| anyhow!("no {what} within {limit:?}"))??;
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == what)
        {
            return Ok(());
        }
    }
}

/// Waits (bounded) until every stream has echoed more than it had in
/// `before`; `None` when some did not within `limit`.
pub(crate) async fn all_move(
    counters: &[Arc<AtomicU64>],
    before: &[u64],
    limit: Duration,
) -> Option<usize> {
    let end = Instant::now() + limit;
    loop {
        let still = counters
            .iter()
            .zip(before)
            .filter(|(c, b)| c.load(Ordering::Relaxed) <= **b)
            .count();
        if still == 0 {
            return None;
        }
        if Instant::now() > end {
            return Some(still);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) fn counts(counters: &[Arc<AtomicU64>]) -> Vec<u64> {
    counters.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

/// One message there and back within 5 s.
pub(crate) async fn echoes(s: &mut TcpStream, what: &[u8]) -> Result<()> {
    let mut back = vec![0u8; what.len()];
    tokio::time::timeout(Duration::from_secs(5), async {
        s.write_all(what).await?;
        s.read_exact(&mut back).await
    })
    .await
    .context("no echo within 5 s")??;
    anyhow::ensure!(back == what, "the echo differs");
    Ok(())
}

/// `open_connection`, connect, one echo: the time it took and the stream.
pub(crate) async fn new_stream(
    g: &Api,
    target: SocketAddr,
    n: usize,
) -> Result<(Duration, TcpStream)> {
    let t = Instant::now();
    let addr = g.open_vm(target, Some(&format!("bench-new-{n}"))).await?;
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    echoes(&mut s, format!("new tunnel after handover {n}").as_bytes()).await?;
    Ok((t.elapsed(), s))
}

/// stream id → (tunnel id, bytes to target, bytes to client), from
/// `get_connections`.
pub(crate) type Streams = BTreeMap<String, (String, u64, u64)>;

pub(crate) async fn streams(g: &Api) -> Result<Streams> {
    let (_, _, body) = g.get_connections().await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let mut out = BTreeMap::new();
    for t in v["tunnels"].as_array().context("tunnels")? {
        for s in t["streams"].as_array().context("streams")? {
            out.insert(
                s["id"].as_str().context("a stream id")?.to_string(),
                (
                    t["id"].as_str().unwrap_or_default().to_string(),
                    s["bytes_to_target"].as_u64().unwrap_or(0),
                    s["bytes_to_client"].as_u64().unwrap_or(0),
                ),
            );
        }
    }
    Ok(out)
}

/// What `get_connections` says across one handover: streams of `before`
/// missing after, moved to another tunnel, or with a counter gone down.
pub(crate) fn continued(before: &Streams, after: &Streams) -> (usize, usize, usize) {
    let (mut missing, mut moved, mut lower) = (0, 0, 0);
    for (id, (t, to_target, to_client)) in before {
        match after.get(id) {
            None => missing += 1,
            Some((t2, tt, tc)) => {
                if t2 != t {
                    moved += 1;
                }
                if tt < to_target || tc < to_client {
                    lower += 1;
                }
            }
        }
    }
    (missing, moved, lower)
}

/// One handover as the step saw it.
struct Row {
    /// `SIGUSR2` → `READY=1`, and `RELOADING=1` → `READY=1` (the streams
    /// are parked in between: after the binary's check, before the exec).
    ready: Option<Duration>,
    paused: Option<Duration>,
    /// `SIGUSR2` → every stream echoed again; or how many had not within 10 s.
    all_echo: Result<Duration, usize>,
    new_tunnel: Option<Duration>,
    same_pid: bool,
    /// (streams before, missing, moved, counters lower)
    ids: Option<(usize, usize, usize, usize)>,
    error: Option<String>,
}

impl Row {
    fn new() -> Self {
        Row {
            ready: None,
            paused: None,
            all_echo: Err(0),
            new_tunnel: None,
            same_pid: false,
            ids: None,
            error: None,
        }
    }
}

/// The new process's "taken over" log line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Takeover {
    pub tunnels: u64,
    pub streams: u64,
    pub failed: u64,
    /// How long the restore took in the new process (`restore_ms`).
    pub restore_ms: Option<u64>,
}

impl Takeover {
    pub(crate) const MARK: &'static str = "handover: tunnels and streams taken over";

    pub(crate) fn parse(line: &str) -> Option<Self> {
        line.contains(Self::MARK).then(|| Self {
            tunnels: field(line, "tunnels").unwrap_or(0),
            streams: field(line, "streams").unwrap_or(0),
            failed: field(line, "failed").unwrap_or(0),
            restore_ms: field(line, "restore_ms"),
        })
    }
}

impl std::fmt::Display for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} / {} / {}", self.tunnels, self.streams, self.failed)?;
        match self.restore_ms {
            Some(ms) => write!(f, " in {ms} ms"),
            None => Ok(()),
        }
    }
}

/// `key=N` in a log line.
pub(crate) fn field(line: &str, key: &str) -> Option<u64> {
    let pat = format!(" {key}=");
    let at = line.find(&pat)? + pat.len();
    let digits: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The gateway's log lines (colours removed).
fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(strip_ansi)
        .collect()
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// The streams' figures at the end of a run.
pub(crate) struct Tally {
    pub(crate) total: usize,
    pub(crate) intact: usize,
    pub(crate) resets: usize,
    pub(crate) corrupt_streams: usize,
    pub(crate) corrupted_bytes: u64,
    pub(crate) ended: usize,
    pub(crate) stalled: usize,
    pub(crate) echoed: u64,
    /// Per stream, sorted (µs): the longest gap of the whole run, before the
    /// first operation, and of the gaps an operation fell in.
    pub(crate) gaps: Vec<u32>,
    pub(crate) base: Vec<u32>,
    pub(crate) across: Vec<u32>,
    /// Per operation, per stream that saw a gap across it, sorted (µs).
    pub(crate) by_op: Vec<Vec<u32>>,
}

impl Tally {
    pub(crate) fn of(flows: &[Flow]) -> Tally {
        let count = |k: Failure| {
            flows
                .iter()
                .filter(|f| matches!(f.failure, Some((x, _)) if x == k))
                .count()
        };
        let sorted = |g: fn(&Flow) -> Duration| {
            let mut v: Vec<u32> = flows.iter().map(|f| g(f).as_micros() as u32).collect();
            v.sort_unstable();
            v
        };
        let ops = flows.iter().map(|f| f.gap_by_op.len()).max().unwrap_or(0);
        let by_op = (0..ops)
            .map(|op| {
                let mut v: Vec<u32> = flows
                    .iter()
                    .filter_map(|f| f.gap_by_op.get(op))
                    .filter(|d| !d.is_zero())
                    .map(|d| d.as_micros() as u32)
                    .collect();
                v.sort_unstable();
                v
            })
            .collect();
        Tally {
            total: flows.len(),
            intact: flows.iter().filter(|f| f.failure.is_none()).count(),
            resets: count(Failure::Reset),
            corrupt_streams: count(Failure::Corrupted),
            corrupted_bytes: flows.iter().map(|f| f.corrupted_bytes).sum(),
            ended: count(Failure::Ended),
            stalled: count(Failure::Stalled),
            echoed: flows.iter().map(|f| f.echoed).sum(),
            gaps: sorted(|f| f.max_gap),
            base: sorted(|f| f.max_gap_before),
            across: sorted(|f| f.max_gap_handover),
            by_op,
        }
    }

    /// The first few failures, one line each.
    pub(crate) fn failures(flows: &[Flow]) -> Vec<String> {
        flows
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.failure.as_ref().map(|(_, w)| format!("stream {i}: {w}")))
            .take(5)
            .collect()
    }
}

/// Percentile `p` of sorted µs, in ms.
pub(crate) fn q(v: &[u32], p: f64) -> f64 {
    pct(v, p) / 1000.0
}

pub async fn step_handover(ctx: &Ctx, rep: &mut Report) -> Result<()> {
    let a = &ctx.args;
    let streams_n = a.handover_streams.max(1);
    let tunnels = a.handover_tunnels.clamp(1, streams_n);
    let handovers = a.handovers;
    let pace = Duration::from_millis(a.handover_ms.max(1));

    // A copy of the binary of its own: the daemon executes the file at its
    // path at each handover, and a build going on beside the bench may
    // rewrite target/.
    let dir = ctx.dir.join("handover");
    std::fs::create_dir_all(&dir)?;
    let bin = dir.join("vdi-gateway");
    std::fs::copy(&ctx.bin, &bin).with_context(|| format!("copy {}", ctx.bin.display()))?;
    let notify_path = dir.join("notify");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path)?;
    let log = dir.join("gateway.log");
    let (n, addr) = ctx.next_gateway_ip();
    let name = format!("{n}-handover");
    let mut spec = GatewaySpec::new(&bin, &ctx.dir, &name, addr, 17_100);
    spec.cpus = ctx.relay_cpus();
    spec.log = Some(log.clone());
    spec.env.push(("VDI_GATEWAY_LOG", "info".into()));
    spec.env
        .push(("NOTIFY_SOCKET", notify_path.display().to_string()));
    // One port per tunnel, and one per handover's new tunnel.
    let need = (tunnels + handovers + 16).min(u16::MAX as usize / 2) as u16;
    if spec.range.1 - spec.range.0 + 1 < need {
        spec.range.1 = spec.range.0 + need - 1;
    }
    let mut g = procs::gateway(spec).await?;
    // The process is replaced: no pooled API connection across it.
    g.http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    expect_notify(&notify, "READY=1", HANDOVER_LIMIT)
        .await
        .context("the gateway's first READY=1")?;
    let pid = g.pid();

    let mut addrs = Vec::new();
    for t in 0..tunnels {
        // A vm each: one tunnel (port) each.
        addrs.push(
            g.open_vm(ctx.echo_addr, Some(&format!("bench-{t}")))
                .await?,
        );
    }
    let ports: std::collections::BTreeSet<u16> = addrs.iter().map(|a| a.port()).collect();
    anyhow::ensure!(
        ports.len() == tunnels,
        "{} distinct tunnel ports for {tunnels} tunnels",
        ports.len()
    );
    let conns = connect_many(&addrs, streams_n).await?;
    g.wait_streams(streams_n).await?;
    // Bounded: the writers stop at the step's end or after this many.
    let run_limit = Duration::from_secs(120) + (HANDOVER_LIMIT + BETWEEN * 3) * handovers as u32;
    let max_msgs = (run_limit.as_millis() / pace.as_millis()) as u64;
    let load = Load::start(conns, pace, max_msgs);
    let started = Instant::now();
    // Not the handover's doing if this fails: it says what ended them.
    let load = load.first_echoes("any handover", STREAM_LIMIT * 2).await?;
    let (sh, counters) = (load.sh.clone(), load.counters.clone());
    // A baseline without handovers.
    tokio::time::sleep(Duration::from_secs(if a.smoke { 1 } else { 3 })).await;

    let mut rows: Vec<Row> = Vec::new();
    let mut fresh: Vec<TcpStream> = Vec::new();
    for h in 0..handovers {
        let mut row = Row::new();
        let before = streams(&g).await?;
        let moved_before = counts(&counters);
        let t = Instant::now();
        sh.signals.fetch_add(1, Ordering::Relaxed);
        // Safety: a signal to our own child.
        unsafe { libc::kill(pid as i32, libc::SIGUSR2) };
        let handed = async {
            expect_notify(&notify, "RELOADING=1", HANDOVER_LIMIT).await?;
            let reloading = Instant::now();
            expect_notify(&notify, "READY=1", HANDOVER_LIMIT).await?;
            Result::<_>::Ok(reloading)
        }
        .await;
        let reloading = match handed {
            Ok(r) => r,
            Err(e) => {
                row.error = Some(format!("{e:#}"));
                rows.push(row);
                break;
            }
        };
        let ready_at = Instant::now();
        row.ready = Some(t.elapsed());
        row.paused = Some(ready_at - reloading);
        row.all_echo = match all_move(&counters, &moved_before, Duration::from_secs(10)).await {
            None => Ok(t.elapsed()),
            Some(still) => Err(still),
        };
        match new_stream(&g, ctx.echo_addr, h + 1).await {
            Ok((took, s)) => {
                row.new_tunnel = Some(took);
                fresh.push(s);
            }
            Err(e) => row.error = Some(format!("new tunnel: {e:#}")),
        }
        match streams(&g).await {
            Ok(after) => {
                let (missing, moved, lower) = continued(&before, &after);
                row.ids = Some((before.len(), missing, moved, lower));
            }
            Err(e) => row.error = Some(format!("get_connections: {e:#}")),
        }
        row.same_pid = g.proc.0.try_wait().ok().flatten().is_none()
            && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == bin);
        rows.push(row);
        tokio::time::sleep(BETWEEN.saturating_sub(ready_at.elapsed())).await;
    }
    // The tail: streams run on a little after the last handover, then end.
    tokio::time::sleep(Duration::from_secs(if a.smoke { 1 } else { 2 })).await;
    let ran = started.elapsed();
    let flows = load.finish(STREAM_LIMIT * 2).await?;
    let fresh_ok = still_echo(&mut fresh).await;
    let alive = g.proc.0.try_wait().ok().flatten().is_none();

    // What the gateway logged of each handover.
    let lines = log_lines(&log);
    let quiesced: Vec<u64> = lines
        .iter()
        .filter(|l| l.contains("handover: executing the binary on disk"))
        .filter_map(|l| field(l, "quiesced_ms"))
        .collect();
    let taken: Vec<Takeover> = lines.iter().filter_map(|l| Takeover::parse(l)).collect();
    let mut odd: BTreeMap<String, usize> = BTreeMap::new();
    for l in &lines {
        if l.contains(" WARN ") || l.contains(" ERROR ") {
            // Without its timestamp, so equal lines count together.
            let key = l.split_once(' ').map_or(l.as_str(), |(_, r)| r).trim();
            *odd.entry(key.to_string()).or_default() += 1;
        }
    }

    // Figures.
    let t = Tally::of(&flows);
    let Tally {
        total,
        intact,
        resets,
        corrupt_streams,
        corrupted_bytes,
        ended,
        stalled,
        echoed,
        ..
    } = t;
    let (gaps, base, across) = (&t.gaps, &t.base, &t.across);
    let (p50, p99, max) = (q(gaps, 0.5), q(gaps, 0.99), q(gaps, 1.0));
    let done = rows.iter().filter(|r| r.ready.is_some()).count();
    let ids_ok =
        rows.iter().all(|r| matches!(r.ids, Some((_, 0, 0, 0)))) && rows.len() == handovers;
    let new_ok = rows.iter().filter(|r| r.new_tunnel.is_some()).count();
    let mut qs = quiesced.clone();
    qs.sort_unstable();
    let mut paused: Vec<u32> = rows
        .iter()
        .filter_map(|r| r.paused.map(|d| d.as_micros() as u32))
        .collect();
    paused.sort_unstable();
    let mut readies: Vec<u32> = rows
        .iter()
        .filter_map(|r| r.ready.map(|d| d.as_micros() as u32))
        .collect();
    readies.sort_unstable();

    rep.line(format!(
        "## Handover under load: {handovers} × SIGUSR2 (re-execution in place) on one gateway, {streams_n} streams over {tunnels} tunnels, each echoing a {MSG}-byte message every {} ms",
        pace.as_millis()
    ));
    rep.line(format!(
        "Every echoed byte checked; {:.1} s of traffic, {echoed} messages ({:.1} MB each way) echoed. Stall: a stream's longest time between two consecutive echoes (the {} ms pace included).",
        ran.as_secs_f64(),
        echoed as f64 * MSG as f64 / 1e6,
        pace.as_millis()
    ));
    rep.line("| # | SIGUSR2 → READY=1 | RELOADING=1 → READY=1 | quiesced (gateway log) | taken over: tunnels / streams / failed, restore time (log) | every stream echoing again (from SIGUSR2) | new tunnel → first echo | stream ids kept, counters not lower | same PID, binary |");
    rep.line("|---|---|---|---|---|---|---|---|---|");
    for (i, r) in rows.iter().enumerate() {
        let dash = || "—".to_string();
        rep.line(format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            r.ready.map_or_else(dash, ms),
            r.paused.map_or_else(dash, ms),
            quiesced.get(i).map_or_else(dash, |q| format!("{q} ms")),
            taken.get(i).map_or_else(dash, Takeover::to_string),
            match r.all_echo {
                Ok(d) if r.ready.is_some() => ms(d),
                Err(n) if r.ready.is_some() => format!("❌ {n} still silent after 10 s"),
                _ => dash(),
            },
            r.new_tunnel.map_or_else(dash, ms),
            match r.ids {
                Some((n, 0, 0, 0)) => format!("✅ {n}/{n}"),
                Some((n, missing, moved, lower)) => format!(
                    "❌ of {n}: {missing} missing, {moved} in another tunnel, {lower} lower"
                ),
                None => dash(),
            },
            if r.ready.is_some() {
                verdict(r.same_pid).to_string()
            } else {
                dash()
            },
        ));
        if let Some(e) = &r.error {
            rep.line(format!("| | ❌ {e} | | | | | | | |"));
        }
    }
    rep.line(String::new());
    rep.line(format!(
        "- streams intact (every message echoed, every byte equal): **{intact}/{total}**; resets {resets}, corrupted {corrupt_streams} ({corrupted_bytes} bytes), ended early {ended}, stalled > {} s {stalled}",
        STREAM_LIMIT.as_secs()
    ));
    rep.line(format!(
        "- stall per stream over the whole run: p50 **{p50:.0} ms**, p99 **{p99:.0} ms**, max **{max:.0} ms**; before the first handover (baseline, same load): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        q(base, 0.5),
        q(base, 0.99),
        q(base, 1.0)
    ));
    rep.line(format!(
        "- the gap a SIGUSR2 fell in (last echo before it → first after), per stream, the worst of its {handovers} handovers: p50 **{:.0} ms**, p99 **{:.0} ms**, max **{:.0} ms**",
        q(across, 0.5),
        q(across, 0.99),
        q(across, 1.0)
    ));
    rep.line(format!(
        "- handovers completed {done}/{handovers}; SIGUSR2 → READY=1 p50 {:.0} ms, max {:.0} ms; RELOADING=1 → READY=1 (streams parked, exec, taken over) p50 {:.0} ms, max {:.0} ms; quiesced_ms (the gateway's log, {} lines) p50 {:.0}, max {:.0}; taken-over lines {}",
        q(&readies, 0.5),
        q(&readies, 1.0),
        q(&paused, 0.5),
        q(&paused, 1.0),
        quiesced.len(),
        pct(&qs.iter().map(|x| *x as u32).collect::<Vec<_>>(), 0.5),
        qs.last().copied().unwrap_or(0),
        taken.len()
    ));
    rep.line(format!(
        "- a new tunnel after each handover: {new_ok}/{handovers} echoed; still echoing at the end: {fresh_ok}/{}; gateway alive at the end: {}",
        fresh.len(),
        verdict(alive)
    ));
    for why in Tally::failures(&flows) {
        rep.line(format!("- {why}"));
    }
    for (l, n) in odd.iter().take(10) {
        rep.line(format!("- gateway log ({n}×): `{l}`"));
    }

    let lost = total - intact;
    ctx.summary(
        &format!("handover: streams intact over {handovers} SIGUSR2 ({total} streams)"),
        format!(
            "{} {intact}/{total}",
            verdict(lost == 0 && done == handovers)
        ),
        "all",
    );
    ctx.summary(
        "handover: resets / corrupted bytes",
        format!(
            "{} {resets} / {corrupted_bytes}",
            verdict(resets == 0 && corrupted_bytes == 0)
        ),
        "0 / 0",
    );
    ctx.summary(
        "handover: stall per stream, p99 / max",
        format!(
            "**{p99:.0} ms** / **{max:.0} ms** (p50 {p50:.0} ms; without a handover: p99 {:.0} ms, max {:.0} ms; the gap a SIGUSR2 fell in: p99 {:.0} ms, max {:.0} ms)",
            q(base, 0.99),
            q(base, 1.0),
            q(across, 0.99),
            q(across, 1.0)
        ),
        &format!(
            "≤ 300 ms / ≤ 1 s {}",
            verdict(p99 <= 300.0 && max <= 1000.0)
        ),
    );
    ctx.summary(
        "handover: quiesced_ms (gateway log), max",
        format!("{} ms", qs.last().copied().unwrap_or(0)),
        "—",
    );
    ctx.summary(
        "handover: stream ids and counters continued (`get_connections`)",
        format!("{} {done} handover(s)", verdict(ids_ok)),
        "all",
    );
    if lost > 0 || done < handovers || !alive {
        bail!(
            "handover: {lost} of {total} streams lost or corrupted, {done} of {handovers} handovers completed, gateway alive: {alive}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_line_parses_with_and_without_its_restore_time() {
        let now = "INFO vdi_gateway: handover: tunnels and streams taken over from the previous process tunnels=10 streams=1000 failed=0 restore_ms=37";
        let t = Takeover::parse(now).unwrap();
        assert_eq!(
            (t.tunnels, t.streams, t.failed, t.restore_ms),
            (10, 1000, 0, Some(37))
        );
        assert_eq!(t.to_string(), "10 / 1000 / 0 in 37 ms");
        // An older build's line has no restore time.
        let old = "handover: tunnels and streams taken over tunnels=2 streams=5 failed=1";
        assert_eq!(Takeover::parse(old).unwrap().to_string(), "2 / 5 / 1");
        assert_eq!(Takeover::parse("serving startup_ms=70"), None);
    }

    #[test]
    fn messages_differ_and_repeat() {
        assert_eq!(message(3, 7), message(3, 7));
        assert_ne!(message(3, 7), message(3, 8));
        assert_ne!(message(3, 7), message(4, 7));
    }

    #[test]
    fn log_fields() {
        let l = "2026-12-03T18:00:00Z  INFO vdi_gateway::cli: handover: executing the binary on disk binary=/x tunnels=100 streams=1000 bytes_in_flight=0 quiesced_ms=42";
        assert_eq!(field(l, "quiesced_ms"), Some(42));
        assert_eq!(field(l, "streams"), Some(1000));
        assert_eq!(field(l, "failed"), None);
    }
}
