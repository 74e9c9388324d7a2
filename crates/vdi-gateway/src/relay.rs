//! Moving bytes both ways between a client and a target, with half-close,
//! bounded buffers (one per direction: a slow reader stalls its writer, which is
//! the back-pressure), live byte counters, and PROXY header sniffing.

pub use crate::metrics::{Direction, StreamKind};
use crate::metrics::{Metrics, Refusal, StreamEnd};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use vdi_core::proxy::{self, Verdict};

/// Per-direction buffer. Also the most one stream holds in flight per direction.
pub const BUF_SIZE: usize = 16 * 1024;

/// Live figures of one relayed stream, read by `get_connections`.
#[derive(Debug)]
pub struct Counters {
    /// The TCP peer (HAProxy, or the client itself).
    peer: SocketAddr,
    /// The client a PROXY header named (set once, read lock-free by
    /// `get_connections` for every stream).
    proxied: OnceLock<SocketAddr>,
    pub to_target: AtomicU64,
    pub to_client: AtomicU64,
    /// Unix time in milliseconds.
    pub last_activity: AtomicI64,
    metrics: Arc<Metrics>,
}

impl Counters {
    pub fn new(client: SocketAddr, metrics: Arc<Metrics>) -> Self {
        Self {
            peer: client,
            proxied: OnceLock::new(),
            to_target: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            last_activity: AtomicI64::new(now_millis()),
            metrics,
        }
    }

    /// A handed-over stream's figures, as the previous process left them.
    pub fn restored(
        peer: SocketAddr,
        proxied: Option<SocketAddr>,
        to_target: u64,
        to_client: u64,
        last_activity_ms: i64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let c = Self::new(peer, metrics);
        if let Some(p) = proxied {
            c.set_client(p);
        }
        c.to_target.store(to_target, Ordering::Relaxed);
        c.to_client.store(to_client, Ordering::Relaxed);
        c.last_activity.store(last_activity_ms, Ordering::Relaxed);
        c
    }

    /// The TCP peer, and the client a PROXY header named if one did.
    pub fn peer_and_proxied(&self) -> (SocketAddr, Option<SocketAddr>) {
        (self.peer, self.proxied.get().copied())
    }

    /// The real client: from the PROXY header when one came, else the peer.
    pub fn client(&self) -> SocketAddr {
        self.proxied.get().copied().unwrap_or(self.peer)
    }

    fn set_client(&self, real: SocketAddr) {
        // A stream carries one PROXY header at most.
        let _ = self.proxied.set(real);
    }

    pub fn add(&self, dir: Direction, n: usize) {
        let n = n as u64;
        match dir {
            Direction::ToTarget => self.to_target.fetch_add(n, Ordering::Relaxed),
            Direction::ToClient => self.to_client.fetch_add(n, Ordering::Relaxed),
        };
        self.metrics.bytes(dir, n);
        self.last_activity.store(now_millis(), Ordering::Relaxed);
    }
}

pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How to treat a PROXY header at the start of the client's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sniffing {
    pub peer: SocketAddr,
    pub trusted: bool,
    /// The only client a header may name (a bound tunnel's opener).
    pub bound_to: Option<IpAddr>,
}

/// How a relay starts: deciding on a PROXY header on the way, or with the
/// client already known and the bytes read while learning it.
pub enum Start {
    Sniff(Sniffing),
    Known(Vec<u8>),
}

/// How a TCP relay begins: a new stream, or one a previous process handed
/// over, with each direction's bytes in flight (`None`: that direction had
/// ended, its EOF passed on).
pub enum Begin {
    New(Start),
    Resumed {
        to_target: Option<Vec<u8>>,
        to_client: Option<Vec<u8>>,
    },
}

/// A stream stopped for a handover at a chunk boundary: its two sockets and
/// what each direction still has to write.
#[derive(Debug)]
pub struct Parked {
    pub client: TcpStream,
    pub target: TcpStream,
    pub to_target: Option<Vec<u8>>,
    pub to_client: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("refused: {0}")]
    Refused(String),
    /// Ended from outside (`disconnect`, shutdown): the reason logged.
    #[error("{0}")]
    Stopped(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Not an end: the stream goes on in the next process.
    #[error("handed over to the next process")]
    HandedOver(Box<Parked>),
}

/// Reads the first bytes until the PROXY verdict is known. `buf` receives the
/// bytes read. End of stream before a verdict counts as no header.
async fn sniff_from<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    s: Sniffing,
) -> io::Result<Verdict> {
    let mut chunk = [0u8; 512];
    loop {
        if let Some(v) = proxy::decide(&proxy::sniff(buf), s.peer, s.trusted) {
            return Ok(v);
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Verdict::Plain);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What a connection's first bytes said: the client a trusted PROXY header
/// named (if any) and the bytes after the header.
pub struct Sniffed {
    pub client: Option<SocketAddr>,
    pub rest: Vec<u8>,
}

/// Reads a connection's first bytes until the PROXY verdict is known; a
/// header from an untrusted peer or a malformed one is refused, counted and
/// logged here. The one decision for the API, the service tunnel and tunnel
/// streams.
pub async fn sniff_client<R: AsyncRead + Unpin>(
    r: &mut R,
    s: Sniffing,
    metrics: &Metrics,
) -> Result<Sniffed, RelayError> {
    let mut first = Vec::new();
    match sniff_from(r, &mut first, s).await? {
        Verdict::Plain => Ok(Sniffed {
            client: None,
            rest: first,
        }),
        Verdict::Proxied { len, client } => {
            first.drain(..len);
            Ok(Sniffed {
                client: Some(client),
                rest: first,
            })
        }
        Verdict::Refuse(why) => {
            metrics.refused(Refusal::ProxyHeader);
            tracing::warn!(peer = %s.peer, reason = %why, "connection refused");
            Err(RelayError::Refused(why))
        }
    }
}

/// [`sniff_client`] at the start of a relayed stream: the real client goes
/// into its counters; returns the bytes to pass on.
async fn sniff_stream<R: AsyncRead + Unpin>(
    r: &mut R,
    s: Sniffing,
    counters: &Counters,
) -> Result<Vec<u8>, RelayError> {
    let sniffed = sniff_client(r, s, &counters.metrics).await?;
    if let Some(client) = sniffed.client {
        if s.bound_to.is_some_and(|ip| ip != client.ip()) {
            counters.metrics.refused(Refusal::ClientMismatch);
            tracing::warn!(%client, via = %s.peer, "PROXY header names another client than the tunnel's; closed");
            return Err(RelayError::Refused(
                "the tunnel serves only the client that opened it".into(),
            ));
        }
        counters.set_client(client);
        tracing::info!(%client, via = %s.peer, "client address from PROXY header");
    }
    Ok(sniffed.rest)
}

/// Runs a relay to its end (or until `stop`, said as `stopped`), then logs
/// the end with the stream's figures and observes them in the stream
/// histograms: one account for tunnel streams and the service tunnel.
/// A stream handed over to the next process has not ended: it is returned,
/// neither logged nor observed as an end.
pub async fn run_accounted(
    kind: StreamKind,
    counters: &Counters,
    target: SocketAddr,
    stop: &tokio_util::sync::CancellationToken,
    stopped: &'static str,
    body: impl Future<Output = Result<(), RelayError>>,
) -> Option<Box<Parked>> {
    counters.metrics.stream_started();
    let started = std::time::Instant::now();
    let outcome = tokio::select! {
        r = body => r,
        _ = stop.cancelled() => Err(RelayError::Stopped(stopped)),
    };
    let outcome = match outcome {
        Err(RelayError::HandedOver(p)) => {
            counters.metrics.stream_handed_over();
            return Some(p);
        }
        other => other,
    };
    let to_target = counters.to_target.load(Ordering::Relaxed);
    let to_client = counters.to_client.load(Ordering::Relaxed);
    let took = started.elapsed();
    let secs = took.as_secs_f64();
    let end = match &outcome {
        Ok(()) => StreamEnd::Closed,
        Err(RelayError::Refused(_)) => StreamEnd::Refused,
        Err(RelayError::Stopped(_)) => StreamEnd::Stopped,
        Err(RelayError::Io(_)) => StreamEnd::Error,
        Err(RelayError::HandedOver(_)) => unreachable!("returned above"),
    };
    counters
        .metrics
        .stream_ended(kind, end, took, to_target, to_client);
    let client = counters.client();
    let what = kind.log_name();
    match outcome {
        Ok(()) => tracing::info!(%client, %target, to_target, to_client, secs, "{what} end"),
        Err(e) => {
            tracing::info!(%client, %target, to_target, to_client, secs, reason = %e, "{what} end")
        }
    }
    None
}

/// Relays until both directions have ended (each end's EOF is passed on as a
/// half-close) or either side fails. With `sniff`, a PROXY header at the start of
/// the client's bytes is stripped (trusted peer, the real client is recorded) or
/// ends the relay (untrusted peer).
pub async fn relay<C, T>(
    client: C,
    target: T,
    counters: &Counters,
    start: Start,
) -> Result<(), RelayError>
where
    C: AsyncRead + AsyncWrite,
    T: AsyncRead + AsyncWrite,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut tr, mut tw) = tokio::io::split(target);
    let upstream = async {
        let first = match start {
            Start::Sniff(s) => sniff_stream(&mut cr, s, counters).await?,
            Start::Known(first) => first,
        };
        write_counted(&mut tw, &first, counters, Direction::ToTarget).await?;
        copy_counted(&mut cr, &mut tw, counters, Direction::ToTarget).await?;
        Ok::<_, RelayError>(())
    };
    let downstream = async {
        copy_counted(&mut tr, &mut cw, counters, Direction::ToClient).await?;
        Ok::<_, RelayError>(())
    };
    tokio::try_join!(upstream, downstream)?;
    Ok(())
}

/// Whether tunnel streams go through splice(2) (the default on Linux);
/// `VDI_GATEWAY_RELAY=copy` selects the portable copy loop (benchmarks
/// compare both; also a way out should a kernel misbehave).
pub fn splice_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        cfg!(target_os = "linux") && std::env::var("VDI_GATEWAY_RELAY").as_deref() != Ok("copy")
    })
}

/// [`relay`] for two TCP sockets: through splice(2) on Linux (zero copy, no
/// user-space buffers, nothing held by an idle stream), else the copy loop.
///
/// A stream that ends in an I/O error (a reset, a vanished peer) is aborted
/// on both sockets (RST, not FIN): the other end must not take an aborted
/// stream for a complete one.
///
/// When `park` fires (a handover), a spliced stream stops at a chunk
/// boundary and comes back as [`RelayError::HandedOver`] with its sockets;
/// one still reading its PROXY header, or on the copy loop, ends with
/// reason `restart`.
pub async fn relay_tcp(
    client: TcpStream,
    target: TcpStream,
    counters: &Counters,
    begin: Begin,
    park: &CancellationToken,
) -> Result<(), RelayError> {
    let (mut client, mut target) = (client, target);
    let r = relay_tcp_inner(&mut client, &mut target, counters, begin, park).await;
    match r {
        Ok(Some((to_target, to_client))) => {
            return Err(RelayError::HandedOver(Box::new(Parked {
                client,
                target,
                to_target,
                to_client,
            })));
        }
        Err(RelayError::Io(_)) => {
            for s in [&client, &target] {
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            }
        }
        _ => {}
    }
    r.map(|_| ())
}

/// What each direction still has to write when parked; `None` when both ended.
type ParkedDirs = Option<(Option<Vec<u8>>, Option<Vec<u8>>)>;

async fn relay_tcp_inner(
    client: &mut TcpStream,
    target: &mut TcpStream,
    counters: &Counters,
    begin: Begin,
    park: &CancellationToken,
) -> Result<ParkedDirs, RelayError> {
    #[cfg(target_os = "linux")]
    if splice_enabled() || matches!(begin, Begin::Resumed { .. }) {
        use crate::splice::Ended;
        let (client, target): (&TcpStream, &TcpStream) = (client, target);
        // A direction that had ended before a handover stays ended.
        let (start, up_first, down_first) = match begin {
            Begin::New(start) => (Some(start), Some(Vec::new()), Some(Vec::new())),
            Begin::Resumed {
                to_target,
                to_client,
            } => (None, to_target, to_client),
        };
        let upstream = async {
            let Some(mut first) = up_first else {
                return Ok(None);
            };
            if let Some(Start::Sniff(s)) = start {
                let mut reader = SharedRead(client);
                first = tokio::select! {
                    biased;
                    _ = park.cancelled() => return Err(RelayError::Stopped("restart")),
                    r = sniff_stream(&mut reader, s, counters) => r?,
                };
            } else if let Some(Start::Known(known)) = start {
                first = known;
            }
            let e =
                crate::splice::copy(client, target, &first, counters, Direction::ToTarget, park)
                    .await?;
            Ok::<_, RelayError>(Some(e))
        };
        let downstream = async {
            let Some(first) = down_first else {
                return Ok(None);
            };
            let e =
                crate::splice::copy(target, client, &first, counters, Direction::ToClient, park)
                    .await?;
            Ok::<_, RelayError>(Some(e))
        };
        let (up, down) = tokio::try_join!(upstream, downstream)?;
        let pending = |e: Option<Ended>| match e {
            Some(Ended::Parked(bytes)) => Some(bytes),
            Some(Ended::Eof) | None => None,
        };
        let parked = matches!(up, Some(Ended::Parked(_))) || matches!(down, Some(Ended::Parked(_)));
        return Ok(parked.then(|| (pending(up), pending(down))));
    }
    let Begin::New(start) = begin else {
        unreachable!("a resumed stream is spliced")
    };
    // The copy loop holds bytes in user space: not handed over.
    tokio::select! {
        r = relay(client, target, counters, start) => r.map(|()| None),
        _ = park.cancelled() => Err(RelayError::Stopped("restart")),
    }
}

/// Reads a `TcpStream` the splice relay shares between its two directions
/// (tokio reads a `&TcpStream` only through readiness and `try_read`).
pub struct SharedRead<'a>(pub &'a TcpStream);

impl AsyncRead for SharedRead<'_> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            // On WouldBlock `try_read` clears the readiness: the next poll
            // registers the waker.
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return std::task::Poll::Ready(Err(e)),
            }
        }
    }
}

async fn write_counted<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
    counters: &Counters,
    dir: Direction,
) -> io::Result<()> {
    if !bytes.is_empty() {
        w.write_all(bytes).await?;
        counters.add(dir, bytes.len());
    }
    Ok(())
}

/// Copies until EOF, then shuts the writer down (half-close).
async fn copy_counted<R, W>(
    r: &mut R,
    w: &mut W,
    counters: &Counters,
    dir: Direction,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            w.shutdown().await?;
            return Ok(());
        }
        w.write_all(&buf[..n]).await?;
        counters.add(dir, n);
    }
}

/// `VDI_GATEWAY_PEER_TIMEOUT_SECS` (read once): when set, the time after
/// which a peer that stopped answering ends its stream, idle or busy. Unset:
/// idle streams notice after 120 s (keepalive) and busy ones after the
/// kernel's retransmission limit (about 15 minutes).
pub fn peer_timeout() -> Option<Duration> {
    static T: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *T.get_or_init(|| {
        std::env::var("VDI_GATEWAY_PEER_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| (2..=86_400).contains(s))
            .map(Duration::from_secs)
    })
}

/// Socket options for every relayed TCP connection: no Nagle delay for
/// interactive desktop traffic, keepalive to notice vanished peers. With
/// [`peer_timeout`] set, `TCP_USER_TIMEOUT` too: without it data waiting for
/// an acknowledgement that never comes holds a stream for about 15 minutes;
/// with it, so does a live peer that accepts no data (zero window) for that
/// long, and keepalive ends an idle stream only then (the kernel's rule).
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    match peer_timeout() {
        None => {
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(Duration::from_secs(60))
                .with_interval(Duration::from_secs(10))
                .with_retries(6);
            let _ = sock.set_tcp_keepalive(&keepalive);
        }
        Some(t) => {
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(t / 2)
                .with_interval((t / 12).max(Duration::from_secs(1)))
                .with_retries(6);
            let _ = sock.set_tcp_keepalive(&keepalive);
            #[cfg(target_os = "linux")]
            let _ = sock.set_tcp_user_timeout(Some(t));
        }
    }
}

/// Connects to a target with a time limit, tuned for relaying.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from {addr} within {timeout:?}"),
            )
        })??;
    tune(&stream);
    Ok(stream)
}

/// A stream that first yields bytes already read from it (after sniffing).
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
