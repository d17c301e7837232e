//! Turn detection: turns per-frame speech probabilities into "speech started" and "speech
//! stopped" with audio timestamps (PROTOCOL.md §2, server VAD).
//! Owns: `TurnDetectConfig` and the idle -> speaking -> idle state machine.
//! Must never: read a clock (time is the `now` argument: audio time of the frame's start),
//! allocate, or know how the probability was computed.

use std::time::Duration;

use crate::{AudioTime, FRAME};

/// The `turn_detection` settings of a session.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TurnDetectConfig {
    /// false = push-to-talk (`turn_detection: null`): no automatic speech/commit events.
    pub server_vad: bool,
    /// Speech probability at or above which a frame counts as voiced, 0..1.
    pub threshold: f32,
    /// Voiced audio (ms) needed before speech is declared started.
    pub prefix_padding_ms: u32,
    /// Unvoiced audio (ms) needed before speech is declared stopped.
    pub silence_duration_ms: u32,
    /// Barge-in: caller speech cuts the agent's playing response.
    pub interrupt_response: bool,
}

impl Default for TurnDetectConfig {
    fn default() -> Self {
        TurnDetectConfig { server_vad: true, threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500, interrupt_response: true }
    }
}

/// A turn boundary, on the call's inbound audio timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnEvent {
    /// Where the voiced run that crossed `prefix_padding_ms` began.
    SpeechStarted { audio_start: AudioTime },
    /// Where the silence run that crossed `silence_duration_ms` began.
    SpeechStopped { audio_end: AudioTime },
}

/// How far the detector's verdicts lag the audio: at a speech onset, and at its end (the
/// detector's hold). Events are placed on the audio, and the silence that ends a turn is counted
/// from where the audio went quiet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VadLag {
    pub onset: Duration,
    pub offset: Duration,
}

impl VadLag {
    pub fn of(vad: &dyn crate::vad::Vad) -> VadLag {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        VadLag { onset: ms(vad.latency_ms()), offset: ms(vad.offset_lag_ms()) }
    }
}

/// Unvoiced gaps up to this long inside a candidate voiced run do not restart it: speech has
/// short pauses between syllables and the VAD dips there.
pub const MAX_DIP: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Waiting for speech; `run` is the voiced run being measured, if any.
    Idle { run: Option<Run> },
    /// Speech in progress; `silence_from` is where the current unvoiced run began, if any.
    Speaking { silence_from: Option<AudioTime> },
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Run {
    onset: AudioTime,
    voiced: Duration,
    dip: Duration,
}

/// The server-VAD state machine. Feed it one probability per 20 ms frame, in order.
#[derive(Clone, Debug)]
pub struct TurnDetector {
    config: TurnDetectConfig,
    state: State,
    lag: VadLag,
}

impl TurnDetector {
    pub fn new(config: TurnDetectConfig) -> Self {
        TurnDetector { config, state: State::Idle { run: None }, lag: VadLag::default() }
    }

    /// The lag of the detector whose probabilities this will be fed.
    pub fn with_lag(mut self, lag: VadLag) -> Self {
        self.lag = lag;
        self
    }

    pub fn config(&self) -> TurnDetectConfig {
        self.config
    }

    /// Replace the settings; any run or speech in progress is forgotten.
    pub fn set_config(&mut self, config: TurnDetectConfig) {
        self.config = config;
        self.reset();
    }

    /// Back to idle (after a manual commit or clear).
    pub fn reset(&mut self) {
        self.state = State::Idle { run: None };
    }

    pub fn is_speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    /// One 20 ms frame whose audio starts at `now` had speech probability `speech_prob` (as
    /// the detector judged it, `lag` behind the audio).
    pub fn on_frame(&mut self, speech_prob: f32, now: AudioTime) -> Option<TurnEvent> {
        if !self.config.server_vad {
            return None;
        }
        let prefix_padding = Duration::from_millis(u64::from(self.config.prefix_padding_ms));
        let silence_duration = Duration::from_millis(u64::from(self.config.silence_duration_ms));
        let voiced = speech_prob >= self.config.threshold;
        match &mut self.state {
            State::Idle { run } => {
                if voiced {
                    let onset = now.saturating_sub(self.lag.onset);
                    let r = run.get_or_insert(Run { onset, voiced: Duration::ZERO, dip: Duration::ZERO });
                    r.voiced += FRAME;
                    r.dip = Duration::ZERO;
                    if r.voiced >= prefix_padding {
                        let audio_start = r.onset;
                        self.state = State::Speaking { silence_from: None };
                        return Some(TurnEvent::SpeechStarted { audio_start });
                    }
                } else if let Some(r) = run {
                    r.dip += FRAME;
                    if r.dip > MAX_DIP {
                        *run = None;
                    }
                }
                None
            }
            State::Speaking { silence_from } => {
                if voiced {
                    *silence_from = None;
                    return None;
                }
                let from = *silence_from.get_or_insert(now.saturating_sub(self.lag.offset));
                if (now + FRAME).since(from) >= silence_duration {
                    self.state = State::Idle { run: None };
                    return Some(TurnEvent::SpeechStopped { audio_end: from });
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `probs` as consecutive frames starting at `start_ms`; returns events with the frame
    /// time they fired at.
    fn feed(det: &mut TurnDetector, start_ms: u64, probs: &[f32]) -> Vec<(u64, TurnEvent)> {
        probs
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| {
                let now = start_ms + i as u64 * 20;
                det.on_frame(p, AudioTime::from_ms(now)).map(|e| (now, e))
            })
            .collect()
    }

    fn frames(ms: u64, p: f32) -> Vec<f32> {
        vec![p; (ms / 20) as usize]
    }

    #[test]
    fn speech_starts_after_prefix_padding_and_reports_the_onset() {
        let mut det = TurnDetector::new(TurnDetectConfig::default());
        let mut probs = frames(1000, 0.1);
        probs.extend(frames(2000, 0.9));
        let events = feed(&mut det, 0, &probs);
        // 300 ms of voiced audio = frames at 1000..1280; fires on the frame starting at 1280.
        assert_eq!(events, vec![(1280, TurnEvent::SpeechStarted { audio_start: AudioTime::from_ms(1000) })]);
        assert!(det.is_speaking());
    }

    #[test]
    fn speech_stops_after_silence_duration_and_reports_where_silence_began() {
        let mut det = TurnDetector::new(TurnDetectConfig::default());
        let mut probs = frames(400, 0.9);
        probs.extend(frames(1000, 0.0));
        let events = feed(&mut det, 2000, &probs);
        assert_eq!(
            events,
            vec![
                (2280, TurnEvent::SpeechStarted { audio_start: AudioTime::from_ms(2000) }),
                (2880, TurnEvent::SpeechStopped { audio_end: AudioTime::from_ms(2400) }),
            ]
        );
        assert!(!det.is_speaking());
    }

    #[test]
    fn short_dips_do_not_restart_the_onset_but_long_ones_do() {
        let mut det = TurnDetector::new(TurnDetectConfig::default());
        // 200 ms voiced, 60 ms dip, 100 ms voiced: 300 ms voiced in one run starting at 0.
        let mut probs = frames(200, 0.8);
        probs.extend(frames(60, 0.2));
        probs.extend(frames(100, 0.8));
        assert_eq!(feed(&mut det, 0, &probs), vec![(340, TurnEvent::SpeechStarted { audio_start: AudioTime::from_ms(0) })]);

        let mut det = TurnDetector::new(TurnDetectConfig::default());
        // 200 ms voiced, 200 ms gap: the run restarts at 400.
        let mut probs = frames(200, 0.8);
        probs.extend(frames(200, 0.2));
        probs.extend(frames(300, 0.8));
        assert_eq!(feed(&mut det, 0, &probs), vec![(680, TurnEvent::SpeechStarted { audio_start: AudioTime::from_ms(400) })]);
    }

    #[test]
    fn pauses_shorter_than_silence_duration_keep_the_turn_open() {
        let mut det = TurnDetector::new(TurnDetectConfig::default());
        let mut probs = frames(400, 0.9);
        probs.extend(frames(400, 0.0)); // < 500 ms
        probs.extend(frames(400, 0.9));
        probs.extend(frames(600, 0.0));
        let events = feed(&mut det, 0, &probs);
        assert_eq!(
            events,
            vec![
                (280, TurnEvent::SpeechStarted { audio_start: AudioTime::from_ms(0) }),
                (1680, TurnEvent::SpeechStopped { audio_end: AudioTime::from_ms(1200) })
            ]
        );
    }

    #[test]
    fn threshold_and_durations_come_from_the_config() {
        let config = TurnDetectConfig { threshold: 0.8, prefix_padding_ms: 100, silence_duration_ms: 200, ..TurnDetectConfig::default() };
        let mut det = TurnDetector::new(config);
        let mut probs = frames(200, 0.7); // below 0.8: not voiced
        probs.extend(frames(100, 0.85));
        probs.extend(frames(200, 0.5));
        assert_eq!(
            feed(&mut det, 0, &probs),
            vec![
                (280, TurnEvent::SpeechStarted { audio_start: AudioTime::from_ms(200) }),
                (480, TurnEvent::SpeechStopped { audio_end: AudioTime::from_ms(300) })
            ]
        );
    }

    #[test]
    fn push_to_talk_never_emits() {
        let mut det = TurnDetector::new(TurnDetectConfig { server_vad: false, ..TurnDetectConfig::default() });
        let mut probs = frames(1000, 0.9);
        probs.extend(frames(1000, 0.0));
        assert!(feed(&mut det, 0, &probs).is_empty());
    }

    #[test]
    fn set_config_forgets_a_run_in_progress() {
        let mut det = TurnDetector::new(TurnDetectConfig::default());
        feed(&mut det, 0, &frames(200, 0.9));
        det.set_config(TurnDetectConfig::default());
        // Needs a fresh 300 ms run, onset at 200.
        assert_eq!(feed(&mut det, 200, &frames(300, 0.9)), vec![(480, TurnEvent::SpeechStarted { audio_start: AudioTime::from_ms(200) })]);
    }

    #[test]
    fn the_detectors_lag_places_events_on_the_audio_and_shortens_the_wait() {
        // A detector that says "speech" 40 ms late and holds it 60 ms past the end: speech in
        // the audio from 1000 to 1400 ms is reported voiced for frames 1040..1460.
        let lag = VadLag { onset: Duration::from_millis(40), offset: Duration::from_millis(60) };
        let mut det = TurnDetector::new(TurnDetectConfig::default()).with_lag(lag);
        let mut probs = frames(1040, 0.0);
        probs.extend(frames(420, 0.9));
        probs.extend(frames(1000, 0.0));
        let events = feed(&mut det, 0, &probs);
        assert_eq!(
            events,
            vec![
                (1320, TurnEvent::SpeechStarted { audio_start: AudioTime::from_ms(1000) }),
                // Silence counted from 1400 (where the audio went quiet), not from 1460: the
                // turn ends 500 ms after the audio did, on the frame ending at 1900.
                (1880, TurnEvent::SpeechStopped { audio_end: AudioTime::from_ms(1400) }),
            ]
        );
    }
}
