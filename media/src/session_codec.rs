//! The session's wire codec: turns one RTP payload into PCM at the session rate, 24 kHz
//! (inbound), and 20 ms of it into one payload (outbound), for Opus, G.711 or 24 kHz linear PCM,
//! so the chain's DSP is the same for all.
//! Owns: `AudioCodec`, per-codec concealment, the 8 kHz <-> 24 kHz resampling of G.711 and the
//! per-codec silence payload.
//!
//! Why 24 kHz: it is what the providers take and what the agent speaks, and speech coded at
//! 32 kbps is SILK wideband (≤ 8 kHz); libopus decodes to and encodes from 24 kHz directly, so a
//! frame crosses no resampler on its way to a provider or back (BENCHMARKS.md "The session at
//! 24 kHz").
//! Must never: allocate after `new`, reorder packets (the jitter buffer does), or know about
//! sockets or RTP headers.

use crate::g711::{G711_FRAME_BYTES, G711Law};
use crate::{FrameError, MAX_OPUS_PACKET, MediaError, OPUS_SILENCE, OpusDecoder, OpusEncoder, Resampler, SAMPLES_24K, SampleRate};

/// The rate of every session's PCM: decoded, mixed, encoded and handed to agents.
pub const SESSION_RATE: SampleRate = SampleRate::HZ_24K;

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

/// Inbound: payload -> 24 kHz PCM.
pub(crate) enum Decoder {
    Opus(OpusDecoder),
    Pcm(Box<PcmDecoder>),
}

pub(crate) struct PcmDecoder {
    law: PcmLaw,
    /// 8 → 24 kHz for G.711; none for L16, which is at the session rate already.
    up: Option<Resampler>,
    /// The last decoded 20 ms, repeated (fading) to conceal a loss.
    last: [i16; SAMPLES_24K],
    conceal_gain: f32,
}

/// `Some` resampler from `from` to `to`, or `None` when they are the same rate.
fn resampler(from: SampleRate, to: SampleRate) -> Result<Option<Resampler>, MediaError> {
    if from == to { Ok(None) } else { Resampler::new(from, to).map(Some) }
}

impl Decoder {
    pub fn new(codec: AudioCodec) -> Result<Self, MediaError> {
        Ok(match codec.law() {
            None => Decoder::Opus(OpusDecoder::at(SESSION_RATE)?),
            Some(law) => Decoder::Pcm(Box::new(PcmDecoder {
                law,
                up: resampler(law.rate(), SESSION_RATE)?,
                last: [0; SAMPLES_24K],
                conceal_gain: 1.0,
            })),
        })
    }

    /// Decodes one payload into `out` (room for [`crate::MAX_DECODED_24K`] samples); returns the
    /// samples written. PCM payloads must be whole 20 ms frames (160 bytes each for G.711, 960
    /// for L16).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> Result<usize, FrameError> {
        match self {
            Decoder::Opus(d) => d.decode(payload, out),
            Decoder::Pcm(g) => {
                let frame_bytes = g.law.frame_bytes();
                let frames = payload.len() / frame_bytes;
                let max_frames = (G711_MAX_FRAMES_PER_PACKET * G711_FRAME_BYTES / frame_bytes).min(out.len() / SAMPLES_24K);
                if frames * frame_bytes != payload.len() || frames == 0 || frames > max_frames {
                    return Err(FrameError(voxrelay_opus::ErrorCode::BadArg));
                }
                for (codes, frame) in payload.chunks_exact(frame_bytes).zip(out.chunks_exact_mut(SAMPLES_24K)) {
                    match &mut g.up {
                        Some(up) => {
                            let mut pcm = [0i16; SAMPLES_24K];
                            let pcm = &mut pcm[..up.input_len()];
                            g.law.decode(codes, pcm);
                            up.process(pcm, frame);
                        }
                        None => g.law.decode(codes, frame),
                    }
                    g.last.copy_from_slice(frame);
                }
                g.conceal_gain = 1.0;
                Ok(frames * SAMPLES_24K)
            }
        }
    }

    /// Session-rate samples the decoder's own resampling delays its output by (G.711's 8 kHz
    /// upsampled). Opus reports 0: its decoder has no lookahead worth aligning to here (the echo
    /// guard, the only user, is for lines without echo cancellation, which are G.711).
    pub fn delay_samples(&self) -> usize {
        match self {
            Decoder::Opus(_) => 0,
            Decoder::Pcm(g) => g.up.as_ref().map_or(0, Resampler::delay_output_samples),
        }
    }

    /// Synthesizes one 20 ms frame for a lost packet into `out[..SAMPLES_24K]`.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, FrameError> {
        match self {
            Decoder::Opus(d) => d.conceal(&mut out[..SAMPLES_24K]),
            Decoder::Pcm(g) => {
                g.conceal_gain *= G711_CONCEAL_DECAY;
                for (o, &s) in out[..SAMPLES_24K].iter_mut().zip(g.last.iter()) {
                    *o = (s as f32 * g.conceal_gain) as i16;
                }
                Ok(SAMPLES_24K)
            }
        }
    }

    /// Recovers the lost frame before `next` from its in-band FEC (Opus); PCM has none and
    /// conceals. Returns the samples written and whether FEC data was used (a packet without
    /// any, e.g. from a sender that expects no loss, is concealed inside libopus).
    pub fn recover(&mut self, next: &[u8], out: &mut [i16]) -> (Result<usize, FrameError>, bool) {
        match self {
            Decoder::Opus(d) => (d.decode_fec(next, &mut out[..SAMPLES_24K]), crate::opus_has_fec(next)),
            Decoder::Pcm(_) => (self.conceal(out), false),
        }
    }
}

/// Outbound: 20 ms of 24 kHz PCM -> payload.
pub(crate) enum Encoder {
    Opus(OpusEncoder),
    /// `down`: 24 → 8 kHz for G.711; none for L16.
    Pcm { law: PcmLaw, down: Option<Resampler> },
}

impl Encoder {
    pub fn new(codec: AudioCodec) -> Result<Self, MediaError> {
        Ok(match codec.law() {
            None => Encoder::Opus(OpusEncoder::for_input(SESSION_RATE)?),
            Some(law) => Encoder::Pcm { law, down: resampler(SESSION_RATE, law.rate())? },
        })
    }

    /// Encodes one frame into `out`; returns the payload length.
    pub fn encode(&mut self, frame: &[i16; SAMPLES_24K], out: &mut [u8; MAX_OPUS_PACKET]) -> Result<usize, FrameError> {
        match self {
            Encoder::Opus(e) => e.encode(frame, out),
            Encoder::Pcm { law, down } => {
                let len = law.frame_bytes();
                match down {
                    Some(down) => {
                        let mut pcm = [0i16; SAMPLES_24K];
                        let pcm = &mut pcm[..down.output_len()];
                        down.process(frame, pcm);
                        law.encode(pcm, &mut out[..len]);
                    }
                    None => law.encode(frame, &mut out[..len]),
                }
                Ok(len)
            }
        }
    }

    /// Session-rate samples the encoder's resampling delays what goes on the wire by (24 kHz
    /// down to G.711's 8 kHz). Opus reports 0, as [`Decoder::delay_samples`] says why.
    pub fn delay_samples(&self) -> usize {
        match self {
            Encoder::Opus(_) => 0,
            Encoder::Pcm { down, .. } => {
                down.as_ref().map_or(0, |d| d.delay_output_samples() * d.input_len() / d.output_len())
            }
        }
    }

    /// The loss (percent) the peer is expected to have: Opus adds in-band FEC for it; PCM has
    /// none to add.
    pub fn set_expected_loss(&mut self, percent: u8) {
        if let Encoder::Opus(e) = self {
            e.set_expected_loss(percent);
        }
    }

    /// Forget all state (a new response starts after silence).
    pub fn reset(&mut self) {
        match self {
            Encoder::Opus(e) => e.reset(),
            Encoder::Pcm { down, .. } => down.iter_mut().for_each(Resampler::reset),
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
            let mut out = [1i16; crate::MAX_DECODED_24K];
            assert_eq!(dec.decode(silence, &mut out).unwrap(), SAMPLES_24K);
            // A-law has no exact zero: its silence code decodes to +8 (a -72 dBFS DC offset).
            assert!(out[..SAMPLES_24K].iter().all(|s| s.abs() <= 12), "{codec:?}");
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
        let mut out = [0i16; crate::MAX_DECODED_24K];
        let mut err_sum = 0.0;
        for f in 0..20 {
            let mut pcm = [0i16; SAMPLES_24K];
            for (i, s) in pcm.iter_mut().enumerate() {
                let t = (f * SAMPLES_24K + i) as f64 / 24_000.0;
                *s = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
            }
            let len = enc.encode(&pcm, &mut payload).unwrap();
            assert_eq!(len, L16_FRAME_BYTES);
            if f == 10 {
                // The 24 kHz words are the tone, little-endian.
                let words: Vec<i16> = payload[..len].chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
                let peak = words.iter().map(|s| s.unsigned_abs()).max().unwrap();
                assert!((7600..=8400).contains(&peak), "peak {peak}");
            }
            assert_eq!(dec.decode(&payload[..len], &mut out).unwrap(), SAMPLES_24K);
            if f >= 5 {
                let rms = (out[..SAMPLES_24K].iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / 480.0).sqrt();
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
            let mut out = [0i16; crate::MAX_DECODED_24K];
            let mut rms_sum = 0.0;
            for f in 0..20 {
                let mut pcm = [0i16; SAMPLES_24K];
                for (i, s) in pcm.iter_mut().enumerate() {
                    let t = (f * SAMPLES_24K + i) as f64 / 24_000.0;
                    *s = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
                }
                let len = enc.encode(&pcm, &mut payload).unwrap();
                assert_eq!(len, 160);
                assert_eq!(dec.decode(&payload[..len], &mut out).unwrap(), SAMPLES_24K);
                if f >= 5 {
                    rms_sum += (out[..SAMPLES_24K].iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / 480.0).sqrt();
                }
            }
            let rms = rms_sum / 15.0;
            assert!((rms / (8000.0 / 2f64.sqrt()) - 1.0).abs() < 0.05, "{codec:?}: rms {rms}");
            dec.conceal(&mut out).unwrap();
            let first = out[..SAMPLES_24K].iter().map(|s| s.unsigned_abs()).max().unwrap();
            dec.conceal(&mut out).unwrap();
            let second = out[..SAMPLES_24K].iter().map(|s| s.unsigned_abs()).max().unwrap();
            assert!(first > 2000 && second < first, "{codec:?}: concealment {first} then {second}");
            assert!(dec.decode(&payload[..100], &mut out).is_err(), "partial frames are rejected");
        }
    }
}
