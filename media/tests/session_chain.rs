//! Scenario tests of one `SessionChain`, driven tick by tick without threads.

mod common;

use common::*;
use std::collections::VecDeque;
use std::time::Duration;
use voxrelay_media::{
    AgentFrame, AudioTime, Control, Liveness, MediaEvent, OPUS_SILENCE, OutboundFec, Resampler, SAMPLES_24K, SampleRate, SessionChain,
    SessionHandle, SessionOptions, TurnDetectConfig, Uplink, opus_has_fec,
};

/// Ticks once; collects the events and the number of uplink audio frames.
fn tick(chain: &mut SessionChain, handle: &mut SessionHandle, events: &mut Vec<MediaEvent>) -> usize {
    assert_eq!(chain.tick(), Liveness::Alive);
    let mut audio = 0;
    while let Ok(item) = handle.uplink.pop() {
        match item {
            Uplink::Audio { .. } => audio += 1,
            Uplink::Event(e) => events.push(e),
        }
    }
    audio
}

/// Streams the fixture in (one packet per tick) plus `extra` ticks of nothing; returns events.
fn stream_fixture(chain: &mut SessionChain, handle: &mut SessionHandle, extra: usize) -> Vec<MediaEvent> {
    stream_fixture_over(chain, handle, extra, &mut VecDeque::new())
}

/// [`stream_fixture`] while the agent speaks `agent` (fed as the call task feeds it).
fn stream_fixture_over(
    chain: &mut SessionChain,
    handle: &mut SessionHandle,
    extra: usize,
    agent: &mut VecDeque<AgentFrame>,
) -> Vec<MediaEvent> {
    let packets = rtp_packets(&speech_48k(), 4000);
    let mut events = Vec::new();
    for p in &packets {
        handle.ingress.push(*p).unwrap();
        feed(handle, agent);
        tick(chain, handle, &mut events);
        while handle.egress.pop().is_ok() {}
    }
    for _ in 0..extra {
        tick(chain, handle, &mut events);
    }
    events
}

/// The one utterance in `events` as (speech started, speech stopped) in ms, checked against the
/// fixture: exactly one onset and one offset, each within 100 ms of where its speech is.
fn one_utterance_like_the_fixture(events: &[MediaEvent]) -> (u64, u64) {
    let started: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::SpeechStarted { audio_start } => Some(audio_start.as_ms()),
            _ => None,
        })
        .collect();
    let stopped: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::SpeechStopped { audio_end } => Some(audio_end.as_ms()),
            _ => None,
        })
        .collect();
    assert_eq!((started.len(), stopped.len()), (1, 1), "one utterance: {events:?}");
    assert!(started[0].abs_diff(SPEECH_START_MS) <= 100, "speech started at {} ms, fixture says {SPEECH_START_MS}", started[0]);
    assert!(stopped[0].abs_diff(SPEECH_END_MS) <= 100, "speech stopped at {} ms, fixture says {SPEECH_END_MS}", stopped[0]);
    (started[0], stopped[0])
}

#[test]
fn speech_timestamps_match_the_fixture_within_100_ms() {
    let (mut chain, mut handle) = SessionChain::new(TurnDetectConfig::default()).unwrap();
    let events = stream_fixture(&mut chain, &mut handle, 10);
    let (_, stopped) = one_utterance_like_the_fixture(&events);
    let stop_at = events.iter().position(|e| matches!(e, MediaEvent::SpeechStopped { .. })).unwrap();
    assert_eq!(events[stop_at + 1], MediaEvent::Committed { audio_end: AudioTime::from_ms(stopped) });
}

#[cfg(feature = "silero")]
#[test]
fn a_silero_session_times_speech_like_the_default() {
    use voxrelay_media::{SessionOptions, VadKind};
    let options = SessionOptions { vad: VadKind::Silero, ..SessionOptions::default() };
    let (mut chain, mut handle) = SessionChain::with_options(TurnDetectConfig::default(), options).unwrap();
    let events = stream_fixture(&mut chain, &mut handle, 10);
    one_utterance_like_the_fixture(&events);
}

/// Queues `frames` of agent audio for `response`, then its End (they fit in the ring).
fn queue_response(handle: &mut SessionHandle, response: u64, frames: usize) {
    let mut all = response_frames(response, frames);
    feed(handle, &mut all);
    assert!(all.is_empty(), "{frames} frames do not fit the agent ring; feed them as the call task does");
}

/// `frames` of agent audio for `response`, then its End.
fn response_frames(response: u64, frames: usize) -> VecDeque<AgentFrame> {
    agent_tone(frames).into_iter().map(|pcm| AgentFrame::Audio { response, pcm }).chain([AgentFrame::End { response }]).collect()
}

/// Moves frames into the agent ring while it has room, as the call task does each tick (the
/// ring holds about a second; the rest waits on the agent's side).
fn feed(handle: &mut SessionHandle, pending: &mut VecDeque<AgentFrame>) {
    while handle.agent_out.slots() > 0 {
        let Some(frame) = pending.pop_front() else { break };
        let _ = handle.agent_out.push(frame);
    }
}

#[test]
fn egress_gets_one_packet_per_tick_silence_or_voiced() {
    let (mut chain, mut handle) = SessionChain::new(TurnDetectConfig::default()).unwrap();
    let mut events = Vec::new();
    for _ in 0..3 {
        tick(&mut chain, &mut handle, &mut events);
    }
    queue_response(&mut handle, 1, 5);
    for _ in 0..8 {
        tick(&mut chain, &mut handle, &mut events);
    }
    let out: Vec<_> = std::iter::from_fn(|| handle.egress.pop().ok()).collect();
    assert_eq!(out.len(), 11);
    assert!(out.iter().enumerate().all(|(i, p)| p.frame_index == i as u64));
    let voiced: Vec<bool> = out.iter().map(|p| p.voiced).collect();
    assert_eq!(voiced, [false, false, false, true, true, true, true, true, false, false, false]);
    assert!(out.iter().filter(|p| !p.voiced).all(|p| p.bytes() == OPUS_SILENCE));
    assert!(out.iter().filter(|p| p.voiced).all(|p| p.bytes().len() > 10));
    assert_eq!(
        events,
        vec![MediaEvent::PlaybackStarted { response: 1 }, MediaEvent::PlaybackFinished { response: 1, played: Duration::from_millis(100) }]
    );
    assert_eq!(handle.stats.voiced_out(), 5);
    assert_eq!(handle.stats.frames_out(), 11);
}

#[test]
fn barge_in_cancels_response() {
    let (mut chain, mut handle) = SessionChain::new(TurnDetectConfig::default()).unwrap();
    // 8 s of agent audio, fed as it plays; the caller starts talking at 1.0 s of the fixture.
    let mut agent = response_frames(7, 400);
    let packets = rtp_packets(&speech_48k(), 0);
    let mut events = Vec::new();
    let mut voiced_after_cut = 0;
    for p in &packets {
        handle.ingress.push(*p).unwrap();
        let cleared_before = events.iter().any(|e| matches!(e, MediaEvent::PlaybackCleared { .. }));
        // The conversation stops pulling a cancelled response from its agent.
        if !cleared_before {
            feed(&mut handle, &mut agent);
        }
        tick(&mut chain, &mut handle, &mut events);
        while let Ok(out) = handle.egress.pop() {
            if cleared_before && out.voiced {
                voiced_after_cut += 1;
            }
        }
    }
    let started = events.iter().position(|e| matches!(e, MediaEvent::SpeechStarted { .. })).expect("speech detected");
    match events[started + 1] {
        MediaEvent::PlaybackCleared { response: 7, played } => assert!(played > Duration::from_secs(1), "played {played:?}"),
        ref other => panic!("expected PlaybackCleared right after SpeechStarted, got {other:?}"),
    }
    assert_eq!(voiced_after_cut, 0, "no agent audio may go out after the cut");
    assert_eq!(handle.agent_out.slots(), voxrelay_media::AGENT_RING, "queued frames were dropped");
    assert!(handle.stats.agent_frames_dropped() > 0);
    assert!(!events.iter().any(|e| matches!(e, MediaEvent::PlaybackFinished { .. })));
}

#[test]
fn without_interrupt_response_the_agent_keeps_talking() {
    let turn = TurnDetectConfig { interrupt_response: false, ..TurnDetectConfig::default() };
    let (mut chain, mut handle) = SessionChain::new(turn).unwrap();
    let events = stream_fixture_over(&mut chain, &mut handle, 0, &mut response_frames(1, 400));
    assert!(events.iter().any(|e| matches!(e, MediaEvent::SpeechStarted { .. })));
    assert!(!events.iter().any(|e| matches!(e, MediaEvent::PlaybackCleared { .. })));
}

#[test]
fn push_to_talk_commits_only_on_command() {
    let turn = TurnDetectConfig { server_vad: false, ..TurnDetectConfig::default() };
    let (mut chain, mut handle) = SessionChain::new(turn).unwrap();
    let mut events = stream_fixture(&mut chain, &mut handle, 0);
    assert!(events.is_empty(), "push-to-talk emits no speech events: {events:?}");
    let now = chain.audio_time();
    handle.control.push(Control::CommitInput).unwrap();
    handle.control.push(Control::ClearInput).unwrap();
    tick(&mut chain, &mut handle, &mut events);
    assert_eq!(events, vec![MediaEvent::Committed { audio_end: now }, MediaEvent::Cleared]);
}

#[test]
fn set_turn_switches_to_server_vad_mid_call() {
    let (mut chain, mut handle) = SessionChain::new(TurnDetectConfig { server_vad: false, ..TurnDetectConfig::default() }).unwrap();
    handle.control.push(Control::SetTurn(TurnDetectConfig::default())).unwrap();
    let events = stream_fixture(&mut chain, &mut handle, 10);
    assert!(events.iter().any(|e| matches!(e, MediaEvent::Committed { .. })), "{events:?}");
    assert_eq!(chain.turn_config(), TurnDetectConfig::default());
}

#[test]
fn cancel_response_and_clear_output_cut_playback() {
    let (mut chain, mut handle) = SessionChain::new(TurnDetectConfig::default()).unwrap();
    let mut events = Vec::new();
    queue_response(&mut handle, 1, 20);
    for _ in 0..3 {
        tick(&mut chain, &mut handle, &mut events);
    }
    handle.control.push(Control::CancelResponse(1)).unwrap();
    tick(&mut chain, &mut handle, &mut events);
    queue_response(&mut handle, 2, 20);
    tick(&mut chain, &mut handle, &mut events);
    handle.control.push(Control::ClearOutput).unwrap();
    tick(&mut chain, &mut handle, &mut events);
    tick(&mut chain, &mut handle, &mut events);
    assert_eq!(
        events,
        vec![
            MediaEvent::PlaybackStarted { response: 1 },
            MediaEvent::PlaybackCleared { response: 1, played: Duration::from_millis(60) },
            MediaEvent::PlaybackStarted { response: 2 },
            MediaEvent::PlaybackCleared { response: 2, played: Duration::from_millis(20) },
        ]
    );
    let voiced = std::iter::from_fn(|| handle.egress.pop().ok()).filter(|p| p.voiced).count();
    assert_eq!(voiced, 4);
}

#[test]
fn lost_packets_are_concealed_and_audio_time_keeps_running() {
    let (mut chain, mut handle) = SessionChain::new(TurnDetectConfig::default()).unwrap();
    let packets = rtp_packets(&speech_48k()[..50], 100);
    let mut events = Vec::new();
    let mut audio_frames = 0;
    for (i, p) in packets.iter().enumerate() {
        if i % 10 != 5 {
            handle.ingress.push(*p).unwrap();
        }
        if i == 20 {
            handle.ingress.push(*p).unwrap(); // a duplicate
        }
        audio_frames += tick(&mut chain, &mut handle, &mut events);
    }
    let stats = handle.stats.snapshot();
    assert_eq!(stats.packets_in, 46);
    assert_eq!(stats.plc_frames, 5);
    assert_eq!(stats.duplicates, 1);
    // Playout starts one tick after the first packet (2-frame target depth).
    assert_eq!(audio_frames, 49);
    assert_eq!(chain.audio_time(), AudioTime::from_ms(49 * 20));
}

#[test]
fn a_caller_in_dtx_is_timed_like_one_that_sends_every_frame_and_costs_no_decode_in_its_pauses() {
    let (mut chain, mut handle) = SessionChain::new(TurnDetectConfig::default()).unwrap();
    let frames = speech_48k();
    let packets = dtx_rtp_packets(&frames, 4000);
    let sent = packets.iter().flatten().count();
    let mut events = Vec::new();
    let mut audio_frames = 0;
    for p in &packets {
        if let Some(p) = p {
            handle.ingress.push(*p).unwrap();
        }
        audio_frames += tick(&mut chain, &mut handle, &mut events);
    }
    for _ in 0..10 {
        audio_frames += tick(&mut chain, &mut handle, &mut events);
    }
    one_utterance_like_the_fixture(&events);

    let stats = handle.stats.snapshot();
    println!("DTX: {} frames, {sent} packets sent, {} decoded, {} DTX frames", frames.len(), stats.frames_decoded, stats.dtx_frames);
    assert!(sent < frames.len() * 3 / 4, "the fixture's 1.1 s of leading and trailing silence go quiet: {sent} of {}", frames.len());
    assert_eq!((stats.concealed, stats.underruns, stats.lost), (0, 0, 0), "a pause is not a loss: {stats:?}");
    assert_eq!(stats.frames_decoded + stats.dtx_frames, audio_frames as u64, "every frame decoded or DTX silence: {stats:?}");
    // The audio clock keeps running through the pauses (the uplink gets their silence).
    assert_eq!(chain.audio_time(), AudioTime::from_ms(audio_frames as u64 * 20));
}

#[test]
fn a_full_output_ring_drops_and_counts_instead_of_blocking() {
    let (mut chain, handle) = SessionChain::new(TurnDetectConfig::default()).unwrap();
    for _ in 0..40 {
        chain.tick(); // nobody drains egress (16 slots)
    }
    assert_eq!(handle.egress.slots(), voxrelay_media::EGRESS_RING);
    assert_eq!(handle.stats.ring_overflows(), 40 - voxrelay_media::EGRESS_RING as u64);
}

#[test]
fn dropping_the_handle_abandons_the_session() {
    let (mut chain, handle) = SessionChain::new(TurnDetectConfig::default()).unwrap();
    let SessionHandle { ingress, control, agent_out, egress, uplink, .. } = handle;
    drop((ingress, control, agent_out, egress));
    assert_eq!(chain.tick(), Liveness::Alive, "one ring end still held");
    drop(uplink);
    assert_eq!(chain.tick(), Liveness::Abandoned);
}

/// Of the agent speaking the fixture (24 kHz) for `frames` ticks, after `reports` from its peer:
/// (packets with speech, of them carrying in-band FEC).
fn agent_fec(outbound_fec: OutboundFec, reports: &[u8], frames: usize) -> (usize, usize) {
    let options = SessionOptions { outbound_fec, ..SessionOptions::default() };
    let (mut chain, mut handle) = SessionChain::with_options(TurnDetectConfig::default(), options).unwrap();
    let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_24K).unwrap();
    let speech: Vec<[i16; SAMPLES_24K]> = speech_48k()
        .iter()
        .map(|f| {
            let mut pcm = [0i16; SAMPLES_24K];
            down.process(f, &mut pcm);
            pcm
        })
        .collect();
    for &fraction_lost in reports {
        handle.control.push(Control::PeerReport { fraction_lost }).unwrap();
    }
    let (mut voiced, mut fec) = (0, 0);
    for pcm in speech.iter().cycle().take(frames) {
        handle.agent_out.push(AgentFrame::Audio { response: 1, pcm: *pcm }).unwrap();
        chain.tick();
        while let Ok(packet) = handle.egress.pop() {
            let payload = &packet.data[..packet.len as usize];
            if payload.len() > OPUS_SILENCE.len() {
                voiced += 1;
                fec += usize::from(opus_has_fec(payload));
            }
        }
        while handle.uplink.pop().is_ok() {}
    }
    (voiced, fec)
}

#[test]
fn the_agents_speech_carries_fec_only_while_its_peer_reports_loss() {
    let (voiced, fec) = agent_fec(OutboundFec::PeerReports, &[], 200);
    assert!(voiced > 150 && fec == 0, "no reports: {fec} of {voiced} packets carry FEC");
    let (voiced, fec) = agent_fec(OutboundFec::PeerReports, &[0, 0, 0], 200);
    assert!(voiced > 150 && fec == 0, "clean reports: {fec} of {voiced} packets carry FEC");
    // Two reports of 10 % loss (26/256): FEC on the voiced frames (SILK codes FEC for frames
    // with voice activity; the fixture's pauses have none).
    let (voiced, fec) = agent_fec(OutboundFec::PeerReports, &[26, 26], 200);
    assert!(fec * 2 > voiced, "10 % loss reported: only {fec} of {voiced} packets carry FEC");
    let (voiced, fixed) = agent_fec(OutboundFec::Fixed(10), &[0, 0], 200);
    assert!(fixed * 2 > voiced, "fixed 10 %, whatever the reports: only {fixed} of {voiced} packets carry FEC");
}
