//! Reconnect delays: exponential with jitter, so a provider outage does not see every call
//! reconnect in lockstep.

use std::time::Duration;

use rand::Rng;

pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self { attempt: 0, base, cap }
    }

    /// The next delay: `base * 2^attempt`, capped, then a uniform draw from its upper half
    /// (never near zero, so a flapping provider is not hammered).
    pub fn next_delay(&mut self) -> Duration {
        let full = self.base.saturating_mul(1 << self.attempt.min(16)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = full / 2;
        half + Duration::from_micros(rand::rng().random_range(0..=half.as_micros() as u64))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in d.iter().enumerate() {
            let full = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(2));
            assert!(*d >= full / 2 && *d <= full, "attempt {i}: {d:?} outside [{:?}, {full:?}]", full / 2);
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
