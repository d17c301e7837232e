//! Provider audio arrives as base64 pcm16 in chunks of any length (even odd byte counts); the
//! call plays 20 ms frames. This joins the chunks and cuts the frames.

use voxrelay_media::SAMPLES_24K;

pub type Frame = Box<[i16; SAMPLES_24K]>;

#[derive(Default)]
pub struct Framer {
    partial: Vec<i16>,
    odd_byte: Option<u8>,
}

impl Framer {
    /// Adds little-endian pcm16 bytes; every completed 24 kHz frame goes to `frame`.
    pub fn push(&mut self, bytes: &[u8], mut frame: impl FnMut(Frame)) {
        let mut rest = bytes;
        if let (Some(lo), Some((&hi, tail))) = (self.odd_byte.take(), rest.split_first()) {
            self.partial.push(i16::from_le_bytes([lo, hi]));
            rest = tail;
            self.emit_full(&mut frame);
        }
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            self.partial.push(i16::from_le_bytes([p[0], p[1]]));
            self.emit_full(&mut frame);
        }
        self.odd_byte = pairs.remainder().first().copied();
    }

    fn emit_full(&mut self, frame: &mut impl FnMut(Frame)) {
        if self.partial.len() == SAMPLES_24K {
            let mut f = Box::new([0i16; SAMPLES_24K]);
            f.copy_from_slice(&self.partial);
            self.partial.clear();
            frame(f);
        }
    }

    /// The last partial frame, zero padded.
    pub fn flush(&mut self) -> Option<Frame> {
        self.odd_byte = None;
        if self.partial.is_empty() {
            return None;
        }
        let mut f = Box::new([0i16; SAMPLES_24K]);
        f[..self.partial.len()].copy_from_slice(&self.partial);
        self.partial.clear();
        Some(f)
    }

    pub fn clear(&mut self) {
        self.partial.clear();
        self.odd_byte = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_splits_join_into_frames() {
        let bytes: Vec<u8> = (0..1000i16).flat_map(|s| s.to_le_bytes()).collect();
        let mut f = Framer::default();
        let mut frames = Vec::new();
        for chunk in bytes.chunks(333) {
            f.push(chunk, |fr| frames.push(fr));
        }
        assert_eq!(frames.len(), 2);
        assert_eq!((frames[0][0], frames[1][0], frames[1][479]), (0, 480, 959));
        let tail = f.flush().unwrap();
        assert_eq!((tail[0], tail[39], tail[40]), (960, 999, 0));
        assert!(f.flush().is_none());
    }
}
