//! When a tunnel expires (see `docs/tunnels.md`).
//!
//! A tunnel is *reserved* until `reserved_until` (its open time plus
//! `tunnel_ttl_secs`, pushed forward each time `open_connection` hands the same
//! tunnel out again). While streams run it never expires. Once its last stream
//! has closed it idles out `tunnel_idle_secs` later, but never before the
//! reservation ends.

use std::ops::Add;
use std::time::Duration;
use vdi_wire::TunnelState;

#[derive(Debug, Clone, Copy)]
pub struct Lifecycle<T> {
    pub reserved_until: T,
    pub last_stream_end: Option<T>,
    pub live_streams: usize,
}

/// The tunnel's state and the instant it expires at (`None` while active).
pub fn phase<T>(l: &Lifecycle<T>, idle: Duration) -> (TunnelState, Option<T>)
where
    T: Copy + Ord + Add<Duration, Output = T>,
{
    if l.live_streams > 0 {
        return (TunnelState::Active, None);
    }
    match l.last_stream_end {
        None => (TunnelState::Waiting, Some(l.reserved_until)),
        Some(end) => (TunnelState::Idle, Some((end + idle).max(l.reserved_until))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    fn at(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn waiting_expires_at_the_reservation() {
        let l = Lifecycle {
            reserved_until: at(120),
            last_stream_end: None,
            live_streams: 0,
        };
        assert_eq!(phase(&l, IDLE), (TunnelState::Waiting, Some(at(120))));
    }

    #[test]
    fn active_never_expires() {
        let l = Lifecycle {
            reserved_until: at(120),
            last_stream_end: Some(at(5)),
            live_streams: 2,
        };
        assert_eq!(phase(&l, IDLE), (TunnelState::Active, None));
    }

    #[test]
    fn idle_expires_after_idle_time_but_not_before_reservation() {
        let late = Lifecycle {
            reserved_until: at(120),
            last_stream_end: Some(at(300)),
            live_streams: 0,
        };
        assert_eq!(phase(&late, IDLE), (TunnelState::Idle, Some(at(360))));
        let early = Lifecycle {
            reserved_until: at(120),
            last_stream_end: Some(at(10)),
            live_streams: 0,
        };
        assert_eq!(phase(&early, IDLE), (TunnelState::Idle, Some(at(120))));
    }
}
