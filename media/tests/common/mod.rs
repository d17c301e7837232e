//! Shared helpers for the integration tests: the speech fixture as Opus RTP packets.
#![allow(dead_code)]

use voxrelay_media::{MAX_OPUS_PACKET, OpusEncoder, Resampler, RtpIn, SAMPLES_16K, SAMPLES_24K, SAMPLES_48K, SampleRate};

/// Where the speech is in tests/fixtures/speech_16k.wav (see the README there), in ms.
pub const SPEECH_START_MS: u64 = 1000;
pub const SPEECH_END_MS: u64 = 3829;

/// The fixture as 20 ms frames at 48 kHz.
pub fn speech_48k() -> Vec<[i16; SAMPLES_48K]> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech_16k.wav");
    let samples: Vec<i16> = hound::WavReader::open(path).unwrap().samples::<i16>().map(Result::unwrap).collect();
    let mut up = Resampler::new(SampleRate::HZ_16K, SampleRate::HZ_48K).unwrap();
    samples
        .chunks_exact(SAMPLES_16K)
        .map(|f| {
            let mut out = [0i16; SAMPLES_48K];
            up.process(f, &mut out);
            out
        })
        .collect()
}

/// Opus-encodes frames into RTP payloads with consecutive sequence numbers from `first_seq`.
pub fn rtp_packets(frames: &[[i16; SAMPLES_48K]], first_seq: u16) -> Vec<RtpIn> {
    let mut enc = OpusEncoder::new().unwrap();
    let mut buf = [0u8; MAX_OPUS_PACKET];
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let len = enc.encode(f, &mut buf).unwrap();
            let seq = first_seq.wrapping_add(i as u16);
            RtpIn::new(seq, (i as u32) * 960, &buf[..len]).unwrap()
        })
        .collect()
}

/// `frames` of 24 kHz agent speech: a 300 Hz tone.
pub fn agent_tone(frames: usize) -> Vec<[i16; SAMPLES_24K]> {
    (0..frames)
        .map(|f| {
            let mut pcm = [0i16; SAMPLES_24K];
            for (i, s) in pcm.iter_mut().enumerate() {
                let t = (f * SAMPLES_24K + i) as f32 / 24_000.0;
                *s = (6000.0 * (2.0 * std::f32::consts::PI * 300.0 * t).sin()) as i16;
            }
            pcm
        })
        .collect()
}
