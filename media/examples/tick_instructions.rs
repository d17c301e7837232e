//! A deterministic per-tick cost for A/B comparisons on a noisy machine: drives one
//! `SessionChain` through the speech fixture, caller and agent both talking (the worst case per
//! session, as the `session_tick_full_duplex_*` benchmarks), for a fixed number of ticks. Run it
//! under callgrind, which counts instructions instead of timing them, and divide by the ticks:
//!
//! ```sh
//! cargo build --release -p voxrelay-media --example tick_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/tick_instructions opus earshot 500      # prints "Collected : N"
//! # codecs: opus | pcmu | l16 (a Realtime WebSocket session); VADs: earshot | energy
//! ```
//!
//! The setup (reading and encoding the fixture) is counted too; run it with 0 ticks and subtract.

#[path = "../tests/common/mod.rs"]
mod common;

use voxrelay_media::{
    AgentFrame, AudioCodec, G711Law, Resampler, RtpIn, SAMPLES_24K, SAMPLES_48K, SampleRate, SessionChain, SessionOptions,
    TurnDetectConfig, VadKind,
};

/// A Realtime WebSocket session's frames: 24 kHz little-endian words.
fn l16_packets(frames: &[[i16; SAMPLES_48K]]) -> Vec<RtpIn> {
    let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_24K).unwrap_or_else(|e| panic!("{e:?}"));
    let mut pcm = [0i16; SAMPLES_24K];
    frames
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            down.process(f, &mut pcm);
            let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
            RtpIn::new(i as u16, i as u32 * 480, &bytes)
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let codec = match args.get(1).map(String::as_str) {
        Some("pcmu") => AudioCodec::Pcmu,
        Some("l16") => AudioCodec::L16,
        _ => AudioCodec::Opus,
    };
    let vad = match args.get(2).map(String::as_str) {
        Some("energy") => VadKind::Energy,
        _ => VadKind::Earshot,
    };
    let ticks: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(500);
    let frames = common::speech_48k();
    let packets: Vec<RtpIn> = match codec {
        AudioCodec::Pcmu => common::g711_packets(&frames, G711Law::Mu, 0),
        AudioCodec::L16 => l16_packets(&frames),
        _ => common::rtp_packets(&frames, 0),
    };
    let agent = common::agent_tone(frames.len());
    let turn = TurnDetectConfig { interrupt_response: false, ..TurnDetectConfig::default() };
    let (mut chain, mut handle) = SessionChain::with_options(turn, SessionOptions { codec, vad, ..SessionOptions::default() })
        .unwrap_or_else(|e| panic!("session: {e:?}"));
    let n = packets.len();
    let step = codec.clock_rate().frame_samples() as u32;
    let mut sent = 0usize;
    for k in 0..ticks {
        let p = &packets[k % n];
        let _ = handle.ingress.push(RtpIn { seq: k as u16, timestamp: (k as u32).wrapping_mul(step), ..*p });
        let _ = handle.agent_out.push(AgentFrame::Audio { response: 1, pcm: agent[k % n] });
        chain.tick();
        while let Ok(frame) = handle.egress.pop() {
            sent += usize::from(frame.voiced);
        }
        while handle.uplink.pop().is_ok() {}
    }
    println!("{ticks} ticks, {sent} voiced frames out");
}
