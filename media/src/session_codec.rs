//! The session's wire codec: turns one RTP payload into 48 kHz PCM (inbound) and 20 ms of 48 kHz
//! PCM into one payload (outbound), for Opus or G.711, so the chain's DSP is the same for all.
//! Owns: `AudioCodec`, per-codec concealment, the 8 kHz <-> 48 kHz resampling of G.711 and the
//! per-codec silence payload.
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
}

/// 160 zero codes, the G.711 silence payloads.
static PCMU_SILENCE: [u8; G711_FRAME_BYTES] = [G711Law::Mu.silence_byte(); G711_FRAME_BYTES];
static PCMA_SILENCE: [u8; G711_FRAME_BYTES] = [G711Law::A.silence_byte(); G711_FRAME_BYTES];

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
        }
    }

    /// The payload sent for a silent 20 ms frame without encoding anything.
    pub fn silence(self) -> &'static [u8] {
        match self {
            AudioCodec::Opus => &OPUS_SILENCE,
            AudioCodec::Pcmu => &PCMU_SILENCE,
            AudioCodec::Pcma => &PCMA_SILENCE,
        }
    }

    fn law(self) -> Option<G711Law> {
        match self {
            AudioCodec::Opus => None,
            AudioCodec::Pcmu => Some(G711Law::Mu),
            AudioCodec::Pcma => Some(G711Law::A),
        }
    }
}

/// Inbound: payload -> 48 kHz PCM.
pub(crate) enum Decoder {
    Opus(OpusDecoder),
    G711(Box<G711Decoder>),
}

pub(crate) struct G711Decoder {
    law: G711Law,
    up: Resampler,
    /// The last decoded 20 ms at 48 kHz, repeated (fading) to conceal a loss.
    last: [i16; SAMPLES_48K],
    conceal_gain: f32,
}

impl Decoder {
    pub fn new(codec: AudioCodec) -> Result<Self, MediaError> {
        Ok(match codec.law() {
            None => Decoder::Opus(OpusDecoder::new()?),
            Some(law) => Decoder::G711(Box::new(G711Decoder {
                law,
                up: Resampler::new(SampleRate::HZ_8K, SampleRate::HZ_48K)?,
                last: [0; SAMPLES_48K],
                conceal_gain: 1.0,
            })),
        })
    }

    /// Decodes one payload into `out` (room for [`crate::MAX_DECODED_48K`] samples); returns the
    /// samples written. G.711 payloads must be whole 20 ms frames (160 bytes each).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, FrameError> {
        match self {
            Decoder::Opus(d) => d.decode(payload, out),
            Decoder::G711(g) => {
                let frames = payload.len() / G711_FRAME_BYTES;
                if frames * G711_FRAME_BYTES != payload.len() || frames == 0 || frames > G711_MAX_FRAMES_PER_PACKET {
                    return Err(FrameError(voxrelay_opus::ErrorCode::BadArg));
                }
                let mut pcm8 = [0i16; G711_FRAME_BYTES];
                for (codes, out48) in payload.chunks_exact(G711_FRAME_BYTES).zip(out.chunks_exact_mut(SAMPLES_48K)) {
                    g.law.decode(codes, &mut pcm8);
                    g.up.process(&pcm8, out48);
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
            Decoder::G711(g) => {
                g.conceal_gain *= G711_CONCEAL_DECAY;
                for (o, &s) in out[..SAMPLES_48K].iter_mut().zip(g.last.iter()) {
                    *o = (s as f32 * g.conceal_gain) as i16;
                }
                Ok(SAMPLES_48K)
            }
        }
    }

    /// Recovers the lost frame before `next` from its in-band FEC (Opus); G.711 has none and
    /// conceals. Returns the samples written and whether FEC data was used.
    pub fn recover(&mut self, next: &[u8], out: &mut [i16]) -> (Result<usize, FrameError>, bool) {
        match self {
            Decoder::Opus(d) => (d.decode_fec(next, &mut out[..SAMPLES_48K]), true),
            Decoder::G711(_) => (self.conceal(out), false),
        }
    }
}

/// Outbound: 20 ms of 48 kHz PCM -> payload.
pub(crate) enum Encoder {
    Opus(OpusEncoder),
    G711 { law: G711Law, down: Resampler },
}

impl Encoder {
    pub fn new(codec: AudioCodec) -> Result<Self, MediaError> {
        Ok(match codec.law() {
            None => Encoder::Opus(OpusEncoder::new()?),
            Some(law) => Encoder::G711 { law, down: Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_8K)? },
        })
    }

    /// Encodes one frame into `out`; returns the payload length.
    pub fn encode(&mut self, pcm48: &[i16; SAMPLES_48K], out: &mut [u8; MAX_OPUS_PACKET]) -> Result<usize, FrameError> {
        match self {
            Encoder::Opus(e) => e.encode(pcm48, out),
            Encoder::G711 { law, down } => {
                let mut pcm8 = [0i16; G711_FRAME_BYTES];
                down.process(pcm48, &mut pcm8);
                law.encode(&pcm8, &mut out[..G711_FRAME_BYTES]);
                Ok(G711_FRAME_BYTES)
            }
        }
    }

    /// Forget all state (a new response starts after silence).
    pub fn reset(&mut self) {
        match self {
            Encoder::Opus(e) => e.reset(),
            Encoder::G711 { down, .. } => down.reset(),
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
