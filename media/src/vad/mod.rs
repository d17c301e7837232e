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
