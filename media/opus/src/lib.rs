//! libopus 1.6.1 (vendored, built by `build.rs` with `cc` alone) behind the few calls voxrelay
//! makes: a mono encoder and decoder at a fixed rate, five encoder settings, decode with PLC and
//! in-band FEC, reset, and whether a packet carries FEC.
//! Owns: every `unsafe` line that touches libopus. Must never: allocate per frame (libopus itself
//! allocates only in `*_create`; scratch is on the stack through `alloca`), or hand out a pointer.

use std::ffi::{CStr, c_char, c_int};
use std::fmt;
use std::ptr::NonNull;

#[repr(C)]
struct OpusEncoderState {
    _opaque: [u8; 0],
}

#[repr(C)]
struct OpusDecoderState {
    _opaque: [u8; 0],
}

// From include/opus.h and include/opus_defines.h.
const OPUS_APPLICATION_VOIP: c_int = 2048;
const OPUS_SET_BITRATE_REQUEST: c_int = 4002;
const OPUS_SET_MAX_BANDWIDTH_REQUEST: c_int = 4004;
const OPUS_BANDWIDTH_WIDEBAND: c_int = 1103;
const OPUS_SET_COMPLEXITY_REQUEST: c_int = 4010;
const OPUS_SET_INBAND_FEC_REQUEST: c_int = 4012;
const OPUS_SET_PACKET_LOSS_PERC_REQUEST: c_int = 4014;
const OPUS_SET_DTX_REQUEST: c_int = 4016;
const OPUS_RESET_STATE: c_int = 4028;

unsafe extern "C" {
    fn opus_get_version_string() -> *const c_char;
    fn opus_encoder_create(fs: i32, channels: c_int, application: c_int, error: *mut c_int) -> *mut OpusEncoderState;
    fn opus_encoder_destroy(st: *mut OpusEncoderState);
    fn opus_encoder_ctl(st: *mut OpusEncoderState, request: c_int, ...) -> c_int;
    fn opus_encode(st: *mut OpusEncoderState, pcm: *const i16, frame_size: c_int, data: *mut u8, max_data_bytes: i32) -> i32;
    fn opus_decoder_create(fs: i32, channels: c_int, error: *mut c_int) -> *mut OpusDecoderState;
    fn opus_decoder_destroy(st: *mut OpusDecoderState);
    fn opus_decoder_ctl(st: *mut OpusDecoderState, request: c_int, ...) -> c_int;
    fn opus_decode(st: *mut OpusDecoderState, data: *const u8, len: i32, pcm: *mut i16, frame_size: c_int, decode_fec: c_int) -> c_int;
    fn opus_packet_has_lbrr(packet: *const u8, len: i32) -> c_int;
}

/// libopus's error codes (`OPUS_BAD_ARG` … `OPUS_ALLOC_FAIL`); `Copy`, so the per-frame path can
/// return one without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadArg,
    BufferTooSmall,
    InternalError,
    InvalidPacket,
    Unimplemented,
    InvalidState,
    AllocFail,
    /// A code this wrapper does not know (a newer libopus).
    Unknown(i32),
}

impl ErrorCode {
    fn from_raw(code: c_int) -> ErrorCode {
        match code {
            -1 => ErrorCode::BadArg,
            -2 => ErrorCode::BufferTooSmall,
            -3 => ErrorCode::InternalError,
            -4 => ErrorCode::InvalidPacket,
            -5 => ErrorCode::Unimplemented,
            -6 => ErrorCode::InvalidState,
            -7 => ErrorCode::AllocFail,
            other => ErrorCode::Unknown(other),
        }
    }

    /// libopus's own wording (`opus_strerror`), without the FFI call.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::BadArg => "invalid argument",
            ErrorCode::BufferTooSmall => "buffer too small",
            ErrorCode::InternalError => "internal error",
            ErrorCode::InvalidPacket => "corrupted stream",
            ErrorCode::Unimplemented => "request not implemented",
            ErrorCode::InvalidState => "invalid state",
            ErrorCode::AllocFail => "memory allocation failed",
            ErrorCode::Unknown(_) => "unknown error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for ErrorCode {}

/// A libopus return value: a count when ≥ 0, an error code otherwise.
fn check(ret: c_int) -> Result<usize, ErrorCode> {
    usize::try_from(ret).map_err(|_| ErrorCode::from_raw(ret))
}

/// The linked libopus's version string, e.g. `libopus 1.6.1`.
pub fn version() -> &'static str {
    // SAFETY: libopus returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(opus_get_version_string()) }.to_str().unwrap_or("libopus (non-UTF-8 version)")
}

/// A mono encoder with the VOIP application (the speech-tuned mode WebRTC peers use).
pub struct Encoder {
    st: NonNull<OpusEncoderState>,
}

// SAFETY: the state is plain memory owned by this value alone; libopus keeps no thread-local or
// global mutable state for it, so moving it to another thread is sound. Not `Sync`: every call
// mutates it.
unsafe impl Send for Encoder {}

impl Encoder {
    /// `sample_rate`: 8000, 12000, 16000, 24000 or 48000.
    pub fn new_voip_mono(sample_rate: i32) -> Result<Encoder, ErrorCode> {
        let mut err: c_int = 0;
        // SAFETY: `err` is a valid out-pointer; a null return is handled.
        let st = unsafe { opus_encoder_create(sample_rate, 1, OPUS_APPLICATION_VOIP, &mut err) };
        check(err)?;
        NonNull::new(st).map(|st| Encoder { st }).ok_or(ErrorCode::AllocFail)
    }

    fn ctl(&mut self, request: c_int, value: i32) -> Result<(), ErrorCode> {
        // SAFETY: every request used here takes exactly one opus_int32 argument by value.
        check(unsafe { opus_encoder_ctl(self.st.as_ptr(), request, value) }).map(drop)
    }

    pub fn set_bitrate(&mut self, bits_per_second: i32) -> Result<(), ErrorCode> {
        self.ctl(OPUS_SET_BITRATE_REQUEST, bits_per_second)
    }

    /// Codes at most wideband (8 kHz of audio, SILK at 16 kHz): with more bits libopus would
    /// otherwise pick super-wideband hybrid (SILK plus CELT) for input above 16 kHz.
    pub fn set_max_bandwidth_wideband(&mut self) -> Result<(), ErrorCode> {
        self.ctl(OPUS_SET_MAX_BANDWIDTH_REQUEST, OPUS_BANDWIDTH_WIDEBAND)
    }

    /// 0 (cheapest) ..= 10.
    pub fn set_complexity(&mut self, complexity: i32) -> Result<(), ErrorCode> {
        self.ctl(OPUS_SET_COMPLEXITY_REQUEST, complexity)
    }

    /// SILK in-band FEC (LBRR); libopus only spends bits on it when the expected loss is > 0.
    pub fn set_inband_fec(&mut self, on: bool) -> Result<(), ErrorCode> {
        self.ctl(OPUS_SET_INBAND_FEC_REQUEST, i32::from(on))
    }

    pub fn set_packet_loss_perc(&mut self, percent: i32) -> Result<(), ErrorCode> {
        self.ctl(OPUS_SET_PACKET_LOSS_PERC_REQUEST, percent)
    }

    /// Discontinuous transmission: after ≈ 200 ms without voice activity the encoder returns
    /// 1-byte packets (a TOC byte, no frame) except for a comfort-noise update every 400 ms.
    pub fn set_dtx(&mut self, on: bool) -> Result<(), ErrorCode> {
        self.ctl(OPUS_SET_DTX_REQUEST, i32::from(on))
    }

    /// Encodes one frame (`pcm.len()` samples: 2.5–60 ms at the encoder's rate) into `out`;
    /// returns the packet length in bytes.
    pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, ErrorCode> {
        let frame = c_int::try_from(pcm.len()).map_err(|_| ErrorCode::BadArg)?;
        let cap = i32::try_from(out.len()).unwrap_or(i32::MAX);
        // SAFETY: pointers and lengths come from live slices; libopus reads `frame` samples and
        // writes at most `cap` bytes.
        check(unsafe { opus_encode(self.st.as_ptr(), pcm.as_ptr(), frame, out.as_mut_ptr(), cap) })
    }

    /// Forgets all state, as a new encoder would (settings are kept).
    pub fn reset(&mut self) {
        // SAFETY: OPUS_RESET_STATE takes no argument.
        unsafe { opus_encoder_ctl(self.st.as_ptr(), OPUS_RESET_STATE) };
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { opus_encoder_destroy(self.st.as_ptr()) }
    }
}

/// A mono decoder.
pub struct Decoder {
    st: NonNull<OpusDecoderState>,
}

// SAFETY: as for `Encoder`.
unsafe impl Send for Decoder {}

impl Decoder {
    pub fn new_mono(sample_rate: i32) -> Result<Decoder, ErrorCode> {
        let mut err: c_int = 0;
        // SAFETY: `err` is a valid out-pointer; a null return is handled.
        let st = unsafe { opus_decoder_create(sample_rate, 1, &mut err) };
        check(err)?;
        NonNull::new(st).map(|st| Decoder { st }).ok_or(ErrorCode::AllocFail)
    }

    fn decode_raw(&mut self, packet: Option<&[u8]>, out: &mut [i16], fec: bool) -> Result<usize, ErrorCode> {
        let (data, len) = match packet {
            Some(p) => (p.as_ptr(), i32::try_from(p.len()).map_err(|_| ErrorCode::BadArg)?),
            None => (std::ptr::null(), 0),
        };
        let frame = c_int::try_from(out.len()).unwrap_or(c_int::MAX);
        // SAFETY: `data` is null (PLC) or a live slice of `len` bytes; libopus writes at most
        // `frame` samples into `out`.
        check(unsafe { opus_decode(self.st.as_ptr(), data, len, out.as_mut_ptr(), frame, c_int::from(fec)) })
    }

    /// Decodes one packet into `out` (room for the packet's duration, up to 120 ms); returns the
    /// samples written.
    pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, ErrorCode> {
        if packet.is_empty() {
            // An empty slice would mean "conceal" to libopus; a zero-length payload is a bad packet.
            return Err(ErrorCode::InvalidPacket);
        }
        self.decode_raw(Some(packet), out, false)
    }

    /// Packet loss concealment for `out.len()` samples (a multiple of 2.5 ms).
    pub fn conceal(&mut self, out: &mut [i16]) -> Result<usize, ErrorCode> {
        self.decode_raw(None, out, false)
    }

    /// Rebuilds the frame lost *before* `next_packet` from its in-band FEC (libopus falls back to
    /// PLC when the packet carries none); `out.len()` is the lost duration.
    pub fn decode_fec(&mut self, next_packet: &[u8], out: &mut [i16]) -> Result<usize, ErrorCode> {
        if next_packet.is_empty() {
            return Err(ErrorCode::InvalidPacket);
        }
        self.decode_raw(Some(next_packet), out, true)
    }

    pub fn reset(&mut self) {
        // SAFETY: OPUS_RESET_STATE takes no argument.
        unsafe { opus_decoder_ctl(self.st.as_ptr(), OPUS_RESET_STATE) };
    }
}

/// Whether `packet` carries in-band FEC (SILK LBRR data for the frame before it): what a receiver
/// can rebuild a lost frame from. False for CELT-only packets and for bytes that are no packet.
pub fn packet_has_lbrr(packet: &[u8]) -> bool {
    let Ok(len) = i32::try_from(packet.len()) else { return false };
    if len == 0 {
        return false;
    }
    // SAFETY: a live slice of `len` bytes; libopus only reads it and returns 1, 0 or an error.
    unsafe { opus_packet_has_lbrr(packet.as_ptr(), len) == 1 }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create, destroyed once.
        unsafe { opus_decoder_destroy(self.st.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_the_vendored_release() {
        assert!(version().starts_with("libopus 1.6.1"), "{}", version());
    }

    #[test]
    fn errors_are_codes_not_panics() {
        assert_eq!(Encoder::new_voip_mono(44_100).err(), Some(ErrorCode::BadArg));
        let mut enc = Encoder::new_voip_mono(48_000).unwrap();
        assert_eq!(enc.set_complexity(11), Err(ErrorCode::BadArg));
        // 7 ms is not an Opus frame duration.
        assert_eq!(enc.encode(&[0; 336], &mut [0; 400]), Err(ErrorCode::BadArg));
        let mut dec = Decoder::new_mono(48_000).unwrap();
        assert_eq!(dec.decode(&[], &mut [0; 960]), Err(ErrorCode::InvalidPacket));
        // A code-3 TOC claiming 48 frames of 20 ms exceeds 120 ms: invalid, not a crash.
        assert_eq!(dec.decode(&[0xFB, 0x30], &mut [0; 5760]), Err(ErrorCode::InvalidPacket));
        // Too little room for the packet's 20 ms.
        assert_eq!(dec.decode(&[0xF8, 0xFF, 0xFE], &mut [0; 480]), Err(ErrorCode::BufferTooSmall));
    }

    #[test]
    fn speech_band_tone_survives_a_round_trip_and_a_loss() {
        let mut enc = Encoder::new_voip_mono(48_000).unwrap();
        enc.set_bitrate(32_000).unwrap();
        enc.set_inband_fec(true).unwrap();
        enc.set_packet_loss_perc(10).unwrap();
        let mut dec = Decoder::new_mono(48_000).unwrap();
        let mut packets = Vec::new();
        for frame in 0..25 {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    let t = (frame * 960 + i) as f64 / 48_000.0;
                    (6000.0 * (2.0 * std::f64::consts::PI * 300.0 * t).sin()) as i16
                })
                .collect();
            let mut out = [0u8; 400];
            let n = enc.encode(&pcm, &mut out).unwrap();
            packets.push(out[..n].to_vec());
        }
        let mut pcm = [0i16; 960];
        let rms = |s: &[i16]| (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
        for p in &packets[..20] {
            assert_eq!(dec.decode(p, &mut pcm).unwrap(), 960);
        }
        let clean = rms(&pcm);
        assert!((clean / (6000.0 / 2f64.sqrt()) - 1.0).abs() < 0.25, "decoded rms {clean}");
        // Packet 20 is lost: rebuild it from packet 21's FEC, then decode 21 itself.
        assert_eq!(dec.decode_fec(&packets[21], &mut pcm).unwrap(), 960);
        assert!(rms(&pcm) > clean * 0.5, "FEC frame rms {} vs {clean}", rms(&pcm));
        assert_eq!(dec.decode(&packets[21], &mut pcm).unwrap(), 960);
        assert_eq!(dec.conceal(&mut pcm).unwrap(), 960);
        dec.reset();
        enc.reset();
    }

    /// 20 ms at `rate` of something voice-like enough for SILK: a 120 Hz pulse train (a crude
    /// glottis) through a one-pole filter, plus a little noise.
    fn voice(frame: usize, rate: usize) -> Vec<i16> {
        let n = rate / 50;
        let period = rate / 120;
        let mut seed = frame as u32 * 7919 + 1;
        let mut y = 0.0f64;
        (0..n)
            .map(|i| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let noise = f64::from((seed >> 16) & 0x7FFF) / 32768.0 - 0.5;
                let pulse = if (frame * n + i) % period == 0 { 20_000.0 } else { 0.0 };
                y = 0.9 * y + pulse + 600.0 * noise;
                y.clamp(-30_000.0, 30_000.0) as i16
            })
            .collect()
    }

    #[test]
    fn fec_is_in_the_packets_only_while_loss_is_expected() {
        let mut enc = Encoder::new_voip_mono(24_000).unwrap();
        enc.set_bitrate(32_000).unwrap();
        enc.set_inband_fec(true).unwrap();
        enc.set_max_bandwidth_wideband().unwrap();
        let mut out = [0u8; 400];
        // Of 25 frames from `from`: how many were SILK (the FEC is SILK's) and how many of those
        // carried FEC.
        let mut run = |enc: &mut Encoder, from: usize| -> (usize, usize) {
            let (mut silk, mut lbrr) = (0, 0);
            for frame in from..from + 25 {
                let n = enc.encode(&voice(frame, 24_000), &mut out).unwrap();
                // TOC configs (RFC 6716 §3.1): 0..=11 SILK NB/MB/WB, 16..=23 CELT NB/WB; hybrid and
                // CELT above wideband would mean the cap did not hold.
                let config = out[0] >> 3;
                assert!(config <= 11 || (16..=23).contains(&config), "frame {frame}: TOC {:#04x}", out[0]);
                silk += usize::from(config <= 11);
                lbrr += usize::from(packet_has_lbrr(&out[..n]));
            }
            (silk, lbrr)
        };
        // Without expected loss libopus may code this synthetic signal as CELT (real speech stays
        // SILK: media's session tests); either way no packet carries FEC.
        let (silk, lbrr) = run(&mut enc, 0);
        assert_eq!(lbrr, 0, "no expected loss: {lbrr} of {silk} SILK packets carry FEC");
        enc.set_packet_loss_perc(10).unwrap();
        let (silk, lbrr) = run(&mut enc, 25);
        assert!(silk >= 10 && lbrr + 2 >= silk, "expected loss 10 %: {lbrr} of {silk} SILK packets carry FEC");
        enc.set_packet_loss_perc(0).unwrap();
        let (silk, lbrr) = run(&mut enc, 50);
        assert!(lbrr <= 1, "back to no loss: {lbrr} of {silk} SILK packets still carry FEC");
        assert!(!packet_has_lbrr(&[]) && !packet_has_lbrr(&[0xF8, 0xFF, 0xFE]), "empty and CELT silence");
    }
}
