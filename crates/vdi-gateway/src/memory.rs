//! Gives memory freed by ended streams back to the system. glibc keeps what a
//! worker thread freed in that thread's arena (measured: 1 000 ended streams
//! left ~6 MiB resident that only `malloc_trim` returned), so after a burst
//! the daemon would stay at its peak. Trimming walks the arenas, so it runs
//! off the workers and only after enough streams ended (or all did).

use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the stream counts are looked at.
const PERIOD: Duration = Duration::from_secs(5);
/// Streams that must have ended since the last trim (unless none is left).
const ENDED: u64 = 64;

/// Whether to trim now: enough streams ended since the last trim, or some
/// did and none is open.
pub fn due(ended_since: u64, open: i64) -> bool {
    ended_since >= ENDED || (ended_since > 0 && open <= 0)
}

/// Runs until `stop`. A no-op outside glibc.
pub async fn give_back(metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut last = metrics.stream_counts().1;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        let (open, ended) = metrics.stream_counts();
        if due(ended - last, open) {
            last = ended;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: malloc_trim takes no pointers; it locks each arena itself.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn trims_after_a_burst_or_when_the_last_stream_ended() {
        assert!(!due(0, 0), "nothing ended: nothing to give back");
        assert!(!due(10, 5), "a few ended, others run: wait");
        assert!(due(64, 900), "a burst ended");
        assert!(due(1, 0), "the last one ended");
    }
}
