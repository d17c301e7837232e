//! Packetizes the worker's encoded frames into RTP for the outbound track: one Opus frame per
//! packet, timestamps from the worker's frame index (so a skipped tick shows as a timestamp gap,
//! as it should), marker bit on the first voiced packet of a talk spurt (RFC 3551 §4.1).

use bytes::Bytes;
use rtc::rtp::{Header, Packet};
use voxrelay_media::EncodedFrame;

pub struct RtpPacketizer {
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    ts_base: u32,
    /// RTP clock units per 20 ms frame: 960 for Opus, 160 for G.711.
    samples_per_frame: u32,
    last_voiced: bool,
}

impl RtpPacketizer {
    pub fn new(ssrc: u32, payload_type: u8, samples_per_frame: u32) -> Self {
        Self { ssrc, payload_type, seq: rand::random(), ts_base: rand::random(), samples_per_frame, last_voiced: false }
    }

    pub fn packetize(&mut self, frame: &EncodedFrame) -> Packet {
        self.seq = self.seq.wrapping_add(1);
        let marker = frame.voiced && !self.last_voiced;
        self.last_voiced = frame.voiced;
        let timestamp = self.ts_base.wrapping_add((frame.frame_index as u32).wrapping_mul(self.samples_per_frame));
        Packet {
            header: Header {
                version: 2,
                marker,
                payload_type: self.payload_type,
                sequence_number: self.seq,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(frame.bytes()),
        }
    }
}
