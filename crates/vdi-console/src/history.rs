//! What each gateway did over the last 15 minutes, kept in the console from
//! its own health polls (bounded: one sample per [`MIN_SPACING_MS`], none
//! older than [`KEEP_MS`]), and the rates of streams between two polls.
//! The page draws what these functions return; it never polls for history.
//!
//! Byte counters are the gateway's process-lifetime totals: a counter that
//! went down means the process restarted, and the new value is what moved
//! since (as Prometheus' `rate()` reads a reset).

use std::collections::{BTreeMap, HashMap, VecDeque};
use vdi_wire::console::{LIVE_POINTS, Rates, TREND_BUCKET_SECS, TREND_POINTS, Trend};
use vdi_wire::{Connections, Health};

/// How far back the history reaches.
pub const KEEP_MS: i64 = (TREND_POINTS as u64 * TREND_BUCKET_SECS * 1000) as i64;
/// Polls closer than this to the last kept sample are not kept (the fleet
/// view polls every 2 s; 4 s keeps at most 225 samples per gateway).
pub const MIN_SPACING_MS: i64 = 4_000;
const BUCKET_MS: i64 = (TREND_BUCKET_SECS * 1000) as i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at_ms: i64,
    pub streams: u64,
    pub to_target: u64,
    pub to_client: u64,
}

impl Sample {
    pub fn of(at_ms: i64, h: &Health) -> Self {
        Self {
            at_ms,
            streams: h.streams,
            to_target: h.bytes_to_target,
            to_client: h.bytes_to_client,
        }
    }
}

/// Bytes moved from `before` to `after` (a counter that went down was reset).
fn moved(before: u64, after: u64) -> u64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

/// Bytes per second for `bytes` over `ms` (0 for an empty interval).
fn per_sec(bytes: u64, ms: i64) -> u64 {
    if ms <= 0 {
        0
    } else {
        (bytes as u128 * 1000 / ms as u128) as u64
    }
}

#[derive(Debug, Default)]
pub struct History {
    by_gateway: HashMap<i64, VecDeque<Sample>>,
}

impl History {
    /// Keeps `s` for gateway `id` unless a kept sample is too close to it.
    pub fn record(&mut self, id: i64, s: Sample) {
        let q = self.by_gateway.entry(id).or_default();
        if let Some(last) = q.back()
            && s.at_ms - last.at_ms < MIN_SPACING_MS
        {
            return;
        }
        q.push_back(s);
        while q.front().is_some_and(|f| s.at_ms - f.at_ms > KEEP_MS) {
            q.pop_front();
        }
    }

    /// Forgets every gateway not in `ids` (removed from the fleet).
    pub fn retain(&mut self, ids: &[i64]) {
        self.by_gateway.retain(|id, _| ids.contains(id));
    }

    pub fn samples(&self, id: i64) -> impl Iterator<Item = &Sample> {
        self.by_gateway.get(&id).into_iter().flatten()
    }

    /// Gateway `id`'s last 15 minutes, in buckets ending at `now_ms`.
    pub fn trend(&self, id: i64, now_ms: i64) -> Option<Trend> {
        let q = self.by_gateway.get(&id).filter(|q| !q.is_empty())?;
        let mut streams = vec![None; TREND_POINTS];
        // Bytes and milliseconds per bucket, from each interval between two
        // samples, put in the bucket where the interval ends.
        let mut moved_in = vec![(0u64, 0i64); TREND_POINTS];
        let mut seen = vec![false; TREND_POINTS];
        let mut prev: Option<&Sample> = None;
        for s in q {
            if let Some(b) = bucket(s.at_ms, now_ms) {
                streams[b] = Some(s.streams);
                if let Some(p) = prev {
                    let bytes = moved(p.to_target, s.to_target) + moved(p.to_client, s.to_client);
                    moved_in[b].0 += bytes;
                    moved_in[b].1 += s.at_ms - p.at_ms;
                    seen[b] = true;
                }
            }
            prev = Some(s);
        }
        let throughput = moved_in
            .iter()
            .zip(&seen)
            .map(|(&(bytes, ms), &seen)| seen.then(|| per_sec(bytes, ms)))
            .collect();
        let rate = (q.len() >= 2).then(|| {
            let (a, b) = (q[q.len() - 2], q[q.len() - 1]);
            [
                per_sec(moved(a.to_target, b.to_target), b.at_ms - a.at_ms),
                per_sec(moved(a.to_client, b.to_client), b.at_ms - a.at_ms),
            ]
        });
        Some(Trend {
            streams,
            throughput,
            rate,
        })
    }

    /// The fleet's throughput per bucket: the sum of every gateway's (a
    /// bucket no gateway answered in is `None`).
    pub fn fleet_throughput(&self, now_ms: i64) -> Vec<Option<u64>> {
        let mut sum = vec![None::<u64>; TREND_POINTS];
        for id in self.by_gateway.keys() {
            if let Some(t) = self.trend(*id, now_ms) {
                for (s, v) in sum.iter_mut().zip(t.throughput) {
                    if let Some(v) = v {
                        *s = Some(s.unwrap_or(0) + v);
                    }
                }
            }
        }
        sum
    }
}

/// The bucket of a sample at `at_ms` in the window ending at `now_ms`.
fn bucket(at_ms: i64, now_ms: i64) -> Option<usize> {
    let age = now_ms - at_ms;
    if !(0..KEEP_MS).contains(&age) {
        return None;
    }
    Some(TREND_POINTS - 1 - (age / BUCKET_MS) as usize)
}

/// Stream counters of one poll of a gateway's connections.
#[derive(Debug, Default)]
pub struct Counters {
    at_ms: i64,
    streams: HashMap<String, (String, u64, u64)>,
}

impl Counters {
    pub fn of(at_ms: i64, c: &Connections) -> Self {
        let streams = c
            .tunnels
            .iter()
            .flat_map(|t| {
                t.streams.iter().map(|s| {
                    (
                        s.id.clone(),
                        (t.id.clone(), s.bytes_to_target, s.bytes_to_client),
                    )
                })
            })
            .collect();
        Self { at_ms, streams }
    }

    /// Rates from `self` (the previous poll) to `now`: streams seen in both
    /// (stream ids never repeat within a gateway's life), summed per tunnel.
    pub fn rates(&self, now: &Counters) -> Rates {
        let ms = now.at_ms - self.at_ms;
        let mut streams = BTreeMap::new();
        let mut tunnels: BTreeMap<String, [u64; 2]> = BTreeMap::new();
        if ms <= 0 {
            return Rates::default();
        }
        for (id, (tunnel, to_t, to_c)) in &now.streams {
            let Some((_, was_t, was_c)) = self.streams.get(id) else {
                continue;
            };
            let r = [
                per_sec(moved(*was_t, *to_t), ms),
                per_sec(moved(*was_c, *to_c), ms),
            ];
            let sum = tunnels.entry(tunnel.clone()).or_default();
            sum[0] += r[0];
            sum[1] += r[1];
            streams.insert(id.clone(), r);
        }
        Rates { streams, tunnels }
    }
}

/// Adds the total of `rates` to the live series, keeping the last
/// [`LIVE_POINTS`].
pub fn push_live(live: &mut VecDeque<u64>, rates: &Rates) {
    live.push_back(rates.tunnels.values().map(|[t, c]| t + c).sum());
    while live.len() > LIVE_POINTS {
        live.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_s: i64, streams: u64, to_target: u64, to_client: u64) -> Sample {
        Sample {
            at_ms: at_s * 1000,
            streams,
            to_target,
            to_client,
        }
    }

    #[test]
    fn keeps_fifteen_minutes_spaced_and_bounded() {
        let mut h = History::default();
        for i in 0..2000 {
            // A poll every 2 s for over an hour.
            h.record(1, s(i * 2, 0, 0, 0));
        }
        let kept: Vec<_> = h.samples(1).collect();
        assert_eq!(kept.len(), 226, "one in two polls, 15 minutes");
        assert!(
            kept.windows(2)
                .all(|w| w[1].at_ms - w[0].at_ms >= MIN_SPACING_MS)
        );
        assert_eq!(kept.last().unwrap().at_ms - kept[0].at_ms, KEEP_MS);
        h.retain(&[2]);
        assert_eq!(h.samples(1).count(), 0);
    }

    #[test]
    fn trend_buckets_rates_and_a_counter_reset() {
        let mut h = History::default();
        let now = 10_000;
        let now_ms = now * 1000;
        assert_eq!(h.trend(1, now_ms), None);
        // 1 MB/s to the target and 2 MB/s back, sampled every 5 s, in the
        // last minute; then the gateway restarts (counters from 0).
        let mut t = 0;
        for i in 0..12 {
            let at = now - 60 + i * 5;
            h.record(1, s(at, 3, t * 1_000_000, t * 2_000_000));
            t += 5;
        }
        h.record(1, s(now, 4, 5_000_000, 10_000_000));
        let tr = h.trend(1, now_ms).unwrap();
        assert_eq!(tr.streams.len(), TREND_POINTS);
        assert_eq!(tr.streams[TREND_POINTS - 1], Some(4));
        assert_eq!(tr.streams[0], None, "nothing 15 minutes ago");
        // The last 4 buckets hold the minute; every one is 3 MB/s, the
        // restart included (the new counters count from 0).
        let last: Vec<_> = tr.throughput[TREND_POINTS - 4..].to_vec();
        assert_eq!(last, vec![Some(3_000_000); 4], "{:?}", tr.throughput);
        assert!(
            tr.throughput[..TREND_POINTS - 5]
                .iter()
                .all(Option::is_none)
        );
        assert_eq!(tr.rate, Some([1_000_000, 2_000_000]));

        // The fleet adds gateways bucket by bucket.
        h.record(2, s(now - 5, 1, 0, 0));
        h.record(2, s(now, 1, 500_000, 0));
        let f = h.fleet_throughput(now_ms);
        assert_eq!(f[TREND_POINTS - 1], Some(3_100_000));
        assert_eq!(f[TREND_POINTS - 2], Some(3_000_000));
        assert_eq!(f[0], None);
    }

    #[test]
    fn stream_rates_between_two_polls() {
        use vdi_wire::{StreamInfo, StreamVia, TunnelInfo, TunnelState};
        let stream = |id: &str, t: u64, c: u64| StreamInfo {
            id: id.into(),
            client_addr: "127.0.0.1:1".into(),
            via: StreamVia::Tcp,
            started_at: chrono::Utc::now(),
            bytes_to_target: t,
            bytes_to_client: c,
            last_activity: chrono::Utc::now(),
        };
        let conns = |streams: Vec<StreamInfo>| Connections {
            tunnels: vec![TunnelInfo {
                id: "t1".into(),
                port: 1,
                target_host: "h".into(),
                target_port: 1,
                target_addr: "127.0.0.1:1".into(),
                protocol: None,
                vm_id: None,
                created_at: chrono::Utc::now(),
                state: TunnelState::Active,
                expires_at: None,
                streams,
            }],
            ..Default::default()
        };
        let a = Counters::of(0, &conns(vec![stream("s1", 100, 0), stream("s2", 0, 0)]));
        let b = Counters::of(
            2_000,
            &conns(vec![
                stream("s1", 2_100, 4_000),
                stream("s2", 1_000, 0),
                stream("s3", 9_999, 9_999),
            ]),
        );
        let r = a.rates(&b);
        assert_eq!(r.streams["s1"], [1_000, 2_000]);
        assert_eq!(r.streams["s2"], [500, 0]);
        assert!(!r.streams.contains_key("s3"), "seen once: no rate yet");
        assert_eq!(r.tunnels["t1"], [1_500, 2_000]);
        assert_eq!(b.rates(&a), Rates::default(), "time went backwards");
        let mut live = VecDeque::new();
        for _ in 0..LIVE_POINTS + 5 {
            push_live(&mut live, &r);
        }
        assert_eq!(live.len(), LIVE_POINTS);
        assert_eq!(live.back(), Some(&3_500));
    }
}
