//! Packetizes the worker's encoded frames into RTP for the outbound track: one Opus frame per
//! packet, timestamps from the worker's frame index (so a skipped tick shows as a timestamp gap,
//! as it should), marker bit on the first voiced packet of a talk spurt (RFC 3551 §4.1).

use bytes::Bytes;
use rtc::rtp::{Header, Packet};
use voxrelay_media::{OpusOut, SAMPLES_48K};

pub struct RtpPacketizer {
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    ts_base: u32,
    last_voiced: bool,
}

impl RtpPacketizer {
    pub fn new(ssrc: u32, payload_type: u8) -> Self {
        Self { ssrc, payload_type, seq: rand::random(), ts_base: rand::random(), last_voiced: false }
    }

    pub fn packetize(&mut self, frame: &OpusOut) -> Packet {
        self.seq = self.seq.wrapping_add(1);
        let marker = frame.voiced && !self.last_voiced;
        self.last_voiced = frame.voiced;
        let timestamp = self.ts_base.wrapping_add((frame.frame_index as u32).wrapping_mul(SAMPLES_48K as u32));
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
