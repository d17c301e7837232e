//! The earliest deadline among many connections' sans-IO cores (ICE checks, DTLS and SCTP
//! retransmissions, RTCP reports), so a loop sleeps until exactly then and wakes only the
//! connections that are due, instead of scanning every one after every wake-up.
//!
//! A min-heap with lazy deletion: setting a connection's deadline pushes an entry and records
//! it as current; entries no longer current are dropped when they reach the top. Stale entries
//! are bounded by rebuilding the heap when they outnumber live ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Stale entries tolerated beyond one per live deadline before the heap is rebuilt.
const SLACK: usize = 64;

#[derive(Debug)]
pub struct Deadlines<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    current: HashMap<K, Instant>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines { heap: BinaryHeap::new(), current: HashMap::new() }
    }
}

impl<K: Copy + Eq + Hash + Ord> Deadlines<K> {
    /// `key`'s next deadline (`None`: it has none).
    pub fn set(&mut self, key: K, at: Option<Instant>) {
        let Some(at) = at else {
            self.current.remove(&key);
            return;
        };
        if self.current.insert(key, at) == Some(at) {
            return;
        }
        self.heap.push(Reverse((at, key)));
        if self.heap.len() > 2 * self.current.len() + SLACK {
            self.heap = self.current.iter().map(|(&k, &at)| Reverse((at, k))).collect();
        }
    }

    pub fn remove(&mut self, key: K) {
        self.current.remove(&key);
    }

    /// The earliest deadline of any connection.
    pub fn next(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if self.current.get(&key) == Some(&at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// A connection whose deadline is at or before `now`, taken out (the caller runs its
    /// timeout and sets its next deadline). Call until `None`.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        while let Some(&Reverse((at, key))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if self.current.get(&key) == Some(&at) {
                self.current.remove(&key);
                return Some(key);
            }
        }
        None
    }

    /// Connections with a deadline.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Heap entries, live and stale (bounded by twice the live ones plus a constant).
    pub fn entries(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn the_earliest_deadline_and_only_the_due_connections() {
        let t = Instant::now();
        let mut d = Deadlines::default();
        d.set(1u32, Some(ms(t, 30)));
        d.set(2, Some(ms(t, 10)));
        d.set(3, Some(ms(t, 20)));
        d.set(4, None);
        assert_eq!(d.next(), Some(ms(t, 10)));
        assert_eq!(d.pop_due(ms(t, 5)), None);
        assert_eq!(d.pop_due(ms(t, 20)), Some(2));
        assert_eq!(d.pop_due(ms(t, 20)), Some(3));
        assert_eq!(d.pop_due(ms(t, 20)), None);
        assert_eq!(d.next(), Some(ms(t, 30)));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_moved_deadline_replaces_the_old_one() {
        let t = Instant::now();
        let mut d = Deadlines::default();
        d.set(1u32, Some(ms(t, 10)));
        d.set(1, Some(ms(t, 50)));
        d.set(2, Some(ms(t, 40)));
        assert_eq!(d.next(), Some(ms(t, 40)), "the stale 10 ms entry is not a deadline");
        assert_eq!(d.pop_due(ms(t, 45)), Some(2));
        assert_eq!(d.pop_due(ms(t, 45)), None);
        d.set(1, Some(ms(t, 5)));
        assert_eq!(d.pop_due(ms(t, 5)), Some(1), "moved earlier");
        assert_eq!(d.pop_due(ms(t, 100)), None, "and popped once");
    }

    #[test]
    fn removed_and_cleared_connections_never_come_due() {
        let t = Instant::now();
        let mut d = Deadlines::default();
        d.set(1u32, Some(ms(t, 10)));
        d.set(2, Some(ms(t, 10)));
        d.remove(1);
        d.set(2, None);
        assert_eq!(d.next(), None);
        assert_eq!(d.pop_due(ms(t, 100)), None);
        assert!(d.is_empty());
    }

    #[test]
    fn stale_entries_stay_bounded() {
        let t = Instant::now();
        let mut d = Deadlines::default();
        // 200 connections, each moving its deadline 1000 times (a packet each).
        for round in 0..1000u64 {
            for key in 0..200u32 {
                d.set(key, Some(ms(t, round + u64::from(key))));
            }
        }
        assert!(d.entries() <= 2 * 200 + SLACK, "{} entries", d.entries());
        assert_eq!(d.next(), Some(ms(t, 999)));
        let due: Vec<u32> = std::iter::from_fn(|| d.pop_due(ms(t, 1001))).collect();
        assert_eq!(due, vec![0, 1, 2]);
    }
}
