//! Units of audio time inside the code: where on a call's inbound audio timeline something
//! happened ([`AudioTime`]) and how much audio ([`std::time::Duration`]). The wire and the
//! config keep their `_ms` integers (`audio_start_ms`, `silence_duration_ms`); converting is the
//! boundary's job, with [`AudioTime::as_ms`] and `Duration::as_millis`.

use std::ops::Add;
use std::time::Duration;

/// One audio frame: the worker's tick and the unit of every timeline here.
pub const FRAME: Duration = Duration::from_millis(crate::FRAME_MS as u64);

/// A position on a call's inbound audio timeline: time since the first inbound sample (frame
/// index × 20 ms, lost frames included as concealed audio). What the Realtime protocol calls
/// `audio_start_ms` / `audio_end_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AudioTime(u64);

impl AudioTime {
    pub const ZERO: AudioTime = AudioTime(0);

    pub const fn from_ms(ms: u64) -> Self {
        AudioTime(ms)
    }

    /// Whole milliseconds, for the wire.
    pub const fn as_ms(self) -> u64 {
        self.0
    }

    /// The position `frames` 20 ms frames into the call.
    pub const fn of_frame(frames: u64) -> Self {
        AudioTime(frames * crate::FRAME_MS as u64)
    }

    /// How far `self` is after `earlier` (zero if it is not).
    pub fn since(self, earlier: AudioTime) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// `d` earlier, clamped at the start of the call.
    pub fn saturating_sub(self, d: Duration) -> Self {
        AudioTime(self.0.saturating_sub(d.as_millis() as u64))
    }
}

impl Add<Duration> for AudioTime {
    type Output = AudioTime;

    fn add(self, d: Duration) -> AudioTime {
        AudioTime(self.0 + d.as_millis() as u64)
    }
}
