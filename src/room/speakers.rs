//! Who is speaking in a room, from per-packet audio levels (RFC 6464, or measured where the
//! server decodes anyway), without decoding anything itself.
//! Owns: the speaking decision with its hysteresis, and the loudness ranking. Must never:
//! allocate per packet, read the clock (time is an input), or know about slots or events.
//!
//! The rule (LiveKit's rule of thumb, then measured on the speech fixture: see
//! `tests/room_speakers.rs` and BENCHMARKS.md): time is cut into 20 ms buckets; a bucket is
//! loud when a packet in it was louder than [`SpeakerConfig::loud_minus_dbov`]; a participant
//! starts speaking when at least `start_fraction` of the last `window` is loud, and stops only
//! when at most `stop_fraction` is. Missing packets (DTX, loss) count as quiet buckets.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use voxrelay_media::AudioLevel;

/// One packet's worth of time: the bucket width.
const BUCKET: Duration = Duration::from_millis(20);
/// The longest window supported (buckets are a fixed array, so nothing allocates per packet).
const MAX_BUCKETS: usize = 50;
/// A quiet bucket: RFC 6464's "silence" value.
const QUIET: u8 = 127;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpeakerConfig {
    /// Louder than this many dB below overload counts as loud (35 → louder than -35 dBov).
    pub loud_minus_dbov: u8,
    /// How much recent time the decision looks at (a multiple of 20 ms, at most 1 s).
    pub window: Duration,
    /// Loud share of the window at which a quiet participant becomes a speaker.
    pub start_fraction: f32,
    /// Loud share of the window at or below which a speaker becomes quiet again.
    pub stop_fraction: f32,
}

impl SpeakerConfig {
    /// LiveKit's start rule (louder than -35 dBov for 40 % of 400 ms); the stop side is ours:
    /// a speaker stays one until the whole window is quiet, so the pauses between words (up to
    /// ≈ 400 ms in the fixture) never flap a slot. Measured in `tests/room_speakers.rs`.
    pub const DEFAULT: SpeakerConfig =
        SpeakerConfig { loud_minus_dbov: 35, window: Duration::from_millis(400), start_fraction: 0.4, stop_fraction: 0.0 };

    /// For a track the server itself publishes (the agent's voice): it is speaking from its
    /// first loud packet, with nothing to tell apart from noise, so listeners hear its first
    /// words instead of losing the ≈ 140 ms the start rule takes. It stops as anyone does.
    pub const SERVER_TRACK: SpeakerConfig = SpeakerConfig { start_fraction: 0.01, ..Self::DEFAULT };

    fn buckets(&self) -> usize {
        ((self.window.as_millis() / BUCKET.as_millis()) as usize).clamp(1, MAX_BUCKETS)
    }
}

/// One participant's recent levels and speaking state.
#[derive(Clone, Debug)]
pub struct LevelWindow {
    config: SpeakerConfig,
    n: usize,
    /// Loudest level (-dBov) seen in each bucket of the window, as a ring indexed by bucket number.
    levels: [u8; MAX_BUCKETS],
    /// Bucket number (20 ms units since `epoch`) of the newest bucket.
    head: Option<u64>,
    epoch: Instant,
    loud: usize,
    /// Sum of `QUIET - level` over the window: the ranking's loudness.
    loudness: u32,
    speaking: bool,
}

impl LevelWindow {
    pub fn new(config: SpeakerConfig, epoch: Instant) -> Self {
        LevelWindow { config, n: config.buckets(), levels: [QUIET; MAX_BUCKETS], head: None, epoch, loud: 0, loudness: 0, speaking: false }
    }

    /// Records one packet's level at `now`; returns whether the speaking state changed.
    pub fn push(&mut self, level: AudioLevel, now: Instant) -> bool {
        let pos = self.advance(now);
        let old = self.levels[pos];
        let new = old.min(level.minus_dbov.min(QUIET));
        if new != old {
            self.set(pos, new);
        }
        self.decide()
    }

    /// Moves the window to `now` (quiet time counts); returns whether the speaking state changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        self.advance(now);
        self.decide()
    }

    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Mean loudness over the window, 0 (all quiet) ..= 127 (all at 0 dBov).
    pub fn loudness(&self) -> f32 {
        self.loudness as f32 / self.n as f32
    }

    /// The window's mean level as a linear amplitude in 0..=1 (what `active_speakers` reports).
    pub fn level(&self) -> f32 {
        let mean_minus_dbov = f32::from(QUIET) - self.loudness();
        if mean_minus_dbov >= f32::from(QUIET) { 0.0 } else { 10f32.powf(-mean_minus_dbov / 20.0) }
    }

    fn is_loud(&self, level: u8) -> bool {
        level < self.config.loud_minus_dbov
    }

    fn set(&mut self, pos: usize, level: u8) {
        let old = self.levels[pos];
        self.loud -= usize::from(self.is_loud(old));
        self.loudness -= u32::from(QUIET - old);
        self.levels[pos] = level;
        self.loud += usize::from(self.is_loud(level));
        self.loudness += u32::from(QUIET - level);
    }

    /// Clears the buckets between the previous head and `now`'s; returns `now`'s ring position.
    /// A packet stamped before the head (late) counts in the head bucket.
    fn advance(&mut self, now: Instant) -> usize {
        let bucket = (now.saturating_duration_since(self.epoch).as_millis() / BUCKET.as_millis()) as u64;
        let head = match self.head {
            None => bucket,
            Some(head) if bucket > head => {
                let cleared = (bucket - head).min(self.n as u64);
                for b in bucket + 1 - cleared..=bucket {
                    self.set((b % self.n as u64) as usize, QUIET);
                }
                bucket
            }
            Some(head) => head,
        };
        self.head = Some(head);
        (head % self.n as u64) as usize
    }

    fn decide(&mut self) -> bool {
        let fraction = self.loud as f32 / self.n as f32;
        let was = self.speaking;
        if !was && fraction >= self.config.start_fraction {
            self.speaking = true;
        } else if was && fraction <= self.config.stop_fraction {
            self.speaking = false;
        }
        self.speaking != was
    }
}

/// Every participant's window, keyed by whatever the room uses for a track.
#[derive(Debug)]
pub struct ActiveSpeakers<K> {
    config: SpeakerConfig,
    epoch: Instant,
    windows: HashMap<K, LevelWindow>,
}

impl<K: Copy + Eq + Hash + Ord> ActiveSpeakers<K> {
    pub fn new(config: SpeakerConfig, epoch: Instant) -> Self {
        ActiveSpeakers { config, epoch, windows: HashMap::new() }
    }

    /// One packet's level; returns whether that participant's speaking state changed. A new key
    /// gets its window here (once per participant, not per packet).
    pub fn on_level(&mut self, key: K, level: AudioLevel, now: Instant) -> bool {
        let (config, epoch) = (self.config, self.epoch);
        self.windows.entry(key).or_insert_with(|| LevelWindow::new(config, epoch)).push(level, now)
    }

    /// Gives `key` its own speaking rule (e.g. [`SpeakerConfig::SERVER_TRACK`]).
    pub fn configure(&mut self, key: K, config: SpeakerConfig) {
        self.windows.insert(key, LevelWindow::new(config, self.epoch));
    }

    /// Advances every window to `now` (speakers fall silent without packets); returns whether
    /// anyone's state changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for w in self.windows.values_mut() {
            changed |= w.tick(now);
        }
        changed
    }

    pub fn remove(&mut self, key: K) {
        self.windows.remove(&key);
    }

    /// The current speakers, loudest first (ties by key, so the order is deterministic), into
    /// `out` (cleared first; reused by the caller across ticks).
    pub fn ranking(&self, out: &mut Vec<(K, f32)>) {
        out.clear();
        out.extend(self.windows.iter().filter(|(_, w)| w.is_speaking()).map(|(k, w)| (*k, w.loudness())));
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    }

    /// The window of one participant (its level for events).
    pub fn window(&self, key: K) -> Option<&LevelWindow> {
        self.windows.get(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(minus_dbov: u8) -> AudioLevel {
        AudioLevel { minus_dbov, voice: minus_dbov < 127 }
    }

    #[test]
    fn starts_at_forty_percent_of_the_window_and_stops_when_it_is_all_quiet() {
        let t0 = Instant::now();
        let mut w = LevelWindow::new(SpeakerConfig::DEFAULT, t0);
        let at = |frame: u64| t0 + BUCKET * frame as u32;
        // 20 buckets in 400 ms: the 8th loud bucket makes 40 %.
        for f in 0..7 {
            assert!(!w.push(level(20), at(f)), "frame {f}");
        }
        assert!(w.push(level(20), at(7)));
        assert!(w.is_speaking());
        // A 300 ms pause between words keeps the speaker.
        assert!(!w.tick(at(22)));
        assert!(w.is_speaking());
        // Quiet packets (-50 dBov: louder than silence, not loud) do not keep it.
        for f in 23..27 {
            w.push(level(50), at(f));
        }
        assert!(w.is_speaking(), "bucket 7 is still in the window");
        assert!(w.tick(at(27)), "the whole window is quiet now");
        assert!(!w.is_speaking());
    }

    #[test]
    fn levels_are_kept_per_bucket_and_late_packets_count_in_the_newest() {
        let t0 = Instant::now();
        let mut w = LevelWindow::new(SpeakerConfig::DEFAULT, t0);
        w.push(level(30), t0);
        w.push(level(10), t0 + Duration::from_millis(5));
        w.push(level(60), t0 + Duration::from_millis(10));
        assert_eq!(w.loudness(), (127.0 - 10.0) / 20.0, "the loudest packet of a bucket counts");
        w.push(level(0), t0 + Duration::from_millis(40));
        w.push(level(0), t0);
        assert_eq!(w.loudness(), (117.0 + 127.0) / 20.0);
        // A long silence clears everything, however long.
        w.tick(t0 + Duration::from_secs(3600));
        assert_eq!((w.loudness(), w.level()), (0.0, 0.0));
    }

    #[test]
    fn ranking_is_loudest_first_among_speakers() {
        let t0 = Instant::now();
        let mut s = ActiveSpeakers::new(SpeakerConfig::DEFAULT, t0);
        for f in 0..20u32 {
            let now = t0 + BUCKET * f;
            s.on_level(1u32, level(30), now);
            s.on_level(2, level(10), now);
            s.on_level(3, level(60), now);
            if f % 2 == 0 {
                s.on_level(4, level(10), now);
            }
        }
        let mut out = Vec::new();
        s.ranking(&mut out);
        let keys: Vec<u32> = out.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [2, 1, 4], "3 is never loud; 4 speaks (loud half the time) but is quieter on average than 1");
        let level2 = s.window(2).unwrap().level();
        assert!((level2 - 10f32.powf(-10.0 / 20.0)).abs() < 1e-4, "{level2}");
        s.remove(2);
        assert!(!s.tick(t0 + BUCKET * 21));
        s.ranking(&mut out);
        assert_eq!(out.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 4]);
    }

    #[test]
    fn a_server_track_speaks_from_its_first_loud_packet_and_stops_like_anyone() {
        let t0 = Instant::now();
        let mut speakers = ActiveSpeakers::new(SpeakerConfig::DEFAULT, t0);
        speakers.configure(1u32, SpeakerConfig::SERVER_TRACK);
        assert!(!speakers.on_level(1, level(127), t0), "silence is not speech");
        assert!(speakers.on_level(1, level(20), t0 + Duration::from_millis(20)), "the first loud packet");
        assert!(!speakers.on_level(2, level(20), t0 + Duration::from_millis(20)), "a participant still needs 40 % of the window");
        assert!(!speakers.tick(t0 + Duration::from_millis(300)));
        assert!(speakers.tick(t0 + Duration::from_millis(460)), "quiet for a whole window: stopped");
    }
}
