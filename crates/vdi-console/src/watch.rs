//! Live views: a value pushed to a sink now and at an interval, until the
//! view unwatches it, a newer watch of the same kind replaces it, or the
//! sink refuses (its page went away). The desktop app's `watch_*` commands
//! and `unwatch` are one call each into [`crate::Console`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use vdi_wire::console::WatchId;

/// One watch of each kind runs at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Fleet,
    Connections,
    Journal,
}

#[derive(Default)]
pub struct Watches {
    next: AtomicU64,
    running: Mutex<HashMap<Kind, (WatchId, CancellationToken)>>,
}

impl Watches {
    /// Registers a new watch of `kind`, ending the one it replaces.
    pub fn start(&self, kind: Kind) -> (WatchId, CancellationToken) {
        let id = WatchId(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let token = CancellationToken::new();
        let old = self
            .running
            .lock()
            .unwrap()
            .insert(kind, (id, token.clone()));
        if let Some((_, t)) = old {
            t.cancel();
        }
        (id, token)
    }

    /// Ends watch `id`; false when it had ended already (replaced, or its
    /// sink gone). A stale `id` never ends the newer watch of its kind.
    pub fn stop(&self, id: WatchId) -> bool {
        let mut running = self.running.lock().unwrap();
        let Some(kind) = running
            .iter()
            .find_map(|(k, (i, _))| (*i == id).then_some(*k))
        else {
            return false;
        };
        let (_, token) = running.remove(&kind).expect("found above");
        let live = !token.is_cancelled();
        token.cancel();
        live
    }

    /// Whether watch `id` still runs.
    pub fn is_running(&self, id: WatchId) -> bool {
        self.running
            .lock()
            .unwrap()
            .values()
            .any(|(i, t)| *i == id && !t.is_cancelled())
    }
}

/// The interval of a view, bounded to 250 ms ... 60 s.
pub fn interval(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(250, 60_000))
}

/// Sends `next()` to `sink` now and every `every` until `stop` is cancelled
/// or `sink` returns false.
pub async fn repeat<T, F, Fut>(
    every: Duration,
    stop: CancellationToken,
    mut next: F,
    mut sink: impl FnMut(T) -> bool,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    loop {
        let update = tokio::select! {
            _ = stop.cancelled() => return,
            u = next() => u,
        };
        if stop.is_cancelled() || !sink(update) {
            stop.cancel();
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_watch_replaces_and_a_stale_id_stops_nothing() {
        let w = Watches::default();
        let (a, ta) = w.start(Kind::Connections);
        let (b, tb) = w.start(Kind::Connections);
        let (f, tf) = w.start(Kind::Fleet);
        assert!(ta.is_cancelled() && !tb.is_cancelled());
        assert!(!w.stop(a), "a replaced watch has ended already");
        assert!(w.is_running(b) && !tb.is_cancelled());
        assert!(w.stop(b));
        assert!(tb.is_cancelled() && !w.is_running(b));
        assert!(!w.stop(b));
        assert!(w.is_running(f) && !tf.is_cancelled());
    }

    #[tokio::test]
    async fn repeats_until_stopped_or_refused() {
        let stop = CancellationToken::new();
        let mut n = 0;
        let mut got = vec![];
        repeat(
            Duration::from_millis(1),
            stop.clone(),
            || {
                n += 1;
                std::future::ready(n)
            },
            |v| {
                got.push(v);
                v < 3
            },
        )
        .await;
        assert_eq!(got, [1, 2, 3]);
        assert!(stop.is_cancelled(), "a refused watch counts as ended");

        let stop = CancellationToken::new();
        let s2 = stop.clone();
        let mut sent = 0;
        repeat(
            Duration::from_millis(1),
            stop.clone(),
            || std::future::ready(()),
            |()| {
                sent += 1;
                if sent == 2 {
                    s2.cancel();
                }
                true
            },
        )
        .await;
        assert_eq!(sent, 2);
        assert_eq!(interval(1), Duration::from_millis(250));
        assert_eq!(interval(u64::MAX), Duration::from_secs(60));
    }
}
