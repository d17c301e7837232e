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
//! parts of each syllable do.
//!
//! Once half a second of agent audio has been heard back, the echo path is learned: the lag
//! (frame correlation of inbound and sent energies) and the gain at it (least squares); the
//! estimate is then that gain plus 3 dB, times the loudest sent frame at that lag ± 1 (± 3
//! while the fit is loose). Double talk is kept out of the learning: a confident frame above the estimate
//! holds it for 300 ms ([`HOLD_FRAMES`]; learning from the caller over the echo raised the
//! gain by 6 dB within a second and locked the caller out). And once the caller has held the
//! floor for `min_barge_in_ms`, their valleys down to 3 dB under the estimate count too
//! ([`BRIDGE_GAIN`]): echo alone stays under the estimate by its margin, and
//! without the bridge a talker's syllables split into runs too short for the turn detector.
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
    /// While the agent's audio is in the window, confident caller frames only count once they
    /// form a run this long (ms): a drifting echo path pokes above the estimate for a frame or
    /// a few, a caller talks for longer. Delays barge-in onsets by up to this much.
    pub min_barge_in_ms: u32,
}

impl EchoGuardConfig {
    /// Phone defaults, chosen by tests/twilio_bridge.rs (echo at −20, −10 and −6 dB, 40–120 ms
    /// line delay; BENCHMARKS.md "Self-interruption"): −6 dB assumed until learned (the G.168
    /// minimum echo return loss), 640 ms of lag, threshold 0.7, runs of 60 ms.
    pub const DEFAULT: EchoGuardConfig =
        EchoGuardConfig { enabled: true, echo_return_db: -6.0, max_lag_ms: 640, speaking_threshold: 0.7, min_barge_in_ms: 60 };
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

#[derive(Clone)]
pub struct EchoGuard {
    config: EchoGuardConfig,
    /// RMS of the frame sent at each tick, a ring indexed by tick.
    sent: [f32; MAX_LAG_FRAMES],
    pos: usize,
    lag_frames: usize,
    /// `echo_return_db` + margin as an amplitude ratio: the fallback before the echo path is
    /// learned.
    assumed_gain: f32,
    /// Per lag (ticks back), decayed sums of inbound × sent and sent² (RMS domain): the
    /// least-squares echo gain of that lag is `xy / yy`, its fit `xy / sqrt(xx · yy)`.
    xy: [f32; MAX_LAG_FRAMES],
    yy: [f32; MAX_LAG_FRAMES],
    xx: f32,
    /// Confident caller frames in the current run (short gaps allowed), and the current gap.
    run: u32,
    gap: u32,
    /// `min_barge_in_ms` in frames.
    min_run: u32,
    /// Frames learned from (agent audio in the window): the learned path is only trusted after
    /// [`MIN_LEARN_TICKS`] (a fit over a few frames is chance).
    active_ticks: u32,
    /// Double talk: frames left during which nothing is learned, and how long learning has
    /// been held so far.
    hold: u32,
    held_for: u32,
    /// Frames learned from since the agent's audio last entered an empty window. Each response
    /// starts the line's playout buffer afresh (a `clear` empties it), so the echo can come
    /// back a frame or two earlier than in the previous one: the tight lag is trusted only once
    /// this response has confirmed it ([`CONFIRM_TICKS`]).
    period_ticks: u32,
    /// Samples by which the line's echo of a frame trails the frame as sent: the codec path's
    /// resampler delays, out and back in ([`EchoGuard::aligned`]). The reference is measured
    /// over the sent audio shifted by this much, so one inbound frame meets one sent frame.
    align: usize,
    /// Sum of squares of the last `align` samples sent, which belong to the next reference.
    carry: f32,
    /// Samples per sent frame, for the silent ticks that still carry the last frame's tail.
    frame_len: usize,
}

/// RMS of a frame (the unit both sides are compared in).
pub fn rms(pcm: &[i16]) -> f32 {
    energy(pcm).sqrt()
}

/// Mean square of a frame.
pub fn energy(pcm: &[i16]) -> f32 {
    if pcm.is_empty() {
        return 0.0;
    }
    sum_of_squares(pcm) / pcm.len() as f32
}

fn sum_of_squares(pcm: &[i16]) -> f32 {
    pcm.iter().map(|&s| (s as f32) * (s as f32)).sum()
}

/// Per-learned-frame decay of the echo-path sums: ≈ 0.7 s of agent audio of memory, so a
/// changed delay (the jitter buffer grew) is relearned within a second of agent speech.
const DECAY: f32 = 0.97;
/// The learned path is trusted once the fit at the best lag reaches this correlation…
const MIN_FIT: f32 = 0.7;
/// …after this many frames (0.5 s) of agent audio in the window.
const MIN_LEARN_TICKS: u32 = 25;
/// …and the agent has sent at least ≈ 10 frames at −40 dBFS worth of reference (yy, decayed).
const MIN_REFERENCE: f32 = 10.0 * 330.0 * 330.0;
/// Lags on either side of the best one also count (the jitter buffer moves the echo by a
/// few frames when it grows or shrinks under bursty arrival).
const LAG_SLACK: usize = 3;
/// Headroom over the learned echo, dB (frame energies fluctuate around the fit).
const LEARNED_MARGIN_DB: f32 = 3.0;
/// Non-caller frames (100 ms, the turn detector's dip tolerance) a caller run survives.
const MAX_RUN_GAP: u32 = 5;
/// A path that fits this well (correlation) is trusted to the frame: the estimate then looks
/// only [`TIGHT_SLACK`] lags either side of the best one instead of [`LAG_SLACK`].
const TIGHT_FIT: f32 = 0.9;
const TIGHT_SLACK: usize = 1;
/// Learning stops for this long (300 ms) after a confident speech frame louder than the echo
/// estimate: a double-talk hangover, as in line echo cancellers. Learning from the caller
/// talking over the echo raised the learned gain by 6 dB within a second and locked the
/// caller out (tests/twilio_bridge.rs, barge-in 900 ms into a reply).
const HOLD_FRAMES: u32 = 15;
/// A caller run that has reached `min_barge_in_ms` bridges its valleys down to this fraction
/// of the estimate (−3 dB, amplitude). Bridging only after a longer run (100 ms against the
/// default 60) left a caller over a −6 dB echo split into runs the turn detector never joined:
/// the valleys outlasted its 100 ms dip tolerance (traced in tests/twilio_bridge.rs, barge-ins
/// missed by 1–2 s).
const BRIDGE_GAIN: f32 = 0.708;
/// Frames (200 ms) of a response's echo learned before its lag counts as confirmed (the decayed
/// sums have then taken in a shift of the playout depth).
const CONFIRM_TICKS: u32 = 10;
/// Held longer than this (1 s) without the caller winning a barge-in (which takes ≈ 0.3 s),
/// the "double talk" is a changed echo path (the line delay jumped): learn again.
const MAX_HOLD_FRAMES: u32 = 50;

impl EchoGuard {
    pub fn new(config: EchoGuardConfig) -> Self {
        let lag_frames = (config.max_lag_ms / FRAME_MS) as usize;
        EchoGuard {
            config,
            sent: [0.0; MAX_LAG_FRAMES],
            pos: 0,
            lag_frames: lag_frames.clamp(1, MAX_LAG_FRAMES - 1),
            assumed_gain: 10f32.powf((config.echo_return_db + MARGIN_DB) / 20.0),
            xy: [0.0; MAX_LAG_FRAMES],
            yy: [0.0; MAX_LAG_FRAMES],
            xx: 0.0,
            active_ticks: 0,
            hold: 0,
            held_for: 0,
            period_ticks: 0,
            run: 0,
            gap: 0,
            min_run: (config.min_barge_in_ms / FRAME_MS).max(1),
            align: 0,
            carry: 0.0,
            frame_len: 0,
        }
    }

    /// The echo of what the session sends comes back `samples` (at the session rate) later than
    /// the frames it is sent in, besides whole ticks: the codec path's resampling filters on
    /// the way out and in (G.711: 3 ms each way). Unaligned, each inbound frame held 30 % of
    /// the previous sent frame's echo, and the learned fit sat at 0.95 instead of 0.99, close
    /// to where the guard stops trusting it ([`TIGHT_FIT`]).
    pub fn aligned(mut self, samples: usize) -> Self {
        self.align = samples;
        self
    }

    pub fn config(&self) -> EchoGuardConfig {
        self.config
    }

    /// Off for lines with their own echo canceller (WebRTC): the chain then skips measuring
    /// levels for it.
    pub fn is_on(&self) -> bool {
        self.config.enabled
    }

    /// Once per tick, after the outbound frame: the audio sent (empty when silence went out).
    /// The reference for this tick is the RMS of the frame's last `frame − align` samples,
    /// preceded by the previous frame's last `align`.
    pub fn on_sent_frame(&mut self, pcm: &[i16]) {
        if !pcm.is_empty() {
            self.frame_len = pcm.len();
        }
        let n = self.frame_len;
        if n == 0 {
            return self.on_sent(0.0);
        }
        let split = pcm.len().saturating_sub(self.align);
        let window = self.carry + sum_of_squares(&pcm[..split]);
        self.carry = sum_of_squares(&pcm[split..]);
        self.on_sent((window / n as f32).sqrt());
    }

    /// Once per tick, after the outbound frame: the RMS of the reference (0 when silence went
    /// out and nothing is carried over).
    pub fn on_sent(&mut self, rms: f32) {
        self.pos = (self.pos + 1) % MAX_LAG_FRAMES;
        self.sent[self.pos] = rms;
    }

    /// What was sent `back` ticks ago (1 = the previous tick's outbound frame).
    fn sent_ago(&self, back: usize) -> f32 {
        self.sent[(self.pos + 1 + MAX_LAG_FRAMES - back) % MAX_LAG_FRAMES]
    }

    /// The worst-case echo RMS for a frame arriving now: from the learned echo path when it
    /// fits, else the loudest frame of the window times the assumed echo return.
    pub fn echo_estimate(&self) -> f32 {
        self.estimates().0
    }

    /// (the echo estimate, the double-talk threshold): the threshold is the tight estimate
    /// whenever the path fits well, even while this response has not confirmed its lag yet, so
    /// a caller talking right from the start of a reply is not learned from.
    fn estimates(&self) -> (f32, f32) {
        let mut loudest = 0.0f32;
        let (mut best, mut best_fit) = (0, 0.0f32);
        for back in 1..=self.lag_frames {
            loudest = loudest.max(self.sent_ago(back));
            let (xy, yy) = (self.xy[back], self.yy[back]);
            if yy >= MIN_REFERENCE && self.xx > 0.0 {
                let fit = xy / (self.xx * yy).sqrt();
                if fit > best_fit {
                    (best, best_fit) = (back, fit);
                }
            }
        }
        if loudest == 0.0 {
            return (0.0, 0.0);
        }
        if best_fit >= MIN_FIT && self.active_ticks >= MIN_LEARN_TICKS {
            let gain = self.xy[best] / self.yy[best] * 10f32.powf(LEARNED_MARGIN_DB / 20.0);
            let aligned = |slack: usize| {
                let lo = best.saturating_sub(slack).max(1);
                let hi = (best + slack).min(self.lag_frames);
                gain * (lo..=hi).map(|b| self.sent_ago(b)).fold(0.0f32, f32::max)
            };
            let (tight, wide) = (aligned(TIGHT_SLACK), aligned(LAG_SLACK));
            if best_fit < TIGHT_FIT {
                return (wide, wide);
            }
            let confirmed = self.period_ticks >= CONFIRM_TICKS;
            return (if confirmed { tight } else { wide }, tight);
        }
        // Not learned yet (or no echo to learn): the assumption, unless the line has been
        // measurably quieter than it for a while (no echo at all on this line).
        let measured = (1..=self.lag_frames)
            .filter(|&b| self.yy[b] >= MIN_REFERENCE)
            .map(|b| self.xy[b] / self.yy[b])
            .fold(None, |m: Option<f32>, g| Some(m.map_or(g, |m| m.max(g))));
        let gain = match measured {
            Some(g) if self.active_ticks >= MIN_LEARN_TICKS => (g * 10f32.powf(LEARNED_MARGIN_DB / 20.0)).min(self.assumed_gain),
            _ => self.assumed_gain,
        };
        (loudest * gain, loudest * gain)
    }

    /// Judges one inbound frame of RMS `inbound_rms` with VAD probability `prob`; returns the
    /// verdict and the probability the turn detector may use. Learns the echo path as it goes.
    pub fn judge(&mut self, inbound_rms: f32, prob: f32) -> (Verdict, f32) {
        if !self.config.enabled {
            return (Verdict::Clear, prob);
        }
        let (echo, double_talk) = self.estimates();
        if echo <= 0.0 {
            // Nothing the agent sent can echo now: nothing to learn either, so the learned path
            // carries over to the next response (a call's echo path does not change much, and
            // the decayed sums follow what does within a second of agent speech).
            self.hold = 0;
            self.period_ticks = 0;
            return (Verdict::Clear, prob);
        }
        let confident = prob >= self.config.speaking_threshold;
        // Once the caller's run counts as a barge-in (min_run frames), their quieter syllables
        // (within BRIDGE_GAIN of the estimate) count too: echo alone sits below the estimate by
        // its margin, and a talker's valleys would otherwise split the turn into runs too short
        // for the turn detector.
        let bridging = confident && self.run >= self.min_run && self.gap < MAX_RUN_GAP && inbound_rms > echo * BRIDGE_GAIN;
        if bridging && inbound_rms <= echo {
            self.hold = HOLD_FRAMES;
            self.held_for = self.held_for.saturating_add(1);
            return (Verdict::Caller, prob);
        }
        if confident && inbound_rms > double_talk {
            self.hold = HOLD_FRAMES;
        } else {
            self.hold = self.hold.saturating_sub(1);
        }
        self.held_for = if self.hold > 0 { self.held_for.saturating_add(1) } else { 0 };
        if self.hold == 0 || self.held_for > MAX_HOLD_FRAMES {
            self.learn(inbound_rms);
        }
        if inbound_rms <= echo {
            self.note_not_caller();
            return (Verdict::Echo, 0.0);
        }
        if !confident {
            self.note_not_caller();
            return (Verdict::Caller, 0.0);
        }
        self.gap = 0;
        self.run = self.run.saturating_add(1);
        if self.run < self.min_run {
            return (Verdict::Caller, 0.0);
        }
        (Verdict::Caller, prob)
    }

    /// A frame that is not confident caller speech: the caller run survives short dips (the
    /// valleys between syllables fall below the echo estimate).
    fn note_not_caller(&mut self) {
        self.gap = self.gap.saturating_add(1);
        if self.gap > MAX_RUN_GAP {
            self.run = 0;
        }
    }

    fn learn(&mut self, x: f32) {
        self.active_ticks = self.active_ticks.saturating_add(1);
        self.period_ticks = self.period_ticks.saturating_add(1);
        self.xx = self.xx * DECAY + x * x;
        for back in 1..=self.lag_frames {
            let y = self.sent_ago(back);
            self.xy[back] = self.xy[back] * DECAY + x * y;
            self.yy[back] = self.yy[back] * DECAY + y * y;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(amplitude: f32, n: usize) -> Vec<i16> {
        (0..n).map(|i| (amplitude * (i as f32 * 0.3).sin()) as i16).collect()
    }

    /// Speech-like envelope: syllables at ≈ 4 per second, 24 dB between peaks and valleys.
    fn level(i: usize) -> f32 {
        500.0 + 8000.0 * (i as f32 * 0.25).sin().abs()
    }

    #[test]
    fn the_echo_path_is_learned_so_a_caller_at_the_agents_level_gets_through() {
        let mut g = EchoGuard::new(EchoGuardConfig::DEFAULT);
        let delay = 7; // ticks
        let echo_gain = 10f32.powf(-10.0 / 20.0);
        let mut sent_hist = Vec::new();
        // 2 s of agent speech echoed at -10 dB: all judged echo once learned, never caller.
        for i in 0..100 {
            let x = if i >= delay { sent_hist[i - delay] * echo_gain } else { 0.0 };
            let (v, _) = g.judge(x, 0.95);
            assert_ne!(v, Verdict::Caller, "frame {i}: echo taken for the caller");
            let s = level(i) / 2f32.sqrt();
            sent_hist.push(s);
            g.on_sent(s);
        }
        // The caller speaks at the agent's own level over the echo: most frames get through,
        // including ones far quieter than the agent's loudest.
        let mut through = 0;
        for i in 100..150 {
            let echo = sent_hist[i - delay] * echo_gain;
            let caller = level(i + 5) / 2f32.sqrt();
            let (_, p) = g.judge((echo * echo + caller * caller).sqrt(), 0.95);
            through += usize::from(p > 0.0);
            let s = level(i) / 2f32.sqrt();
            sent_hist.push(s);
            g.on_sent(s);
        }
        // This envelope is harsh (valleys 24 dB deep, as long as the syllables): the valleys stay
        // below the echo and restart the run. Real speech over a real echo is asserted end to
        // end (tests/twilio_bridge.rs: barge-in over a -10 dB echo).
        assert!(through >= 10, "only {through} of 50 caller frames got through");
    }

    fn db(x: f32) -> f32 {
        10f32.powf(x / 20.0)
    }

    #[test]
    fn echo_at_minus_10_db_within_the_window_is_not_the_caller() {
        let mut g = EchoGuard::new(EchoGuardConfig::DEFAULT);
        let sent = tone(8000.0, 960);
        g.on_sent(rms(&sent));
        // Before anything is learned, the line returns it 10 dB down: the assumption covers it.
        let echo = tone(8000.0 * db(-10.0), 960);
        assert_eq!(g.judge(rms(&echo), 0.95), (Verdict::Echo, 0.0));
        // Louder than any echo: the caller, if the VAD is confident.
        let caller = tone(8000.0 * db(-3.0), 960);
        for _ in 1..3 {
            assert_eq!(g.judge(rms(&caller), 0.9), (Verdict::Caller, 0.0), "shorter than min_barge_in_ms");
        }
        assert_eq!(g.judge(rms(&caller), 0.9), (Verdict::Caller, 0.9));
        for _ in 0..6 {
            g.judge(rms(&caller), 0.6);
        }
        assert_eq!(g.judge(rms(&caller), 0.9).1, 0.0, "raised threshold while the agent speaks; the run restarts after a gap");
    }

    #[test]
    fn the_window_ends_max_lag_after_the_agent_stops() {
        let cfg = EchoGuardConfig { max_lag_ms: 200, ..EchoGuardConfig::DEFAULT };
        let mut g = EchoGuard::new(cfg);
        g.on_sent(rms(&tone(8000.0, 960)));
        for _ in 0..9 {
            g.on_sent(0.0);
        }
        assert!(g.echo_estimate() > 0.0, "still within 200 ms");
        g.on_sent(0.0);
        assert_eq!(g.echo_estimate(), 0.0);
        assert_eq!(g.judge(1.0, 0.6), (Verdict::Clear, 0.6), "outside any echo window nothing changes");
    }

    #[test]
    fn the_caller_talking_over_the_echo_does_not_teach_the_path() {
        let mut g = EchoGuard::new(EchoGuardConfig::DEFAULT);
        let delay = 4;
        let echo_gain = db(-10.0);
        let mut sent_hist = Vec::new();
        for i in 0..100 {
            let x = if i >= delay { sent_hist[i - delay] * echo_gain } else { 0.0 };
            g.judge(x, 0.95);
            let s = level(i) / 2f32.sqrt();
            sent_hist.push(s);
            g.on_sent(s);
        }
        // The estimate for a steady sent level: the learned gain (with its margin), nothing else.
        let gain_of = |g: &EchoGuard| {
            let mut probe = g.clone();
            for _ in 0..MAX_LAG_FRAMES {
                probe.on_sent(1000.0);
            }
            probe.echo_estimate() / 1000.0
        };
        let learned = gain_of(&g);
        // 0.8 s of a loud caller over the echo (a barge-in takes ≈ 0.3 s): nothing is learned.
        for i in 100..140 {
            let echo = sent_hist[i - delay] * echo_gain;
            let caller = 2.0 * level(i + 7) / 2f32.sqrt();
            g.judge((echo * echo + caller * caller).sqrt(), 0.95);
            let s = level(i) / 2f32.sqrt();
            sent_hist.push(s);
            g.on_sent(s);
        }
        let after = gain_of(&g);
        assert!(after <= learned * 1.05, "the estimate rose from {learned} to {after} of the sent level");
    }

    #[test]
    fn an_established_caller_run_bridges_valleys_just_under_the_estimate() {
        let mut g = EchoGuard::new(EchoGuardConfig::DEFAULT);
        g.on_sent(rms(&tone(8000.0, 960)));
        let echo = g.echo_estimate();
        // Echo alone just under the estimate: never the caller, however confident the VAD.
        assert_eq!(g.judge(echo * 0.9, 0.95), (Verdict::Echo, 0.0));
        for _ in 0..g.min_run {
            g.on_sent(rms(&tone(8000.0, 960)));
            g.judge(echo * 2.0, 0.95);
        }
        g.on_sent(rms(&tone(8000.0, 960)));
        assert_eq!(g.judge(echo * 0.9, 0.95), (Verdict::Caller, 0.95), "a valley inside the caller's run");
        g.on_sent(rms(&tone(8000.0, 960)));
        assert_eq!(g.judge(echo * 0.5, 0.95), (Verdict::Echo, 0.0), "too far under the estimate");
    }

    #[test]
    fn an_aligned_reference_meets_an_echo_that_straddles_frames() {
        // Frames alternating loud and quiet; the line returns them 10 dB down, 144 samples
        // (6 ms at 24 kHz) later than the frame grid: each inbound frame is 30 % of one sent
        // frame and 70 % of the next.
        const N: usize = 480;
        const SHIFT: usize = 144;
        let sent: Vec<i16> =
            (0..40 * N).map(|i| if (i / N).is_multiple_of(2) { (8000.0 * (i as f32 * 0.3).sin()) as i16 } else { 0 }).collect();
        let echo: Vec<i16> = (0..40 * N).map(|i| if i < SHIFT { 0 } else { (sent[i - SHIFT] as f32 * db(-10.0)) as i16 }).collect();
        let mut plain = EchoGuard::new(EchoGuardConfig::DEFAULT);
        let mut aligned = EchoGuard::new(EchoGuardConfig::DEFAULT).aligned(SHIFT);
        for k in 0..40 {
            let frame = &sent[k * N..(k + 1) * N];
            plain.on_sent(rms(frame));
            aligned.on_sent_frame(frame);
            // The echo of this tick's window, heard this tick: the reference that matches it is
            // the one the aligned guard just recorded.
            let heard = rms(&echo[k * N..(k + 1) * N]);
            if k > 0 {
                let ratio = heard / aligned.sent_ago(1);
                assert!((ratio - db(-10.0)).abs() < 0.01, "frame {k}: aligned ratio {ratio}");
                let unaligned = heard / plain.sent_ago(1).max(1.0);
                assert!((unaligned - db(-10.0)).abs() > 0.03, "frame {k}: the plain reference should miss ({unaligned})");
            }
        }
    }

    #[test]
    fn off_changes_nothing() {
        let mut g = EchoGuard::new(EchoGuardConfig::OFF);
        g.on_sent(1e8);
        assert_eq!(g.judge(1.0, 0.8), (Verdict::Clear, 0.8));
    }
}
