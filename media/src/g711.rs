//! ITU-T G.711 companding: mu-law (PCMU, RTP payload type 0) and A-law (PCMA, payload type 8),
//! 8 kHz, one byte per sample (160 bytes per 20 ms frame).
//! Owns: the exact G.711 encode (bit arithmetic on the segment number) and decode (256-entry
//! tables built at compile time) and each law's silence byte.
//! Must never: allocate, resample (the session codec does), or know about RTP beyond the
//! payload bytes.

/// One 20 ms G.711 frame: 160 samples at 8 kHz, one byte each.
pub const G711_FRAME_BYTES: usize = 160;

/// Which companding law.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum G711Law {
    /// mu-law (North America, Japan; PCMU).
    Mu,
    /// A-law (everywhere else; PCMA).
    A,
}

impl G711Law {
    /// The code of a zero sample: what a silent frame is filled with.
    pub const fn silence_byte(self) -> u8 {
        match self {
            G711Law::Mu => 0xFF,
            G711Law::A => 0xD5,
        }
    }

    #[inline]
    pub fn encode_sample(self, pcm: i16) -> u8 {
        match self {
            G711Law::Mu => linear_to_ulaw(pcm),
            G711Law::A => linear_to_alaw(pcm),
        }
    }

    #[inline]
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            G711Law::Mu => ULAW_TO_LINEAR[code as usize],
            G711Law::A => ALAW_TO_LINEAR[code as usize],
        }
    }

    /// Encodes `pcm` (8 kHz) into `out[..pcm.len()]`. Panics if `out` is shorter.
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) {
        for (o, &s) in out[..pcm.len()].iter_mut().zip(pcm) {
            *o = self.encode_sample(s);
        }
    }

    /// Decodes `codes` into `out[..codes.len()]` (8 kHz). Panics if `out` is shorter.
    pub fn decode(self, codes: &[u8], out: &mut [i16]) {
        let table = match self {
            G711Law::Mu => &ULAW_TO_LINEAR,
            G711Law::A => &ALAW_TO_LINEAR,
        };
        for (o, &c) in out[..codes.len()].iter_mut().zip(codes) {
            *o = table[c as usize];
        }
    }
}

/// mu-law bias added before finding the segment (G.711 §3.1, in 16-bit units: 33 << 2).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude mu-law represents once biased (8159 in 14-bit units, << 2, minus the bias).
const ULAW_CLIP: i32 = 32_635;

/// G.711 mu-law encoder on 16-bit input (the reference algorithm on the top 14 bits).
#[inline]
pub fn linear_to_ulaw(pcm: i16) -> u8 {
    let mut x = pcm as i32;
    let sign = if x < 0 {
        x = -x;
        0x80
    } else {
        0
    };
    let x = x.min(ULAW_CLIP) + ULAW_BIAS;
    // Segment = position of the highest set bit of x >> 7 (0..=7).
    let top = ((x >> 7) & 0xFF) as u8;
    let exponent = if top == 0 { 0 } else { 7 - top.leading_zeros() as i32 };
    let mantissa = (x >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// G.711 A-law encoder on 16-bit input (the reference algorithm on the top 13 bits).
#[inline]
pub fn linear_to_alaw(pcm: i16) -> u8 {
    let mut x = (pcm as i32) >> 3;
    let mask = if x >= 0 {
        0xD5
    } else {
        x = -x - 1;
        0x55
    };
    // Segment ends at 0x1F, 0x3F, 0x7F, ... 0xFFF: segment = bits above the 5th, clamped.
    let segment = (32 - (x as u32 | 0x1F).leading_zeros() as i32) - 5;
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let mantissa = if segment < 2 { (x >> 1) & 0x0F } else { (x >> segment) & 0x0F };
    ((segment << 4) as u8 | mantissa as u8) ^ mask
}

const fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

const fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let segment = ((a & 0x70) >> 4) as i32;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (segment - 1),
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const ULAW_TO_LINEAR: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode(i as u8);
        i += 1;
    }
    t
};

const ALAW_TO_LINEAR: [i16; 256] = {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode(i as u8);
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_from_the_g711_tables() {
        // Zero.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-8), 0x55);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        // Extremes: mu-law ±32124, A-law ±32256.
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(ULAW_TO_LINEAR[0x80], 32_124);
        assert_eq!(ULAW_TO_LINEAR[0x00], -32_124);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(ALAW_TO_LINEAR[0xAA], 32_256);
        assert_eq!(ALAW_TO_LINEAR[0x2A], -32_256);
        // Decoding the zero codes.
        assert_eq!(ULAW_TO_LINEAR[0xFF], 0);
        assert_eq!(ULAW_TO_LINEAR[0x7F], 0);
        assert_eq!(ALAW_TO_LINEAR[0xD5], 8);
        assert_eq!(ALAW_TO_LINEAR[0x55], -8);
        // A mid-range value: 1000 -> mu-law 0xCE (decodes to 988), A-law 0xFA (decodes to 1008).
        assert_eq!(linear_to_ulaw(1000), 0xCE);
        assert_eq!(ULAW_TO_LINEAR[0xCE], 988);
        assert_eq!(linear_to_alaw(1000), 0xFA);
        assert_eq!(ALAW_TO_LINEAR[0xFA], 1008);
    }

    #[test]
    fn every_code_round_trips_through_its_decoded_value() {
        for law in [G711Law::Mu, G711Law::A] {
            for code in 0..=255u8 {
                let linear = law.decode_sample(code);
                let again = law.encode_sample(linear);
                // mu-law has two codes for zero (0xFF, 0x7F); both decode to 0, which encodes to 0xFF.
                if law == G711Law::Mu && code == 0x7F {
                    assert_eq!(again, 0xFF);
                } else {
                    assert_eq!(again, code, "{law:?} code {code:#04x} -> {linear} -> {again:#04x}");
                }
            }
        }
    }

    #[test]
    fn quantization_error_is_within_half_a_step_and_encoding_is_monotonic() {
        for law in [G711Law::Mu, G711Law::A] {
            let mut previous = law.decode_sample(law.encode_sample(i16::MIN));
            for x in (i16::MIN as i32 + 1)..=(i16::MAX as i32) {
                let y = law.decode_sample(law.encode_sample(x as i16));
                assert!(y >= previous, "{law:?} not monotonic at {x}");
                previous = y;
                // Largest step is 1024 (top segment of both laws): error ≤ half of it, except
                // mu-law's clip region above 32 635, which decodes to 32 124 (error ≤ 643).
                let err = (y as i32 - x).abs();
                assert!(err <= 643, "{law:?}: {x} -> {y}");
            }
        }
    }
}
