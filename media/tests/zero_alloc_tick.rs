//! Proves the per-frame path does not allocate: after warm-up, `SessionChain::tick` with caller
//! speech in (jitter, decode, PLC, resample, VAD, turn events) and agent speech out (resample,
//! encode, playback events) makes zero heap allocations. A counting global allocator counts
//! allocations made on this test's thread only. (libopus allocates nothing per call either: it
//! uses the stack; its C allocations would not pass through Rust's allocator anyway.)

mod common;

use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use voxrelay_media::{AgentFrame, Control, SessionChain, TurnConfig};

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

#[test]
fn session_chain_tick_allocates_nothing_after_warm_up() {
    // Built before counting: everything below is the per-tick path only.
    let packets = rtp_packets(&speech_48k(), 60_000); // sequence numbers wrap mid-way
    let agent = agent_tone(40);
    let (mut chain, mut handle) = SessionChain::new(TurnConfig::default()).unwrap();

    let mut run = |ticks: std::ops::Range<usize>| {
        let mut events = 0;
        for i in ticks {
            if i % 17 != 3 {
                handle.ingress.push(packets[i % packets.len()]).unwrap(); // some loss -> PLC
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
            chain.tick();
            while handle.egress.pop().is_ok() {}
            while let Ok(item) = handle.uplink.pop() {
                if let voxrelay_media::Uplink::Event(_) = item {
                    events += 1;
                }
            }
        }
        events
    };

    run(0..50); // warm-up: playout start, first response
    COUNTING.with(|c| c.set(true));
    let events = run(50..packets.len());
    COUNTING.with(|c| c.set(false));

    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(events > 4, "the measured ticks must include speech and playback events, saw {events}");
    assert_eq!(allocations, 0, "{allocations} allocations in {} ticks", packets.len() - 50);
}
