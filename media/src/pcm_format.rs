//! The Realtime API's audio formats at a transport's edge: a client's `pcm16` (24 kHz) or G.711
//! (8 kHz) bytes, in chunks of any size, become the 20 ms [`AudioCodec::L16`] frames a session
//! decodes; the session's L16 frames become the client's format again.
//! Owns: framing (a chunk may end mid-frame or mid-sample; the rest waits for the next chunk),
//! the G.711 <-> 24 kHz conversion, and what happens when the format changes mid-stream (the
//! partial frame is dropped: it was in the old format).
//! Must never: allocate per frame, pace, or know about events or sockets.
//!
//! [`AudioCodec::L16`]: crate::AudioCodec::L16

use crate::g711::{G711_FRAME_BYTES, G711Law};
use crate::session_codec::L16_FRAME_BYTES;
use crate::{MediaError, Resampler, SAMPLES_24K, SampleRate};

/// One 20 ms frame of 24 kHz little-endian PCM.
pub type L16Frame = [u8; L16_FRAME_BYTES];

/// A client's audio, as the format it declared: `None` is `pcm16`, else the G.711 law.
pub type PcmLaw = Option<G711Law>;

/// Client bytes -> L16 frames.
pub struct PcmInput {
    law: PcmLaw,
    /// The frame being filled, in the client's format.
    partial: [u8; L16_FRAME_BYTES],
    partial_len: usize,
    /// 8 kHz -> 24 kHz for G.711 input.
    up: Resampler,
}

impl PcmInput {
    pub fn new(law: PcmLaw) -> Result<Self, MediaError> {
        Ok(Self { law, partial: [0; L16_FRAME_BYTES], partial_len: 0, up: Resampler::new(SampleRate::HZ_8K, SampleRate::HZ_24K)? })
    }

    pub fn law(&self) -> PcmLaw {
        self.law
    }

    /// Switches format; a partial frame of the old one is dropped.
    pub fn set_law(&mut self, law: PcmLaw) {
        if law != self.law {
            self.law = law;
            self.partial_len = 0;
            self.up.reset();
        }
    }

    /// Bytes of one 20 ms frame in the client's format.
    fn frame_bytes(&self) -> usize {
        match self.law {
            None => L16_FRAME_BYTES,
            Some(_) => G711_FRAME_BYTES,
        }
    }

    /// Takes bytes from the front of `input` until one whole frame is here and returns it as
    /// L16; `None` when `input` ran out first (what it had is kept for the next call).
    pub fn next_frame(&mut self, input: &mut &[u8]) -> Option<L16Frame> {
        let need = self.frame_bytes();
        let take = (need - self.partial_len).min(input.len());
        self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&input[..take]);
        self.partial_len += take;
        *input = &input[take..];
        if self.partial_len < need {
            return None;
        }
        self.partial_len = 0;
        let mut frame = [0u8; L16_FRAME_BYTES];
        match self.law {
            None => frame.copy_from_slice(&self.partial),
            Some(law) => {
                let mut pcm8 = [0i16; G711_FRAME_BYTES];
                law.decode(&self.partial[..G711_FRAME_BYTES], &mut pcm8);
                let mut pcm24 = [0i16; SAMPLES_24K];
                self.up.process(&pcm8, &mut pcm24);
                for (o, s) in frame.chunks_exact_mut(2).zip(pcm24) {
                    o.copy_from_slice(&s.to_le_bytes());
                }
            }
        }
        Some(frame)
    }
}

/// L16 frames -> the client's format.
pub struct PcmOutput {
    law: PcmLaw,
    /// 24 kHz -> 8 kHz for G.711 output.
    down: Resampler,
}

impl PcmOutput {
    pub fn new(law: PcmLaw) -> Result<Self, MediaError> {
        Ok(Self { law, down: Resampler::new(SampleRate::HZ_24K, SampleRate::HZ_8K)? })
    }

    pub fn set_law(&mut self, law: PcmLaw) {
        if law != self.law {
            self.law = law;
            self.down.reset();
        }
    }

    /// Appends one L16 frame to `out` in the client's format. A payload that is not one whole
    /// frame (never from a session) is passed through as it is.
    pub fn convert(&mut self, l16: &[u8], out: &mut Vec<u8>) {
        let Some(law) = self.law.filter(|_| l16.len() == L16_FRAME_BYTES) else {
            out.extend_from_slice(l16);
            return;
        };
        let mut pcm24 = [0i16; SAMPLES_24K];
        for (s, b) in pcm24.iter_mut().zip(l16.chunks_exact(2)) {
            *s = i16::from_le_bytes([b[0], b[1]]);
        }
        let mut pcm8 = [0i16; G711_FRAME_BYTES];
        self.down.process(&pcm24, &mut pcm8);
        let start = out.len();
        out.resize(start + G711_FRAME_BYTES, 0);
        law.encode(&pcm8, &mut out[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone_24k(frames: usize) -> Vec<u8> {
        (0..frames * SAMPLES_24K)
            .flat_map(|i| ((6000.0 * (2.0 * std::f64::consts::PI * 300.0 * i as f64 / 24_000.0).sin()) as i16).to_le_bytes())
            .collect()
    }

    #[test]
    fn pcm16_chunks_of_any_size_become_the_same_frames() {
        let audio = tone_24k(5);
        let mut whole = PcmInput::new(None).unwrap();
        let mut rest = &audio[..];
        let expected: Vec<L16Frame> = std::iter::from_fn(|| whole.next_frame(&mut rest)).collect();
        assert_eq!(expected.len(), 5);
        assert_eq!(expected[0][..], audio[..L16_FRAME_BYTES]);
        // Odd chunk sizes, splitting samples too.
        let mut chunked = PcmInput::new(None).unwrap();
        let mut got = Vec::new();
        for chunk in audio.chunks(333) {
            let mut rest = chunk;
            while let Some(f) = chunked.next_frame(&mut rest) {
                got.push(f);
            }
            assert!(rest.is_empty());
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn g711_goes_in_and_out_at_8khz_with_its_level() {
        for law in [G711Law::Mu, G711Law::A] {
            let audio = tone_24k(10);
            // Client side: the tone at 8 kHz in G.711 (every third sample, after the same filter
            // the server uses on the way out).
            let mut out = PcmOutput::new(Some(law)).unwrap();
            let mut g711 = Vec::new();
            for frame in audio.chunks(L16_FRAME_BYTES) {
                out.convert(frame, &mut g711);
            }
            assert_eq!(g711.len(), 10 * G711_FRAME_BYTES);
            let mut input = PcmInput::new(Some(law)).unwrap();
            let mut rest = &g711[..];
            let frames: Vec<L16Frame> = std::iter::from_fn(|| input.next_frame(&mut rest)).collect();
            assert_eq!(frames.len(), 10);
            let samples: Vec<f64> =
                frames[5..].iter().flat_map(|f| f.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f64)).collect();
            let rms = (samples.iter().map(|s| s * s).sum::<f64>() / samples.len() as f64).sqrt();
            assert!((rms / (6000.0 / 2f64.sqrt()) - 1.0).abs() < 0.1, "{law:?}: rms {rms}");
        }
    }

    #[test]
    fn a_format_change_drops_the_partial_frame() {
        let mut input = PcmInput::new(None).unwrap();
        let mut rest = &[7u8; 500][..];
        assert!(input.next_frame(&mut rest).is_none());
        input.set_law(Some(G711Law::Mu));
        let codes = [0xFFu8; G711_FRAME_BYTES];
        let mut rest = &codes[..];
        let frame = input.next_frame(&mut rest).expect("a whole mu-law frame");
        assert!(frame.iter().all(|&b| b == 0), "mu-law silence, none of the old pcm16 bytes");
    }
}
