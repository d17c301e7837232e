//! A track the server itself publishes into a room (the agent's voice, a phone caller's audio
//! encoded to Opus): the RTP numbering of its 20 ms frames, as a participant's client would
//! number them, so the room forwards it like anyone's.

use std::time::Instant;

use voxrelay_media::EncodedFrame;

use crate::transport::RtpPacketIn;

/// Opus at 48 kHz: one 20 ms frame advances the RTP clock by this much.
const TIMESTAMP_PER_FRAME: u32 = 960;

pub struct ServerTrack {
    ssrc: u32,
    seq: u16,
    last_index: Option<u64>,
}

impl Default for ServerTrack {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerTrack {
    pub fn new() -> Self {
        ServerTrack { ssrc: rand::random(), seq: rand::random(), last_index: None }
    }

    /// The RTP packet of one frame: consecutive sequence numbers, the timestamp of the frame's
    /// place in the session (a gap between talkspurts shows as a timestamp jump), and the
    /// marker on the first frame after a gap. The level is left to the room to measure.
    pub fn packet(&mut self, frame: &EncodedFrame) -> RtpPacketIn {
        let marker = self.last_index.is_none_or(|last| frame.frame_index != last + 1);
        self.last_index = Some(frame.frame_index);
        self.seq = self.seq.wrapping_add(1);
        RtpPacketIn {
            ssrc: self.ssrc,
            seq: self.seq,
            timestamp: (frame.frame_index as u32).wrapping_mul(TIMESTAMP_PER_FRAME),
            marker,
            level: None,
            payload: bytes::Bytes::copy_from_slice(frame.bytes()),
            at: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_numbered_as_a_client_would_with_a_marker_after_each_gap() {
        let frame = |i| EncodedFrame { frame_index: i, voiced: true, len: 3, data: [0; voxrelay_media::MAX_OPUS_PACKET] };
        let mut t = ServerTrack::new();
        let p: Vec<RtpPacketIn> = [10, 11, 12, 40, 41].into_iter().map(|i| t.packet(&frame(i))).collect();
        let markers: Vec<bool> = p.iter().map(|p| p.marker).collect();
        assert_eq!(markers, [true, false, false, true, false]);
        assert!(p.windows(2).all(|w| w[1].seq == w[0].seq.wrapping_add(1)));
        assert_eq!(p[3].timestamp.wrapping_sub(p[2].timestamp), 28 * 960);
    }
}
