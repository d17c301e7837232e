//! Echo guard for lines without an echo canceller (phone calls): keeps the agent's own voice,
//! reflected back by the line, from being taken for the caller and cutting the agent off.
//! Owns: the reference (the energy of every frame the session sent, per tick) and the decision,
//! per inbound frame, whether its VAD probability may count.
//! Must never: allocate or lock after `new` (runs on the audio thread), read a clock (ticks are
//! time), or touch frames that are not in an echo window (the agent silent long enough).
//!
//! # How
//! The server knows exactly what it sent and when. A line echo is that signal, attenuated
//! (echo return loss, ≥ 6 dB on real lines) and delayed (carrier buffer + line + network +
//! jitter buffer: tens to hundreds of ms). So for each inbound frame the guard looks at the
//! loudest frame sent in the lag window (1 tick .. `max_lag_ms` ago) and computes the loudest
//! echo it could produce: that energy × `echo_return_db`. An inbound frame no louder than that
//! (× [`MARGIN_DB`]) can be pure echo, so its speech probability is dropped to 0. Louder frames
//! contain something the agent did not send (the caller); while the agent is in the window
//! they still need `speaking_threshold` (raised from the session's threshold) to count, so only
//! clear speech interrupts. Energies add for uncorrelated signals, so a caller talking over the
//! echo passes as soon as the sum exceeds the worst-case echo — at natural levels, the loud
//! parts of each syllable do, and the turn detector's dip tolerance bridges the rest.
//!
//! This is a suppressor, not a canceller: it never changes the audio the agent hears (providers
//! get the raw line), only what the turn detector may treat as the caller.

use crate::FRAME_MS;

/// Extra headroom over the worst-case echo estimate, dB: mu-law quantization and the
/// resamplers move a frame's energy by a fraction of a dB.
pub const MARGIN_DB: f32 = 1.0;
/// Longest lag window the ring can hold: 64 ticks = 1.28 s.
pub const MAX_LAG_FRAMES: usize = 64;

/// Settings of a session's echo guard.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EchoGuardConfig {
    pub enabled: bool,
    /// The loudest echo assumed, in dB relative to the sent signal (negative).
    pub echo_return_db: f32,
    /// How long after a frame was sent its echo may still arrive, ms (≤ 1280).
    pub max_lag_ms: u32,
    /// VAD probability a frame louder than the echo estimate needs while the agent's audio is
    /// in the window (the session's own threshold applies otherwise).
    pub speaking_threshold: f32,
}

impl EchoGuardConfig {
    /// Phone defaults, chosen by tests/twilio_bridge.rs (echo at −10 dB, 40–120 ms line delay,
    /// 100 ms bursts on the carrier side): −6 dB assumed (4 dB above the test's echo, the G.168
    /// minimum echo return loss), 640 ms of lag, threshold 0.7.
    pub const DEFAULT: EchoGuardConfig = EchoGuardConfig { enabled: true, echo_return_db: -6.0, max_lag_ms: 640, speaking_threshold: 0.7 };
    /// No guard (WebRTC: browsers cancel echo themselves).
    pub const OFF: EchoGuardConfig = EchoGuardConfig { enabled: false, ..Self::DEFAULT };
}

impl Default for EchoGuardConfig {
    fn default() -> Self {
        Self::OFF
    }
}

/// What the guard decided for one inbound frame (for stats and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing the agent sent can echo now: the frame is untouched.
    Clear,
    /// No louder than the worst-case echo: not the caller.
    Echo,
    /// Louder than any echo could be: the caller (if the VAD is confident enough).
    Caller,
}

pub struct EchoGuard {
    config: EchoGuardConfig,
    /// Mean-square energy of the frame sent at each tick, a ring indexed by tick.
    sent: [f32; MAX_LAG_FRAMES],
    pos: usize,
    lag_frames: usize,
    /// `echo_return_db` + margin as a power ratio.
    gain: f32,
}

/// Mean square of a frame (the unit both sides are compared in).
pub fn energy(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return 0.0;
    }
    pcm.iter().map(|&s| (s as f32) * (s as f32)).sum::<f32>() / pcm.len() as f32
}

impl EchoGuard {
    pub fn new(config: EchoGuardConfig) -> Self {
        let lag_frames = (config.max_lag_ms / FRAME_MS) as usize;
        EchoGuard {
            config,
            sent: [0.0; MAX_LAG_FRAMES],
            pos: 0,
            lag_frames: lag_frames.clamp(1, MAX_LAG_FRAMES),
            gain: 10f32.powf((config.echo_return_db + MARGIN_DB) / 10.0),
        }
    }

    pub fn config(&self) -> EchoGuardConfig {
        self.config
    }

    /// Once per tick, after the outbound frame: its energy (0 when silence went out).
    pub fn on_sent(&mut self, energy: f32) {
        self.pos = (self.pos + 1) % MAX_LAG_FRAMES;
        self.sent[self.pos] = energy;
    }

    /// The worst-case echo energy for a frame arriving now.
    pub fn echo_estimate(&self) -> f32 {
        // The current slot is the frame sent in the previous tick's outbound stage.
        let mut loudest = 0.0f32;
        for back in 0..self.lag_frames {
            loudest = loudest.max(self.sent[(self.pos + MAX_LAG_FRAMES - back) % MAX_LAG_FRAMES]);
        }
        loudest * self.gain
    }

    /// Judges one inbound frame of energy `inbound_energy`; returns the verdict and the speech
    /// probability the turn detector may use.
    pub fn judge(&self, inbound_energy: f32, prob: f32) -> (Verdict, f32) {
        if !self.config.enabled {
            return (Verdict::Clear, prob);
        }
        let echo = self.echo_estimate();
        if echo <= 0.0 {
            return (Verdict::Clear, prob);
        }
        if inbound_energy <= echo {
            return (Verdict::Echo, 0.0);
        }
        (Verdict::Caller, if prob >= self.config.speaking_threshold { prob } else { 0.0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amplitude: f32, n: usize) -> Vec<i16> {
        (0..n).map(|i| (amplitude * (i as f32 * 0.3).sin()) as i16).collect()
    }

    fn db(x: f32) -> f32 {
        10f32.powf(x / 20.0)
    }

    #[test]
    fn echo_at_minus_10_db_within_the_window_is_not_the_caller() {
        let mut g = EchoGuard::new(EchoGuardConfig::DEFAULT);
        let sent = tone(8000.0, 960);
        for _ in 0..5 {
            g.on_sent(energy(&sent));
        }
        // The line returns it 10 dB down, a few ticks later.
        let echo = tone(8000.0 * db(-10.0), 960);
        assert_eq!(g.judge(energy(&echo), 0.95), (Verdict::Echo, 0.0));
        // Louder than any echo: the caller, if the VAD is confident.
        let caller = tone(8000.0 * db(-3.0), 960);
        assert_eq!(g.judge(energy(&caller), 0.9).0, Verdict::Caller);
        assert_eq!(g.judge(energy(&caller), 0.9).1, 0.9);
        assert_eq!(g.judge(energy(&caller), 0.6).1, 0.0, "raised threshold while the agent speaks");
    }

    #[test]
    fn the_window_ends_max_lag_after_the_agent_stops() {
        let cfg = EchoGuardConfig { max_lag_ms: 200, ..EchoGuardConfig::DEFAULT };
        let mut g = EchoGuard::new(cfg);
        g.on_sent(energy(&tone(8000.0, 960)));
        for _ in 0..9 {
            g.on_sent(0.0);
        }
        assert!(g.echo_estimate() > 0.0, "still within 200 ms");
        g.on_sent(0.0);
        assert_eq!(g.echo_estimate(), 0.0);
        assert_eq!(g.judge(1.0, 0.6), (Verdict::Clear, 0.6), "outside any echo window nothing changes");
    }

    #[test]
    fn off_changes_nothing() {
        let mut g = EchoGuard::new(EchoGuardConfig::OFF);
        g.on_sent(1e8);
        assert_eq!(g.judge(1.0, 0.8), (Verdict::Clear, 0.8));
    }
}
