//! Demo traffic: a client that keeps several SPICE-like streams moving
//! through a tunnel to the demo desktop (an echo server), at rates that
//! rise and fall, so every live view has something real to show.
//!
//! Bounded: [`STREAMS`] streams, at most [`PEAK_BYTES_PER_SEC`] together,
//! for at most [`MAX_RUN`]; a stream that loses its connection (the tunnel
//! was disconnected, the gateway stopped) ends and is not reopened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::netns::Net;

pub const STREAMS: usize = 4;
pub const MAX_RUN: Duration = Duration::from_secs(3600);
const TICK: Duration = Duration::from_millis(100);

/// A SPICE channel's shape: a base rate and a swing over a period.
#[derive(Clone, Copy, Debug)]
pub struct Channel {
    pub name: &'static str,
    pub base: u64,
    pub swing: u64,
    pub period_secs: f64,
}

/// Display (bursty), playback (steady), inputs and main (small).
pub const CHANNELS: [Channel; STREAMS] = [
    Channel {
        name: "display",
        base: 40_000,
        swing: 600_000,
        period_secs: 40.0,
    },
    Channel {
        name: "playback",
        base: 90_000,
        swing: 30_000,
        period_secs: 15.0,
    },
    Channel {
        name: "inputs",
        base: 1_000,
        swing: 4_000,
        period_secs: 7.0,
    },
    Channel {
        name: "main",
        base: 2_000,
        swing: 20_000,
        period_secs: 25.0,
    },
];

pub const PEAK_BYTES_PER_SEC: u64 = {
    let mut sum = 0;
    let mut i = 0;
    while i < STREAMS {
        sum += CHANNELS[i].base + CHANNELS[i].swing;
        i += 1;
    }
    sum
};
// A demo, not a load test: under 1 MB/s together.
const _: () = assert!(PEAK_BYTES_PER_SEC < 1_000_000);

impl Channel {
    /// Bytes per second `t` seconds in: base + swing × (0 … 1, a sine).
    pub fn rate(&self, t: f64) -> u64 {
        let wave = 0.5 - 0.5 * (std::f64::consts::TAU * t / self.period_secs).cos();
        self.base + (self.swing as f64 * wave) as u64
    }
}

/// The running demo: its tunnel and how many of its streams still run.
pub struct Demo {
    pub tunnel_id: String,
    stop: CancellationToken,
    live: Arc<AtomicUsize>,
}

impl Demo {
    /// Starts the streams to `addr` (the tunnel's address), under `parent`.
    /// `net` is where the client is (the demo cluster's client namespace).
    pub fn start(
        tunnel_id: String,
        addr: SocketAddr,
        net: Net,
        parent: &CancellationToken,
    ) -> Self {
        let stop = parent.child_token();
        let live = Arc::new(AtomicUsize::new(STREAMS));
        for ch in CHANNELS {
            let (stop, live, net) = (stop.clone(), live.clone(), net.clone());
            tokio::spawn(async move {
                if let Err(e) = stream(&net, addr, ch, stop).await {
                    tracing::info!(channel = ch.name, error = %e, "demo stream ended");
                }
                live.fetch_sub(1, Ordering::Relaxed);
            });
        }
        Self {
            tunnel_id,
            stop,
            live,
        }
    }

    /// Streams still running.
    pub fn streams(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One channel: writes at its rate, reads the echo back, until stopped,
/// the connection goes or [`MAX_RUN`] passes.
async fn stream(
    net: &Net,
    addr: SocketAddr,
    ch: Channel,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let s = net.connect(addr).await?;
    s.set_nodelay(true)?;
    let (mut r, mut w) = s.into_split();
    let reader = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if r.read(&mut buf).await? == 0 {
                return Err::<(), _>(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    };
    let writer = async {
        let start = Instant::now();
        let chunk = vec![0x5a_u8; 64 * 1024];
        let mut tick = tokio::time::interval(TICK);
        while start.elapsed() < MAX_RUN {
            tick.tick().await;
            let mut n = (ch.rate(start.elapsed().as_secs_f64()) / 10) as usize;
            while n > 0 {
                let k = n.min(chunk.len());
                w.write_all(&chunk[..k]).await?;
                n -= k;
            }
        }
        Ok(())
    };
    tokio::select! {
        _ = stop.cancelled() => Ok(()),
        r = reader => r,
        r = writer => r,
    }
}

/// The demo desktop: greets, then echoes everything back, until `stop`.
pub fn serve_desktop(l: tokio::net::TcpListener, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tokio::select! {
                _ = stop.cancelled() => return,
                a = l.accept() => match a { Ok(a) => a, Err(_) => continue },
            };
            let stop = stop.clone();
            tokio::spawn(async move {
                let echo = async {
                    s.write_all(b"Space Gateway demo desktop: everything you type comes back\r\n")
                        .await?;
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await
                };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = echo => {}
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_rise_and_fall_within_bounds() {
        for ch in CHANNELS {
            let rates: Vec<u64> = (0..400).map(|i| ch.rate(i as f64 / 4.0)).collect();
            let (lo, hi) = (*rates.iter().min().unwrap(), *rates.iter().max().unwrap());
            assert!(lo >= ch.base && hi <= ch.base + ch.swing, "{}", ch.name);
            assert!(hi - lo > ch.swing * 9 / 10, "{} moves", ch.name);
        }
    }
}
