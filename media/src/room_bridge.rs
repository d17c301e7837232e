//! A session that bridges a non-Opus line (a phone call, G.711 at 8 kHz) into a room, where
//! everyone's packets are Opus and forwarded untouched. Per tick, on the audio thread:
//! - **to the room**: the caller's decoded frame (24 kHz) is encoded to Opus once
//!   ([`RoomBridge::forward`]) and handed to tokio, which sends it into the room as this
//!   participant's packets;
//! - **from the room**: the Opus packets of the speaker the room puts on this participant's
//!   slot go through a jitter buffer and a decoder of their own ([`RoomBridge::next_frame`]);
//!   the chain mixes that frame with any agent audio and encodes it in the line's codec.
//!
//! Preallocated at session start; no allocation per tick.

use rtrb::{Consumer, Producer, RingBuffer};

use crate::session_codec::{AudioCodec, Decoder, Encoder};
use crate::{EncodedFrame, INGRESS_RING, JitterBuffer, MAX_DECODED_24K, MAX_OPUS_PACKET, MediaError, Pop, RtpIn, SAMPLES_24K, SampleRate};

/// Opus frames for the room waiting for tokio: ≈ 0.3 s.
pub const FORWARD_RING: usize = 16;

/// The tokio side of a bridge: Opus frames to send into the room, and the room's packets for
/// this participant's slot.
pub struct BridgeHandle {
    pub forward: Consumer<EncodedFrame>,
    pub room_in: Producer<RtpIn>,
}

pub struct RoomBridge {
    forward: Producer<EncodedFrame>,
    room_in: Consumer<RtpIn>,
    encoder: Encoder,
    jitter: JitterBuffer,
    decoder: Decoder,
    pcm: Box<[i16; MAX_DECODED_24K]>,
    pub frames_forwarded: u64,
    pub frames_heard: u64,
    pub dropped: u64,
    pub codec_errors: u64,
}

impl RoomBridge {
    pub fn new() -> Result<(RoomBridge, BridgeHandle), MediaError> {
        let (forward, forward_rx) = RingBuffer::new(FORWARD_RING);
        let (room_tx, room_in) = RingBuffer::new(INGRESS_RING);
        let mut encoder = Encoder::new(AudioCodec::Opus)?;
        encoder.set_expected_loss(crate::ROOM_EXPECTED_LOSS_PERCENT);
        let bridge = RoomBridge {
            forward,
            room_in,
            encoder,
            jitter: JitterBuffer::with_clock_rate(SampleRate::HZ_48K),
            decoder: Decoder::new(AudioCodec::Opus)?,
            pcm: Box::new([0; MAX_DECODED_24K]),
            frames_forwarded: 0,
            frames_heard: 0,
            dropped: 0,
            codec_errors: 0,
        };
        Ok((bridge, BridgeHandle { forward: forward_rx, room_in: room_tx }))
    }

    pub fn is_abandoned(&self) -> bool {
        self.forward.is_abandoned() && self.room_in.is_abandoned()
    }

    /// The caller's frame `index`, encoded once for the room.
    pub fn forward(&mut self, frame: &[i16; SAMPLES_24K], index: u64) {
        let mut packet = EncodedFrame { frame_index: index, voiced: true, len: 0, data: [0; MAX_OPUS_PACKET] };
        match self.encoder.encode(frame, &mut packet.data) {
            Ok(len) => packet.len = len as u16,
            Err(_) => {
                self.codec_errors += 1;
                return;
            }
        }
        if self.forward.push(packet).is_ok() {
            self.frames_forwarded += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// The room's audio for this tick (24 kHz), if its slot carries a speaker now. `now_ms`:
    /// the tick's time, for the jitter buffer.
    pub fn next_frame(&mut self, now_ms: u64, out: &mut [i16; SAMPLES_24K]) -> bool {
        while let Ok(packet) = self.room_in.pop() {
            self.jitter.push(&packet, now_ms);
        }
        let decoded = match self.jitter.pop() {
            // A DTX pause is silence from that side: nothing to mix, as for a missing frame.
            Pop::Waiting | Pop::Underrun | Pop::Dtx => return false,
            Pop::Packet(p) => self.decoder.decode(p.bytes(), &mut self.pcm[..]),
            Pop::Lost { next: Some(next) } => self.decoder.recover(next.bytes(), &mut self.pcm[..]).0,
            Pop::Lost { next: None } => self.decoder.conceal(&mut self.pcm[..]),
        };
        match decoded {
            // Longer packets (40/60 ms) keep only their first 20 ms: browsers send 20 ms.
            Ok(n) if n >= SAMPLES_24K => {
                out.copy_from_slice(&self.pcm[..SAMPLES_24K]);
                self.frames_heard += 1;
                true
            }
            Ok(_) => false,
            Err(_) => {
                self.codec_errors += 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpusEncoder;

    #[test]
    fn frames_cross_both_ways_through_the_codec() {
        let (mut bridge, mut handle) = RoomBridge::new().unwrap();
        let tone: [i16; SAMPLES_24K] = std::array::from_fn(|i| ((i as f32 * 0.12).sin() * 8000.0) as i16);
        bridge.forward(&tone, 7);
        let sent = handle.forward.pop().unwrap();
        assert_eq!((sent.frame_index, sent.voiced), (7, true));
        assert!(sent.len > 10, "an Opus frame of the tone");

        // The room's packets come out decoded, one 20 ms frame per tick, once buffered.
        let mut enc = OpusEncoder::new().unwrap();
        let tone48: [i16; crate::SAMPLES_48K] = std::array::from_fn(|i| ((i as f32 * 0.06).sin() * 8000.0) as i16);
        let mut heard = 0;
        let mut out = [0i16; SAMPLES_24K];
        for i in 0..20u16 {
            let mut buf = [0u8; MAX_OPUS_PACKET];
            let n = enc.encode(&tone48, &mut buf).unwrap();
            handle.room_in.push(RtpIn::new(i, u32::from(i) * 960, &buf[..n]).unwrap()).unwrap();
            if bridge.next_frame(u64::from(i) * 20, &mut out) {
                heard += 1;
            }
        }
        assert!(heard >= 15, "{heard} of 20 frames came out");
        assert!(out.iter().any(|&s| s.abs() > 1000), "the decoded tone is there");
        drop(handle);
        assert!(bridge.is_abandoned());
    }
}
