//! Inbound media as the worker sees it: arbitrary packets (sequence, timestamp, payload) into
//! the jitter buffer, each tick's pop decoded as Opus (or concealed, or FEC-recovered), and the
//! WebSocket edge's framing of arbitrary pcm16/mu-law chunks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use voxrelay_media::{G711Law, JitterBuffer, MAX_DECODED_48K, OpusDecoder, PcmInput, Pop, RtpIn};

fuzz_target!(|data: &[u8]| {
    let mut jitter = JitterBuffer::new();
    let mut decoder = OpusDecoder::new().expect("decoder");
    let mut out = vec![0i16; MAX_DECODED_48K];
    let mut now_ms = 0u64;
    // Records: seq (2), timestamp (4), arrival step (1), length (1), payload.
    let mut rest = data;
    while rest.len() >= 8 {
        let seq = u16::from_le_bytes([rest[0], rest[1]]);
        let ts = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]);
        let step = u64::from(rest[6] % 8);
        let len = usize::from(rest[7]).min(rest.len() - 8);
        let payload = &rest[8..8 + len];
        rest = &rest[8 + len..];
        if let Some(packet) = RtpIn::new(seq, ts, payload) {
            jitter.push(&packet, now_ms);
        }
        for _ in 0..step {
            now_ms += 20;
            match jitter.pop() {
                Pop::Packet(p) => {
                    let _ = decoder.decode(p.bytes(), &mut out);
                }
                Pop::Lost { next: Some(next) } => {
                    let _ = decoder.decode_fec(next.bytes(), &mut out[..960]);
                }
                Pop::Lost { next: None } | Pop::Underrun => {
                    let _ = decoder.conceal(&mut out[..960]);
                }
                // The sender's DTX silence: nothing to decode.
                Pop::Waiting | Pop::Dtx => {}
            }
        }
    }
    for law in [None, Some(G711Law::Mu)] {
        let mut input = PcmInput::new(law).expect("pcm input");
        for chunk in data.chunks(1 + data.first().copied().unwrap_or(0) as usize) {
            let mut rest = chunk;
            while input.next_frame(&mut rest).is_some() {}
        }
    }
});
