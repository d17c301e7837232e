//! A G.711 (PCMU / PCMA) session end to end through `SessionChain`, as the telephony bridge uses
//! it: 160-byte payloads at 8 kHz in, turn events out, agent speech out as 160-byte frames.

mod common;

use common::*;
use voxrelay_media::{AgentFrame, AudioCodec, G711Law, MediaEvent, SessionChain, SessionOptions, TurnDetectConfig, Uplink};

fn run_speech(codec: AudioCodec, law: G711Law) {
    let options = SessionOptions { codec, ..SessionOptions::default() };
    let (mut chain, mut handle) = SessionChain::with_options(TurnDetectConfig::default(), options).unwrap();
    assert_eq!(chain.codec(), codec);
    let packets = g711_packets(&speech_48k(), law, 1234);
    let mut events = Vec::new();
    let mut audio_frames = 0;
    let mut out = Vec::new();
    // Agent speech queued after the caller's turn: 1 s of a 300 Hz tone, then End.
    let tone = agent_tone(50);
    // The agent's side: topped up into the ring while it has room, as the call task does.
    let mut pending = std::collections::VecDeque::new();
    for (i, p) in packets.iter().enumerate() {
        handle.ingress.push(*p).unwrap();
        if i == 10 {
            pending.extend(tone.iter().map(|pcm| AgentFrame::Audio { response: 1, pcm: *pcm }));
            pending.push_back(AgentFrame::End { response: 1 });
        }
        while handle.agent_out.slots() > 0
            && let Some(frame) = pending.pop_front()
        {
            handle.agent_out.push(frame).unwrap();
        }
        chain.tick();
        while let Ok(item) = handle.uplink.pop() {
            match item {
                Uplink::Audio { .. } => audio_frames += 1,
                Uplink::Event(e) => events.push(e),
            }
        }
        while let Ok(packet) = handle.egress.pop() {
            out.push(packet);
        }
    }
    for _ in 0..10 {
        chain.tick();
        while let Ok(item) = handle.uplink.pop() {
            if let Uplink::Event(e) = item {
                events.push(e);
            }
        }
    }
    assert!(audio_frames >= packets.len() - 2, "{audio_frames} uplink frames for {} packets", packets.len());

    // Speech in -> turn events at the fixture's times.
    let started = events.iter().find_map(|e| match e { MediaEvent::SpeechStarted { audio_start } => Some(audio_start.as_ms()), _ => None });
    let stopped = events.iter().find_map(|e| match e { MediaEvent::SpeechStopped { audio_end } => Some(audio_end.as_ms()), _ => None });
    let started = started.unwrap_or_else(|| panic!("{codec:?}: no SpeechStarted in {events:?}"));
    let stopped = stopped.unwrap_or_else(|| panic!("{codec:?}: no SpeechStopped in {events:?}"));
    assert!(started.abs_diff(SPEECH_START_MS) <= 100, "{codec:?}: started at {started}");
    assert!(stopped.abs_diff(SPEECH_END_MS) <= 100, "{codec:?}: stopped at {stopped}");

    // Agent audio out -> 160-byte frames that decode back to the tone (barge-in at 1 s cut it, so
    // look at what went out before that).
    assert!(out.iter().all(|p| p.bytes().len() == 160), "every payload is 20 ms of G.711");
    let silence = law.silence_byte();
    assert!(out.iter().filter(|p| !p.voiced).all(|p| p.bytes().iter().all(|&b| b == silence)));
    let voiced: Vec<_> = out.iter().filter(|p| p.voiced).collect();
    assert!(voiced.len() >= 30, "{} voiced frames", voiced.len());
    let mut pcm8 = [0i16; 160];
    let mut rms = 0.0;
    for p in &voiced[5..25] {
        law.decode(p.bytes(), &mut pcm8);
        rms += (pcm8.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / 160.0).sqrt() / 20.0;
    }
    let expected = 6000.0 / 2f64.sqrt();
    assert!((rms / expected - 1.0).abs() < 0.05, "{codec:?}: decoded agent rms {rms}, expected {expected}");
}

#[test]
fn pcmu_session_detects_speech_and_sends_decodable_160_byte_frames() {
    run_speech(AudioCodec::Pcmu, G711Law::Mu);
}

#[test]
fn pcma_session_detects_speech_and_sends_decodable_160_byte_frames() {
    run_speech(AudioCodec::Pcma, G711Law::A);
}
