//! The pool of tunnel ports (`port_range_start..=port_range_stop`).
//!
//! Ports are handed out round-robin from just after the last one given, so a
//! port that was just freed is not handed straight to the next client while the
//! previous client may still try it. Narrowing the range never takes back a port
//! in use: it goes on until released and is then simply no longer offered.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

#[derive(Debug, Clone)]
pub struct PortPool {
    range: RangeInclusive<u16>,
    in_use: BTreeSet<u16>,
    cursor: u16,
}

impl PortPool {
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let cursor = *range.start();
        Self {
            range,
            in_use: BTreeSet::new(),
            cursor,
        }
    }

    pub fn set_range(&mut self, range: RangeInclusive<u16>) {
        if !range.contains(&self.cursor) {
            self.cursor = *range.start();
        }
        self.range = range;
    }

    pub fn range(&self) -> RangeInclusive<u16> {
        self.range.clone()
    }

    /// Free ports of the current range, in the order they will be offered,
    /// starting at the cursor. The caller tries to bind them in turn and
    /// [`claim`](Self::claim)s the first that binds.
    pub fn candidates(&self) -> impl Iterator<Item = u16> + '_ {
        let (start, end) = (*self.range.start(), *self.range.end());
        let cursor = self.cursor.clamp(start, end);
        (cursor..=end)
            .chain(start..cursor)
            .filter(|p| !self.in_use.contains(p))
    }

    pub fn claim(&mut self, port: u16) {
        self.in_use.insert(port);
        let end = *self.range.end();
        self.cursor = if port >= end {
            *self.range.start()
        } else {
            port + 1
        };
    }

    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
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
    fn round_robin_and_exhaustion() {
        let mut pool = PortPool::new(5900..=5902);
        assert_eq!(pool.free(), 3);
        let p = pool.candidates().next().unwrap();
        assert_eq!(p, 5900);
        pool.claim(p);
        for _ in 0..2 {
            let next = pool.candidates().next().unwrap();
            pool.claim(next);
        }
        assert_eq!(pool.in_use(), 3);
        assert_eq!(pool.free(), 0);
        assert_eq!(pool.candidates().next(), None);
        pool.release(5900);
        assert_eq!(pool.candidates().collect::<Vec<_>>(), vec![5900]);
    }

    #[test]
    fn freed_port_is_not_offered_first() {
        let mut pool = PortPool::new(5900..=5909);
        pool.claim(5900);
        pool.release(5900);
        assert_eq!(pool.candidates().next(), Some(5901));
    }

    #[test]
    fn a_port_that_does_not_bind_is_skipped() {
        let pool = PortPool::new(5900..=5903);
        // The caller skips 5900 (taken by another program) and claims the next.
        let mut c = pool.candidates();
        assert_eq!(c.next(), Some(5900));
        assert_eq!(c.next(), Some(5901));
    }

    #[test]
    fn narrowing_keeps_ports_in_use_until_released() {
        let mut pool = PortPool::new(5900..=5999);
        pool.claim(5990);
        pool.set_range(5900..=5949);
        assert_eq!(pool.in_use(), 1);
        assert_eq!(pool.free(), 50);
        assert!(pool.candidates().all(|p| p <= 5949));
        pool.release(5990);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.free(), 50);
    }

    #[test]
    fn single_port_range_wraps() {
        let mut pool = PortPool::new(7000..=7000);
        pool.claim(7000);
        pool.release(7000);
        assert_eq!(pool.candidates().collect::<Vec<_>>(), vec![7000]);
    }
}
