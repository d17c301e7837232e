//! `EnergyVad`: frame level against an adaptive noise floor, mapped to a probability.
//! Owns: the level/noise-floor model. Must never: allocate or look at more than one frame.

use super::Vad;
use crate::SAMPLES_16K;

/// Frames quieter than this (dBFS) are never speech: digital silence and line hiss.
const ABSOLUTE_FLOOR_DBFS: f32 = -55.0;
/// Speech is judged relative to the noise floor: at this margin (dB) the probability is 0.5.
const SPEECH_MARGIN_DB: f32 = 12.0;
/// Width (dB) of the logistic around the margin: ±3 dB spans ≈ 0.27..0.73.
const SLOPE_DB: f32 = 3.0;
/// Noise floor tracking per 20 ms frame: falls fast (to the quietest recent level), rises slowly
/// (≈ 1.5 dB per second) so sustained speech is not learned as noise.
const FLOOR_RISE_DB_PER_FRAME: f32 = 0.03;
const FLOOR_START_DBFS: f32 = -70.0;

pub struct EnergyVad {
    noise_floor_db: f32,
}

impl EnergyVad {
    pub fn new() -> Self {
        EnergyVad { noise_floor_db: FLOOR_START_DBFS }
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
        self.noise_floor_db = if level_db < self.noise_floor_db {
            level_db.max(FLOOR_START_DBFS)
        } else {
            self.noise_floor_db + FLOOR_RISE_DB_PER_FRAME
        };
        if level_db < ABSOLUTE_FLOOR_DBFS {
            return 0.0;
        }
        let margin = level_db - self.noise_floor_db - SPEECH_MARGIN_DB;
        1.0 / (1.0 + (-margin / SLOPE_DB).exp())
    }

    fn reset(&mut self) {
        self.noise_floor_db = FLOOR_START_DBFS;
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
    }
}
