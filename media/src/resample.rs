//! Fixed-frame resampling between the rates voxrelay uses (48 kHz Opus clients, 24 kHz sessions
//! and providers, 16 kHz VAD, 8 kHz telephony), for ratios of small integers (÷2, ÷3, ×2, ×3, 2/3).
//! Owns: the anti-aliasing/anti-imaging filter design and its per-stream history.
//! Must never: allocate in `process` (all buffers are sized in `new`), or accept a frame of the
//! wrong length silently.
//!
//! Why a hand-written polyphase FIR instead of rubato: every ratio we need is `up/down` with
//! small integers, where a windowed-sinc polyphase filter is one short dot product per output
//! sample. With 48 taps per unit of the larger factor (96 taps for ÷2/×2, 144 for ÷3, Kaiser
//! β = 8, ≈ 80 dB stop band) it adds ≈ 1 ms of delay, against ≈ 10 ms for rubato's FFT resampler
//! (MEASURED.md) in each direction — and delay is what a caller hears. It costs a few µs per
//! 20 ms frame, small next to Opus (20 µs decode, 60–150 µs encode), and needs no dependency.

use crate::MediaError;

/// A sample rate in Hz. Conversions between rates happen here and nowhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SampleRate(pub u32);

impl SampleRate {
    pub const HZ_8K: SampleRate = SampleRate(8_000);
    pub const HZ_16K: SampleRate = SampleRate(16_000);
    pub const HZ_24K: SampleRate = SampleRate(24_000);
    pub const HZ_48K: SampleRate = SampleRate(48_000);

    /// Samples in one 20 ms frame at this rate.
    pub const fn frame_samples(self) -> usize {
        (self.0 as usize) * crate::FRAME_MS as usize / 1000
    }
}

/// Filter taps per unit of the larger conversion factor: the filter spans 48 samples of the
/// lower rate.
const TAPS_PER_FACTOR: usize = 48;
// dot2 and the vectorized dot assume whole chunks of 8 taps per phase.
#[allow(clippy::manual_is_multiple_of)] // MSRV 1.85, as below
const _: () = assert!(TAPS_PER_FACTOR % 8 == 0);
/// Kaiser window β: ≈ 80 dB stop-band attenuation.
const KAISER_BETA: f64 = 8.0;
/// The analysis filter ([`Resampler::for_analysis`]): 16 taps per factor, β = 5 (≈ 50 dB stop
/// band, wider transition). A third of the cost, for audio only a detector looks at.
const ANALYSIS_TAPS_PER_FACTOR: usize = 16;
const ANALYSIS_KAISER_BETA: f64 = 5.0;
#[allow(clippy::manual_is_multiple_of)]
const _: () = assert!(ANALYSIS_TAPS_PER_FACTOR % 8 == 0);
/// Pass-band edge as a fraction of the lower rate's Nyquist frequency.
const CUTOFF_FRACTION: f64 = 0.9;
/// Largest factor either way (48 ↔ 8 kHz).
const MAX_FACTOR: u32 = 6;

/// Converts fixed 20 ms frames from one rate to another by `up / down` (one of them 1, or both
/// small, as 24 → 16 kHz = 2/3). One instance per stream (it keeps the filter history so
/// consecutive frames join without clicks).
pub struct Resampler {
    /// Interpolation factor: the filter runs at `from × up`, and output `n` sits at sample
    /// `n × down` of that rate.
    up: usize,
    down: usize,
    in_len: usize,
    out_len: usize,
    /// `up` phases of `taps_per_phase` taps, each stored reversed so every output is a plain dot
    /// product with a contiguous window of the input (for `up` = 1: the whole filter).
    coeffs: Vec<f32>,
    taps_per_phase: usize,
    /// Kept history (`history` samples) followed by room for one input frame.
    buf: Vec<f32>,
    history: usize,
}

impl Resampler {
    /// A resampler for 20 ms frames from `from` to `to`; `to / from` must reduce to a ratio of
    /// integers up to 6 (every pair of 8, 16, 24 and 48 kHz).
    pub fn new(from: SampleRate, to: SampleRate) -> Result<Self, MediaError> {
        Self::design(from, to, TAPS_PER_FACTOR, KAISER_BETA)
    }

    /// A cheaper, shorter filter for audio that only a detector consumes (the VAD's 16 kHz
    /// feed): ≈ 50 dB instead of ≈ 80 dB of alias rejection, a third of the multiply-adds and a
    /// third of the delay. Never for audio a person or a provider hears.
    pub fn for_analysis(from: SampleRate, to: SampleRate) -> Result<Self, MediaError> {
        Self::design(from, to, ANALYSIS_TAPS_PER_FACTOR, ANALYSIS_KAISER_BETA)
    }

    #[allow(clippy::manual_is_multiple_of)] // `%` keeps the workspace's declared MSRV (1.85)
    fn design(from: SampleRate, to: SampleRate, taps_per_factor: usize, beta: f64) -> Result<Self, MediaError> {
        let unsupported = MediaError::UnsupportedRate { from: from.0, to: to.0 };
        if from.0 == 0 || to.0 == 0 || from == to {
            return Err(unsupported);
        }
        let g = gcd(from.0, to.0);
        let (up, down) = (to.0 / g, from.0 / g);
        if up > MAX_FACTOR || down > MAX_FACTOR {
            return Err(unsupported);
        }
        let (up, down) = (up as usize, down as usize);
        let in_len = from.frame_samples();
        let out_len = to.frame_samples();
        if in_len * 1000 != from.0 as usize * crate::FRAME_MS as usize || in_len * up != out_len * down {
            return Err(unsupported);
        }
        let factor = up.max(down);
        // A multiple of `up` so every phase has the same length.
        let taps = (taps_per_factor * factor).div_ceil(up) * up;
        let filter = design_lowpass(taps, CUTOFF_FRACTION * 0.5 / factor as f64, beta);
        let k = taps / up;
        let mut coeffs = vec![0.0f32; taps];
        for p in 0..up {
            for i in 0..k {
                // Gain `up` restores the level lost to zero-stuffing.
                coeffs[p * k + i] = filter[p + up * (k - 1 - i)] * up as f32;
            }
        }
        let history = k - 1;
        Ok(Resampler { up, down, in_len, out_len, coeffs, taps_per_phase: k, buf: vec![0.0; history + in_len], history })
    }

    /// Samples per input frame.
    pub fn input_len(&self) -> usize {
        self.in_len
    }

    /// Samples per output frame.
    pub fn output_len(&self) -> usize {
        self.out_len
    }

    /// Added delay in output samples (the filter's group delay).
    pub fn delay_output_samples(&self) -> usize {
        (self.coeffs.len() - 1) / 2 / self.down
    }

    /// Resamples one frame. Panics if `input` or `out` is not exactly one frame long.
    pub fn process(&mut self, input: &[i16], out: &mut [i16]) {
        assert_eq!(input.len(), self.in_len, "resampler input must be one 20 ms frame");
        assert_eq!(out.len(), self.out_len, "resampler output must be one 20 ms frame");
        let h = self.history;
        for (slot, &s) in self.buf[h..].iter_mut().zip(input) {
            *slot = s as f32;
        }
        let k = self.taps_per_phase;
        match (self.up, self.down) {
            (1, m) => {
                for (n, y) in out.iter_mut().enumerate() {
                    *y = to_i16(dot(&self.buf[n * m..n * m + k], &self.coeffs));
                }
            }
            (2, 1) => {
                // The common ×2 case: both phases in one pass over the window.
                let (c0, c1) = self.coeffs.split_at(k);
                for (n, pair) in out.chunks_exact_mut(2).enumerate() {
                    let (y0, y1) = dot2(&self.buf[n..n + k], c0, c1);
                    pair[0] = to_i16(y0);
                    pair[1] = to_i16(y1);
                }
            }
            (l, m) => {
                // Output n is at n·m on the ×l grid: phase (n·m) mod l of input (n·m) / l.
                for (n, y) in out.iter_mut().enumerate() {
                    let (base, p) = ((n * m) / l, (n * m) % l);
                    *y = to_i16(dot(&self.buf[base..base + k], &self.coeffs[p * k..(p + 1) * k]));
                }
            }
        }
        self.buf.copy_within(self.in_len.., 0);
    }

    /// Forget the history (new stream).
    pub fn reset(&mut self) {
        self.buf.fill(0.0);
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn to_i16(x: f32) -> i16 {
    x.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16
}

/// Dot product with eight independent accumulators so the compiler can vectorize it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (ca, cb) in a8.zip(b8) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Two dot products of `a` with `b0` and `b1` sharing the loads of `a` (all lengths a multiple of 8).
fn dot2(a: &[f32], b0: &[f32], b1: &[f32]) -> (f32, f32) {
    let (mut acc0, mut acc1) = ([0.0f32; 8], [0.0f32; 8]);
    for ((ca, c0), c1) in a.chunks_exact(8).zip(b0.chunks_exact(8)).zip(b1.chunks_exact(8)) {
        for i in 0..8 {
            acc0[i] += ca[i] * c0[i];
            acc1[i] += ca[i] * c1[i];
        }
    }
    (acc0.iter().sum(), acc1.iter().sum())
}

/// Kaiser-windowed sinc low-pass with unity DC gain; `cutoff` in cycles per sample.
fn design_lowpass(taps: usize, cutoff: f64, beta: f64) -> Vec<f32> {
    let centre = (taps - 1) as f64 / 2.0;
    let i0_beta = bessel_i0(beta);
    let mut h: Vec<f64> = (0..taps)
        .map(|n| {
            let x = n as f64 - centre;
            let sinc = if x == 0.0 { 2.0 * cutoff } else { (2.0 * std::f64::consts::PI * cutoff * x).sin() / (std::f64::consts::PI * x) };
            let r = x / centre;
            let window = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0_beta;
            sinc * window
        })
        .collect();
    let sum: f64 = h.iter().sum();
    h.iter_mut().for_each(|c| *c /= sum);
    h.into_iter().map(|c| c as f32).collect()
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, half) = (1.0, 1.0, x / 2.0);
    for k in 1..50 {
        term *= (half / k as f64).powi(2);
        sum += term;
        if term < 1e-12 * sum {
            break;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: SampleRate, hz: f64, amplitude: f64, frames: usize) -> Vec<i16> {
        (0..rate.frame_samples() * frames)
            .map(|i| (amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / rate.0 as f64).sin()).round() as i16)
            .collect()
    }

    fn run(from: SampleRate, to: SampleRate, input: &[i16]) -> Vec<i16> {
        let mut r = Resampler::new(from, to).unwrap();
        let mut out = vec![0i16; r.output_len()];
        let mut all = Vec::new();
        for frame in input.chunks(r.input_len()) {
            r.process(frame, &mut out);
            all.extend_from_slice(&out);
        }
        all
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    /// Power of `x` at `hz` (Goertzel), normalized so a full-scale-relative sine gives amplitude².
    fn power_at(x: &[i16], rate: SampleRate, hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / rate.0 as f64;
        let (mut s1, mut s2) = (0.0, 0.0);
        for &v in x {
            let s0 = v as f64 + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let p = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        4.0 * p / (x.len() as f64).powi(2)
    }

    #[test]
    fn a_440_hz_tone_keeps_its_energy_and_frequency_at_every_ratio() {
        let pairs = [
            (SampleRate::HZ_48K, SampleRate::HZ_16K),
            (SampleRate::HZ_48K, SampleRate::HZ_24K),
            (SampleRate::HZ_24K, SampleRate::HZ_48K),
            (SampleRate::HZ_16K, SampleRate::HZ_48K),
            (SampleRate::HZ_48K, SampleRate::HZ_8K),
            (SampleRate::HZ_8K, SampleRate::HZ_48K),
            (SampleRate::HZ_16K, SampleRate::HZ_8K),
            (SampleRate::HZ_8K, SampleRate::HZ_16K),
            (SampleRate::HZ_24K, SampleRate::HZ_16K),
            (SampleRate::HZ_16K, SampleRate::HZ_24K),
            (SampleRate::HZ_24K, SampleRate::HZ_8K),
            (SampleRate::HZ_8K, SampleRate::HZ_24K),
        ];
        for (from, to) in pairs {
            let input = tone(from, 440.0, 10_000.0, 50);
            let out = run(from, to, &input);
            // Skip the first frame (filter warm-up).
            let steady = &out[to.frame_samples()..];
            let ratio = rms(steady) / rms(&input);
            assert!((ratio - 1.0).abs() < 0.01, "{from:?}->{to:?}: rms ratio {ratio}");
            let at_440 = power_at(steady, to, 440.0).sqrt();
            assert!((at_440 / 10_000.0 - 1.0).abs() < 0.02, "{from:?}->{to:?}: 440 Hz amplitude {at_440}");
            for other in [300.0, 600.0, 880.0] {
                let leak = power_at(steady, to, other).sqrt();
                assert!(leak < 100.0, "{from:?}->{to:?}: {other} Hz leak {leak}");
            }
        }
    }

    #[test]
    fn tones_above_the_new_nyquist_are_removed_when_downsampling() {
        // 11 kHz would alias to 5 kHz at 16 kHz.
        let out = run(SampleRate::HZ_48K, SampleRate::HZ_16K, &tone(SampleRate::HZ_48K, 11_000.0, 10_000.0, 25));
        assert!(rms(&out[320..]) < 10.0, "aliased energy {}", rms(&out[320..]));
        // 10 kHz would alias to 6 kHz at 16 kHz (the session's VAD feed, 2/3).
        let out = run(SampleRate::HZ_24K, SampleRate::HZ_16K, &tone(SampleRate::HZ_24K, 10_000.0, 10_000.0, 25));
        assert!(rms(&out[320..]) < 10.0, "aliased energy {}", rms(&out[320..]));
        // 14 kHz would alias to 10 kHz at 24 kHz.
        let out = run(SampleRate::HZ_48K, SampleRate::HZ_24K, &tone(SampleRate::HZ_48K, 14_000.0, 10_000.0, 25));
        assert!(rms(&out[480..]) < 10.0, "aliased energy {}", rms(&out[480..]));
    }

    #[test]
    fn the_analysis_filter_keeps_speech_band_tones_and_rejects_aliases_by_40_db() {
        let mut r = Resampler::for_analysis(SampleRate::HZ_48K, SampleRate::HZ_16K).unwrap();
        let mut out = [0i16; 320];
        let mut all = Vec::new();
        for f in tone(SampleRate::HZ_48K, 440.0, 10_000.0, 25).chunks(960) {
            r.process(f, &mut out);
            all.extend_from_slice(&out);
        }
        let ratio = rms(&all[320..]) / (10_000.0 / 2f64.sqrt());
        assert!((ratio - 1.0).abs() < 0.02, "440 Hz rms ratio {ratio}");
        let mut r = Resampler::for_analysis(SampleRate::HZ_48K, SampleRate::HZ_16K).unwrap();
        let mut all = Vec::new();
        for f in tone(SampleRate::HZ_48K, 11_000.0, 10_000.0, 25).chunks(960) {
            r.process(f, &mut out);
            all.extend_from_slice(&out);
        }
        assert!(rms(&all[320..]) < 70.0, "aliased energy {}", rms(&all[320..]));
    }

    #[test]
    fn the_analysis_filter_from_24_khz_rejects_aliases_by_40_db() {
        let mut r = Resampler::for_analysis(SampleRate::HZ_24K, SampleRate::HZ_16K).unwrap();
        let mut out = [0i16; 320];
        let mut all = Vec::new();
        for f in tone(SampleRate::HZ_24K, 440.0, 10_000.0, 25).chunks(480) {
            r.process(f, &mut out);
            all.extend_from_slice(&out);
        }
        let ratio = rms(&all[320..]) / (10_000.0 / 2f64.sqrt());
        assert!((ratio - 1.0).abs() < 0.02, "440 Hz rms ratio {ratio}");
        let mut r = Resampler::for_analysis(SampleRate::HZ_24K, SampleRate::HZ_16K).unwrap();
        let mut all = Vec::new();
        for f in tone(SampleRate::HZ_24K, 10_000.0, 10_000.0, 25).chunks(480) {
            r.process(f, &mut out);
            all.extend_from_slice(&out);
        }
        assert!(rms(&all[320..]) < 70.0, "aliased energy {}", rms(&all[320..]));
    }

    #[test]
    fn delay_is_about_a_millisecond() {
        let r = Resampler::new(SampleRate::HZ_24K, SampleRate::HZ_48K).unwrap();
        assert!(r.delay_output_samples() <= 48, "{} samples at 48 kHz", r.delay_output_samples());
        let r = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_16K).unwrap();
        assert!(r.delay_output_samples() <= 24, "{} samples at 16 kHz", r.delay_output_samples());
    }

    #[test]
    fn unsupported_ratios_are_rejected() {
        assert!(Resampler::new(SampleRate(44_100), SampleRate::HZ_48K).is_err());
        assert!(Resampler::new(SampleRate::HZ_48K, SampleRate(7_000)).is_err(), "48/7 needs a factor above 6");
        assert!(Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_48K).is_err());
    }
}
