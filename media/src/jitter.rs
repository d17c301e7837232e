//! Inbound jitter buffer: orders packets by RTP sequence number, hands out exactly one packet
//! (or a loss, or an underrun) per 20 ms tick once playout has started, and adapts its depth
//! (20–200 ms) to the measured network jitter.
//! Owns: reordering, duplicate and late detection, the playout point, the RFC 3550 interarrival
//! jitter estimate, the target depth, and their counters.
//! Must never: allocate after `new`, decode audio (the caller runs PLC/FEC on `Lost` and
//! `Underrun`), or read a clock (arrival time is the `now_ms` argument of `push`; each `pop` *is*
//! one tick).
//!
//! # How the depth adapts
//! Depth is counted in frames buffered at playout time, from the due packet to the newest one.
//! - **Estimate.** Each arriving packet updates the RFC 3550 §6.4.1 interarrival jitter `J`
//!   (a running mean of |transit-time differences|) and its delay relative to the fastest recent
//!   packet; the latter's peak decays with a ≈ 3 s half-life. `J` is a mean, so sparse spikes
//!   (one packet in 20 held back 60 ms) barely move it: the peak covers those.
//! - **Target.** `1 + ceil((max(JITTER_MULTIPLIER · J, peak) − 5 ms) / 20 ms)` frames, clamped to
//!   [`MIN_TARGET_FRAMES`]..=[`MAX_TARGET_FRAMES`]; at least 2 while losses were seen in the last
//!   [`LOSS_MEMORY_TICKS`], so the next packet (and its in-band FEC) is in hand when a loss is due.
//! - **Grow.** When the buffer is empty at playout time the packet is late, not necessarily lost:
//!   the tick is concealed *without* advancing the playout point (`Pop::Underrun`), which adds one
//!   frame of delay; the packet then plays when it arrives instead of being dropped as late.
//!   (This also keeps a DTX pause from turning every later packet into a late one.)
//! - **DTX.** A sender in discontinuous transmission sends one DTX packet ([`is_dtx_packet`]:
//!   no coded frame) and then nothing, its sequence numbers continuing where it resumes. So an
//!   empty buffer after a DTX packet is the sender's silence, not lateness: `Pop::Dtx`, playout
//!   held like an underrun but nothing counted as lost or late, no loss memory (which would keep
//!   two frames of delay for 5 s after every pause) and nothing to conceal.
//! - **Shrink.** If the smallest depth seen over [`SHRINK_WINDOW_TICKS`] stayed above target, the
//!   oldest buffered frame is skipped (one per window): delay a caller hears is only kept while
//!   the network needs it.
//! - **Bound.** Whatever happens, playout never trails the newest packet by more than
//!   [`MAX_TARGET_FRAMES`] (a burst beyond that is skipped).
//!
//! Arrival time comes from the caller; in the session chain it is the tick time, so `J` is
//! quantized to 20 ms steps — the same granularity at which depth exists.

use crate::{FRAME_MS, RtpIn, SampleRate, is_dtx_packet};

/// Slots in the ring, indexed by `seq % JITTER_CAPACITY`: 32 packets = 640 ms.
pub const JITTER_CAPACITY: usize = 32;
/// Depth playout starts with, before any jitter is measured: 2 packets (40 ms) buffered, or 2
/// ticks after the first packet, whichever comes first.
pub const JITTER_TARGET_FRAMES: usize = 2;
/// Smallest adaptive target: 1 frame (20 ms) — the due packet itself.
pub const MIN_TARGET_FRAMES: u16 = 1;
/// Largest adaptive target and hard bound: 10 frames (200 ms) behind the newest packet.
pub const MAX_TARGET_FRAMES: u16 = 10;
/// The target covers this many times the mean jitter `J` (≈ the tail of a mean-|d| estimate).
const JITTER_MULTIPLIER: f32 = 3.0;
/// Ticks (1 s) over which the minimum depth is watched before shrinking by one frame.
pub const SHRINK_WINDOW_TICKS: u32 = 50;
/// After a loss or underrun, keep at least 2 frames for this many ticks (5 s) so FEC can work.
pub const LOSS_MEMORY_TICKS: u32 = 250;
/// What is left of a decayed estimate below this (ms, a quarter frame) asks for no frame of
/// depth: arrival times are tick-quantized, so a rest this small is only the decay's tail.
const IGNORED_REST_MS: f32 = 5.0;
/// Per-packet decay of the peak relative delay: 0.995^140 ≈ 0.5, a ≈ 3 s half-life at 50 pkt/s.
const PEAK_DECAY: f32 = 0.995;
/// How fast (ms per packet) the "fastest transit" reference creeps up, so sender clock skew of
/// up to ≈ 1000 ppm is not mistaken for growing delay.
const BASE_CREEP_MS: f32 = 0.02;

/// What one tick gets from the buffer.
#[derive(Clone, Copy, Debug)]
pub enum Pop<'a> {
    /// No packet seen yet, or still filling to the start depth: produce no inbound audio.
    Waiting,
    /// The packet due now.
    Packet(&'a RtpIn),
    /// The packet due now is missing while later ones are here: it is lost and playout moves on.
    /// `next` is the following packet if it is already here, for Opus in-band FEC.
    Lost { next: Option<&'a RtpIn> },
    /// The due packet is missing and the buffer is below its target depth (or empty): conceal one
    /// frame and wait for it (the buffer grows by one frame of delay; nothing is counted as lost).
    Underrun,
    /// The sender is silent on purpose (DTX): the due packet is a DTX packet, or nothing has
    /// arrived since one. Produce silence; there is nothing to decode or conceal.
    Dtx,
}

/// Counters since creation. Once playing, every tick pops a packet (`played`), a `Lost` or an
/// `Underrun`; `lost` additionally counts missing frames passed over while shrinking the delay.
/// Every received packet ends up played, late, duplicate, skipped, a DTX packet (`dtx`), padding,
/// or still buffered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterCounters {
    pub received: u64,
    pub played: u64,
    /// Sequence numbers missing at their playout time while later packets were buffered.
    pub lost: u64,
    /// Ticks with an empty buffer (concealed, playout point held).
    pub underruns: u64,
    /// Arrived after their playout time.
    pub late: u64,
    pub duplicates: u64,
    /// Skipped to shrink or bound the delay, or flushed by a sequence jump.
    pub skipped: u64,
    /// Sequence jumps larger than the buffer (stream restart): playout moved to the new packet.
    pub resyncs: u64,
    /// Ticks of sender silence under DTX (`Pop::Dtx`): DTX packets played and the ticks after
    /// them with nothing buffered. Not counted in `played` or `underruns`.
    pub dtx: u64,
    /// Packets without payload (RTP padding only) passed over: they take no tick.
    pub padding: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    present: bool,
    packet: RtpIn,
}

/// The jitter and delay measurements behind the target depth.
#[derive(Clone, Copy, Debug)]
struct Estimator {
    clock: SampleRate,
    /// Transit (arrival − RTP time) of the previous packet, in RTP clock units.
    last_transit: Option<i32>,
    /// RFC 3550 jitter, in RTP clock units.
    jitter_units: f32,
    /// The fastest recent transit, ms (creeps up by BASE_CREEP_MS per packet).
    base_transit_ms: f32,
    /// Peak delay above `base_transit_ms`, ms, decaying.
    peak_ms: f32,
}

impl Estimator {
    fn new(clock: SampleRate) -> Self {
        Estimator { clock, last_transit: None, jitter_units: 0.0, base_transit_ms: f32::MAX, peak_ms: 0.0 }
    }

    fn on_arrival(&mut self, rtp_timestamp: u32, now_ms: u64) {
        let arrival_units = (now_ms.wrapping_mul(self.clock.0 as u64) / 1000) as u32;
        let transit = arrival_units.wrapping_sub(rtp_timestamp) as i32;
        if let Some(last) = self.last_transit {
            let d = transit.wrapping_sub(last).unsigned_abs() as f32;
            // RFC 3550 A.8: J += (|D| − J) / 16.
            self.jitter_units += (d - self.jitter_units) / 16.0;
        }
        self.last_transit = Some(transit);
        let transit_ms = transit as f32 * 1000.0 / self.clock.0 as f32;
        self.base_transit_ms = (self.base_transit_ms + BASE_CREEP_MS).min(transit_ms);
        self.peak_ms = (self.peak_ms * PEAK_DECAY).max(transit_ms - self.base_transit_ms);
    }

    fn jitter_ms(&self) -> f32 {
        self.jitter_units * 1000.0 / self.clock.0 as f32
    }

    fn target_frames(&self) -> u16 {
        let needed_ms = (JITTER_MULTIPLIER * self.jitter_ms()).max(self.peak_ms);
        // Rounded up, less a quarter frame: both estimates decay geometrically after a spike and
        // never quite reach 0, and a plain ceiling turned any rest into a whole frame. One 20 ms
        // spike then held every later packet of the call a frame longer for minutes (until the
        // float underflowed); now for ≈ 5 s. Rounding to nearest instead let go of frames
        // while sustained reordering still needed them (tests/loss_and_reorder.rs: more late
        // packets, envelope correlation 0.966 -> 0.904).
        let frames = 1 + ((needed_ms - IGNORED_REST_MS).max(0.0) / FRAME_MS as f32).ceil() as u32;
        frames.clamp(MIN_TARGET_FRAMES as u32, MAX_TARGET_FRAMES as u32) as u16
    }
}

pub struct JitterBuffer {
    slots: Vec<Slot>,
    seen_first: bool,
    playing: bool,
    wait_ticks: usize,
    /// Sequence number of the packet due at the next `pop`.
    next_seq: u16,
    /// Newest sequence number received.
    highest_seq: u16,
    /// The last packet played was a DTX packet: an empty buffer is the sender's silence.
    in_dtx: bool,
    estimator: Estimator,
    /// Ticks left during which a recent loss keeps the target at ≥ 2 frames.
    loss_memory: u32,
    /// Smallest depth seen in the current shrink window, and ticks into it.
    window_min_depth: u16,
    window_ticks: u32,
    counters: JitterCounters,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    /// A buffer for a 48 kHz RTP clock (Opus).
    pub fn new() -> Self {
        Self::with_clock_rate(SampleRate::HZ_48K)
    }

    /// A buffer whose packets carry RTP timestamps at `clock` (8 kHz for G.711).
    pub fn with_clock_rate(clock: SampleRate) -> Self {
        let empty = Slot {
            present: false,
            packet: RtpIn { seq: 0, timestamp: 0, ssrc: 0, audio_level: None, len: 0, payload: [0; crate::MAX_OPUS_PACKET] },
        };
        JitterBuffer {
            slots: vec![empty; JITTER_CAPACITY],
            seen_first: false,
            playing: false,
            wait_ticks: 0,
            next_seq: 0,
            highest_seq: 0,
            in_dtx: false,
            estimator: Estimator::new(clock),
            loss_memory: 0,
            window_min_depth: u16::MAX,
            window_ticks: 0,
            counters: JitterCounters::default(),
        }
    }

    pub fn counters(&self) -> JitterCounters {
        self.counters
    }

    /// True once the first frame has been handed out: from then on every `pop` yields audio.
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// Packets buffered ahead of the playout point.
    pub fn depth(&self) -> usize {
        self.slots.iter().filter(|s| s.present).count()
    }

    /// RFC 3550 interarrival jitter estimate, ms.
    pub fn jitter_ms(&self) -> f32 {
        self.estimator.jitter_ms()
    }

    /// The depth the buffer currently aims for, in frames (× 20 ms).
    pub fn target_frames(&self) -> u16 {
        let target = self.estimator.target_frames();
        if self.loss_memory > 0 { target.max(2) } else { target }
    }

    /// Frames from the playout point to the newest packet (0 if nothing is buffered).
    fn span_frames(&self) -> u16 {
        let ahead = self.highest_seq.wrapping_sub(self.next_seq) as i16;
        if ahead < 0 { 0 } else { ahead as u16 + 1 }
    }

    /// Stores one packet that arrived at `now_ms` (any monotonic ms clock; only differences count).
    pub fn push(&mut self, packet: &RtpIn, now_ms: u64) {
        self.counters.received += 1;
        let seq = packet.seq;
        if !self.seen_first {
            self.seen_first = true;
            self.next_seq = seq;
            self.highest_seq = seq;
        }
        let ahead = seq.wrapping_sub(self.next_seq) as i16;
        if ahead < 0 {
            let span = self.highest_seq.wrapping_sub(seq) as usize;
            if self.playing || span >= JITTER_CAPACITY {
                self.counters.late += 1;
                self.estimator.on_arrival(packet.timestamp, now_ms);
                return;
            }
            // Reordered before playout began: start earlier instead of dropping it.
            self.next_seq = seq;
        } else if ahead as usize >= JITTER_CAPACITY {
            self.counters.resyncs += 1;
            self.counters.skipped += self.depth() as u64;
            self.slots.iter_mut().for_each(|s| s.present = false);
            self.next_seq = seq;
            self.highest_seq = seq;
            self.estimator = Estimator::new(self.estimator.clock);
        }
        let slot = &mut self.slots[seq as usize % JITTER_CAPACITY];
        if slot.present && slot.packet.seq == seq {
            self.counters.duplicates += 1;
            return;
        }
        if (seq.wrapping_sub(self.highest_seq) as i16) > 0 {
            self.highest_seq = seq;
        }
        slot.present = true;
        slot.packet = *packet;
        self.estimator.on_arrival(packet.timestamp, now_ms);
    }

    /// Advances playout by one 20 ms frame.
    pub fn pop(&mut self) -> Pop<'_> {
        if !self.seen_first {
            return Pop::Waiting;
        }
        if !self.playing {
            self.wait_ticks += 1;
            if self.depth() < JITTER_TARGET_FRAMES && self.wait_ticks < JITTER_TARGET_FRAMES {
                return Pop::Waiting;
            }
            self.playing = true;
        }
        self.loss_memory = self.loss_memory.saturating_sub(1);
        self.bound_delay();
        self.maybe_shrink();
        self.pass_padding();

        let seq = self.next_seq;
        let index = seq as usize % JITTER_CAPACITY;
        if self.slots[index].present && self.slots[index].packet.seq == seq {
            self.next_seq = seq.wrapping_add(1);
            self.slots[index].present = false;
            self.in_dtx = is_dtx_packet(self.slots[index].packet.bytes());
            if self.in_dtx {
                self.counters.dtx += 1;
                return Pop::Dtx;
            }
            self.counters.played += 1;
            return Pop::Packet(&self.slots[index].packet);
        }
        if self.in_dtx && self.span_frames() == 0 {
            // Nothing newer is here either: the pause the DTX packet announced (see the top).
            self.counters.dtx += 1;
            return Pop::Dtx;
        }
        self.loss_memory = LOSS_MEMORY_TICKS;
        if self.span_frames() < self.target_frames() {
            // Shallower than the jitter needs: treat the due packet as late, not lost, and hold
            // playout one frame (see the top comment). An empty buffer always lands here.
            self.counters.underruns += 1;
            return Pop::Underrun;
        }
        self.next_seq = seq.wrapping_add(1);
        self.counters.lost += 1;
        let next = &self.slots[self.next_seq as usize % JITTER_CAPACITY];
        Pop::Lost { next: (next.present && next.packet.seq == self.next_seq).then_some(&next.packet) }
    }

    /// Moves playout past due packets without payload: RTP padding only (a browser's bandwidth
    /// probes, sent on the audio stream between frames with the previous frame's timestamp). They
    /// hold a sequence number and no audio, so they take no tick.
    fn pass_padding(&mut self) {
        loop {
            let slot = &mut self.slots[self.next_seq as usize % JITTER_CAPACITY];
            if !(slot.present && slot.packet.seq == self.next_seq && slot.packet.len == 0) {
                return;
            }
            slot.present = false;
            self.counters.padding += 1;
            self.next_seq = self.next_seq.wrapping_add(1);
        }
    }

    /// Skips the oldest frames while playout trails the newest packet by more than the bound.
    fn bound_delay(&mut self) {
        while self.span_frames() > MAX_TARGET_FRAMES {
            self.skip_one();
        }
    }

    /// One frame less delay if the depth stayed above target for a whole window.
    fn maybe_shrink(&mut self) {
        let depth = self.span_frames();
        self.window_min_depth = self.window_min_depth.min(depth);
        self.window_ticks += 1;
        if self.window_ticks < SHRINK_WINDOW_TICKS {
            return;
        }
        if self.window_min_depth > self.target_frames() {
            self.skip_one();
        }
        self.window_ticks = 0;
        self.window_min_depth = u16::MAX;
    }

    fn skip_one(&mut self) {
        let slot = &mut self.slots[self.next_seq as usize % JITTER_CAPACITY];
        if slot.present && slot.packet.seq == self.next_seq {
            slot.present = false;
            self.counters.skipped += 1;
        } else {
            self.counters.lost += 1;
        }
        self.next_seq = self.next_seq.wrapping_add(1);
    }

    /// Forget everything except the counters (new stream).
    pub fn reset(&mut self) {
        self.slots.iter_mut().for_each(|s| s.present = false);
        self.seen_first = false;
        self.playing = false;
        self.wait_ticks = 0;
        self.in_dtx = false;
        self.estimator = Estimator::new(self.estimator.clock);
        self.loss_memory = 0;
        self.window_min_depth = u16::MAX;
        self.window_ticks = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u16) -> RtpIn {
        RtpIn::new(seq, seq as u32 * 960, &[seq as u8, 1, 2]).unwrap()
    }

    /// Pops one tick and describes it: Some(seq) for a packet, None for a loss, panics if waiting.
    fn tick(jb: &mut JitterBuffer) -> Option<u16> {
        match jb.pop() {
            Pop::Packet(p) => Some(p.seq),
            Pop::Lost { .. } | Pop::Underrun | Pop::Dtx => None,
            Pop::Waiting => panic!("still waiting"),
        }
    }

    #[test]
    fn waits_for_the_target_depth_then_plays_in_order() {
        let mut jb = JitterBuffer::new();
        assert!(matches!(jb.pop(), Pop::Waiting));
        jb.push(&pkt(100), 0);
        assert!(matches!(jb.pop(), Pop::Waiting));
        jb.push(&pkt(101), 0);
        assert_eq!(tick(&mut jb), Some(100));
        jb.push(&pkt(102), 0);
        assert_eq!(tick(&mut jb), Some(101));
        assert_eq!(tick(&mut jb), Some(102));
    }

    #[test]
    fn playout_starts_after_two_ticks_even_with_one_packet() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(7), 0);
        assert!(matches!(jb.pop(), Pop::Waiting));
        assert_eq!(tick(&mut jb), Some(7));
        assert!(jb.is_playing());
    }

    #[test]
    fn reorders_packets_by_sequence_number() {
        let mut jb = JitterBuffer::new();
        for seq in [10, 12, 11, 14, 13] {
            jb.push(&pkt(seq), 0);
        }
        let played: Vec<_> = (0..5).map(|_| tick(&mut jb)).collect();
        assert_eq!(played, vec![Some(10), Some(11), Some(12), Some(13), Some(14)]);
    }

    #[test]
    fn an_earlier_packet_before_playout_moves_the_start_back() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(21), 0);
        jb.push(&pkt(20), 0);
        assert_eq!(tick(&mut jb), Some(20));
        assert_eq!(tick(&mut jb), Some(21));
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut jb = JitterBuffer::new();
        for seq in [1, 1, 2, 2, 2] {
            jb.push(&pkt(seq), 0);
        }
        assert_eq!(jb.counters().duplicates, 3);
        assert_eq!(tick(&mut jb), Some(1));
        assert_eq!(tick(&mut jb), Some(2));
    }

    #[test]
    fn late_packets_are_dropped_and_counted() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(1), 0);
        jb.push(&pkt(3), 0);
        assert_eq!(tick(&mut jb), Some(1));
        assert_eq!(tick(&mut jb), None); // 2 is missing at its playout time
        jb.push(&pkt(2), 0); // arrives too late
        assert_eq!(jb.counters().late, 1);
        assert_eq!(tick(&mut jb), Some(3));
    }

    #[test]
    fn losses_are_reported_with_the_next_packet_for_fec() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(5), 0);
        jb.push(&pkt(7), 0);
        assert_eq!(tick(&mut jb), Some(5));
        match jb.pop() {
            Pop::Lost { next: Some(next) } => assert_eq!(next.seq, 7),
            other => panic!("expected loss with FEC source, got {other:?}"),
        }
        assert_eq!(tick(&mut jb), Some(7));
        assert!(matches!(jb.pop(), Pop::Underrun), "nothing buffered: an underrun, not a loss");
        let c = jb.counters();
        assert_eq!((c.played, c.lost, c.underruns), (2, 1, 1));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb = JitterBuffer::new();
        for seq in [65534, 65535, 0, 1] {
            jb.push(&pkt(seq), 0);
        }
        let played: Vec<_> = (0..4).map(|_| tick(&mut jb)).collect();
        assert_eq!(played, vec![Some(65534), Some(65535), Some(0), Some(1)]);
    }

    #[test]
    fn a_big_jump_resyncs_to_the_new_stream() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(1), 0);
        jb.push(&pkt(2), 0);
        assert_eq!(tick(&mut jb), Some(1));
        jb.push(&pkt(5000), 0);
        assert_eq!(jb.counters().resyncs, 1);
        assert_eq!(tick(&mut jb), Some(5000));
    }

    #[test]
    fn a_burst_far_ahead_is_skipped_to_bound_the_delay() {
        let mut jb = JitterBuffer::new();
        for seq in 0..20 {
            jb.push(&pkt(seq), 0);
        }
        // Playout jumps so that at most MAX_DEPTH_FRAMES remain ahead.
        assert_eq!(tick(&mut jb), Some(19 - MAX_TARGET_FRAMES + 1));
        assert!(jb.counters().skipped > 0);
    }

    /// Feeds one packet per tick with `delay_ticks(seq)` ticks of network delay, pops once per
    /// tick, and returns what played.
    fn run(jb: &mut JitterBuffer, packets: u16, delay_ticks: impl Fn(u16) -> u64) -> Vec<Option<u16>> {
        let mut arrivals: Vec<(u64, u16)> = (0..packets).map(|s| (s as u64 + delay_ticks(s), s)).collect();
        arrivals.sort();
        let mut played = Vec::new();
        let mut next = 0;
        for t in 0..packets as u64 + 20 {
            while next < arrivals.len() && arrivals[next].0 == t {
                jb.push(&pkt(arrivals[next].1), t * 20);
                next += 1;
            }
            match jb.pop() {
                Pop::Waiting => {}
                Pop::Packet(p) => played.push(Some(p.seq)),
                Pop::Lost { .. } | Pop::Underrun | Pop::Dtx => played.push(None),
            }
        }
        played
    }

    #[test]
    fn a_steady_stream_measures_no_jitter_and_keeps_the_minimum_depth() {
        let mut jb = JitterBuffer::new();
        let played = run(&mut jb, 200, |_| 0);
        assert_eq!(jb.jitter_ms(), 0.0);
        // (The run's empty tail sets the loss memory; the measured part wants the minimum.)
        assert_eq!(jb.estimator.target_frames(), MIN_TARGET_FRAMES);
        assert_eq!(played.iter().flatten().count(), 200 - jb.counters().skipped as usize);
        assert_eq!(jb.counters().late, 0);
    }

    #[test]
    fn jittery_arrivals_raise_the_target_and_late_packets_wait_instead_of_dropping() {
        let mut jb = JitterBuffer::new();
        // Every 7th packet is held back 60 ms (3 ticks).
        let played = run(&mut jb, 300, |s| if s % 7 == 3 { 3 } else { 0 });
        assert!(jb.jitter_ms() > 1.0, "jitter {}", jb.jitter_ms());
        assert!(jb.target_frames() >= 4, "target {} frames for 60 ms spikes", jb.target_frames());
        let c = jb.counters();
        // Only the first spikes (before the depth grew) can be late.
        assert!(c.late <= 2, "{c:?}");
        assert!(c.underruns > 0, "the buffer grew by holding playout: {c:?}");
        // Played in order, never a duplicate.
        let seqs: Vec<u16> = played.iter().flatten().copied().collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(c.received, c.played + c.late + c.duplicates + c.skipped + jb.depth() as u64);
    }

    #[test]
    fn the_depth_shrinks_back_once_the_jitter_is_gone() {
        let mut jb = JitterBuffer::new();
        // 100 packets with 100 ms spikes, then 1000 calm ones.
        run(&mut jb, 1100, |s| if s < 100 && s % 10 == 5 { 5 } else { 0 });
        assert_eq!(jb.estimator.target_frames(), MIN_TARGET_FRAMES, "20 s after the last spike");
        assert!(jb.span_frames() <= 2, "depth {} after 20 s of calm", jb.span_frames());
        assert!(jb.counters().skipped > 0);
    }

    #[test]
    fn one_late_packet_costs_a_frame_of_delay_for_seconds_not_minutes() {
        let mut jb = JitterBuffer::new();
        // One packet a tick late (its arrival crossed a tick boundary), then 10 s of calm.
        run(&mut jb, 500, |s| u64::from(s == 50));
        assert_eq!(jb.estimator.target_frames(), MIN_TARGET_FRAMES, "peak {} ms, jitter {} ms", jb.estimator.peak_ms, jb.jitter_ms());
    }

    #[test]
    fn a_dtx_pause_does_not_make_later_packets_late() {
        let mut jb = JitterBuffer::new();
        for s in 0..5 {
            jb.push(&pkt(s), s as u64 * 20);
            assert!(!matches!(jb.pop(), Pop::Lost { .. }));
        }
        // 2 s without packets (sender DTX); the sequence continues at 5.
        for _ in 0..100 {
            assert!(matches!(jb.pop(), Pop::Underrun | Pop::Packet(_)));
        }
        jb.push(&pkt(5), 2100);
        assert_eq!(tick(&mut jb), Some(5));
        assert_eq!(jb.counters().late, 0);
    }

    fn dtx_pkt(seq: u16) -> RtpIn {
        RtpIn::new(seq, seq as u32 * 960, &[0x08]).unwrap()
    }

    #[test]
    fn a_dtx_pause_is_silence_not_loss_and_keeps_the_minimum_depth() {
        let mut jb = JitterBuffer::new();
        for s in 0..50 {
            jb.push(&pkt(s), s as u64 * 20);
            jb.pop();
        }
        // The sender enters DTX: one DTX packet, then 1 s of nothing; it resumes at the next
        // sequence number with a timestamp 1 s later.
        jb.push(&dtx_pkt(50), 1000);
        // Whatever is still buffered plays first, then the DTX packet.
        while matches!(jb.pop(), Pop::Packet(_)) {}
        for _ in 0..49 {
            assert!(matches!(jb.pop(), Pop::Dtx));
        }
        let resumed = RtpIn::new(51, 101 * 960, &[51, 1, 2]).unwrap();
        jb.push(&resumed, 2020);
        assert_eq!(tick(&mut jb), Some(51), "plays at the next tick: no frame of delay added");
        let c = jb.counters();
        assert_eq!((c.dtx, c.underruns, c.lost, c.late), (50, 0, 0, 0), "{c:?}");
        assert_eq!(jb.target_frames(), MIN_TARGET_FRAMES, "no loss memory after a pause");
        assert_eq!(c.received, c.played + c.skipped + 1, "every packet accounted for, the DTX packet as silence");
    }

    #[test]
    fn a_gap_after_a_dtx_packet_is_still_a_loss() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(1), 0);
        jb.push(&dtx_pkt(2), 0);
        assert_eq!(tick(&mut jb), Some(1));
        assert!(matches!(jb.pop(), Pop::Dtx));
        // The talk spurt resumes but its first packet (3) is lost: 4 and 5 are buffered.
        jb.push(&pkt(4), 80);
        jb.push(&pkt(5), 100);
        let mut ticks = 0;
        while tick(&mut jb) != Some(4) {
            ticks += 1;
            assert!(ticks < 5, "4 plays after the loss");
        }
        let c = jb.counters();
        assert_eq!((c.dtx, c.lost), (1, 1), "{c:?}");
    }

    #[test]
    fn without_a_dtx_packet_an_empty_buffer_is_an_underrun() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(1), 0);
        assert!(matches!(jb.pop(), Pop::Waiting));
        assert_eq!(tick(&mut jb), Some(1));
        assert!(matches!(jb.pop(), Pop::Underrun), "a sender that stops without a DTX packet may be late");
    }

    #[test]
    fn padding_only_packets_take_no_tick_and_keep_a_dtx_pause() {
        let mut jb = JitterBuffer::new();
        let padding = |seq: u16, ts_of: u16| RtpIn::new(seq, ts_of as u32 * 960, &[]).unwrap();
        // Mid-speech: 10 (audio), 11 (padding, 10's timestamp), 12 (audio).
        jb.push(&pkt(10), 0);
        jb.push(&padding(11, 10), 0);
        jb.push(&pkt(12), 20);
        assert_eq!(tick(&mut jb), Some(10));
        assert_eq!(tick(&mut jb), Some(12), "the padding packet is passed over in the same tick");
        // In a pause: a DTX packet, padding after it, then nothing: still the sender's silence.
        jb.push(&dtx_pkt(13), 40);
        jb.push(&padding(14, 13), 60);
        for _ in 0..10 {
            assert!(matches!(jb.pop(), Pop::Dtx));
        }
        let c = jb.counters();
        assert_eq!((c.padding, c.dtx, c.lost, c.underruns, c.played), (2, 10, 0, 0, 2), "{c:?}");
    }
}
