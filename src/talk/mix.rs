//! A room's slots mixed into one recording: each slot's stream is decoded and laid on one 20 ms
//! grid, placed by its RTP timestamps (so a burst of late packets lands where it belongs)
//! anchored to when the stream was first heard, re-anchored when a stream's timestamps and
//! arrival drift apart by more than the hold (a slot switched to another speaker's stream). Frames
//! are held [`HOLD_FRAMES`] so the slots' packets for one instant meet, then written.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use voxrelay_media::{MAX_DECODED_48K, OpusDecoder};

use super::wav::Timeline;

const FRAME: usize = 960;
/// Frames held before writing (200 ms): later than this, a frame is dropped.
pub const HOLD_FRAMES: usize = 10;

struct Stream {
    decoder: OpusDecoder,
    /// A grid index and the timestamp heard there.
    anchor: (i64, u32),
}

pub struct Mixer {
    origin: Instant,
    streams: HashMap<u32, Stream>,
    /// Frames from grid index `first` on, summed.
    pending: VecDeque<Box<[i32; FRAME]>>,
    first: i64,
    decoded: Vec<i16>,
    sink: Timeline,
}

impl Mixer {
    pub fn new(sink: Timeline, origin: Instant) -> Self {
        Mixer { origin, streams: HashMap::new(), pending: VecDeque::new(), first: 0, decoded: vec![0; MAX_DECODED_48K], sink }
    }

    /// Adds one received packet; returns the RMS of its audio (0 for what could not be decoded).
    pub fn add(&mut self, at: Instant, ssrc: u32, timestamp: u32, payload: &[u8]) -> anyhow::Result<f64> {
        let arrived = (at.saturating_duration_since(self.origin).as_millis() / 20) as i64;
        let stream = match self.streams.entry(ssrc) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Stream { decoder: OpusDecoder::new()?, anchor: (arrived, timestamp) }),
        };
        let mut index = stream.anchor.0 + i64::from(timestamp.wrapping_sub(stream.anchor.1) as i32) / FRAME as i64;
        if (index - arrived).abs() > HOLD_FRAMES as i64 {
            stream.anchor = (arrived, timestamp);
            index = arrived;
        }
        let n = stream.decoder.decode(payload, &mut self.decoded).unwrap_or(0).min(FRAME);
        let pcm = &self.decoded[..n];
        let level = crate::transport::webrtc::client::rms(pcm);
        if index >= self.first {
            let slot = (index - self.first) as usize;
            while self.pending.len() <= slot {
                self.pending.push_back(Box::new([0; FRAME]));
            }
            for (acc, &s) in self.pending[slot].iter_mut().zip(pcm) {
                *acc += i32::from(s);
            }
        }
        while self.pending.len() > HOLD_FRAMES {
            self.write_first()?;
        }
        Ok(level)
    }

    fn write_first(&mut self) -> anyhow::Result<()> {
        if let Some(frame) = self.pending.pop_front() {
            let pcm: Vec<i16> = frame.iter().map(|&s| s.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16).collect();
            self.sink.write((self.first as u64 * FRAME as u64) as u32, &pcm)?;
        }
        self.first += 1;
        Ok(())
    }

    pub fn seconds(&self) -> f64 {
        self.sink.seconds()
    }

    pub fn finish(mut self) -> anyhow::Result<()> {
        while !self.pending.is_empty() {
            self.write_first()?;
        }
        self.sink.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use voxrelay_media::OpusEncoder;

    #[test]
    fn two_slots_meet_on_one_grid_and_a_late_burst_lands_in_place() {
        let path = std::env::temp_dir().join(format!("voxrelay-mix-{}.wav", std::process::id()));
        let origin = Instant::now();
        let mut mixer = Mixer::new(Timeline::wav(&path).unwrap(), origin);
        let mut enc = OpusEncoder::new().unwrap();
        let mut encoded = |f: f32| -> Vec<u8> {
            let mut pcm = [0i16; FRAME];
            pcm.iter_mut().enumerate().for_each(|(i, s)| *s = ((i as f32 * f).sin() * 4000.0) as i16);
            let mut out = [0u8; voxrelay_media::MAX_OPUS_PACKET];
            // A few frames first, so the encoder is past its start-up.
            for _ in 0..3 {
                enc.encode(&pcm, &mut out).unwrap();
            }
            let n = enc.encode(&pcm, &mut out).unwrap();
            out[..n].to_vec()
        };
        let (a, b) = (encoded(0.03), encoded(0.05));
        for i in 0..20u32 {
            let at = origin + Duration::from_millis(u64::from(i) * 20);
            assert!(mixer.add(at, 1, 1000 + i * 960, &a).unwrap() > 500.0, "frame {i} decodes");
            // Slot B starts at frame 10; its frame 14 comes late, together with 15.
            let b_frames: &[u32] = match i {
                0..=9 | 14 => &[],
                15 => &[14, 15],
                _ => &[i],
            };
            for &j in b_frames {
                mixer.add(at, 2, 7_000_000 + (j - 10) * 960, &b).unwrap();
            }
        }
        assert!((mixer.seconds() - 0.2).abs() < 1e-9, "{} s written, ten frames held", mixer.seconds());
        mixer.finish().unwrap();
        let samples: Vec<i16> = hound::WavReader::open(&path).unwrap().samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(samples.len(), 20 * FRAME);
        let energy = |f: usize| crate::transport::webrtc::client::rms(&samples[f * FRAME..(f + 1) * FRAME]);
        let (alone, both) = (energy(5), energy(12));
        assert!(both > alone * 1.2, "two slots mixed from frame 10: {both:.0} vs {alone:.0}");
        // The late frame landed in its own place, not on top of the next one.
        assert!(energy(14) > alone * 1.2 && energy(15) < both * 1.3, "frame 14 {:.0}, frame 15 {:.0}", energy(14), energy(15));
        std::fs::remove_file(&path).ok();
    }
}
