//! Tunnels: one allocated port bound to one target, carrying any number of TCP
//! streams (and WebSocket streams from `/v3/connect/`). See `docs/tunnels.md`.
//!
//! Task tree: each tunnel owns a `TaskTracker` holding its accept loops, its
//! lifecycle task and its streams; its `CancellationToken` is a child of the
//! gateway's, so shutdown reaches every stream.

use crate::handover::{Blob, HandoverError, Inherited, Span, StreamRec, TunnelRec};
use crate::metrics::{Metrics, Refusal};
use crate::relay::{self, Begin, Counters, RelayError, Sniffing, Start};
use chrono::{DateTime, Utc};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use vdi_core::lifecycle::{self, Lifecycle};
use vdi_core::ports::PortPool;
use vdi_core::proxy;
use vdi_core::settings as rules;
use vdi_wire::OpenConnection;
use vdi_wire::{Settings, StreamInfo, StreamVia, TunnelInfo, TunnelState};

pub struct Registry {
    inner: Mutex<Inner>,
    per_client: ClientStreams,
    next_stream: AtomicU64,
    metrics: Arc<Metrics>,
    /// Fired once, when the process hands its streams to the next one: every
    /// accept loop stops and gives its listener back, every spliced stream
    /// parks at a chunk boundary (`handover.rs`).
    handover: CancellationToken,
    parked: Arc<Mutex<ParkedSet>>,
    changes: Arc<Changes>,
}

/// The registry's structural changes, for `get_connections?since=`: a
/// generation counter, the generation each tunnel last changed at, and the
/// tunnels removed lately. Byte counters and `last_activity` move all the
/// time and are not changes (a changed tunnel is reported whole, with its
/// figures as they are).
///
/// Invariant: a tunnel is stamped *after* the change it reports is visible
/// (in the map, in its stream list), under the log's lock; a reader takes
/// its cursor under that lock *before* it looks. So a change is either seen
/// by this read or stamped above its cursor, and reported by the next one.
pub struct Changes {
    /// Random per process: a cursor from a previous process (a restart or
    /// a handover) gets the whole document.
    epoch: u32,
    log: Mutex<ChangeLog>,
}

#[derive(Default)]
struct ChangeLog {
    generation: u64,
    /// Deltas are exact only from this generation on (tombstones dropped,
    /// or a settings change that moves every `expires_at`).
    floor: u64,
    removed: std::collections::VecDeque<(u64, String)>,
}

/// Removed tunnel ids kept for deltas: a broker that polls less often than
/// this many closes gets the whole document, flagged `full`.
const REMOVED_KEPT: usize = 4096;

/// An opaque position in the registry's changes: `<epoch hex>.<generation>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    epoch: u32,
    generation: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}.{}", self.epoch, self.generation)
    }
}

impl std::str::FromStr for Cursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (e, g) = s.split_once('.').ok_or(())?;
        if e.len() != 8 || !(1..=20).contains(&g.len()) || !g.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        // The grammar (and the OpenAPI pattern) is 1 to 20 digits; one past
        // u64 cannot be ours, so it saturates to "newer than this gateway",
        // which `read` answers with the full document, like any stale cursor.
        let generation = g.parse::<u128>().map_err(|_| ())?;
        Ok(Cursor {
            epoch: u32::from_str_radix(e, 16).map_err(|_| ())?,
            generation: u64::try_from(generation).unwrap_or(u64::MAX),
        })
    }
}

/// What a read of the changes answers.
#[derive(Debug, PartialEq, Eq)]
pub struct Delta {
    /// Where the next read starts.
    pub cursor: Cursor,
    /// `Some(g)`: report the tunnels changed after `g` and `removed`;
    /// `None`: report everything (no cursor, or one this log cannot serve).
    pub after: Option<u64>,
    pub removed: Vec<String>,
}

impl Changes {
    fn new(epoch: u32) -> Self {
        Self {
            epoch,
            log: Mutex::new(ChangeLog::default()),
        }
    }

    /// Marks `t` changed (call after the change is visible).
    fn touch(&self, t: &Tunnel) {
        let mut log = self.log.lock().unwrap();
        log.generation += 1;
        t.changed_at.store(log.generation, Ordering::Relaxed);
    }

    /// Records that tunnel `id` left the registry (call after it did).
    fn removed(&self, id: &str) {
        let mut log = self.log.lock().unwrap();
        log.generation += 1;
        let g = log.generation;
        log.removed.push_back((g, id.to_string()));
        if log.removed.len() > REMOVED_KEPT
            && let Some((dropped, _)) = log.removed.pop_front()
        {
            // Never lower: a settings change may have raised it past.
            log.floor = log.floor.max(dropped);
        }
    }

    /// Every tunnel counts as changed (a setting that moves them all).
    fn everything(&self) {
        let mut log = self.log.lock().unwrap();
        log.generation += 1;
        log.floor = log.generation;
    }

    /// The answer to a read from `since`.
    pub fn read(&self, since: Option<Cursor>) -> Delta {
        let log = self.log.lock().unwrap();
        let cursor = Cursor {
            epoch: self.epoch,
            generation: log.generation,
        };
        match since {
            Some(c)
                if c.epoch == self.epoch
                    && c.generation >= log.floor
                    && c.generation <= log.generation =>
            {
                Delta {
                    cursor,
                    after: Some(c.generation),
                    removed: log
                        .removed
                        .iter()
                        .filter(|(g, _)| *g > c.generation)
                        .map(|(_, id)| id.clone())
                        .collect(),
                }
            }
            _ => Delta {
                cursor,
                after: None,
                removed: Vec::new(),
            },
        }
    }
}

/// What stopped for a handover, collected as it stops.
#[derive(Default)]
pub struct ParkedSet {
    /// Tunnel listeners, by tunnel id.
    pub listeners: Vec<(String, TcpListener)>,
    pub streams: Vec<ParkedStream>,
}

pub struct ParkedStream {
    pub tunnel: String,
    pub stream: Arc<Stream>,
    pub relay: Box<relay::Parked>,
}

struct Inner {
    pool: PortPool,
    tunnels: HashMap<String, Arc<Tunnel>>,
}

/// Streams per client address, over all tunnels (`max_streams_per_client`).
type ClientStreams = Arc<Mutex<HashMap<IpAddr, u32>>>;

/// A stream's place in its client's count, given back when the stream goes.
struct ClientSlot {
    counts: ClientStreams,
    ip: IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// What `open_connection` asked for, the address its target resolved to (and
/// was allowed), and who asked.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    pub open: OpenConnection,
    pub target_addr: SocketAddr,
    /// The real client of the `open_connection` request.
    pub opened_by: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum NoTunnel {
    #[error("no free port: all {size} ports of {start}-{stop} are in use or unavailable")]
    NoFreePort { start: u16, stop: u16, size: usize },
    #[error("client {client} holds {max} tunnels already (max_tunnels_per_client)")]
    TooManyTunnels { client: IpAddr, max: u32 },
    #[error("this node is handing its streams to a new process (a few milliseconds): try again")]
    Restarting,
}

/// Why a stream is not admitted to a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("tunnel is closing")]
    Closing,
    #[error("tunnel carries {0} streams already (max_streams_per_tunnel)")]
    Full(u32),
    #[error("client has {0} streams already (max_streams_per_client)")]
    ClientFull(u32),
    #[error("the tunnel serves only the client that opened it")]
    ClientMismatch,
}

impl Refused {
    /// The `reason` label of `vdi_gateway_connections_refused_total`.
    pub fn reason(self) -> Refusal {
        match self {
            Refused::Closing | Refused::Full(_) => Refusal::StreamLimit,
            Refused::ClientFull(_) => Refusal::ClientStreamLimit,
            Refused::ClientMismatch => Refusal::ClientMismatch,
        }
    }
}

pub struct Tunnel {
    pub id: String,
    pub port: u16,
    pub req: OpenRequest,
    pub created_at: DateTime<Utc>,
    token: CancellationToken,
    handover: CancellationToken,
    parked: Arc<Mutex<ParkedSet>>,
    tasks: TaskTracker,
    /// Set once every listener and stream of the tunnel is gone.
    closed: CancellationToken,
    life: Mutex<Life>,
    streams: Mutex<BTreeMap<u64, Arc<Stream>>>,
    changed: Notify,
    changes: Arc<Changes>,
    /// The generation of its last structural change (see [`Changes`]).
    changed_at: AtomicU64,
}

struct Life {
    reserved_until: Instant,
    last_stream_end: Option<Instant>,
}

pub struct Stream {
    pub id: u64,
    pub via: StreamVia,
    pub started_at: DateTime<Utc>,
    pub counters: Counters,
    token: CancellationToken,
    done: CancellationToken,
    _slot: Option<ClientSlot>,
}

pub fn stream_id(n: u64) -> String {
    format!("s{n}")
}

impl Registry {
    pub fn new(range: std::ops::RangeInclusive<u16>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                pool: PortPool::new(range),
                tunnels: HashMap::new(),
            }),
            per_client: Default::default(),
            next_stream: AtomicU64::new(1),
            metrics,
            handover: CancellationToken::new(),
            parked: Default::default(),
            changes: Arc::new(Changes::new(rand::random())),
        }
    }

    /// The structural changes, for `get_connections?since=`.
    pub fn changes(&self) -> &Changes {
        &self.changes
    }

    /// A settings change: every `expires_at` may move, so no delta spans it.
    pub fn settings_changed(&self) {
        self.changes.everything();
    }

    /// The handover token (see the field).
    pub fn handover(&self) -> &CancellationToken {
        &self.handover
    }

    /// Fires the handover token (under the registry's lock: no tunnel opens
    /// past it) and returns every tunnel there is.
    pub fn begin_handover(&self) -> Vec<Arc<Tunnel>> {
        let inner = self.inner.lock().unwrap();
        self.handover.cancel();
        inner.tunnels.values().cloned().collect()
    }

    /// Takes what parked since the handover began.
    pub fn take_parked(&self) -> ParkedSet {
        std::mem::take(&mut *self.parked.lock().unwrap())
    }

    /// The next stream id to hand out.
    pub fn next_stream_id(&self) -> u64 {
        self.next_stream.load(Ordering::Relaxed)
    }

    fn new_tunnel(
        &self,
        id: String,
        port: u16,
        req: OpenRequest,
        created_at: DateTime<Utc>,
        life: Life,
        parent: &CancellationToken,
    ) -> Arc<Tunnel> {
        Arc::new(Tunnel {
            id,
            port,
            req,
            created_at,
            token: parent.child_token(),
            handover: self.handover.clone(),
            parked: self.parked.clone(),
            tasks: TaskTracker::new(),
            closed: CancellationToken::new(),
            life: Mutex::new(life),
            streams: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
            changes: self.changes.clone(),
            changed_at: AtomicU64::new(0),
        })
    }

    /// Starts a registered tunnel's accept loops (one per listener) and its
    /// lifecycle task.
    fn run_tunnel(
        self: &Arc<Self>,
        tunnel: &Arc<Tunnel>,
        listeners: Vec<TcpListener>,
        settings: watch::Receiver<Arc<Settings>>,
    ) {
        let span = tracing::info_span!("tunnel", id = %tunnel.id, port = tunnel.port);
        for listener in listeners {
            let (reg, t, s) = (self.clone(), tunnel.clone(), settings.clone());
            tunnel
                .tasks
                .spawn(accept_loop(reg, t, listener, s).instrument(span.clone()));
        }
        let (reg, t) = (self.clone(), tunnel.clone());
        // The lifecycle task is not in the tunnel's tracker: it waits for it.
        tokio::spawn(lifecycle_task(reg, t, settings).instrument(span));
    }

    pub fn set_range(&self, range: std::ops::RangeInclusive<u16>) {
        self.inner.lock().unwrap().pool.set_range(range);
    }

    /// (tunnels, streams, ports in use, ports free)
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let inner = self.inner.lock().unwrap();
        let streams = inner.tunnels.values().map(|t| t.stream_count()).sum();
        (
            inner.tunnels.len(),
            streams,
            inner.pool.in_use(),
            inner.pool.free(),
        )
    }

    pub fn get(&self, id: &str) -> Option<Arc<Tunnel>> {
        let t = self.inner.lock().unwrap().tunnels.get(id).cloned();
        t.filter(|t| !t.token.is_cancelled())
    }

    /// Every tunnel, oldest first.
    pub fn all(&self) -> Vec<Arc<Tunnel>> {
        let mut all: Vec<_> = self
            .inner
            .lock()
            .unwrap()
            .tunnels
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    /// The open tunnel for the same vm and target, if any, reserved anew;
    /// with `opener`, only one that client opened (a bound tunnel would not
    /// serve anyone else).
    pub fn reuse(
        &self,
        req: &OpenConnection,
        opener: Option<IpAddr>,
        ttl: Duration,
    ) -> Option<Arc<Tunnel>> {
        let inner = self.inner.lock().unwrap();
        let t = inner.tunnels.values().find(|t| {
            !t.token.is_cancelled()
                && vdi_core::open::reuses(&t.req.open, req)
                && opener.is_none_or(|ip| t.req.opened_by.ip() == ip)
        })?;
        t.reserve(ttl);
        Some(t.clone())
    }

    /// Allocates a port, binds it on every local address and starts the tunnel.
    pub fn open(
        self: &Arc<Self>,
        req: OpenRequest,
        local_addrs: &[IpAddr],
        settings: watch::Receiver<Arc<Settings>>,
        parent: &CancellationToken,
    ) -> Result<Arc<Tunnel>, NoTunnel> {
        let (ttl, max) = {
            let s = settings.borrow();
            (
                Duration::from_secs(rules::tunnel_ttl_secs(&s)),
                rules::max_tunnels_per_client(&s),
            )
        };
        let mut inner = self.inner.lock().unwrap();
        // Under the lock `begin_handover` takes: a tunnel is either in the
        // snapshot or never opened.
        if self.handover.is_cancelled() {
            return Err(NoTunnel::Restarting);
        }
        let client = req.opened_by.ip();
        let held = inner
            .tunnels
            .values()
            .filter(|t| !t.token.is_cancelled() && t.req.opened_by.ip() == client)
            .count();
        if held >= max as usize {
            self.metrics.refused(Refusal::TooManyTunnels);
            return Err(NoTunnel::TooManyTunnels { client, max });
        }
        let candidates = inner.pool.candidates(Instant::now(), rand::random());
        let bound = candidates
            .into_iter()
            .find_map(|port| bind_all(local_addrs, port).ok().map(|ls| (port, ls)));
        let Some((port, listeners)) = bound else {
            self.metrics.refused(Refusal::NoFreePort);
            let range = inner.pool.range();
            return Err(NoTunnel::NoFreePort {
                start: *range.start(),
                stop: *range.end(),
                size: range.count(),
            });
        };
        inner.pool.claim(port);
        let life = Life {
            reserved_until: Instant::now() + ttl,
            last_stream_end: None,
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tunnel = self.new_tunnel(id, port, req, Utc::now(), life, parent);
        inner.tunnels.insert(tunnel.id.clone(), tunnel.clone());
        drop(inner);
        self.changes.touch(&tunnel);
        self.metrics.tunnels_opened.inc();
        tracing::info!(
            tunnel = %tunnel.id,
            port,
            target = %tunnel.req.target_addr,
            target_host = %tunnel.req.open.target_host,
            vm_id = tunnel.req.open.vm_id.as_deref().unwrap_or("-"),
            protocol = tunnel.req.open.protocol.as_deref().unwrap_or("-"),
            opened_by = %tunnel.req.opened_by,
            "tunnel open"
        );
        self.run_tunnel(&tunnel, listeners, settings);
        Ok(tunnel)
    }

    fn remove(&self, t: &Tunnel) {
        let mut inner = self.inner.lock().unwrap();
        inner.tunnels.remove(&t.id);
        inner.pool.release(t.port, Instant::now());
        drop(inner);
        self.changes.removed(&t.id);
    }

    /// Finds a stream by its id (`s42`).
    pub fn find_stream(&self, id: &str) -> Option<(Arc<Tunnel>, Arc<Stream>)> {
        let n: u64 = id.strip_prefix('s')?.parse().ok()?;
        self.all().into_iter().find_map(|t| {
            let s = t.streams.lock().unwrap().get(&n).cloned();
            s.map(|s| (t, s))
        })
    }

    /// Admits a new stream from `client` to `t` (TCP or WebSocket: the one
    /// admission path), unless the tunnel serves another client, is closing
    /// or full, or the client has its share of streams; a refusal is counted
    /// and logged here. Called before the target is dialled.
    pub fn admit(
        &self,
        t: &Arc<Tunnel>,
        client: SocketAddr,
        via: StreamVia,
        settings: &Settings,
    ) -> Result<Arc<Stream>, Refused> {
        let refused = |why: Refused| self.refuse(t, client, via, why);
        if rules::client_binding(settings) && client.ip() != t.req.opened_by.ip() {
            return Err(refused(Refused::ClientMismatch));
        }
        let max = rules::max_streams_per_tunnel(settings);
        let per_client = rules::max_streams_per_client(settings);
        let mut streams = t.streams.lock().unwrap();
        if t.token.is_cancelled() {
            return Err(refused(Refused::Closing));
        }
        if streams.len() >= max as usize {
            return Err(refused(Refused::Full(max)));
        }
        // A trusted proxy as the client (binding off: HAProxy's connections
        // are admitted before its header is read) carries many clients: it is
        // not capped as one; HAProxy caps its sources at the edge.
        let slot = if proxy::is_trusted(client.ip(), &settings.internal_addrs) {
            None
        } else {
            let mut counts = self.per_client.lock().unwrap();
            let n = counts.entry(client.ip()).or_insert(0);
            if *n >= per_client {
                drop(counts);
                return Err(refused(Refused::ClientFull(per_client)));
            }
            *n += 1;
            Some(ClientSlot {
                counts: self.per_client.clone(),
                ip: client.ip(),
            })
        };
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let s = Arc::new(Stream {
            id,
            via,
            started_at: Utc::now(),
            counters: Counters::new(client, self.metrics.clone()),
            token: t.token.child_token(),
            done: CancellationToken::new(),
            _slot: slot,
        });
        streams.insert(id, s.clone());
        self.metrics.streams_accepted.inc();
        drop(streams);
        self.changes.touch(t);
        t.changed.notify_one();
        Ok(s)
    }

    /// Counts and logs a refused stream.
    pub fn refuse(&self, t: &Tunnel, client: SocketAddr, via: StreamVia, why: Refused) -> Refused {
        self.metrics.refused(why.reason());
        tracing::warn!(%client, ?via, opened_by = %t.req.opened_by, reason = %why, "stream refused");
        why
    }
}

impl Tunnel {
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub fn stream_count(&self) -> usize {
        self.streams.lock().unwrap().len()
    }

    /// Whether it changed after generation `g` (see [`Changes`]).
    pub fn changed_after(&self, g: u64) -> bool {
        self.changed_at.load(Ordering::Relaxed) > g
    }

    fn reserve(&self, ttl: Duration) {
        let mut life = self.life.lock().unwrap();
        life.reserved_until = life.reserved_until.max(Instant::now() + ttl);
        drop(life);
        self.changes.touch(self);
        self.changed.notify_one();
    }

    fn phase(&self, idle: Duration) -> (TunnelState, Option<Instant>) {
        let live_streams = self.stream_count();
        let life = self.life.lock().unwrap();
        lifecycle::phase(
            &Lifecycle {
                reserved_until: life.reserved_until,
                last_stream_end: life.last_stream_end,
                live_streams,
            },
            idle,
        )
    }

    /// Closes the tunnel and waits until its port is free again. Returns the ids
    /// of the streams it closed.
    pub async fn close(&self) -> Vec<String> {
        let ids = self
            .streams
            .lock()
            .unwrap()
            .keys()
            .map(|n| stream_id(*n))
            .collect();
        self.token.cancel();
        self.closed.cancelled().await;
        ids
    }

    /// Ends the stream `s` of this tunnel and waits until it is gone.
    pub async fn close_stream(&self, s: &Stream) {
        s.token.cancel();
        s.done.cancelled().await;
    }

    /// The tunnel and its streams as the API's typed `TunnelInfo`.
    /// `get_connections` writes [`TunnelView`] instead (the same document).
    pub fn info(&self, idle: Duration) -> TunnelInfo {
        let (state, deadline) = self.phase(idle);
        let streams = self
            .streams
            .lock()
            .unwrap()
            .values()
            .map(|s| s.info())
            .collect();
        TunnelInfo {
            id: self.id.clone(),
            port: self.port,
            target_host: self.req.open.target_host.clone(),
            target_port: self.req.open.target_port,
            target_addr: self.req.target_addr.to_string(),
            protocol: self.req.open.protocol.clone(),
            vm_id: self.req.open.vm_id.clone(),
            created_at: self.created_at,
            state,
            expires_at: deadline.map(to_utc),
            streams,
        }
    }

    /// When the tunnel expires if nothing happens, for `open_connection`'s answer.
    pub fn expires_at(&self, idle: Duration) -> DateTime<Utc> {
        let reserved = self.life.lock().unwrap().reserved_until;
        to_utc(self.phase(idle).1.unwrap_or(reserved))
    }

    /// Runs one stream (TCP or WebSocket) to its end, then unregisters it.
    /// A spliced TCP stream stopped by a handover is kept for the snapshot;
    /// a WebSocket stream (its framing lives in this process) ends with
    /// reason `restart`.
    pub async fn run_stream<F>(&self, s: Arc<Stream>, body: F)
    where
        F: Future<Output = Result<(), RelayError>>,
    {
        let target = self.req.target_addr;
        let body = async {
            if s.via == StreamVia::Tcp {
                return body.await;
            }
            tokio::select! {
                r = body => r,
                _ = self.handover.cancelled() => Err(RelayError::Stopped("restart")),
            }
        };
        let parked = relay::run_accounted(
            relay::StreamKind::Tunnel,
            &s.counters,
            target,
            &s.token,
            "disconnected",
            body,
        )
        .await;
        match parked {
            None => self.forget_stream(&s),
            Some(relay) => {
                // Not an end: the tunnel's life is not touched.
                self.streams.lock().unwrap().remove(&s.id);
                s.done.cancel();
                self.changes.touch(self);
                self.parked.lock().unwrap().streams.push(ParkedStream {
                    tunnel: self.id.clone(),
                    stream: s,
                    relay,
                });
            }
        }
    }

    /// Unregisters a stream that ended (or never started).
    pub fn forget_stream(&self, s: &Stream) {
        self.streams.lock().unwrap().remove(&s.id);
        self.life.lock().unwrap().last_stream_end = Some(Instant::now());
        s.done.cancel();
        self.changes.touch(self);
        self.changed.notify_one();
    }
}

/// Milliseconds from `now` to `at` (negative: before).
fn rel_ms(at: Instant, now: Instant) -> i64 {
    if at >= now {
        i64::try_from((at - now).as_millis()).unwrap_or(i64::MAX)
    } else {
        -i64::try_from((now - at).as_millis()).unwrap_or(i64::MAX)
    }
}

fn from_rel_ms(ms: i64, now: Instant) -> Instant {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        now + d
    } else {
        now.checked_sub(d).unwrap_or(now)
    }
}

/// What a handover restored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub tunnels: usize,
    pub streams: usize,
    /// Records that could not be restored (logged one by one): their
    /// sockets are closed.
    pub failed: usize,
}

impl Registry {
    /// The open tunnels and the parked streams as handover records. Their
    /// descriptors go into `fds` (open until the exec), the bytes in flight
    /// into `blob`. A socket that cannot leave the reactor is closed (logged).
    pub fn handover_records(
        &self,
        parked: ParkedSet,
        blob: &mut Blob,
        fds: &mut Vec<OwnedFd>,
    ) -> (Vec<TunnelRec>, Vec<StreamRec>) {
        fn keep(fds: &mut Vec<OwnedFd>, fd: OwnedFd) -> RawFd {
            let raw = fd.as_raw_fd();
            fds.push(fd);
            raw
        }
        let now = Instant::now();
        let mut listeners: HashMap<String, Vec<RawFd>> = HashMap::new();
        for (id, l) in parked.listeners {
            match l.into_std() {
                Ok(l) => listeners
                    .entry(id)
                    .or_default()
                    .push(keep(fds, OwnedFd::from(l))),
                Err(e) => {
                    tracing::error!(tunnel = %id, error = %e, "a tunnel listener cannot be handed over")
                }
            }
        }
        let tunnels: Vec<TunnelRec> = self
            .all()
            .into_iter()
            .filter(|t| !t.token.is_cancelled())
            .map(|t| {
                let life = t.life.lock().unwrap();
                TunnelRec {
                    id: t.id.clone(),
                    port: t.port,
                    open: t.req.open.clone(),
                    target_addr: t.req.target_addr,
                    opened_by: t.req.opened_by,
                    created_at: t.created_at,
                    reserved_ms: rel_ms(life.reserved_until, now),
                    last_stream_end_ms: life.last_stream_end.map(|at| rel_ms(at, now)),
                    listeners: listeners.remove(&t.id).unwrap_or_default(),
                }
            })
            .collect();
        let mut streams = Vec::new();
        for p in parked.streams {
            let st = &p.stream;
            // Its tunnel was closing (a disconnect racing the handover).
            if !tunnels.iter().any(|t| t.id == p.tunnel) {
                tracing::info!(stream = %stream_id(st.id), "stream of a closing tunnel not handed over; closed");
                continue;
            }
            let relay::Parked {
                client,
                target,
                to_target,
                to_client,
            } = *p.relay;
            let (client, target) = match (client.into_std(), target.into_std()) {
                (Ok(c), Ok(t)) => (OwnedFd::from(c), OwnedFd::from(t)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!(stream = %stream_id(st.id), error = %e, "a stream cannot be handed over; closed");
                    continue;
                }
            };
            let (peer, proxied) = st.counters.peer_and_proxied();
            streams.push(StreamRec {
                id: st.id,
                tunnel: p.tunnel,
                via: st.via,
                started_at: st.started_at,
                peer,
                proxied,
                to_target: st.counters.to_target.load(Ordering::Relaxed),
                to_client: st.counters.to_client.load(Ordering::Relaxed),
                last_activity_ms: st.counters.last_activity.load(Ordering::Relaxed),
                client_fd: keep(fds, client),
                target_fd: keep(fds, target),
                pending_to_target: to_target.map(|b| blob.push(&b)),
                pending_to_client: to_client.map(|b| blob.push(&b)),
            });
        }
        (tunnels, streams)
    }

    /// Takes the tunnels and streams of a handover back: same ids, ports,
    /// targets, clients, reservations and counters; each stream resumes with
    /// the bytes that were in flight. Limits are not applied: these streams
    /// were admitted already.
    pub fn restore(
        self: &Arc<Self>,
        inh: &mut Inherited,
        settings: watch::Receiver<Arc<Settings>>,
        parent: &CancellationToken,
    ) -> Restored {
        let now = Instant::now();
        let mut done = Restored::default();
        let recs = std::mem::take(&mut inh.snapshot.tunnels);
        let mut stream_recs = std::mem::take(&mut inh.snapshot.streams);
        let internal = settings.borrow().internal_addrs.clone();
        for rec in recs {
            let mut listeners = Vec::new();
            for fd in &rec.listeners {
                match inh.take(*fd).and_then(|fd| Ok(tokio_listener(fd)?)) {
                    Ok(l) => listeners.push(l),
                    Err(e) => {
                        done.failed += 1;
                        tracing::error!(tunnel = %rec.id, error = %e, "a tunnel listener was not restored");
                    }
                }
            }
            let life = Life {
                reserved_until: from_rel_ms(rec.reserved_ms, now),
                last_stream_end: rec.last_stream_end_ms.map(|ms| from_rel_ms(ms, now)),
            };
            let req = OpenRequest {
                open: rec.open,
                target_addr: rec.target_addr,
                opened_by: rec.opened_by,
            };
            let t = self.new_tunnel(rec.id, rec.port, req, rec.created_at, life, parent);
            {
                let mut inner = self.inner.lock().unwrap();
                inner.pool.claim(t.port);
                inner.tunnels.insert(t.id.clone(), t.clone());
            }
            done.tunnels += 1;
            // Its streams are registered before its lifecycle task starts
            // (with none, a tunnel past its reservation would close).
            let mine: Vec<StreamRec>;
            (mine, stream_recs) = stream_recs.into_iter().partition(|s| s.tunnel == t.id);
            for sr in mine {
                match self.restore_stream(&t, sr, inh, &internal) {
                    Ok(()) => done.streams += 1,
                    Err(e) => {
                        done.failed += 1;
                        tracing::error!(tunnel = %t.id, error = %e, "a stream was not restored; closed");
                    }
                }
            }
            self.changes.touch(&t);
            self.run_tunnel(&t, listeners, settings.clone());
        }
        done
    }

    fn restore_stream(
        &self,
        t: &Arc<Tunnel>,
        sr: StreamRec,
        inh: &mut Inherited,
        internal: &[IpAddr],
    ) -> Result<(), HandoverError> {
        let pending =
            |span: Option<Span>| span.map(|s| inh.blob.get(s).unwrap_or_default().to_vec());
        let (to_target, to_client) = (pending(sr.pending_to_target), pending(sr.pending_to_client));
        let client = tokio_stream(inh.take(sr.client_fd)?)?;
        let target = tokio_stream(inh.take(sr.target_fd)?)?;
        let counters = Counters::restored(
            sr.peer,
            sr.proxied,
            sr.to_target,
            sr.to_client,
            sr.last_activity_ms,
            self.metrics.clone(),
        );
        let who = counters.client().ip();
        let slot = (!proxy::is_trusted(who, internal)).then(|| {
            *self.per_client.lock().unwrap().entry(who).or_insert(0) += 1;
            ClientSlot {
                counts: self.per_client.clone(),
                ip: who,
            }
        });
        self.next_stream.fetch_max(sr.id + 1, Ordering::Relaxed);
        let stream = Arc::new(Stream {
            id: sr.id,
            via: sr.via,
            started_at: sr.started_at,
            counters,
            token: t.token.child_token(),
            done: CancellationToken::new(),
            _slot: slot,
        });
        t.streams.lock().unwrap().insert(sr.id, stream.clone());
        let span = tracing::info_span!("stream", id = %stream_id(sr.id));
        let t2 = t.clone();
        t.tasks.spawn(
            async move {
                let park = t2.handover.clone();
                let body = relay::relay_tcp(
                    client,
                    target,
                    &stream.counters,
                    Begin::Resumed {
                        to_target,
                        to_client,
                    },
                    &park,
                );
                t2.run_stream(stream.clone(), body).await;
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Raises the next stream id to at least `n` (ids never repeat).
    pub fn continue_ids_from(&self, n: u64) {
        self.next_stream.fetch_max(n, Ordering::Relaxed);
    }
}

fn tokio_stream(fd: OwnedFd) -> std::io::Result<TcpStream> {
    let s = std::net::TcpStream::from(fd);
    s.set_nonblocking(true)?;
    TcpStream::from_std(s)
}

pub fn tokio_listener(fd: OwnedFd) -> std::io::Result<TcpListener> {
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true)?;
    TcpListener::from_std(l)
}

/// A tunnel as `get_connections` shows it, serialised straight from the
/// registry: the same document as [`Tunnel::info`] (a test holds them equal)
/// without building a string per field and per stream on the way. With
/// 10 000 streams this halves the server's share of the answer.
pub struct TunnelView<'a> {
    pub tunnel: &'a Tunnel,
    pub idle: Duration,
}

impl Serialize for TunnelView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.tunnel;
        let (state, deadline) = t.phase(self.idle);
        let mut m = s.serialize_struct("TunnelInfo", 11)?;
        m.serialize_field("id", &t.id)?;
        m.serialize_field("port", &t.port)?;
        m.serialize_field("target_host", &t.req.open.target_host)?;
        m.serialize_field("target_port", &t.req.open.target_port)?;
        m.serialize_field("target_addr", &Shown(&t.req.target_addr))?;
        optional(&mut m, "protocol", t.req.open.protocol.as_ref())?;
        optional(&mut m, "vm_id", t.req.open.vm_id.as_ref())?;
        m.serialize_field("created_at", &Ts(t.created_at))?;
        m.serialize_field("state", &state)?;
        optional(
            &mut m,
            "expires_at",
            deadline.map(|d| Ts(to_utc(d))).as_ref(),
        )?;
        // The lock is held only to take the list: new streams of this tunnel
        // are not held up while a large answer is written.
        let streams: Vec<Arc<Stream>> = t.streams.lock().unwrap().values().cloned().collect();
        m.serialize_field("streams", &StreamsView(&streams))?;
        m.end()
    }
}

fn optional<M: SerializeStruct, T: Serialize>(
    m: &mut M,
    key: &'static str,
    v: Option<&T>,
) -> Result<(), M::Error> {
    match v {
        Some(v) => m.serialize_field(key, v),
        None => m.skip_field(key),
    }
}

struct StreamsView<'a>(&'a [Arc<Stream>]);

impl Serialize for StreamsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|st| StreamView(st)))
    }
}

struct StreamView<'a>(&'a Stream);

impl Serialize for StreamView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (st, c) = (self.0, &self.0.counters);
        let mut m = s.serialize_struct("StreamInfo", 7)?;
        let mut id = Small::default();
        id.push(b"s");
        id.num(st.id);
        m.serialize_field("id", id.as_str())?;
        m.serialize_field("client_addr", &Addr(c.client()))?;
        m.serialize_field("via", &st.via)?;
        m.serialize_field("started_at", &Ts(st.started_at))?;
        m.serialize_field("bytes_to_target", &c.to_target.load(Ordering::Relaxed))?;
        m.serialize_field("bytes_to_client", &c.to_client.load(Ordering::Relaxed))?;
        m.serialize_field("last_activity", &Ts(st.last_activity()))?;
        m.end()
    }
}

/// A socket address; IPv4 written without the formatting machinery, which
/// was a third of the cost per stream.
struct Addr(SocketAddr);

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            SocketAddr::V4(a) => {
                let mut b = Small::default();
                for (i, o) in a.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        b.push(b".");
                    }
                    b.num(o);
                }
                b.push(b":");
                b.num(a.port());
                s.serialize_str(b.as_str())
            }
            SocketAddr::V6(_) => s.collect_str(&self.0),
        }
    }
}

/// A short ASCII string on the stack (a stream id, an IPv4 address and port).
#[derive(Default)]
struct Small {
    b: [u8; 24],
    n: usize,
}

impl Small {
    fn push(&mut self, s: &[u8]) {
        self.b[self.n..self.n + s.len()].copy_from_slice(s);
        self.n += s.len();
    }

    fn num(&mut self, v: impl itoa::Integer) {
        self.push(itoa::Buffer::new().format(v).as_bytes());
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.b[..self.n]).expect("ASCII")
    }
}

/// A value written through its `Display`, with no string in between.
struct Shown<'a, T: std::fmt::Display + ?Sized>(&'a T);

impl<T: std::fmt::Display + ?Sized> Serialize for Shown<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

struct Ts(DateTime<Utc>);

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        vdi_wire::ts::serialize(&self.0, s)
    }
}

impl Stream {
    fn last_activity(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.counters.last_activity.load(Ordering::Relaxed))
            .unwrap_or(self.started_at)
    }

    fn info(&self) -> StreamInfo {
        StreamInfo {
            id: stream_id(self.id),
            client_addr: self.counters.client().to_string(),
            via: self.via,
            started_at: self.started_at,
            bytes_to_target: self.counters.to_target.load(Ordering::Relaxed),
            bytes_to_client: self.counters.to_client.load(Ordering::Relaxed),
            last_activity: self.last_activity(),
        }
    }
}

fn to_utc(at: Instant) -> DateTime<Utc> {
    let now = Instant::now();
    let delta = if at >= now {
        chrono::Duration::from_std(at - now).unwrap_or_default()
    } else {
        -chrono::Duration::from_std(now - at).unwrap_or_default()
    };
    Utc::now() + delta
}

/// Binds `port` on every address, or on none.
fn bind_all(addrs: &[IpAddr], port: u16) -> std::io::Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|ip| bind(SocketAddr::new(*ip, port)))
        .collect()
}

/// A listening socket with SO_REUSEADDR, so a port freed a moment ago binds again.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    reg: Arc<Registry>,
    t: Arc<Tunnel>,
    listener: TcpListener,
    settings: watch::Receiver<Arc<Settings>>,
) {
    let mut backoff = crate::accept::Backoff::default();
    loop {
        let accepted = tokio::select! {
            _ = t.token.cancelled() => return,
            _ = t.handover.cancelled() => {
                t.parked.lock().unwrap().listeners.push((t.id.clone(), listener));
                return;
            }
            a = listener.accept() => a,
        };
        let (sock, peer) = match accepted {
            Ok(a) => {
                backoff.ok();
                a
            }
            Err(e) => {
                let pause = backoff.failed(&format_args!("tunnel {}", t.id), &e);
                tokio::select! {
                    _ = t.token.cancelled() => return,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let s = settings.borrow().clone();
        let (reg, t2) = (reg.clone(), t.clone());
        t.tasks.spawn(serve_stream(reg, t2, sock, peer, s));
    }
}

/// How long a trusted proxy (HAProxy) may take to send the PROXY header that
/// names the client of a bound tunnel's stream; HAProxy sends it at once.
const PROXY_WAIT: Duration = Duration::from_secs(3);

/// One TCP stream of a tunnel: learn who the client is (before dialling,
/// where it decides anything), admit it, dial the target, relay.
async fn serve_stream(
    reg: Arc<Registry>,
    t: Arc<Tunnel>,
    sock: TcpStream,
    peer: SocketAddr,
    s: Arc<Settings>,
) {
    relay::tune(&sock);
    let trusted = proxy::is_trusted(peer.ip(), &s.internal_addrs);
    let bound = rules::client_binding(&s);
    let opener = t.req.opened_by.ip();
    let how = Sniffing {
        peer,
        trusted,
        bound_to: bound.then_some(opener),
    };
    let (client, start) = if !bound || peer.ip() == opener {
        // Unbound, or the opener itself: dial at once, so server-first
        // protocols (VNC) do not wait; a PROXY header is decided on the way
        // (and one naming another client ends the stream).
        (peer, Start::Sniff(how))
    } else if trusted {
        // A proxy in front: the header it sends first names the client.
        let mut reader = relay::SharedRead(&sock);
        let sniffed = tokio::select! {
            _ = t.token.cancelled() => return,
            _ = t.handover.cancelled() => return,
            r = tokio::time::timeout(
                PROXY_WAIT,
                relay::sniff_client(&mut reader, how, &reg.metrics),
            ) => r,
        };
        match sniffed {
            Ok(Ok(sn)) => (sn.client.unwrap_or(peer), Start::Known(sn.rest)),
            // Refused (counted where decided) or gone.
            Ok(Err(_)) => return,
            // No header in time: the peer itself is the client.
            Err(_) => (peer, Start::Known(Vec::new())),
        }
    } else {
        // Anyone else: refused by the admission below, nothing dialled.
        (peer, Start::Known(Vec::new()))
    };
    let Ok(stream) = reg.admit(&t, client, StreamVia::Tcp, &s) else {
        return;
    };
    let connect_timeout = Duration::from_secs(rules::connect_timeout_secs(&s));
    let target = t.req.target_addr;
    let span = tracing::info_span!("stream", id = %stream_id(stream.id));
    let run = async {
        tracing::info!(%peer, %client, %target, "stream start");
        let body = async {
            let upstream = tokio::select! {
                _ = t.handover.cancelled() => return Err(RelayError::Stopped("restart")),
                r = relay::connect(target, connect_timeout) => r?,
            };
            relay::relay_tcp(
                sock,
                upstream,
                &stream.counters,
                Begin::New(start),
                &t.handover,
            )
            .await
        };
        t.run_stream(stream.clone(), body).await;
    };
    run.instrument(span).await;
}

async fn lifecycle_task(
    reg: Arc<Registry>,
    t: Arc<Tunnel>,
    mut settings: watch::Receiver<Arc<Settings>>,
) {
    let reason = loop {
        let idle = Duration::from_secs(rules::tunnel_idle_secs(&settings.borrow()));
        let (state, deadline) = t.phase(idle);
        let changed = t.changed.notified();
        let expire = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // The tunnel goes on in the next process.
            _ = t.handover.cancelled() => return,
            _ = t.token.cancelled() => break "closed",
            _ = changed => continue,
            r = settings.changed() => if r.is_err() { break "shutdown" } else { continue },
            _ = expire => {
                // Re-check: a stream may have arrived at the same instant.
                if t.phase(idle).1.is_some_and(|at| at <= Instant::now()) {
                    break match state { TunnelState::Waiting => "no stream came (ttl)", _ => "idle" };
                }
            }
        }
    };
    t.token.cancel();
    t.tasks.close();
    t.tasks.wait().await;
    reg.remove(&t);
    t.closed.cancel();
    let secs = (Utc::now() - t.created_at).num_milliseconds() as f64 / 1000.0;
    tracing::info!(reason, target = %t.req.target_addr, secs, "tunnel closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let c = Cursor {
            epoch: 0x00ab_cdef,
            generation: u64::MAX,
        };
        assert_eq!(c.to_string(), "00abcdef.18446744073709551615");
        assert_eq!(c.to_string().parse(), Ok(c));
        for bad in [
            "",
            ".",
            "00abcdef.",
            ".5",
            "abcdef.5",
            "00abcdefg.5",
            "00abcdef.-5",
            "00abcdef.+5",
            "00abcdef.5.5",
            "00abcdef.123456789012345678901",
            "00ABCDEZ.1",
        ] {
            assert_eq!(bad.parse::<Cursor>(), Err(()), "{bad:?}");
        }
        // Well-formed but past u64 (schemathesis found it): not an error,
        // a cursor from the future, answered in full.
        let future: Cursor = "00abcdef.38269770237050569001".parse().unwrap();
        assert_eq!(future.generation, u64::MAX);
        let ch = Changes::new(0x00ab_cdef);
        ch.removed("a");
        assert_eq!(ch.read(Some(future)).after, None);
    }

    #[test]
    fn a_delta_needs_this_epoch_and_a_generation_the_log_still_covers() {
        let ch = Changes::new(7);
        let at = |generation| {
            Some(Cursor {
                epoch: 7,
                generation,
            })
        };
        let start = ch.read(None);
        assert_eq!((start.after, start.cursor.generation), (None, 0));
        ch.removed("a");
        ch.removed("b");
        let d = ch.read(at(1));
        assert_eq!(
            (d.after, d.removed, d.cursor.generation),
            (Some(1), vec!["b".to_string()], 2)
        );
        // Nothing new: an empty delta at the same cursor.
        let d = ch.read(at(2));
        assert_eq!(
            (d.after, d.removed.len(), d.cursor.generation),
            (Some(2), 0, 2)
        );
        // Another process's cursor, or one from the future: everything.
        assert_eq!(
            ch.read(Some(Cursor {
                epoch: 8,
                generation: 2
            }))
            .after,
            None
        );
        assert_eq!(ch.read(at(3)).after, None);
        // Tombstones beyond what is kept: a cursor before the oldest kept
        // one cannot be answered exactly.
        for i in 0..REMOVED_KEPT {
            ch.removed(&format!("t{i}"));
        }
        assert_eq!(
            ch.read(at(1)).after,
            None,
            "the removal of `b` is forgotten"
        );
        let d = ch.read(at(2));
        assert_eq!((d.after, d.removed.len()), (Some(2), REMOVED_KEPT));
        // A settings change: no delta spans it.
        let before = ch.read(None).cursor.generation;
        ch.everything();
        assert_eq!(ch.read(at(before)).after, None);
        assert_eq!(ch.read(at(before + 1)).after, Some(before + 1));
        // Dropping a tombstone older than that change keeps it a barrier.
        ch.removed("after the change");
        assert_eq!(ch.read(at(before)).after, None);
        assert_eq!(ch.read(at(before + 1)).after, Some(before + 1));
    }

    #[test]
    fn addresses_and_ids_are_written_as_display_would() {
        for a in [
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.1.20.3:443",
            "[::1]:80",
            "[2001:db8::7]:5900",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(serde_json::to_string(&Addr(a)).unwrap(), format!("\"{a}\""));
        }
        for n in [0, 7, u64::MAX] {
            let mut id = Small::default();
            id.push(b"s");
            id.num(n);
            assert_eq!(id.as_str(), stream_id(n));
        }
    }
}
