//! `EarshotVad`: the earshot 1.2 neural detector adapted to our 20 ms frames.
//! Owns: re-chunking 320-sample frames into earshot's 256-sample (16 ms) frames.
//! Must never: allocate per frame (the detector is boxed once in `new`).

use super::Vad;
use crate::SAMPLES_16K;

/// earshot's fixed frame: 256 samples = 16 ms at 16 kHz.
const EARSHOT_FRAME: usize = 256;

/// earshot's score lags the audio: it looks at a 48 ms window ending at the newest sample and its
/// recurrent state needs a few frames to swing; on our fixture it crosses 0.5 about 60 ms after
/// the onset and falls below it about as late after the offset. Half-way is the fair estimate.
const EARSHOT_LATENCY_MS: u32 = 40;

pub struct EarshotVad {
    detector: Box<earshot::Detector>,
    /// Samples waiting for a full 256-sample chunk.
    pending: [i16; EARSHOT_FRAME],
    pending_len: usize,
    last_score: f32,
}

impl EarshotVad {
    pub fn new() -> Self {
        EarshotVad { detector: earshot::Detector::default_boxed(), pending: [0; EARSHOT_FRAME], pending_len: 0, last_score: 0.0 }
    }
}

impl Default for EarshotVad {
    fn default() -> Self {
        Self::new()
    }
}

impl Vad for EarshotVad {
    /// Runs earshot on every complete 256-sample chunk (one or two per 20 ms frame) and returns
    /// the mean of their scores; the leftover samples wait for the next frame.
    fn frame_16k(&mut self, pcm: &[i16; SAMPLES_16K]) -> f32 {
        let mut input: &[i16] = pcm;
        let (mut sum, mut count) = (0.0f32, 0u32);
        while !input.is_empty() {
            let take = (EARSHOT_FRAME - self.pending_len).min(input.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&input[..take]);
            self.pending_len += take;
            input = &input[take..];
            if self.pending_len == EARSHOT_FRAME {
                sum += self.detector.predict_i16(&self.pending);
                count += 1;
                self.pending_len = 0;
            }
        }
        if count > 0 {
            self.last_score = sum / count as f32;
        }
        self.last_score
    }

    fn reset(&mut self) {
        self.detector.reset();
        self.pending_len = 0;
        self.last_score = 0.0;
    }

    fn latency_ms(&self) -> u32 {
        EARSHOT_LATENCY_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_scores_low() {
        let mut vad = EarshotVad::new();
        let zeros = [0i16; SAMPLES_16K];
        for _ in 0..50 {
            assert!(vad.frame_16k(&zeros) < 0.5);
        }
    }

    #[test]
    fn speech_fixture_scores_high_inside_the_speech_and_low_outside() {
        let samples = crate::vad::fixture::speech_16k();
        let (speech, silence) = crate::vad::fixture::mean_scores(&mut EarshotVad::new(), &samples);
        assert!(speech > 0.6, "mean speech score {speech}");
        assert!(silence < 0.2, "mean silence score {silence}");
    }
}
