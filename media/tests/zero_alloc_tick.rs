//! Proves the per-frame path does not allocate: after warm-up, `SessionChain::tick` with caller
//! speech in (jitter, decode, PLC, resample, VAD, turn events) and agent speech out (resample,
//! mix, encode, playback events) makes zero heap allocations — for an Opus session with earshot
//! and a PCMU session with the energy VAD — and neither does the mixer with several sources. A counting global allocator counts
//! allocations made on this test's thread only. (libopus allocates nothing per call either: it
//! uses the stack; its C allocations would not pass through Rust's allocator anyway.)

mod common;

use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use voxrelay_media::{AgentFrame, AudioCodec, Control, G711Law, RtpIn, SessionChain, SessionOptions, TurnDetectConfig, VadKind, mix};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    if COUNTING.with(|c| c.get()) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs a session of `options` with caller speech in (`packets`) and agent speech out, counting
/// allocations on this thread after a 50-tick warm-up. Returns (events seen, allocations).
/// With `room` (a room bridge session), the room's Opus packets go in and the caller's Opus
/// frames for the room come out every tick too.
/// `None` in `packets`: nothing arrives that tick (a DTX pause).
fn measure(options: SessionOptions, packets: &[Option<RtpIn>], room: &[RtpIn]) -> (usize, u64) {
    measure_ticks(options, packets, room, Halves::Whole)
}

/// How the measured ticks run.
#[derive(Clone, Copy, PartialEq)]
enum Halves {
    /// `tick`: both halves at once.
    Whole,
    /// As a worker with a slot between the halves: inbound, `early_frame` (a response starts
    /// early, its frames go out there, it goes back after its end), outbound.
    EarlyBetween,
}

fn measure_ticks(options: SessionOptions, packets: &[Option<RtpIn>], room: &[RtpIn], halves: Halves) -> (usize, u64) {
    let agent = agent_tone(40);
    let (mut chain, mut handle) = SessionChain::with_options(TurnDetectConfig::default(), options).unwrap();

    let mut run = |ticks: std::ops::Range<usize>| {
        let mut events = 0;
        for i in ticks {
            if i % 17 != 3
                && let Some(packet) = packets[i % packets.len()]
            {
                handle.ingress.push(packet).unwrap(); // some loss -> PLC
            }
            // Agent speech in bursts of responses with ends and a cancel, so every playback
            // path runs.
            let response = (i / 60) as u64;
            match i % 60 {
                0..40 => handle.agent_out.push(AgentFrame::Audio { response, pcm: agent[i % 60] }).unwrap(),
                40 => handle.agent_out.push(AgentFrame::End { response }).unwrap(),
                45 => handle.control.push(Control::CancelResponse(response)).unwrap(),
                _ => {}
            }
            // The peer's receiver reports: loss comes and goes, so the encoder's FEC is
            // retuned on the measured path too.
            if i % 25 == 0 {
                let fraction_lost = if (i / 250) % 2 == 0 { 40 } else { 0 };
                handle.control.push(Control::PeerReport { fraction_lost }).unwrap();
            }
            if let Some(bridge) = handle.bridge.as_mut() {
                bridge.room_in.push(room[i % room.len()]).unwrap();
            }
            match halves {
                Halves::Whole => {
                    chain.tick();
                }
                Halves::EarlyBetween => {
                    chain.tick_inbound();
                    chain.early_frame();
                    chain.tick_outbound();
                }
            }
            while handle.egress.pop().is_ok() {}
            if let Some(bridge) = handle.bridge.as_mut() {
                while bridge.forward.pop().is_ok() {}
            }
            while let Ok(item) = handle.uplink.pop() {
                if let voxrelay_media::Uplink::Event(_) = item {
                    events += 1;
                }
            }
        }
        events
    };

    run(0..50); // warm-up: playout start, first response
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let events = run(50..packets.len());
    COUNTING.with(|c| c.set(false));
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    if halves == Halves::EarlyBetween {
        let early = handle.stats.early_starts();
        assert!(early > 2, "responses must have started early in the measured ticks, {early} did");
    }
    (events, allocations)
}

// `VadKind::Silero` (feature `silero`) is deliberately not measured here: tract allocates its
// tensors on every inference (src/vad/silero.rs).
#[test]
fn session_chain_tick_allocates_nothing_after_warm_up() {
    // Built before counting: everything measured is the per-tick path only.
    let packets: Vec<_> = rtp_packets(&speech_48k(), 60_000).into_iter().map(Some).collect(); // sequence numbers wrap mid-way
    let (events, allocations) = measure(SessionOptions::default(), &packets, &[]);
    assert!(events > 4, "the measured ticks must include speech and playback events, saw {events}");
    assert_eq!(allocations, 0, "{allocations} allocations in {} ticks", packets.len() - 50);
}

#[test]
fn responses_that_start_early_allocate_nothing_either() {
    let packets: Vec<_> = rtp_packets(&speech_48k(), 60_000).into_iter().map(Some).collect();
    let (events, allocations) = measure_ticks(SessionOptions::default(), &packets, &[], Halves::EarlyBetween);
    assert!(events > 4, "the measured ticks must include speech and playback events, saw {events}");
    assert_eq!(allocations, 0, "{allocations} allocations in {} ticks", packets.len() - 50);
}

#[test]
fn a_g711_session_tick_allocates_nothing_after_warm_up() {
    let packets: Vec<_> = g711_packets(&speech_48k(), G711Law::Mu, 65_000).into_iter().map(Some).collect();
    // With the phone echo guard on: it learns the echo path per tick without allocating.
    let options = SessionOptions {
        codec: AudioCodec::Pcmu,
        vad: VadKind::Energy,
        echo_guard: voxrelay_media::EchoGuardConfig::DEFAULT,
        ..SessionOptions::default()
    };
    let (events, allocations) = measure(options, &packets, &[]);
    assert!(events > 4, "the measured ticks must include speech and playback events, saw {events}");
    assert_eq!(allocations, 0, "{allocations} allocations in {} ticks", packets.len() - 50);
}

#[test]
fn a_phone_callers_room_bridge_tick_allocates_nothing_after_warm_up() {
    // Mu-law in, Opus out for the room; the room's Opus in, decoded and mixed into mu-law out.
    let packets: Vec<_> = g711_packets(&speech_48k(), G711Law::Mu, 65_000).into_iter().map(Some).collect();
    let room = rtp_packets(&speech_48k(), 1_000);
    let options = SessionOptions { codec: AudioCodec::Pcmu, vad: VadKind::Energy, room_bridge: true, ..SessionOptions::default() };
    let (events, allocations) = measure(options, &packets, &room);
    assert!(events > 4, "the measured ticks must include speech and playback events, saw {events}");
    assert_eq!(allocations, 0, "{allocations} allocations in {} ticks", packets.len() - 50);
}

#[test]
fn a_caller_in_dtx_ticks_without_allocating() {
    let packets = dtx_rtp_packets(&speech_48k(), 65_000);
    let (events, allocations) = measure(SessionOptions::default(), &packets, &[]);
    assert!(events > 4, "the measured ticks must include speech and playback events, saw {events}");
    assert_eq!(allocations, 0, "{allocations} allocations in {} ticks", packets.len() - 50);
}

#[test]
fn mixing_several_sources_allocates_nothing() {
    let a = speech_48k();
    let mut out = [0i16; voxrelay_media::SAMPLES_48K];
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    for i in 0..a.len() - 2 {
        mix(&[&a[i], &a[i + 1], &a[i + 2]], &mut out);
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed) - before, 0);
}
