//! The listening test behind the encoder's complexity (issue 20): every speech clip of the VAD
//! set and the fixture, through the server's encoder at each complexity and back through the
//! decoder, scored with objective proxies (PESQ/POLQA are not available here) and written as WAV
//! files to listen to side by side.
//!
//! ```sh
//! cargo run --release -p voxrelay-media --example opus_quality [OUT_DIR]   # default bench-out/opus-quality
//! ```
//!
//! Per complexity, averaged over the clips (speech frames only, found on the original with the
//! energy of the frame):
//! - **SNR / segmental SNR** (dB, best alignment): waveform fidelity; segmental SNR averages
//!   per-frame SNRs clamped to [-10, 35] dB, so quiet passages count as much as loud ones.
//! - **LSD** (dB): log-spectral distance over 0–8 kHz in 20 ms Hann windows, within 50 dB of the
//!   frame's peak: how far the decoded spectrum's shape is from the original's (lower is better).
//! - **VAD agreement** (%): frames on which the earshot VAD decides the same on the decoded audio
//!   as on the original: whether the server's own detector still hears the same speech.
//! - **Envelope correlation**: of per-frame RMS, original vs decoded (the echo tests' check).

use std::path::PathBuf;

use voxrelay_media::{
    EarshotVad, MAX_DECODED_48K, MAX_OPUS_PACKET, OpusDecoder, OpusEncoder, Resampler, SAMPLES_16K, SAMPLES_48K, SampleRate, Vad,
};

const COMPLEXITIES: [i32; 7] = [0, 1, 2, 3, 4, 5, 8];
/// Frames quieter than this RMS (of 32768) on the original are not speech for the scores.
const SPEECH_RMS: f64 = 300.0;
/// Dynamic range of the log-spectral distance (see [`floored`]).
const LSD_FLOOR_DB: f64 = 50.0;

fn clips() -> Vec<(String, Vec<i16>)> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(format!("{root}vadset"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "wav")).collect())
        .unwrap_or_default();
    paths.sort();
    paths.push(format!("{root}tests/fixtures/speech_16k.wav").into());
    paths
        .into_iter()
        .map(|p| {
            let mut reader = hound::WavReader::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let rate = reader.spec().sample_rate;
            let pcm: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap_or(0)).collect();
            let name = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            (name, to_48k(&pcm, rate))
        })
        .collect()
}

fn to_48k(pcm: &[i16], rate: u32) -> Vec<i16> {
    let from = SampleRate(rate);
    if from == SampleRate::HZ_48K {
        return pcm.to_vec();
    }
    let mut up = Resampler::new(from, SampleRate::HZ_48K).unwrap_or_else(|e| panic!("{rate} Hz: {e:?}"));
    let n = from.frame_samples();
    let mut out = vec![0i16; pcm.len() / n * SAMPLES_48K];
    for (f, o) in pcm.chunks_exact(n).zip(out.chunks_exact_mut(SAMPLES_48K)) {
        up.process(f, o);
    }
    out
}

fn round_trip(pcm: &[i16], complexity: i32) -> Vec<i16> {
    let mut enc = OpusEncoder::with_settings(complexity, true).unwrap();
    let mut dec = OpusDecoder::new().unwrap();
    let (mut buf, mut out) = ([0u8; MAX_OPUS_PACKET], [0i16; MAX_DECODED_48K]);
    let mut decoded = Vec::with_capacity(pcm.len());
    for frame in pcm.chunks_exact(SAMPLES_48K) {
        let len = enc.encode(frame, &mut buf).unwrap();
        let n = dec.decode(&buf[..len], &mut out).unwrap();
        decoded.extend_from_slice(&out[..n]);
    }
    decoded
}

/// The decoder's output lags the input by the codec's delay: the lag with the best SNR.
fn align(original: &[i16], decoded: &[i16]) -> usize {
    (0..600).max_by(|&a, &b| snr(original, &decoded[a..]).total_cmp(&snr(original, &decoded[b..]))).unwrap_or(0)
}

fn snr(x: &[i16], y: &[i16]) -> f64 {
    let (mut sig, mut err) = (0.0f64, 0.0f64);
    for (a, b) in x.iter().zip(y) {
        sig += f64::from(*a).powi(2);
        err += (f64::from(*a) - f64::from(*b)).powi(2);
    }
    10.0 * (sig / err.max(1.0)).log10()
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// Log power spectrum of one frame at 16 kHz (320 samples, Hann), 1..160 bins, by a plain DFT.
fn log_spectrum(frame16: &[i16]) -> Vec<f64> {
    let n = frame16.len();
    let windowed: Vec<f64> = frame16
        .iter()
        .enumerate()
        .map(|(i, s)| f64::from(*s) * (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()))
        .collect();
    (1..n / 2)
        .map(|k| {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, x) in windowed.iter().enumerate() {
                let phase = 2.0 * std::f64::consts::PI * (k * i) as f64 / n as f64;
                re += x * phase.cos();
                im -= x * phase.sin();
            }
            10.0 * (re * re + im * im + 1.0).log10()
        })
        .collect()
}

/// Both spectra floored at [`LSD_FLOOR_DB`] below the original frame's peak: bins the original
/// has (almost) nothing in count as equal, so the distance is about the speech, not the noise floor.
fn floored(original: &[f64], decoded: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let floor = original.iter().copied().fold(f64::MIN, f64::max) - LSD_FLOOR_DB;
    (original.iter().map(|p| p.max(floor)).collect(), decoded.iter().map(|p| p.max(floor)).collect())
}

fn to_16k(pcm48: &[i16]) -> Vec<i16> {
    let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_16K).unwrap();
    let mut out = vec![0i16; pcm48.len() / SAMPLES_48K * SAMPLES_16K];
    for (f, o) in pcm48.chunks_exact(SAMPLES_48K).zip(out.chunks_exact_mut(SAMPLES_16K)) {
        down.process(f, o);
    }
    out
}

fn vad_decisions(pcm16: &[i16]) -> Vec<bool> {
    let mut vad = EarshotVad::new();
    pcm16.chunks_exact(SAMPLES_16K).map(|f| vad.frame_16k(f.try_into().unwrap_or(&[0; SAMPLES_16K])) >= 0.5).collect()
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        cov += (x - ma) * (y - mb);
        va += (x - ma).powi(2);
        vb += (y - mb).powi(2);
    }
    cov / (va * vb).sqrt().max(1e-9)
}

#[derive(Default, Clone, Copy)]
struct Scores {
    snr: f64,
    seg_snr: f64,
    lsd: f64,
    vad_agree: f64,
    envelope: f64,
}

fn score(original: &[i16], decoded: &[i16]) -> Scores {
    let lag = align(original, decoded);
    let decoded = &decoded[lag..];
    let len = original.len().min(decoded.len()) / SAMPLES_48K * SAMPLES_48K;
    let (x, y) = (&original[..len], &decoded[..len]);
    let speech: Vec<bool> = x.chunks_exact(SAMPLES_48K).map(|f| rms(f) >= SPEECH_RMS).collect();
    let voiced = speech.iter().filter(|s| **s).count().max(1) as f64;
    let seg_snr = x
        .chunks_exact(SAMPLES_48K)
        .zip(y.chunks_exact(SAMPLES_48K))
        .zip(&speech)
        .filter(|(_, s)| **s)
        .map(|((a, b), _)| snr(a, b).clamp(-10.0, 35.0))
        .sum::<f64>()
        / voiced;
    let (x16, y16) = (to_16k(x), to_16k(y));
    let lsd = x16
        .chunks_exact(SAMPLES_16K)
        .zip(y16.chunks_exact(SAMPLES_16K))
        .zip(&speech)
        .filter(|(_, s)| **s)
        .map(|((a, b), _)| {
            let (sa, sb) = floored(&log_spectrum(a), &log_spectrum(b));
            (sa.iter().zip(&sb).map(|(p, q)| (p - q).powi(2)).sum::<f64>() / sa.len() as f64).sqrt()
        })
        .sum::<f64>()
        / voiced;
    let (va, vb) = (vad_decisions(&x16), vad_decisions(&y16));
    let vad_agree = va.iter().zip(&vb).filter(|(a, b)| a == b).count() as f64 / va.len().max(1) as f64 * 100.0;
    let env = |p: &[i16]| p.chunks_exact(SAMPLES_48K).map(rms).collect::<Vec<_>>();
    Scores { snr: snr(x, y), seg_snr, lsd, vad_agree, envelope: correlation(&env(x), &env(y)) }
}

fn write_wav(path: &std::path::Path, pcm: &[i16]) {
    let spec = hound::WavSpec { channels: 1, sample_rate: 48_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for s in pcm {
        w.write_sample(*s).unwrap_or(());
    }
    w.finalize().unwrap_or(());
}

fn main() {
    let out: PathBuf = std::env::args().nth(1).unwrap_or_else(|| "bench-out/opus-quality".into()).into();
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let clips = clips();
    println!("{} clips; WAVs in {}", clips.len(), out.display());
    println!("| complexity | SNR (dB) | segmental SNR (dB) | LSD (dB) | VAD agreement (%) | envelope correlation |");
    println!("|---|---|---|---|---|---|");
    for complexity in COMPLEXITIES {
        let mut total = Scores::default();
        for (name, pcm) in &clips {
            let decoded = round_trip(pcm, complexity);
            write_wav(&out.join(format!("{name}_c{complexity}.wav")), &decoded);
            if complexity == COMPLEXITIES[0] {
                write_wav(&out.join(format!("{name}_original.wav")), pcm);
            }
            let s = score(pcm, &decoded);
            total.snr += s.snr;
            total.seg_snr += s.seg_snr;
            total.lsd += s.lsd;
            total.vad_agree += s.vad_agree;
            total.envelope += s.envelope;
        }
        let n = clips.len() as f64;
        println!(
            "| {complexity} | {:.2} | {:.2} | {:.2} | {:.1} | {:.4} |",
            total.snr / n,
            total.seg_snr / n,
            total.lsd / n,
            total.vad_agree / n,
            total.envelope / n
        );
    }
}
