//! Thin Opus wrappers: mono decoder (with PLC and in-band FEC) and encoder (VOIP, 32 kbps) at
//! 48 kHz for clients (FEC on), or at the session rate (24 kHz) where libopus resamples inside the
//! codec for less than a separate resampler costs (wideband, FEC as the peer's loss asks,
//! [`crate::PeerLoss`]); plus the precomputed silence packet.
//! Owns: codec settings and their reasons. Must never: allocate per frame (callers pass their own
//! buffers; errors are `Copy` values, not strings), resample, or know about RTP.

use crate::{MAX_OPUS_PACKET, MediaError, SampleRate};
use voxrelay_opus::{Decoder, Encoder, ErrorCode};

/// 48 kHz mono Opus, 20 ms: the well-known 3-byte silence frame (TOC 0xF8 = CELT fullband 20 ms,
/// mono, one frame). Decodes to digital silence; sent while the agent is quiet so the outbound
/// stream stays continuous without paying for an encode.
pub const OPUS_SILENCE: [u8; 3] = [0xF8, 0xFF, 0xFE];

/// Outbound bitrate: 32 kbps is transparent for wideband speech and what WebRTC peers expect.
pub const ENCODER_BITRATE_BPS: i32 = 32_000;

/// Encoder complexity, chosen by measurement for capacity (issue 20; BENCHMARKS.md "Encoder
/// complexity"). VOIP, 32 kbps, FEC on, vendored libopus 1.6.1; quality from
/// `cargo run --release -p voxrelay-media --example opus_quality` (seven espeak-ng clips, the
/// round trip scored against the original; it also writes the WAVs to listen to):
///
/// | complexity | 0 | 1 | 3 | 4–5 | 8 |
/// |---|---|---|---|---|---|
/// | SNR / segmental SNR, dB | 10.09 / 8.07 | 10.13 / 8.09 | 10.24 / 8.12 | 10.46 / 8.34 | 10.90 / 8.73 |
/// | log-spectral distance, dB | 4.12 | 4.04 | 4.36 | 3.69 | 3.12 |
/// | earshot VAD agreement with the original | 99.5 % | 99.5 % | 99.6 % | 99.5 % | 99.5 % |
///
/// 0 costs a third of 5 (56 vs 157–166 µs per frame on the reference machine, 97 vs 310 µs on
/// session 15's slower one) for ≈ 0.3 dB of waveform SNR and ≈ 0.4 dB of spectral distance; the
/// server's own VAD hears the decoded speech the same. A voice agent's speech is encoded for
/// every frame it talks, so this is the largest per-call CPU cost the server controls: at 5 a
/// node's knee was ≈ 25–35 echo calls per core on that machine, at 0 ≈ 40–45.
pub const ENCODER_COMPLEXITY: i32 = 0;

/// Expected loss for in-band FEC of a client's encoder (as a browser's on a lossy path): libopus
/// only spends bits on FEC when this is > 0. FEC (SILK LBRR) costs ≈ 13 % more encode CPU at
/// complexity 5 (201 vs 178 µs per frame) and ≈ 1 dB of round-trip SNR (bits moved to the
/// redundancy); in exchange a single loss in speech is rebuilt from the next packet (14 of the
/// 38 losses in tests/loss_and_reorder.rs: SILK adds FEC only for frames it classes as speech,
/// and the next packet of the others carried none). The server's own encoder starts
/// at 0 and follows the peer's reports ([`OpusEncoder::set_expected_loss`]).
const ENCODER_EXPECTED_LOSS_PERCENT: i32 = 10;

/// Opus can carry up to 120 ms per packet; a decode buffer of this many samples never truncates.
pub const MAX_DECODED_48K: usize = 48 * 120;
/// The same at the session rate (24 kHz).
pub const MAX_DECODED_24K: usize = 24 * 120;

/// The libopus release compiled in (e.g. `libopus 1.6.1`), for the startup log.
pub fn opus_version() -> &'static str {
    voxrelay_opus::version()
}

/// A per-frame codec failure: the libopus error, without allocating a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameError(pub ErrorCode);

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.description())
    }
}

impl std::error::Error for FrameError {}

/// Mono Opus decoder, 48 kHz unless built [`OpusDecoder::at`] another rate.
pub struct OpusDecoder {
    inner: Decoder,
}

impl OpusDecoder {
    pub fn new() -> Result<Self, MediaError> {
        Self::at(SampleRate::HZ_48K)
    }

    /// A decoder whose output is at `rate` (8, 12, 16, 24 or 48 kHz). Sessions decode at 24 kHz:
    /// libopus synthesizes SILK at its internal rate and resamples once, so this costs less than
    /// decoding at 48 kHz (≈ 25 vs 32 µs per frame) and saves the 48 → 24 kHz pass after it.
    pub fn at(rate: SampleRate) -> Result<Self, MediaError> {
        Ok(OpusDecoder { inner: Decoder::new_mono(rate.0 as i32)? })
    }

    /// Decodes one packet into `out` (room for [`MAX_DECODED_48K`] samples avoids truncation for
    /// packets longer than 20 ms). Returns samples written.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, FrameError> {
        self.inner.decode(packet, out).map_err(FrameError)
    }

    /// Packet loss concealment: synthesizes `out.len()` samples (a multiple of 2.5 ms; pass one
    /// frame at the decoder's rate, e.g. [`crate::SAMPLES_48K`]) continuing the previous audio.
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, FrameError> {
        self.inner.conceal(out).map_err(FrameError)
    }

    /// Recovers the lost frame *before* `next_packet` from its in-band FEC data (falls back to
    /// PLC inside libopus when the packet carries none). `out.len()` sets the recovered duration.
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut [i16]) -> Result<usize, FrameError> {
        self.inner.decode_fec(next_packet, out).map_err(FrameError)
    }

    /// Forget all state (new stream).
    pub fn reset(&mut self) {
        self.inner.reset();
    }
}

/// Mono Opus encoder of 48 kHz input (or the rate it was built [`OpusEncoder::for_input`]): VOIP
/// application, [`ENCODER_BITRATE_BPS`], [`ENCODER_COMPLEXITY`], in-band FEC on.
pub struct OpusEncoder {
    inner: Encoder,
}

impl OpusEncoder {
    /// A client's encoder (the load generator, the test clients, `voxrelay talk`): 48 kHz input,
    /// FEC for 10 % expected loss, as a browser's on a lossy path.
    pub fn new() -> Result<Self, MediaError> {
        Self::build(SampleRate::HZ_48K, ENCODER_COMPLEXITY, true)
    }

    /// The server's encoder of `rate` input (8, 12, 16, 24 or 48 kHz). Sessions encode the
    /// agent's 24 kHz speech as it is, which skips the 24 → 48 kHz pass and half of libopus's own
    /// downsampling. FEC is armed but costs nothing until [`OpusEncoder::set_expected_loss`] says
    /// the peer loses packets. Capped at wideband (SILK at 16 kHz, audio up to 8 kHz), which is
    /// what every session sent while FEC was always on; without the cap libopus spends the bits
    /// FEC leaves free on super-wideband hybrid (SILK plus CELT for 8–12 kHz), ≈ 25 % more
    /// encoder CPU (BENCHMARKS.md "In-band FEC where the peer loses packets").
    pub fn for_input(rate: SampleRate) -> Result<Self, MediaError> {
        let mut encoder = Self::build(rate, ENCODER_COMPLEXITY, true)?;
        encoder.inner.set_packet_loss_perc(0)?;
        encoder.inner.set_max_bandwidth_wideband()?;
        Ok(encoder)
    }

    /// VOIP, [`ENCODER_BITRATE_BPS`], 48 kHz input, with another complexity (0..=10) or FEC off:
    /// for benchmarks and experiments; sessions use [`OpusEncoder::for_input`].
    pub fn with_settings(complexity: i32, inband_fec: bool) -> Result<Self, MediaError> {
        Self::build(SampleRate::HZ_48K, complexity, inband_fec)
    }

    fn build(rate: SampleRate, complexity: i32, inband_fec: bool) -> Result<Self, MediaError> {
        let mut inner = Encoder::new_voip_mono(rate.0 as i32)?;
        inner.set_bitrate(ENCODER_BITRATE_BPS)?;
        inner.set_complexity(complexity)?;
        inner.set_inband_fec(inband_fec)?;
        inner.set_packet_loss_perc(if inband_fec { ENCODER_EXPECTED_LOSS_PERCENT } else { 0 })?;
        Ok(OpusEncoder { inner })
    }

    /// Encodes one 20 ms frame at the encoder's input rate into `out`; returns the packet length
    /// in bytes.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8; MAX_OPUS_PACKET]) -> Result<usize, FrameError> {
        self.inner.encode(pcm, out).map_err(FrameError)
    }

    /// The share of packets (percent, 0..=100) the peer is expected to lose: above 0 the encoder
    /// adds in-band FEC sized for it. Kept across [`OpusEncoder::reset`]. Out-of-range values
    /// are clamped.
    pub fn set_expected_loss(&mut self, percent: u8) {
        // In range, so libopus cannot refuse it.
        let _ = self.inner.set_packet_loss_perc(i32::from(percent.min(100)));
    }

    /// Forget all state (e.g. between two responses, so one does not colour the next).
    pub fn reset(&mut self) {
        self.inner.reset();
    }

    /// Discontinuous transmission, as a browser's encoder runs when the answer says `usedtx=1`
    /// (clients and the load generator; the server's own encoder sends [`OPUS_SILENCE`] instead).
    pub fn set_dtx(&mut self, on: bool) -> Result<(), MediaError> {
        Ok(self.inner.set_dtx(on)?)
    }
}

/// Whether an Opus payload carries in-band FEC for the frame before it (SILK LBRR): what the
/// server's encoder adds while its peer reports loss.
pub fn opus_has_fec(payload: &[u8]) -> bool {
    voxrelay_opus::packet_has_lbrr(payload)
}

/// Longest payload that is a DTX packet: a TOC byte (and for code 1–3 packets a frame count)
/// with no coded frame (RFC 6716 §3.2). libopus returns one when it enters DTX, WebRTC sends the
/// first of a run and then nothing until speech or the next comfort-noise update, so the receiver
/// learns that the pause that follows is silence, not loss. G.711 and L16 payloads are whole
/// frames (160 / 960 bytes) and never this short.
pub const DTX_MAX_PAYLOAD: usize = 2;

/// Whether `payload` is a DTX packet ([`DTX_MAX_PAYLOAD`]): it carries no audio to decode.
pub fn is_dtx_packet(payload: &[u8]) -> bool {
    !payload.is_empty() && payload.len() <= DTX_MAX_PAYLOAD
}

/// The sending side of DTX, as WebRTC's Opus wrapper does it (for clients and the load
/// generator): of a run of DTX packets only the first is sent, so the receiver learns the pause
/// is silence; the rest are dropped without using a sequence number. The comfort-noise update
/// libopus codes every 400 ms is an ordinary packet and goes out.
#[derive(Clone, Copy, Debug, Default)]
pub struct DtxGate {
    on: bool,
    /// The previous frame was a DTX packet (sent or not).
    in_dtx: bool,
}

impl DtxGate {
    pub fn new(on: bool) -> Self {
        DtxGate { on, in_dtx: false }
    }

    /// Whether the frame coded as `payload` is sent. Off: always.
    pub fn sends(&mut self, payload: &[u8]) -> bool {
        if !self.on {
            return true;
        }
        let dtx = is_dtx_packet(payload);
        let send = !(dtx && self.in_dtx);
        self.in_dtx = dtx;
        send
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SAMPLES_48K;

    #[test]
    fn silence_packet_decodes_to_silence() {
        let mut dec = OpusDecoder::new().unwrap();
        let mut out = [1i16; MAX_DECODED_48K];
        let n = dec.decode(&OPUS_SILENCE, &mut out).unwrap();
        assert_eq!(n, SAMPLES_48K);
        assert!(out[..n].iter().all(|s| s.abs() <= 1), "silence packet must decode to silence");
    }

    #[test]
    fn encode_decode_round_trip_keeps_a_tone() {
        let mut enc = OpusEncoder::new().unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        let mut packet = [0u8; MAX_OPUS_PACKET];
        let mut out = [0i16; MAX_DECODED_48K];
        let mut energy = 0.0f64;
        for frame in 0..20 {
            let mut pcm = [0i16; SAMPLES_48K];
            for (i, s) in pcm.iter_mut().enumerate() {
                let t = (frame * SAMPLES_48K + i) as f64 / 48_000.0;
                *s = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16;
            }
            let len = enc.encode(&pcm, &mut packet).unwrap();
            assert!(len > 3 && len < 200, "32 kbps → ~80 bytes per 20 ms, got {len}");
            let n = dec.decode(&packet[..len], &mut out).unwrap();
            assert_eq!(n, SAMPLES_48K);
            if frame >= 10 {
                energy += out[..n].iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / n as f64;
            }
        }
        let rms = (energy / 10.0).sqrt();
        let expected = 8000.0 / 2f64.sqrt();
        assert!((rms / expected - 1.0).abs() < 0.2, "rms {rms} vs {expected}");
        // PLC continues the signal rather than erroring.
        assert_eq!(dec.conceal(&mut out[..SAMPLES_48K]).unwrap(), SAMPLES_48K);
    }

    #[test]
    fn a_dtx_encoder_goes_quiet_in_silence_and_says_so() {
        let mut enc = OpusEncoder::new().unwrap();
        enc.set_dtx(true).unwrap();
        let mut packet = [0u8; MAX_OPUS_PACKET];
        let silence = [0i16; SAMPLES_48K];
        let lens: Vec<usize> = (0..60).map(|_| enc.encode(&silence, &mut packet).unwrap()).collect();
        let dtx = lens.iter().filter(|&&n| is_dtx_packet(&packet[..n])).count();
        // 1.2 s of silence: after the hangover nearly every frame is a DTX packet.
        assert!(dtx >= 40, "DTX frames {dtx} of 60: {lens:?}");
        assert!(!is_dtx_packet(&OPUS_SILENCE), "the server's silence packet is a coded frame");
    }

    #[test]
    fn of_a_run_of_dtx_packets_only_the_first_is_sent() {
        let mut gate = DtxGate::new(true);
        let frames: [&[u8]; 6] = [&[1, 2, 3, 4], &[8], &[8], &[8], &[1, 2, 3], &[8]];
        let sent: Vec<bool> = frames.iter().map(|f| gate.sends(f)).collect();
        assert_eq!(sent, [true, true, false, false, true, true]);
        let mut off = DtxGate::new(false);
        assert!(frames.iter().all(|f| off.sends(f)));
    }
}
