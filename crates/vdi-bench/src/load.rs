//! The load side, the same for every path: a counting sink, an echo server,
//! writers, and ping clients. Every loop is bounded in time.

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Accepts and discards, counting every byte.
pub async fn sink(listener: TcpListener, bytes: Arc<AtomicU64>) {
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
pub async fn echo(listener: TcpListener) {
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

/// `streams` writers to `addr` for `secs`; returns bytes/s the sink received
/// in the window (the first 10% is warm-up).
pub async fn throughput(
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

/// One round trip of a 64-byte message.
async fn ping(s: &mut TcpStream) -> std::io::Result<()> {
    let mut back = [0u8; 64];
    s.write_all(&[0x42u8; 64]).await?;
    s.read_exact(&mut back).await?;
    Ok(())
}

/// One pinging stream: a ping every `every`, round-trip times collected
/// until `deadline`; `Err` with those it had if the stream failed.
async fn pinger(
    mut s: TcpStream,
    every: Duration,
    deadline: Instant,
) -> Result<Vec<u32>, Vec<u32>> {
    let mut rtts = Vec::new();
    // Spread the streams' phases so they do not all fire at once.
    tokio::time::sleep(every.mul_f64(rand_fraction())).await;
    let mut tick = tokio::time::interval(every);
    // A late round trip does not bunch the next pings up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < deadline {
        tick.tick().await;
        let t = Instant::now();
        if ping(&mut s).await.is_err() {
            return Err(rtts);
        }
        rtts.push(t.elapsed().as_micros() as u32);
    }
    Ok(rtts)
}

fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() % 10_000) as f64 / 10_000.0
}

pub fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
}

#[derive(Clone)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub samples: usize,
    /// Streams that failed (at the warm-up or while pinging).
    pub failed: usize,
}

/// Pings on every stream for `secs`, after one round trip on each that is
/// not counted (the relay has accepted and connected every stream: setup
/// is measured on its own), then reports the round trips.
pub async fn ping_all(conns: Vec<TcpStream>, every: Duration, secs: f64) -> Latency {
    let n = conns.len();
    let warm: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                s.set_nodelay(true)?;
                tokio::time::timeout(Duration::from_secs(30), ping(&mut s)).await??;
                Ok::<_, anyhow::Error>(s)
            })
        })
        .collect();
    let mut ready = Vec::with_capacity(n);
    for t in warm {
        if let Ok(Ok(s)) = t.await {
            ready.push(s);
        }
    }
    let mut failed = n - ready.len();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|s| tokio::spawn(pinger(s, every, deadline)))
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(rtts)) => all.extend(rtts),
            Ok(Err(rtts)) => {
                failed += 1;
                all.extend(rtts);
            }
            Err(_) => failed += 1,
        }
    }
    all.sort_unstable();
    Latency {
        p50: pct(&all, 0.5),
        p99: pct(&all, 0.99),
        samples: all.len(),
        failed,
    }
}

pub async fn connect_many(addrs: &[SocketAddr], n: usize) -> Result<Vec<TcpStream>> {
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
