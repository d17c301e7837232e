//! Voice activity detection: one speech probability per 20 ms frame of 16 kHz audio.
//! Owns: the `Vad` trait and the choice of implementation per session (`VadKind`).
//! Must never: allocate or keep time per frame (time belongs to the turn detector), or decide
//! turns (thresholds and durations live in `turn.rs`).

mod earshot;
mod energy;
#[cfg(feature = "silero")]
mod silero;

pub use self::earshot::EarshotVad;
pub use self::energy::EnergyVad;
#[cfg(feature = "silero")]
pub use self::silero::SileroVad;

use crate::SAMPLES_16K;

/// A streaming voice activity detector over 20 ms frames at 16 kHz.
pub trait Vad: Send {
    /// Speech probability of this frame, 0..1.
    fn frame_16k(&mut self, pcm: &[i16; SAMPLES_16K]) -> f32;
    /// Forget all stream state.
    fn reset(&mut self);
    /// How far, in ms, the probability lags the audio (look-back windows, smoothing). The chain
    /// subtracts it from event timestamps so they point at the audio, not at the detector.
    fn latency_ms(&self) -> u32 {
        0
    }
    /// How long, in ms, the probability stays above threshold after speech ends (the
    /// detector's hold): turn detection counts the silence from where speech ended, not from
    /// where the detector let go (issue 20: this was ≈ 40–60 ms of every turn's latency).
    fn offset_lag_ms(&self) -> u32 {
        self.latency_ms()
    }
}

/// Which detector a session runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VadKind {
    /// earshot's neural detector (default): ≈ 12 µs per 20 ms frame; clearly better than
    /// `Energy` in white/pink noise at ≤ 10 dB SNR (BENCHMARKS.md, tests/vad_quality.rs).
    #[default]
    Earshot,
    /// A level detector with an adaptive noise floor: ≈ 0.35 µs per frame, as good as earshot on
    /// clean speech, loses recall in steady noise below ≈ 10 dB SNR.
    Energy,
    /// Silero VAD v6 through tract (only with `--features silero`): the quality reference, but
    /// ≈ 58 µs per 20 ms frame, allocates per inference and costs a ≈ 8 min tract build
    /// (BENCHMARKS.md "Default VAD").
    #[cfg(feature = "silero")]
    Silero,
}

impl VadKind {
    pub fn build(self) -> Box<dyn Vad> {
        match self {
            VadKind::Earshot => Box::new(EarshotVad::new()),
            VadKind::Energy => Box::new(EnergyVad::new()),
            #[cfg(feature = "silero")]
            VadKind::Silero => Box::new(SileroVad::new()),
        }
    }
}

/// Shared by the VADs' unit tests: the 16 kHz speech fixture and a VAD's mean score inside its
/// speech (1.1–3.7 s) and in its clear silence (before 0.9 s, after 4.0 s).
#[cfg(test)]
pub(crate) mod fixture {
    use super::Vad;
    use crate::SAMPLES_16K;

    /// tests/fixtures/speech_16k.wav: silence, speech from 1.000 s to 3.829 s, silence.
    pub fn speech_16k() -> Vec<i16> {
        let mut reader = hound::WavReader::open(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech_16k.wav")).unwrap();
        assert_eq!(reader.spec().sample_rate, 16_000);
        reader.samples::<i16>().map(Result::unwrap).collect()
    }

    pub fn mean_scores(vad: &mut dyn Vad, samples: &[i16]) -> (f32, f32) {
        let (mut speech_sum, mut speech_n, mut silence_sum, mut silence_n) = (0.0, 0, 0.0, 0);
        for (i, frame) in samples.chunks_exact(SAMPLES_16K).enumerate() {
            let p = vad.frame_16k(frame.try_into().unwrap());
            let t_ms = i as u64 * 20;
            if (1100..3700).contains(&t_ms) {
                speech_sum += p;
                speech_n += 1;
            } else if !(900..4000).contains(&t_ms) {
                silence_sum += p;
                silence_n += 1;
            }
        }
        (speech_sum / speech_n as f32, silence_sum / silence_n as f32)
    }
}
