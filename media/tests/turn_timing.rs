//! The media chain's share of turn latency, in ticks (no clock): the load generator's talk spurt
//! (tests/fixtures/speech.wav at the workspace root: espeak-ng speech that stops abruptly, as
//! synthesized speech does) streamed one packet per tick, as a clean network delivers it.

mod common;

use common::*;
use voxrelay_media::{Liveness, MediaEvent, SAMPLES_48K, SessionChain, SessionOptions, TurnDetectConfig, Uplink, VadKind};

/// Silence before the spurt, in frames.
const LEAD_FRAMES: usize = 50;

fn spurt() -> Vec<[i16; SAMPLES_48K]> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/speech.wav");
    let pcm: Vec<i16> = hound::WavReader::open(path).unwrap().samples::<i16>().map(Result::unwrap).collect();
    pcm.chunks_exact(SAMPLES_48K).map(|c| <[i16; SAMPLES_48K]>::try_from(c).unwrap()).collect()
}

/// Streams silence, the spurt, then a second of silence; returns (tick, event) pairs and where
/// the speech ended on the audio timeline.
fn stream(vad: VadKind) -> (Vec<(usize, MediaEvent)>, u64) {
    let spurt = spurt();
    let mut frames = vec![[0i16; SAMPLES_48K]; LEAD_FRAMES];
    frames.extend_from_slice(&spurt);
    frames.extend(vec![[0i16; SAMPLES_48K]; 60]);
    let speech_end_ms = ((LEAD_FRAMES + spurt.len()) * 20) as u64;

    let options = SessionOptions { vad, ..SessionOptions::default() };
    let (mut chain, mut handle) = SessionChain::with_options(TurnDetectConfig::default(), options).unwrap();
    let mut events = Vec::new();
    for (t, packet) in rtp_packets(&frames, 0).iter().enumerate() {
        handle.ingress.push(*packet).unwrap();
        assert_eq!(chain.tick(), Liveness::Alive);
        while let Ok(item) = handle.uplink.pop() {
            if let Uplink::Event(e) = item {
                events.push((t, e));
            }
        }
        while handle.egress.pop().is_ok() {}
    }
    (events, speech_end_ms)
}

#[test]
fn an_abrupt_end_of_speech_commits_silence_duration_after_it() {
    let silence_ms = u64::from(TurnDetectConfig::default().silence_duration_ms);
    for vad in [VadKind::Earshot, VadKind::Energy] {
        let (events, speech_end) = stream(vad);
        let commits: Vec<_> = events.iter().filter(|(_, e)| matches!(e, MediaEvent::Committed { .. })).collect();
        assert_eq!(commits.len(), 1, "{vad:?}: one turn: {events:?}");
        let (tick, MediaEvent::Committed { audio_end }) = commits[0] else { unreachable!() };
        // The end is placed on the audio where the level fell, not where the VAD let go: within
        // one frame (the decoder's 6.5 ms delay carries the last of the speech into the next).
        assert!(audio_end.as_ms().abs_diff(speech_end) <= 20, "{vad:?}: ended at {audio_end:?}, speech at {speech_end} ms");
        // The commit is known at the end of its tick: `silence_duration_ms` after the speech
        // ended, and at most that frame later (tick t plays the packet sent at t: the jitter
        // buffer sits at one frame on a clean path).
        let late_ms = (*tick as i64 + 1) * 20 - (speech_end + silence_ms) as i64;
        assert!((0..=20).contains(&late_ms), "{vad:?}: committed {late_ms} ms after silence_duration_ms (tick {tick})");
    }
}
