//! The pool of tunnel ports (`port_range_start..=port_range_stop`).
//!
//! A new tunnel gets a port chosen at random among the free ones (the caller
//! passes the random number: this crate has no randomness), so the next port
//! cannot be guessed from one's own. A port freed less than [`QUARANTINE`] ago
//! is offered only when no other is free, so a client that was just
//! disconnected does not reach the next client's desktop on its old port.
//! Narrowing the range never takes back a port in use: it goes on until
//! released and is then simply no longer offered.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// How long a freed port rests before it is offered like any other.
pub const QUARANTINE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    in_use: BTreeSet<u16>,
    /// When each recently freed port was released.
    freed: BTreeMap<u16, Instant>,
}

impl PortPool {
    pub fn new(range: RangeInclusive<u16>) -> Self {
        Self {
            range,
            in_use: BTreeSet::new(),
            freed: BTreeMap::new(),
        }
    }

    pub fn set_range(&mut self, range: RangeInclusive<u16>) {
        self.range = range;
    }

    pub fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    /// Free ports of the current range in the order they will be offered at
    /// `now`: rested ports first, starting at the one `pick` (a random number)
    /// selects, then ports freed less than [`QUARANTINE`] ago, longest rested
    /// first. The caller tries to bind them in turn and [`claim`](Self::claim)s
    /// the first that binds.
    pub fn candidates(&self, now: Instant, pick: u64) -> Vec<u16> {
        let resting = |p: &u16| {
            self.freed
                .get(p)
                .is_some_and(|at| now.saturating_duration_since(*at) < QUARANTINE)
        };
        let free = self.range.clone().filter(|p| !self.in_use.contains(p));
        let (mut quarantined, mut rested): (Vec<u16>, Vec<u16>) = free.partition(resting);
        if !rested.is_empty() {
            let first = (pick % rested.len() as u64) as usize;
            rested.rotate_left(first);
        }
        quarantined.sort_by_key(|p| self.freed[p]);
        rested.extend(quarantined);
        rested
    }

    pub fn claim(&mut self, port: u16) {
        self.in_use.insert(port);
        self.freed.remove(&port);
    }

    pub fn release(&mut self, port: u16, now: Instant) {
        self.in_use.remove(&port);
        // Forget what has rested long enough: the map stays as small as the
        // ports freed in the last minute.
        self.freed
            .retain(|_, at| now.saturating_duration_since(*at) < QUARANTINE);
        self.freed.insert(port, now);
    }

    /// Ports held by tunnels, inside the range or (after narrowing) outside it.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    pub fn free(&self) -> usize {
        let size = self.range.clone().count();
        size - self
            .in_use
            .iter()
            .filter(|p| self.range.contains(p))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_free_port_is_offered_and_exhaustion_shows() {
        let now = Instant::now();
        let mut pool = PortPool::new(5900..=5902);
        assert_eq!(pool.free(), 3);
        for pick in [0, 7, 1] {
            let mut c = pool.candidates(now, pick);
            c.sort();
            assert_eq!(c.len(), pool.free());
            let p = pool.candidates(now, pick)[0];
            pool.claim(p);
        }
        assert_eq!(pool.in_use(), 3);
        assert_eq!(pool.free(), 0);
        assert!(pool.candidates(now, 0).is_empty());
        pool.release(5900, now);
        assert_eq!(pool.candidates(now, 5), vec![5900]);
    }

    #[test]
    fn the_first_port_offered_follows_the_random_pick() {
        let now = Instant::now();
        let pool = PortPool::new(5900..=5999);
        let firsts: BTreeSet<u16> = (0..100).map(|pick| pool.candidates(now, pick)[0]).collect();
        assert_eq!(firsts.len(), 100, "each pick starts somewhere else");
        let mut all = pool.candidates(now, 42);
        all.sort();
        assert_eq!(all, (5900..=5999).collect::<Vec<_>>());
    }

    #[test]
    fn a_freed_port_rests_for_a_minute_unless_nothing_else_is_free() {
        let t0 = Instant::now();
        let mut pool = PortPool::new(5900..=5903);
        pool.claim(5901);
        pool.release(5901, t0);
        for pick in 0..8 {
            let c = pool.candidates(t0 + Duration::from_secs(59), pick);
            assert_eq!(c.last(), Some(&5901), "pick {pick}: {c:?}");
        }
        // After the quarantine it is a port like any other.
        let after = t0 + QUARANTINE;
        assert!((0..8).any(|pick| pool.candidates(after, pick)[0] == 5901));
        // Only resting ports free: they are offered, longest rested first.
        for p in [5900, 5902, 5903] {
            pool.claim(p);
        }
        pool.release(5903, t0 + Duration::from_secs(10));
        assert_eq!(
            pool.candidates(t0 + Duration::from_secs(20), 0),
            vec![5901, 5903]
        );
    }

    #[test]
    fn narrowing_keeps_ports_in_use_until_released() {
        let now = Instant::now();
        let mut pool = PortPool::new(5900..=5999);
        pool.claim(5990);
        pool.set_range(5900..=5949);
        assert_eq!(pool.in_use(), 1);
        assert_eq!(pool.free(), 50);
        assert!(pool.candidates(now, 3).iter().all(|p| *p <= 5949));
        pool.release(5990, now);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.free(), 50);
    }

    #[test]
    fn single_port_range() {
        let now = Instant::now();
        let mut pool = PortPool::new(7000..=7000);
        pool.claim(7000);
        pool.release(7000, now);
        assert_eq!(pool.candidates(now, 9), vec![7000]);
    }
}
