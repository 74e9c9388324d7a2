//! What an accept loop does when `accept(2)` fails (EMFILE, ENFILE, ENOBUFS,
//! …): back off, growing while the failures last, and say so in the journal
//! without flooding it — one line when it starts, then at most one line per
//! [`LOG_EVERY`] for every listener together, with the count in between.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// At most one journal line per this while accepts keep failing.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Failures since the last line, and when that line was written: one for
/// the process, since every listener meets the same descriptor limit.
static FAILED: AtomicU64 = AtomicU64::new(0);
static LAST_LINE: Mutex<Option<Instant>> = Mutex::new(None);

/// One accept loop's back-off: 10 ms after the first failure, doubling to
/// 1 s while they go on, back to nothing after an accept succeeds.
#[derive(Default)]
pub struct Backoff {
    pause: Option<Duration>,
}

impl Backoff {
    /// An accept succeeded.
    pub fn ok(&mut self) {
        self.pause = None;
    }

    /// An accept failed with `e` on the listener `what`: the pause to take.
    pub fn failed(&mut self, what: &dyn std::fmt::Display, e: &std::io::Error) -> Duration {
        let pause = self.pause.map_or(FIRST_PAUSE, |p| (p * 2).min(MAX_PAUSE));
        self.pause = Some(pause);
        let failed = FAILED.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = LAST_LINE.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            *last = Some(now);
            FAILED.store(0, Ordering::Relaxed);
            tracing::warn!(
                listener = %what,
                error = %e,
                failures = failed,
                "accept failed; backing off (at most one such line per {}s)",
                LOG_EVERY.as_secs()
            );
        }
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_grows_to_a_second_and_resets() {
        let mut b = Backoff::default();
        let e = std::io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..10).map(|_| b.failed(&"test", &e)).collect();
        assert_eq!(pauses[0], FIRST_PAUSE);
        assert_eq!(pauses[1], FIRST_PAUSE * 2);
        assert_eq!(*pauses.last().unwrap(), MAX_PAUSE);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        b.ok();
        assert_eq!(b.failed(&"test", &e), FIRST_PAUSE);
    }
}
