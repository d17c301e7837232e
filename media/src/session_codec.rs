//! The session's wire codec: turns one RTP payload into 48 kHz PCM (inbound) and 20 ms of 48 kHz
//! PCM into one payload (outbound), for Opus, G.711 or 24 kHz linear PCM, so the chain's DSP is
//! the same for all.
//! Owns: `AudioCodec`, per-codec concealment, the 8/24 kHz <-> 48 kHz resampling of the PCM
//! codecs and the per-codec silence payload.
//! Must never: allocate after `new`, reorder packets (the jitter buffer does), or know about
//! sockets or RTP headers.

use crate::g711::{G711_FRAME_BYTES, G711Law};
use crate::{
    FrameError, MAX_OPUS_PACKET, MediaError, OPUS_SILENCE, OpusDecoder, OpusEncoder, Resampler, SAMPLES_48K,
    SampleRate,
};

/// The RTP audio codec of a session (the same both ways).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AudioCodec {
    /// Opus, 48 kHz RTP clock, one 20 ms frame per packet (WebRTC).
    #[default]
    Opus,
    /// G.711 mu-law, 8 kHz, 160 bytes per 20 ms (telephony, RTP payload type 0).
    Pcmu,
    /// G.711 A-law, 8 kHz, 160 bytes per 20 ms (telephony, RTP payload type 8).
    Pcma,
    /// 16-bit little-endian linear PCM at 24 kHz, 960 bytes per 20 ms: OpenAI's `pcm16`, the
    /// Realtime WebSocket's audio (the transport converts other formats at its edge).
    L16,
}

/// One 20 ms frame of [`AudioCodec::L16`]: 480 samples, two bytes each.
pub const L16_FRAME_BYTES: usize = crate::SAMPLES_24K * 2;

/// 160 zero codes, the G.711 silence payloads.
static PCMU_SILENCE: [u8; G711_FRAME_BYTES] = [G711Law::Mu.silence_byte(); G711_FRAME_BYTES];
static PCMA_SILENCE: [u8; G711_FRAME_BYTES] = [G711Law::A.silence_byte(); G711_FRAME_BYTES];
static L16_SILENCE: [u8; L16_FRAME_BYTES] = [0; L16_FRAME_BYTES];

/// Longest G.711 payload accepted in one packet: 120 ms, like Opus's longest packet.
const G711_MAX_FRAMES_PER_PACKET: usize = 6;

/// Each concealed G.711 frame repeats the last good one at this gain relative to the previous
/// repetition (-6 dB per 20 ms), so a long gap fades to silence instead of buzzing.
const G711_CONCEAL_DECAY: f32 = 0.5;

impl AudioCodec {
    /// The RTP timestamp clock of this codec.
    pub const fn clock_rate(self) -> SampleRate {
        match self {
            AudioCodec::Opus => SampleRate::HZ_48K,
            AudioCodec::Pcmu | AudioCodec::Pcma => SampleRate::HZ_8K,
            AudioCodec::L16 => SampleRate::HZ_24K,
        }
    }

    /// The payload sent for a silent 20 ms frame without encoding anything.
    pub fn silence(self) -> &'static [u8] {
        match self {
            AudioCodec::Opus => &OPUS_SILENCE,
            AudioCodec::Pcmu => &PCMU_SILENCE,
            AudioCodec::Pcma => &PCMA_SILENCE,
            AudioCodec::L16 => &L16_SILENCE,
        }
    }

    /// How samples are coded, for the PCM codecs (`None`: Opus).
    fn law(self) -> Option<PcmLaw> {
        match self {
            AudioCodec::Opus => None,
            AudioCodec::Pcmu => Some(PcmLaw::G711(G711Law::Mu)),
            AudioCodec::Pcma => Some(PcmLaw::G711(G711Law::A)),
            AudioCodec::L16 => Some(PcmLaw::L16),
        }
    }
}

/// The sample coding of a PCM codec: companded 8 kHz bytes, or 24 kHz little-endian words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PcmLaw {
    G711(G711Law),
    L16,
}

impl PcmLaw {
    fn rate(self) -> SampleRate {
        match self {
            PcmLaw::G711(_) => SampleRate::HZ_8K,
            PcmLaw::L16 => SampleRate::HZ_24K,
        }
    }

    /// Bytes of one 20 ms frame.
    fn frame_bytes(self) -> usize {
        match self {
            PcmLaw::G711(_) => G711_FRAME_BYTES,
            PcmLaw::L16 => L16_FRAME_BYTES,
        }
    }

    /// Decodes one frame's bytes into `out` (one sample per 8 kHz byte or 24 kHz word).
    fn decode(self, bytes: &[u8], out: &mut [i16]) {
        match self {
            PcmLaw::G711(law) => law.decode(bytes, out),
            PcmLaw::L16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = i16::from_le_bytes([b[0], b[1]]);
                }
            }
        }
    }

    /// Encodes one frame of samples into `out` (its [`PcmLaw::frame_bytes`]).
    fn encode(self, pcm: &[i16], out: &mut [u8]) {
        match self {
            PcmLaw::G711(law) => law.encode(pcm, out),
            PcmLaw::L16 => {
                for (o, s) in out.chunks_exact_mut(2).zip(pcm) {
                    o.copy_from_slice(&s.to_le_bytes());
                }
            }
        }
    }
}

/// Inbound: payload -> 48 kHz PCM.
pub(crate) enum Decoder {
    Opus(OpusDecoder),
    Pcm(Box<PcmDecoder>),
}

pub(crate) struct PcmDecoder {
    law: PcmLaw,
    up: Resampler,
    /// The last decoded 20 ms at 48 kHz, repeated (fading) to conceal a loss.
    last: [i16; SAMPLES_48K],
    conceal_gain: f32,
}

impl Decoder {
    pub fn new(codec: AudioCodec) -> Result<Self, MediaError> {
        Ok(match codec.law() {
            None => Decoder::Opus(OpusDecoder::new()?),
            Some(law) => Decoder::Pcm(Box::new(PcmDecoder {
                law,
                up: Resampler::new(law.rate(), SampleRate::HZ_48K)?,
                last: [0; SAMPLES_48K],
                conceal_gain: 1.0,
            })),
        })
    }

    /// Decodes one payload into `out` (room for [`crate::MAX_DECODED_48K`] samples); returns the
    /// samples written. PCM payloads must be whole 20 ms frames (160 bytes each for G.711, 960
    /// for L16).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, FrameError> {
        match self {
            Decoder::Opus(d) => d.decode(payload, out),
            Decoder::Pcm(g) => {
                let frame_bytes = g.law.frame_bytes();
                let frames = payload.len() / frame_bytes;
                let max_frames = (G711_MAX_FRAMES_PER_PACKET * G711_FRAME_BYTES / frame_bytes).min(out.len() / SAMPLES_48K);
                if frames * frame_bytes != payload.len() || frames == 0 || frames > max_frames {
                    return Err(FrameError(voxrelay_opus::ErrorCode::BadArg));
                }
                let mut pcm = [0i16; crate::SAMPLES_24K];
                let pcm = &mut pcm[..g.up.input_len()];
                for (codes, out48) in payload.chunks_exact(frame_bytes).zip(out.chunks_exact_mut(SAMPLES_48K)) {
                    g.law.decode(codes, pcm);
                    g.up.process(pcm, out48);
                    g.last.copy_from_slice(out48);
                }
                g.conceal_gain = 1.0;
                Ok(frames * SAMPLES_48K)
            }
        }
    }

    /// Synthesizes one 20 ms frame for a lost packet into `out[..SAMPLES_48K]`.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, FrameError> {
        match self {
            Decoder::Opus(d) => d.conceal(&mut out[..SAMPLES_48K]),
            Decoder::Pcm(g) => {
                g.conceal_gain *= G711_CONCEAL_DECAY;
                for (o, &s) in out[..SAMPLES_48K].iter_mut().zip(g.last.iter()) {
                    *o = (s as f32 * g.conceal_gain) as i16;
                }
                Ok(SAMPLES_48K)
            }
        }
    }

    /// Recovers the lost frame before `next` from its in-band FEC (Opus); PCM has none and
    /// conceals. Returns the samples written and whether FEC data was used.
    pub fn recover(&mut self, next: &[u8], out: &mut [i16]) -> (Result<usize, FrameError>, bool) {
        match self {
            Decoder::Opus(d) => (d.decode_fec(next, &mut out[..SAMPLES_48K]), true),
            Decoder::Pcm(_) => (self.conceal(out), false),
        }
    }
}

/// Outbound: 20 ms of 48 kHz PCM -> payload.
pub(crate) enum Encoder {
    Opus(OpusEncoder),
    Pcm { law: PcmLaw, down: Resampler },
}

impl Encoder {
    pub fn new(codec: AudioCodec) -> Result<Self, MediaError> {
        Ok(match codec.law() {
            None => Encoder::Opus(OpusEncoder::new()?),
            Some(law) => Encoder::Pcm { law, down: Resampler::new(SampleRate::HZ_48K, law.rate())? },
        })
    }

    /// Encodes one frame into `out`; returns the payload length.
    pub fn encode(&mut self, pcm48: &[i16; SAMPLES_48K], out: &mut [u8; MAX_OPUS_PACKET]) -> Result<usize, FrameError> {
        match self {
            Encoder::Opus(e) => e.encode(pcm48, out),
            Encoder::Pcm { law, down } => {
                let mut pcm = [0i16; crate::SAMPLES_24K];
                let pcm = &mut pcm[..down.output_len()];
                down.process(pcm48, pcm);
                let len = law.frame_bytes();
                law.encode(pcm, &mut out[..len]);
                Ok(len)
            }
        }
    }

    /// Forget all state (a new response starts after silence).
    pub fn reset(&mut self) {
        match self {
            Encoder::Opus(e) => e.reset(),
            Encoder::Pcm { down, .. } => down.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_silence_is_160_zero_codes_and_decodes_to_silence() {
        for codec in [AudioCodec::Pcmu, AudioCodec::Pcma] {
            let silence = codec.silence();
            assert_eq!(silence.len(), 160);
            let mut dec = Decoder::new(codec).unwrap();
            let mut out = [1i16; crate::MAX_DECODED_48K];
            assert_eq!(dec.decode(silence, &mut out).unwrap(), SAMPLES_48K);
            // A-law has no exact zero: its silence code decodes to +8 (a -72 dBFS DC offset).
            assert!(out[..SAMPLES_48K].iter().all(|s| s.abs() <= 12), "{codec:?}");
        }
        assert_eq!(AudioCodec::Opus.silence(), &OPUS_SILENCE);
    }

    #[test]
    fn l16_is_24khz_little_endian_and_round_trips_a_tone() {
        assert_eq!(AudioCodec::L16.clock_rate(), SampleRate::HZ_24K);
        assert_eq!(AudioCodec::L16.silence(), &[0u8; L16_FRAME_BYTES][..]);
        let mut enc = Encoder::new(AudioCodec::L16).unwrap();
        let mut dec = Decoder::new(AudioCodec::L16).unwrap();
        let mut payload = [0u8; MAX_OPUS_PACKET];
        let mut out = [0i16; crate::MAX_DECODED_48K];
        let mut err_sum = 0.0;
        for f in 0..20 {
            let mut pcm = [0i16; SAMPLES_48K];
            for (i, s) in pcm.iter_mut().enumerate() {
                let t = (f * SAMPLES_48K + i) as f64 / 48_000.0;
                *s = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
            }
            let len = enc.encode(&pcm, &mut payload).unwrap();
            assert_eq!(len, L16_FRAME_BYTES);
            if f == 10 {
                // The 24 kHz words are the tone (delayed by the filter), little-endian.
                let words: Vec<i16> = payload[..len].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
                let peak = words.iter().map(|s| s.unsigned_abs()).max().unwrap();
                assert!((7600..=8400).contains(&peak), "peak {peak}");
            }
            assert_eq!(dec.decode(&payload[..len], &mut out).unwrap(), SAMPLES_48K);
            if f >= 5 {
                let rms = (out[..SAMPLES_48K].iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / 960.0).sqrt();
                err_sum += (rms / (8000.0 / 2f64.sqrt()) - 1.0).abs();
            }
        }
        assert!(err_sum / 15.0 < 0.02, "level error {}", err_sum / 15.0);
        assert!(dec.decode(&payload[..959], &mut out).is_err(), "an odd byte count is not a frame");
        assert!(dec.decode(&payload[..480], &mut out).is_err(), "half a frame is refused");
    }

    #[test]
    fn g711_round_trip_keeps_a_tone_and_concealment_fades() {
        for codec in [AudioCodec::Pcmu, AudioCodec::Pcma] {
            let mut enc = Encoder::new(codec).unwrap();
            let mut dec = Decoder::new(codec).unwrap();
            let mut payload = [0u8; MAX_OPUS_PACKET];
            let mut out = [0i16; crate::MAX_DECODED_48K];
            let mut rms_sum = 0.0;
            for f in 0..20 {
                let mut pcm = [0i16; SAMPLES_48K];
                for (i, s) in pcm.iter_mut().enumerate() {
                    let t = (f * SAMPLES_48K + i) as f64 / 48_000.0;
                    *s = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
                }
                let len = enc.encode(&pcm, &mut payload).unwrap();
                assert_eq!(len, 160);
                assert_eq!(dec.decode(&payload[..len], &mut out).unwrap(), SAMPLES_48K);
                if f >= 5 {
                    rms_sum += (out[..SAMPLES_48K].iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / 960.0).sqrt();
                }
            }
            let rms = rms_sum / 15.0;
            assert!((rms / (8000.0 / 2f64.sqrt()) - 1.0).abs() < 0.05, "{codec:?}: rms {rms}");
            dec.conceal(&mut out).unwrap();
            let first = out[..SAMPLES_48K].iter().map(|s| s.unsigned_abs()).max().unwrap();
            dec.conceal(&mut out).unwrap();
            let second = out[..SAMPLES_48K].iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!(first > 2000 && second < first, "{codec:?}: concealment {first} then {second}");
            assert!(dec.decode(&payload[..100], &mut out).is_err(), "partial frames are rejected");
        }
    }
}
