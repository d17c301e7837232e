//! How much loss the outbound Opus encoder protects against, from what the peer says it lost.
//! Owns: the policy from RTCP receiver reports (RFC 3550 §6.4.1 "fraction lost") to the encoder's
//! expected-loss setting, which turns its in-band FEC (SILK LBRR) on and sizes it.
//! Must never: read a clock or the network (reports come in as values), or allocate.
//!
//! Why adaptive: the FEC is a second, coarser encode of every voiced frame carried in the next
//! packet. It costs ≈ 15 % of the encoder's CPU (89 vs 76 µs per 20 ms frame on the AMD machine;
//! BENCHMARKS.md "In-band FEC where the peer loses packets") and ≈ 8 % of the bitrate that would
//! otherwise code the speech itself, and it only helps a peer that loses packets. A browser's
//! encoder does the same: expected loss 0 until its peer's reports say otherwise.
//!
//! The reports' loss is smoothed (each report counts half, so one bad interval of a few seconds
//! turns FEC on and one clean one does not turn it off), then rounded down to a few levels with
//! hysteresis, so a loss that hovers at a boundary does not retune the encoder at every report.

/// The levels of expected loss handed to the encoder: (level, entered at or above, left below),
/// in percent of packets. None sits at 3–5 %: there libopus 1.6 codes no FEC at all at 32 kbps
/// (at ≤ 5 % it adds FEC only if the rate clears a threshold it checks at the bandwidth it would
/// pick without the wideband cap; at 1–2 % it does, at 3–5 % it does not, from 6 % it narrows the
/// band until FEC fits). A higher level gives the redundant frames more bits.
const LEVELS: [(u8, f32, f32); 3] = [(2, 1.5, 0.5), (10, 8.0, 5.0), (20, 20.0, 15.0)];

/// Weight of the newest report in the smoothed loss.
const NEWEST_WEIGHT: f32 = 0.5;

/// The expected loss of one outbound stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerLoss {
    /// Smoothed loss, percent.
    smoothed: f32,
    /// The level handed to the encoder, percent.
    level: u8,
}

impl PeerLoss {
    /// One receiver report about the stream: its fraction lost, in 256ths of the packets expected
    /// since the previous report. Returns the new expected loss (percent) when it changes.
    pub fn on_report(&mut self, fraction_lost: u8) -> Option<u8> {
        let percent = f32::from(fraction_lost) * 100.0 / 256.0;
        self.smoothed += NEWEST_WEIGHT * (percent - self.smoothed);
        let s = self.smoothed;
        let entered = LEVELS.iter().rev().find(|(_, enter, _)| s >= *enter).map_or(0, |l| l.0);
        let kept = LEVELS.iter().rev().find(|(_, _, leave)| s >= *leave).map_or(0, |l| l.0);
        let next = if entered > self.level { entered } else { kept.min(self.level) };
        (next != self.level).then(|| {
            self.level = next;
            next
        })
    }

    /// The expected loss (percent) the encoder runs with now.
    pub fn level(&self) -> u8 {
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After twenty reports of `percent` loss.
    fn steady(percent: f32) -> PeerLoss {
        let mut p = PeerLoss::default();
        for _ in 0..20 {
            p.on_report(fraction(percent));
        }
        p
    }

    /// RFC 3550's fraction lost for `percent` of the packets.
    fn fraction(percent: f32) -> u8 {
        (percent * 256.0 / 100.0).round().min(255.0) as u8
    }

    #[test]
    fn a_clean_path_never_turns_fec_on() {
        let mut p = PeerLoss::default();
        for _ in 0..100 {
            assert_eq!(p.on_report(0), None);
        }
        // Below half a percent is noise (a single packet in a 5 s report at 50 packets/s).
        for _ in 0..100 {
            assert_eq!(p.on_report(fraction(0.4)), None);
        }
        assert_eq!(p.level(), 0);
    }

    #[test]
    fn steady_loss_settles_on_the_level_below_it() {
        for (loss, level) in [(2.0, 2), (5.0, 2), (7.0, 2), (9.0, 10), (15.0, 10), (19.0, 10), (30.0, 20), (100.0, 20)] {
            assert_eq!(steady(loss).level(), level, "{loss} % loss");
        }
    }

    #[test]
    fn one_bad_report_turns_fec_on_and_one_clean_report_does_not_turn_it_off() {
        let mut p = PeerLoss::default();
        assert_eq!(p.on_report(fraction(12.0)), Some(2), "smoothed to 6 %");
        assert_eq!(p.on_report(0), None, "smoothed to 3 %: still protected");
        assert_eq!(p.on_report(fraction(12.0)), None, "smoothed to 7.5 %");
        assert_eq!(p.on_report(fraction(12.0)), Some(10), "smoothed to 9.8 %");
    }

    #[test]
    fn a_loss_at_a_boundary_does_not_flap() {
        assert_eq!(steady(10.0).level(), 10);
        // Hovering at 10's entry (8 %): once in, it stays until below 5 %.
        let mut p = PeerLoss::default();
        let mut changes = 0;
        for i in 0..200 {
            changes += usize::from(p.on_report(fraction(if i % 2 == 0 { 7.0 } else { 9.0 })).is_some());
        }
        assert_eq!((p.level(), changes), (10, 2), "0 → 2 → 10, then no flapping");
    }

    #[test]
    fn the_loss_ending_turns_fec_off_in_a_few_reports() {
        let mut p = steady(25.0);
        assert_eq!(p.level(), 20);
        let mut reports = 0;
        while p.level() > 0 {
            p.on_report(0);
            reports += 1;
            assert!(reports <= 8, "still at {} % after {reports} clean reports", p.level());
        }
        assert!(reports >= 4, "turned off after only {reports} clean reports");
    }
}
