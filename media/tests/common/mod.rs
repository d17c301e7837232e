//! Shared helpers for the integration tests: the speech fixture as Opus RTP packets.
#![allow(dead_code)]

use voxrelay_media::{DtxGate, MAX_OPUS_PACKET, OpusEncoder, Resampler, RtpIn, SAMPLES_16K, SAMPLES_24K, SAMPLES_48K, SampleRate};

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

/// [`rtp_packets`] from a sender in DTX, as a browser sends when the answer says `usedtx=1`
/// (WebRTC's rule: of a run of DTX packets only the first is sent). One entry per 20 ms: `None`
/// where nothing is sent. Sequence numbers count sent packets; timestamps keep the clock.
pub fn dtx_rtp_packets(frames: &[[i16; SAMPLES_48K]], first_seq: u16) -> Vec<Option<RtpIn>> {
    let mut enc = OpusEncoder::new().unwrap();
    enc.set_dtx(true).unwrap();
    let mut buf = [0u8; MAX_OPUS_PACKET];
    let (mut seq, mut gate) = (first_seq, DtxGate::new(true));
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let len = enc.encode(f, &mut buf).unwrap();
            gate.sends(&buf[..len]).then(|| {
                seq = seq.wrapping_add(1);
                RtpIn::new(seq.wrapping_sub(1), (i as u32) * 960, &buf[..len]).unwrap()
            })
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

/// G.711-encodes 48 kHz frames (downsampled to 8 kHz) into 160-byte RTP payloads with
/// consecutive sequence numbers from `first_seq` and an 8 kHz timestamp clock.
pub fn g711_packets(frames: &[[i16; SAMPLES_48K]], law: voxrelay_media::G711Law, first_seq: u16) -> Vec<RtpIn> {
    let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_8K).unwrap();
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut pcm8 = [0i16; 160];
            down.process(f, &mut pcm8);
            let mut payload = [0u8; 160];
            law.encode(&pcm8, &mut payload);
            RtpIn::new(first_seq.wrapping_add(i as u16), (i as u32) * 160, &payload).unwrap()
        })
        .collect()
}

/// A small deterministic PRNG (SplitMix64) so loss patterns and noise are reproducible.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
