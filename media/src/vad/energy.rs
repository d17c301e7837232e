//! `EnergyVad`: frame level against an adaptive noise floor, mapped to a probability.
//! Owns: the level/noise-floor model and a short hangover. Must never: allocate or look ahead.
//!
//! Cheap improvements measured on the quality harness (tests/vad_quality.rs, BENCHMARKS.md):
//! the floor starts at the first frame's level instead of a fixed -70 dBFS (a call that opens
//! on steady noise otherwise reads as seconds of "speech" while the floor creeps up), and a
//! speech decision is held for [`HANGOVER_FRAMES`] so word tails and stop closures stay voiced.

use super::Vad;
use crate::SAMPLES_16K;

/// Frames quieter than this (dBFS) are never speech: digital silence and line hiss.
const ABSOLUTE_FLOOR_DBFS: f32 = -55.0;
/// Speech is judged relative to the noise floor: at this margin (dB) the probability is 0.5.
const SPEECH_MARGIN_DB: f32 = 6.0;
/// Width (dB) of the logistic around the margin: ±3 dB spans ≈ 0.27..0.73.
const SLOPE_DB: f32 = 2.0;
/// Noise floor tracking per 20 ms frame: falls fast (to the quietest recent level), rises slowly
/// (≈ 1.5 dB per second) so sustained speech is not learned as noise.
const FLOOR_RISE_DB_PER_FRAME: f32 = 0.03;
/// Lowest noise floor tracked (dBFS): quieter than any real line.
const FLOOR_START_DBFS: f32 = -70.0;
/// After a voiced frame, later frames keep at least a fading share of its probability for this
/// many frames (60 ms).
const HANGOVER_FRAMES: u32 = 3;

pub struct EnergyVad {
    noise_floor_db: f32,
    started: bool,
    /// Frames left in the current hangover.
    hangover: u32,
}

impl EnergyVad {
    pub fn new() -> Self {
        EnergyVad { noise_floor_db: FLOOR_START_DBFS, started: false, hangover: 0 }
    }
}

impl Default for EnergyVad {
    fn default() -> Self {
        Self::new()
    }
}

impl Vad for EnergyVad {
    fn frame_16k(&mut self, pcm: &[i16; SAMPLES_16K]) -> f32 {
        let power = pcm.iter().map(|&s| (s as f32) * (s as f32)).sum::<f32>() / SAMPLES_16K as f32;
        let level_db = 10.0 * (power / (32768.0 * 32768.0) + 1e-12).log10();
        if !self.started {
            self.started = true;
            self.noise_floor_db = level_db.max(FLOOR_START_DBFS);
        }
        self.noise_floor_db =
            if level_db < self.noise_floor_db { level_db.max(FLOOR_START_DBFS) } else { self.noise_floor_db + FLOOR_RISE_DB_PER_FRAME };
        let prob = if level_db < ABSOLUTE_FLOOR_DBFS {
            0.0
        } else {
            let margin = level_db - self.noise_floor_db - SPEECH_MARGIN_DB;
            1.0 / (1.0 + (-margin / SLOPE_DB).exp())
        };
        if prob >= 0.5 {
            self.hangover = HANGOVER_FRAMES;
            prob
        } else if self.hangover > 0 {
            self.hangover -= 1;
            prob.max(0.5 + 0.01 * self.hangover as f32)
        } else {
            prob
        }
    }

    fn reset(&mut self) {
        *self = Self::new();
    }

    /// The hangover holds the probability at or above 0.5 for its frames.
    fn offset_lag_ms(&self) -> u32 {
        HANGOVER_FRAMES * 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_silence_and_a_loud_tone_after_quiet_is_speech() {
        let mut vad = EnergyVad::new();
        for _ in 0..10 {
            assert_eq!(vad.frame_16k(&[0; SAMPLES_16K]), 0.0);
        }
        let mut quiet = [0i16; SAMPLES_16K];
        quiet.iter_mut().enumerate().for_each(|(i, s)| *s = if i % 2 == 0 { 30 } else { -30 });
        for _ in 0..10 {
            assert!(vad.frame_16k(&quiet) < 0.1);
        }
        let mut loud = [0i16; SAMPLES_16K];
        loud.iter_mut().enumerate().for_each(|(i, s)| *s = (6000.0 * (i as f32 * 0.17).sin()) as i16);
        assert!(vad.frame_16k(&loud) > 0.9);
        // The hangover keeps the decision for HANGOVER_FRAMES, then lets go.
        for _ in 0..HANGOVER_FRAMES {
            assert!(vad.frame_16k(&quiet) >= 0.5);
        }
        assert!(vad.frame_16k(&quiet) < 0.1);
    }

    #[test]
    fn a_call_that_opens_on_steady_noise_learns_it_at_once() {
        let mut vad = EnergyVad::new();
        let mut state = 1u32;
        let mut noise = [0i16; SAMPLES_16K];
        for _ in 0..20 {
            for s in noise.iter_mut() {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *s = ((state >> 16) as i16 as i32 / 16) as i16; // ≈ -36 dBFS white noise
            }
            assert!(vad.frame_16k(&noise) < 0.5);
        }
    }
}
