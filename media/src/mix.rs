//! The mixer: several 20 ms sources at one rate (the session's 24 kHz, or 48 kHz) summed into one frame, with a soft limiter instead of
//! wrap-around or hard clipping.
//! Owns: the summing and the limiter curve. Must never: allocate, keep per-stream state (it is a
//! pure function of its inputs, so any number of sessions can share it), or resample.
//!
//! Why a static soft knee rather than a gain-riding limiter: the sum is formed in `i32` (no
//! wrap-around possible for up to 65 536 sources), and every sample whose magnitude is at or below
//! [`LIMITER_KNEE`] (≈ -2.5 dBFS) is passed through bit-exactly, so a single source (the usual
//! case: agent speech alone) costs one add and one compare per sample and is never coloured. Only
//! the part of a sample above the knee is compressed, by `tanh`, which is continuous in value and
//! slope at the knee and approaches full scale without reaching past it. A loud sum therefore
//! gets gently rounded peaks instead of the harsh odd harmonics of clipping, with no attack or
//! release time to tune and no look-ahead delay.

/// Magnitudes up to this pass unchanged: 24 576 = 0.75 of full scale ≈ -2.5 dBFS.
pub const LIMITER_KNEE: i32 = 24_576;
/// Room between the knee and full scale that the compressed part is squeezed into.
const HEADROOM: f32 = (i16::MAX as i32 - LIMITER_KNEE) as f32;

/// Sums `sources` (frames of `N` samples) into `out` through the soft limiter. No sources gives
/// silence.
pub fn mix<const N: usize>(sources: &[&[i16; N]], out: &mut [i16; N]) {
    match sources {
        [] => out.fill(0),
        [only] => {
            // One source cannot exceed i16 range; it only needs limiting above the knee, which
            // keeps one- and many-source output on the same curve.
            for (y, &x) in out.iter_mut().zip(only.iter()) {
                *y = soft_limit(x as i32);
            }
        }
        [first, rest @ ..] => {
            let mut acc = [0i32; N];
            for (a, &x) in acc.iter_mut().zip(first.iter()) {
                *a = x as i32;
            }
            for source in rest {
                for (a, &x) in acc.iter_mut().zip(source.iter()) {
                    *a += x as i32;
                }
            }
            for (y, &a) in out.iter_mut().zip(acc.iter()) {
                *y = soft_limit(a);
            }
        }
    }
}

/// The limiter curve: identity up to [`LIMITER_KNEE`], then `knee + headroom · tanh(excess /
/// headroom)`, odd-symmetric. Never returns a value outside `-32767..=32767`.
#[inline]
pub fn soft_limit(x: i32) -> i16 {
    let magnitude = x.unsigned_abs();
    if magnitude <= LIMITER_KNEE as u32 {
        return x as i16;
    }
    let excess = (magnitude - LIMITER_KNEE as u32) as f32;
    let limited = LIMITER_KNEE as f32 + HEADROOM * (excess / HEADROOM).tanh();
    let limited = (limited as i32).min(i16::MAX as i32);
    (if x < 0 { -limited } else { limited }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SAMPLES_48K;

    fn sine(amplitude: f64, hz: f64, phase: f64) -> [i16; SAMPLES_48K] {
        let mut f = [0i16; SAMPLES_48K];
        for (i, s) in f.iter_mut().enumerate() {
            *s = (amplitude * (2.0 * std::f64::consts::PI * hz * i as f64 / 48_000.0 + phase).sin()).round() as i16;
        }
        f
    }

    #[test]
    fn two_full_scale_sources_never_wrap() {
        let a = [i16::MAX; SAMPLES_48K];
        let b = [i16::MAX; SAMPLES_48K];
        let mut out = [0i16; SAMPLES_48K];
        mix(&[&a, &b], &mut out);
        assert!(out.iter().all(|&s| s > 32_000), "a positive overload must stay positive and near full scale");
        let (c, d) = ([i16::MIN; SAMPLES_48K], [i16::MIN; SAMPLES_48K]);
        mix(&[&c, &d], &mut out);
        assert!(out.iter().all(|&s| s < -32_000), "a negative overload must stay negative");

        // Two full-scale sines in phase: the sum follows the sine's sign everywhere.
        let s = sine(32_767.0, 440.0, 0.0);
        mix(&[&s, &s], &mut out);
        for (y, x) in out.iter().zip(s.iter()) {
            assert!(y.signum() == x.signum() || *x == 0, "wrapped: {x} -> {y}");
            assert!(y.unsigned_abs() >= x.unsigned_abs().min(LIMITER_KNEE as u16), "a louder sum must not get quieter than the knee");
        }
    }

    #[test]
    fn quiet_sums_pass_through_bit_exactly() {
        let a = sine(8_000.0, 300.0, 0.0);
        let b = sine(8_000.0, 500.0, 1.0);
        let mut out = [0i16; SAMPLES_48K];
        mix(&[&a, &b], &mut out);
        for i in 0..SAMPLES_48K {
            assert_eq!(out[i], a[i] + b[i]);
        }
        mix(&[&a], &mut out);
        assert_eq!(out, a);
        mix(&[], &mut out);
        assert!(out.iter().all(|&s| s == 0));
    }

    #[test]
    fn the_limiter_is_monotonic_continuous_and_bounded() {
        let mut previous = soft_limit(LIMITER_KNEE - 1000);
        for x in (LIMITER_KNEE - 999)..200_000 {
            let y = soft_limit(x);
            assert!(y >= previous, "not monotonic at {x}");
            assert!(y - previous <= 1, "jump at {x}: {previous} -> {y}");
            previous = y;
        }
        assert_eq!(soft_limit(i32::MAX), i16::MAX);
        assert_eq!(soft_limit(-i32::MAX), -i16::MAX);
        assert_eq!(soft_limit(-5), -5);
    }
}
