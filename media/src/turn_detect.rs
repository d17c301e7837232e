//! Turn detection: turns per-frame speech probabilities into "speech started" and "speech
//! stopped" with audio timestamps (PROTOCOL.md §2, server VAD).
//! Owns: `TurnDetectConfig` and the idle -> speaking -> idle state machine.
//! Must never: read a clock (time is the `now` argument: audio time of the frame's start),
//! allocate, or know how the probability was computed.
//!
//! Where speech ended: a VAD holds "speech" past the end of it (earshot's probability decays
//! over ≈ 100 ms after an abrupt stop). Each VAD states a typical hold ([`VadLag`]); where the
//! frames' levels show where the audio fell quiet, the end is placed there, so
//! `silence_duration_ms` counts real silence (issue 20: this was ≈ 60 ms of every turn's
//! latency with the default VAD).

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

/// Frames of level history kept to place the end of speech (320 ms, more than any VAD's hold).
const LEVEL_FRAMES: usize = 16;
/// Speech ends after the last frame within this many dB of the loudest recent frame...
const END_DROP_DB: f32 = 30.0;
/// ...and this far above the quietest one: on a noisy line the level cannot tell speech from
/// the noise floor, and the end stays where the VAD put it.
const END_FLOOR_MARGIN_DB: f32 = 10.0;
/// The level moves the end at most this far before where the VAD's own lag puts it.
const MAX_END_REFINE: Duration = Duration::from_millis(160);
/// The level of digital silence, dBFS.
const SILENT_DBFS: f32 = -100.0;

/// The last [`LEVEL_FRAMES`] frames' levels (dBFS), newest last.
#[derive(Clone, Debug)]
struct Levels {
    db: [f32; LEVEL_FRAMES],
    len: usize,
    next: usize,
}

impl Levels {
    fn new() -> Self {
        Levels { db: [SILENT_DBFS; LEVEL_FRAMES], len: 0, next: 0 }
    }

    fn push(&mut self, db: f32) {
        self.db[self.next] = db;
        self.next = (self.next + 1) % LEVEL_FRAMES;
        self.len = (self.len + 1).min(LEVEL_FRAMES);
    }

    /// The level `k` frames before the newest (0 = the newest).
    fn back(&self, k: usize) -> f32 {
        self.db[(self.next + LEVEL_FRAMES - 1 - k) % LEVEL_FRAMES]
    }

    /// Where the audio went quiet, for the newest frame starting at `now`: the end of the last
    /// frame within [`END_DROP_DB`] of the loudest (and [`END_FLOOR_MARGIN_DB`] above the
    /// quietest); `None` when nothing in the history is loud enough to tell.
    fn quiet_from(&self, now: AudioTime) -> Option<AudioTime> {
        let recent = (0..self.len).map(|k| self.back(k));
        let (peak, floor) = recent.fold((f32::MIN, f32::MAX), |(p, f), db| (p.max(db), f.min(db)));
        let loud = (peak - END_DROP_DB).max(floor + END_FLOOR_MARGIN_DB);
        let k = (0..self.len).find(|&k| self.back(k) >= loud)?;
        // Frame k started k frames before `now`; speech ran to its end.
        Some((now + FRAME).saturating_sub(FRAME * k as u32))
    }
}

/// A frame's level in dBFS from its RMS (as [`crate::echo_guard::rms`] gives it), as
/// [`TurnDetector::on_frame`] takes it.
pub(crate) fn dbfs(rms: f32) -> f32 {
    if rms < 1.0 { SILENT_DBFS } else { 20.0 * (rms / 32768.0).log10() }
}

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
    levels: Levels,
}

impl TurnDetector {
    pub fn new(config: TurnDetectConfig) -> Self {
        TurnDetector { config, state: State::Idle { run: None }, lag: VadLag::default(), levels: Levels::new() }
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
    /// the detector judged it, `lag` behind the audio) and level `level_dbfs` ([`dbfs`]): the
    /// end of speech is placed where the level fell (see the module's top comment).
    pub fn on_frame(&mut self, speech_prob: f32, level_dbfs: f32, now: AudioTime) -> Option<TurnEvent> {
        self.levels.push(level_dbfs);
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
                let from = *silence_from.get_or_insert_with(|| {
                    let held = now.saturating_sub(self.lag.offset);
                    match self.levels.quiet_from(now) {
                        Some(quiet) if quiet < held => quiet.max(held.saturating_sub(MAX_END_REFINE)),
                        _ => held,
                    }
                });
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
                det.on_frame(p, SILENT_DBFS, AudioTime::from_ms(now)).map(|e| (now, e))
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
    /// Feeds (probability, level) frames from `start_ms`, as the chain does.
    fn feed_levels(det: &mut TurnDetector, start_ms: u64, frames: &[(f32, f32)]) -> Vec<(u64, TurnEvent)> {
        frames
            .iter()
            .enumerate()
            .filter_map(|(i, &(p, db))| {
                let now = start_ms + i as u64 * 20;
                det.on_frame(p, db, AudioTime::from_ms(now)).map(|e| (now, e))
            })
            .collect()
    }

    /// `ms` of frames at probability `p` and level `db`.
    fn span(ms: u64, p: f32, db: f32) -> Vec<(f32, f32)> {
        vec![(p, db); (ms / 20) as usize]
    }

    /// Speech in the audio from 1000 to 1400 ms at −20 dBFS, the VAD voiced from 1040 (its onset
    /// lag) and holding `hold_ms` past the end; the rest at `quiet_db`.
    fn abrupt_end(hold_ms: u64, speech_db: f32, quiet_db: f32) -> Vec<(u64, TurnEvent)> {
        let lag = VadLag { onset: Duration::from_millis(40), offset: Duration::from_millis(40) };
        let mut det = TurnDetector::new(TurnDetectConfig::default()).with_lag(lag);
        let mut frames = span(1000, 0.0, quiet_db);
        frames.extend(span(40, 0.0, speech_db));
        frames.extend(span(360, 0.9, speech_db));
        frames.extend(span(hold_ms, 0.9, quiet_db));
        frames.extend(span(1000, 0.0, quiet_db));
        feed_levels(&mut det, 0, &frames)
    }

    #[test]
    fn the_end_of_speech_is_where_the_level_fell_not_where_the_vad_let_go() {
        // Held 100 ms: the VAD's own lag (40 ms) would put the end at 1460.
        assert_eq!(
            abrupt_end(100, -20.0, -100.0),
            vec![
                (1320, TurnEvent::SpeechStarted { audio_start: AudioTime::from_ms(1000) }),
                (1880, TurnEvent::SpeechStopped { audio_end: AudioTime::from_ms(1400) }),
            ]
        );
        // A quiet room (−60 dBFS) is as good as digital silence.
        assert_eq!(abrupt_end(100, -20.0, -60.0)[1], (1880, TurnEvent::SpeechStopped { audio_end: AudioTime::from_ms(1400) }));
    }

    #[test]
    fn on_a_noisy_line_the_end_stays_where_the_vad_put_it() {
        // Speech 8 dB over the noise: the level cannot tell where it ended.
        assert_eq!(abrupt_end(100, -32.0, -40.0)[1], (1940, TurnEvent::SpeechStopped { audio_end: AudioTime::from_ms(1460) }));
    }

    #[test]
    fn the_level_moves_the_end_back_at_most_max_end_refine() {
        // Held 240 ms (a VAD fooled by a tail): 1600 by its lag, 1400 by the level, capped at 1440.
        let end = 1600 - MAX_END_REFINE.as_millis() as u64;
        assert_eq!(abrupt_end(240, -20.0, -100.0)[1], (end + 480, TurnEvent::SpeechStopped { audio_end: AudioTime::from_ms(end) }));
    }

    #[test]
    fn frame_levels_in_dbfs() {
        use crate::echo_guard::rms;
        assert_eq!(dbfs(rms(&[0; 960])), -100.0);
        assert!(dbfs(rms(&[i16::MAX; 960])).abs() < 0.01);
        assert!((dbfs(rms(&[3277; 960])) + 20.0).abs() < 0.01);
    }
}
