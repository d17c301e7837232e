//! `max-bps`: a token bucket per allocation, in bytes, refilled continuously; one second of
//! burst. Over-rate packets are dropped (counted), never queued: queueing relayed media only
//! adds delay.

use std::time::Instant;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    /// Bytes available now, at most `rate` (one second of burst).
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn per_second(rate: u64, now: Instant) -> TokenBucket {
        TokenBucket { rate, tokens: rate as f64, last: now }
    }

    /// Takes `bytes` if available at `now`.
    pub fn take(&mut self, bytes: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.rate as f64);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_second_of_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_second(1000, t0);
        assert!(b.take(600, t0) && b.take(400, t0));
        assert!(!b.take(1, t0), "burst spent");
        assert!(b.take(100, t0 + Duration::from_millis(100)));
        assert!(!b.take(100, t0 + Duration::from_millis(150)));
    }
}
