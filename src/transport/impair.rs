//! A bad network, on purpose: the project's RTP client (load generator, tests) can drop a share
//! of its outgoing packets at random and delay each by a random amount up to a bound, which
//! reorders packets whose delays differ by more than a frame. Seeded, so a run is repeatable;
//! the decision is a pure function of the seed and the packet's number (no clock, no sleeps).
//!
//! Where `tc netem` is available it does the same in the kernel; this needs no root and no
//! network namespace, and it hits exactly the calls under test.

use std::time::Duration;

/// What to do to outgoing RTP.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkFaults {
    /// Share of packets dropped, 0.0–1.0.
    pub loss: f64,
    /// Each packet is held back by a uniform random delay in `0..=jitter`.
    pub jitter: Duration,
    pub seed: u64,
}

impl NetworkFaults {
    pub const NONE: NetworkFaults = NetworkFaults { loss: 0.0, jitter: Duration::ZERO, seed: 0 };

    pub fn is_none(&self) -> bool {
        self.loss <= 0.0 && self.jitter.is_zero()
    }

    /// The fate of packet number `n` of a stream: `None`, dropped; `Some(delay)`, sent after
    /// `delay`.
    pub fn fate(&self, n: u64) -> Option<Duration> {
        let a = splitmix64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let b = splitmix64(a);
        if unit(a) < self.loss {
            return None;
        }
        Some(self.jitter.mul_f64(unit(b)))
    }
}

/// A uniform value in [0, 1) from 53 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64: small, fast, and good enough to scatter losses and delays.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_delay_follow_the_settings() {
        let faults = NetworkFaults { loss: 0.05, jitter: Duration::from_millis(40), seed: 7 };
        let n = 100_000;
        let fates: Vec<Option<Duration>> = (0..n).map(|i| faults.fate(i)).collect();
        let lost = fates.iter().filter(|f| f.is_none()).count() as f64 / n as f64;
        assert!((lost - 0.05).abs() < 0.005, "lost {lost}");
        let delays: Vec<f64> = fates.iter().flatten().map(|d| d.as_secs_f64() * 1000.0).collect();
        assert!(delays.iter().all(|&d| (0.0..=40.0).contains(&d)));
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!((mean - 20.0).abs() < 0.5, "mean delay {mean} ms");
        // Reordering: a packet sent 20 ms after another overtakes it when its delay is more
        // than 20 ms shorter (uniform 0–40 ms: 1/8 of pairs).
        let overtaken =
            (1..n as usize).filter_map(|i| Some((fates[i - 1]?, fates[i]?))).filter(|(a, b)| b.as_millis() + 20 < a.as_millis()).count()
                as f64
                / n as f64;
        assert!((0.08..0.16).contains(&overtaken), "reordered {overtaken}");
    }

    #[test]
    fn the_same_seed_gives_the_same_run_and_none_does_nothing() {
        let a = NetworkFaults { loss: 0.1, jitter: Duration::from_millis(30), seed: 42 };
        assert_eq!((0..1000).map(|i| a.fate(i)).collect::<Vec<_>>(), (0..1000).map(|i| a.fate(i)).collect::<Vec<_>>());
        let b = NetworkFaults { seed: 43, ..a };
        assert_ne!((0..1000).map(|i| a.fate(i)).collect::<Vec<_>>(), (0..1000).map(|i| b.fate(i)).collect::<Vec<_>>());
        assert!(NetworkFaults::NONE.is_none());
        assert!((0..1000).all(|i| NetworkFaults::NONE.fate(i) == Some(Duration::ZERO)));
    }
}
