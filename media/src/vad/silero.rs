//! `SileroVad`: Silero VAD (v6, `silero_vad_openvino_16k.onnx`, MIT, see models/README.md) run
//! through tract, behind the `silero` cargo feature.
//! Owns: the process-wide runnable model (parsed and optimised once, on first use), and per
//! stream the 512-sample chunking of our 320-sample frames, the 64-sample context and the
//! recurrent state.
//! Must never: be compiled into the default build (tract is a ≈ 8 min cold build on 2 cores).
//!
//! # Allocation: this VAD breaks the per-tick zero-allocation rule
//! Every 512-sample chunk (about three chunks per five 20 ms frames) builds fresh input tensors
//! and tract allocates its outputs and intermediates inside `run`. That is accepted only behind
//! this feature; `tests/zero_alloc_tick.rs` never runs Silero. Cost: BENCHMARKS.md.
//!
//! # Model contract (printed by `model_inputs_and_outputs`)
//! Inputs `input` f32 [1, 576] (the previous chunk's last 64 samples, then 512 new ones, scaled
//! to −1..1) and `state` f32 [2, 1, 128]; this 16 kHz-only export has no `sr` input (the
//! sample rate is baked in). Outputs: the speech probability (one f32) and the next state
//! (2·1·128 f32, `stateN`), fed back as `state` on the next chunk.

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use tract_onnx::prelude::*;

use super::Vad;
use crate::SAMPLES_16K;

static MODEL_BYTES: &[u8] = include_bytes!("../../models/silero_vad_openvino_16k.onnx");

/// New samples per inference: 32 ms at 16 kHz.
const CHUNK: usize = 512;
/// Samples of the previous chunk prepended to each input.
const CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;

/// How far the probability lags the audio. A frame gets the probability of the last complete
/// chunk, whose end is 0–16 ms (8 ms on average) before the frame's end and whose middle is 16 ms
/// before its own end; the LSTM state then needs a chunk or so to swing. Measured on
/// tests/vad_quality.rs (clean F1 by declared latency): 0 ms 0.953, 20 ms 0.967, 40 ms 0.976,
/// 60 ms 0.971; the mean onset delay is 37 ms. So 40 ms, like earshot.
const SILERO_LATENCY_MS: u32 = 40;

type Plan = TypedRunnableModel;

/// The optimised model, built once per process and shared by every stream (it is Send + Sync;
/// per-stream state lives in `SileroVad`).
fn model() -> &'static Arc<Plan> {
    static MODEL: OnceLock<Arc<Plan>> = OnceLock::new();
    MODEL.get_or_init(|| load().expect("the embedded Silero model must load (tested in silero.rs)"))
}

fn load() -> TractResult<Arc<Plan>> {
    tract_onnx::onnx()
        .model_for_read(&mut Cursor::new(MODEL_BYTES))?
        .with_input_fact(0, f32::fact([1, CONTEXT + CHUNK]).into())?
        .with_input_fact(1, f32::fact([2, 1, 128]).into())?
        .into_optimized()?
        .into_runnable()
}

pub struct SileroVad {
    model: Arc<Plan>,
    /// `CONTEXT` samples of the previous chunk, then the chunk being filled.
    input: [f32; CONTEXT + CHUNK],
    /// New samples in `input[CONTEXT..]`.
    pending_len: usize,
    state: [f32; STATE_LEN],
    last_prob: f32,
}

impl SileroVad {
    /// Loads the shared model on first use (≈ tens of ms, once per process). Panics if the
    /// embedded model does not load, which the unit tests rule out.
    pub fn new() -> Self {
        SileroVad { model: model().clone(), input: [0.0; CONTEXT + CHUNK], pending_len: 0, state: [0.0; STATE_LEN], last_prob: 0.0 }
    }

    /// Runs one complete chunk; keeps the previous probability if tract fails (it does not on
    /// well-formed input, but a VAD must not take the audio thread down).
    fn infer(&mut self) -> f32 {
        let run = || -> TractResult<(f32, TValue)> {
            let input = Tensor::from_shape(&[1, CONTEXT + CHUNK], &self.input)?;
            let state = Tensor::from_shape(&[2, 1, 128], &self.state)?;
            let mut out = self.model.run(tvec!(input.into(), state.into()))?;
            let state_n = out.pop().ok_or_else(|| TractError::msg("no stateN"))?;
            let prob = *out.first().ok_or_else(|| TractError::msg("no output"))?.try_as_plain_ram()?.as_slice::<f32>()?.first().ok_or_else(|| TractError::msg("empty output"))?;
            Ok((prob, state_n))
        };
        match run() {
            Ok((prob, state_n)) => {
                if let Ok(s) = state_n.try_as_plain_ram().and_then(|v| v.as_slice::<f32>())
                    && s.len() == STATE_LEN
                {
                    self.state.copy_from_slice(s);
                }
                prob
            }
            Err(_) => self.last_prob,
        }
    }
}

impl Default for SileroVad {
    fn default() -> Self {
        Self::new()
    }
}

impl Vad for SileroVad {
    /// Buffers the frame into 512-sample chunks; runs the model on each completed chunk (zero or
    /// one per 20 ms frame) and returns the latest chunk's probability.
    fn frame_16k(&mut self, pcm: &[i16; SAMPLES_16K]) -> f32 {
        let mut input: &[i16] = pcm;
        while !input.is_empty() {
            let take = (CHUNK - self.pending_len).min(input.len());
            let dst = &mut self.input[CONTEXT + self.pending_len..CONTEXT + self.pending_len + take];
            for (d, &s) in dst.iter_mut().zip(&input[..take]) {
                *d = s as f32 / 32768.0;
            }
            self.pending_len += take;
            input = &input[take..];
            if self.pending_len == CHUNK {
                self.last_prob = self.infer();
                // The last 64 samples of this input become the next input's context.
                self.input.copy_within(CHUNK.., 0);
                self.pending_len = 0;
            }
        }
        self.last_prob
    }

    fn reset(&mut self) {
        self.input = [0.0; CONTEXT + CHUNK];
        self.pending_len = 0;
        self.state = [0.0; STATE_LEN];
        self.last_prob = 0.0;
    }

    fn latency_ms(&self) -> u32 {
        SILERO_LATENCY_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_inputs_and_outputs() {
        let raw = tract_onnx::onnx().model_for_read(&mut Cursor::new(MODEL_BYTES)).unwrap();
        for (i, o) in raw.input_outlets().unwrap().iter().enumerate() {
            eprintln!("input {i}: {} {:?}", raw.node(o.node).name, raw.outlet_fact(*o).unwrap());
        }
        for (i, o) in raw.output_outlets().unwrap().iter().enumerate() {
            eprintln!("output {i}: {} {:?}", raw.node(o.node).name, raw.outlet_fact(*o).unwrap());
        }
        let names: Vec<&str> = raw.input_outlets().unwrap().iter().map(|o| raw.node(o.node).name.as_str()).collect();
        assert_eq!(names, ["input", "state"]);
        load().unwrap();
    }

    #[test]
    fn is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<SileroVad>();
    }

    #[test]
    fn silence_scores_low() {
        let mut vad = SileroVad::new();
        let zeros = [0i16; SAMPLES_16K];
        for _ in 0..50 {
            assert!(vad.frame_16k(&zeros) < 0.5);
        }
    }

    #[test]
    fn speech_fixture_scores_high_inside_the_speech_and_low_outside() {
        let samples = crate::vad::fixture::speech_16k();
        let mut vad = SileroVad::new();
        let (speech, silence) = crate::vad::fixture::mean_scores(&mut vad, &samples);
        eprintln!("silero mean speech {speech:.3}, silence {silence:.3}");
        assert!(speech > 0.7, "mean speech score {speech}");
        assert!(silence < 0.1, "mean silence score {silence}");
        // reset() gives a fresh stream: same first probabilities again.
        vad.reset();
        let mut fresh = SileroVad::new();
        for frame in samples.chunks_exact(SAMPLES_16K).take(100) {
            assert_eq!(vad.frame_16k(frame.try_into().unwrap()), fresh.frame_16k(frame.try_into().unwrap()));
        }
    }
}
