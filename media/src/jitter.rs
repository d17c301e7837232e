//! Inbound jitter buffer: orders Opus packets by RTP sequence number and hands out exactly one
//! packet (or a loss) per 20 ms tick once playout has started.
//! Owns: reordering, duplicate and late detection, the playout point, and their counters.
//! Must never: allocate after `new`, decode audio (the caller runs Opus PLC/FEC on `Lost`), or
//! read a clock (each `pop` *is* one tick).

use crate::RtpIn;

/// Slots in the ring, indexed by `seq % JITTER_CAPACITY`: 32 packets = 640 ms.
pub const JITTER_CAPACITY: usize = 32;
/// Fixed target depth: playout starts once 2 packets (40 ms) are buffered, or 2 ticks after the
/// first packet, whichever comes first.
pub const JITTER_TARGET_FRAMES: usize = 2;
/// When the newest packet is this many frames (200 ms) ahead of the playout point — the sender's
/// clock runs fast or a burst arrived — the oldest packets are skipped to bound the delay.
const MAX_DEPTH_FRAMES: u16 = 10;

/// What one tick gets from the buffer.
#[derive(Clone, Copy, Debug)]
pub enum Pop<'a> {
    /// No packet seen yet, or still filling to the target depth: produce no inbound audio.
    Waiting,
    /// The packet due now.
    Packet(&'a RtpIn),
    /// The packet due now is missing. `next` is the following packet if it is already here, for
    /// Opus in-band FEC; otherwise conceal (PLC).
    Lost { next: Option<&'a RtpIn> },
}

/// Counters since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterCounters {
    pub received: u64,
    pub played: u64,
    pub lost: u64,
    /// Arrived after their playout time.
    pub late: u64,
    pub duplicates: u64,
    /// Skipped to bound the delay, or flushed by a sequence jump.
    pub skipped: u64,
    /// Sequence jumps larger than the buffer (stream restart): playout moved to the new packet.
    pub resyncs: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    present: bool,
    packet: RtpIn,
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
    counters: JitterCounters,
}

impl Default for JitterBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl JitterBuffer {
    pub fn new() -> Self {
        let empty = Slot { present: false, packet: RtpIn { seq: 0, timestamp: 0, len: 0, payload: [0; crate::MAX_OPUS_PACKET] } };
        JitterBuffer {
            slots: vec![empty; JITTER_CAPACITY],
            seen_first: false,
            playing: false,
            wait_ticks: 0,
            next_seq: 0,
            highest_seq: 0,
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

    /// Stores one arrived packet.
    pub fn push(&mut self, packet: &RtpIn) {
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
        }
        if (seq.wrapping_sub(self.highest_seq) as i16) > 0 {
            self.highest_seq = seq;
        }
        let slot = &mut self.slots[seq as usize % JITTER_CAPACITY];
        if slot.present && slot.packet.seq == seq {
            self.counters.duplicates += 1;
            return;
        }
        slot.present = true;
        slot.packet = *packet;
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
        while self.highest_seq.wrapping_sub(self.next_seq) as i16 >= MAX_DEPTH_FRAMES as i16 {
            let slot = &mut self.slots[self.next_seq as usize % JITTER_CAPACITY];
            if slot.present && slot.packet.seq == self.next_seq {
                slot.present = false;
                self.counters.skipped += 1;
            }
            self.next_seq = self.next_seq.wrapping_add(1);
        }
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let index = seq as usize % JITTER_CAPACITY;
        if self.slots[index].present && self.slots[index].packet.seq == seq {
            self.slots[index].present = false;
            self.counters.played += 1;
            return Pop::Packet(&self.slots[index].packet);
        }
        self.counters.lost += 1;
        let next = &self.slots[self.next_seq as usize % JITTER_CAPACITY];
        Pop::Lost { next: (next.present && next.packet.seq == self.next_seq).then_some(&next.packet) }
    }

    /// Forget everything except the counters (new stream).
    pub fn reset(&mut self) {
        self.slots.iter_mut().for_each(|s| s.present = false);
        self.seen_first = false;
        self.playing = false;
        self.wait_ticks = 0;
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
            Pop::Lost { .. } => None,
            Pop::Waiting => panic!("still waiting"),
        }
    }

    #[test]
    fn waits_for_the_target_depth_then_plays_in_order() {
        let mut jb = JitterBuffer::new();
        assert!(matches!(jb.pop(), Pop::Waiting));
        jb.push(&pkt(100));
        assert!(matches!(jb.pop(), Pop::Waiting));
        jb.push(&pkt(101));
        assert_eq!(tick(&mut jb), Some(100));
        jb.push(&pkt(102));
        assert_eq!(tick(&mut jb), Some(101));
        assert_eq!(tick(&mut jb), Some(102));
    }

    #[test]
    fn playout_starts_after_two_ticks_even_with_one_packet() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(7));
        assert!(matches!(jb.pop(), Pop::Waiting));
        assert_eq!(tick(&mut jb), Some(7));
        assert!(jb.is_playing());
    }

    #[test]
    fn reorders_packets_by_sequence_number() {
        let mut jb = JitterBuffer::new();
        for seq in [10, 12, 11, 14, 13] {
            jb.push(&pkt(seq));
        }
        let played: Vec<_> = (0..5).map(|_| tick(&mut jb)).collect();
        assert_eq!(played, vec![Some(10), Some(11), Some(12), Some(13), Some(14)]);
    }

    #[test]
    fn an_earlier_packet_before_playout_moves_the_start_back() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(21));
        jb.push(&pkt(20));
        assert_eq!(tick(&mut jb), Some(20));
        assert_eq!(tick(&mut jb), Some(21));
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut jb = JitterBuffer::new();
        for seq in [1, 1, 2, 2, 2] {
            jb.push(&pkt(seq));
        }
        assert_eq!(jb.counters().duplicates, 3);
        assert_eq!(tick(&mut jb), Some(1));
        assert_eq!(tick(&mut jb), Some(2));
    }

    #[test]
    fn late_packets_are_dropped_and_counted() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(1));
        jb.push(&pkt(3));
        assert_eq!(tick(&mut jb), Some(1));
        assert_eq!(tick(&mut jb), None); // 2 is missing at its playout time
        jb.push(&pkt(2)); // arrives too late
        assert_eq!(jb.counters().late, 1);
        assert_eq!(tick(&mut jb), Some(3));
    }

    #[test]
    fn losses_are_reported_with_the_next_packet_for_fec() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(5));
        jb.push(&pkt(7));
        assert_eq!(tick(&mut jb), Some(5));
        match jb.pop() {
            Pop::Lost { next: Some(next) } => assert_eq!(next.seq, 7),
            other => panic!("expected loss with FEC source, got {other:?}"),
        }
        assert_eq!(tick(&mut jb), Some(7));
        assert_eq!(tick(&mut jb), None);
        let c = jb.counters();
        assert_eq!((c.played, c.lost), (2, 2));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut jb = JitterBuffer::new();
        for seq in [65534, 65535, 0, 1] {
            jb.push(&pkt(seq));
        }
        let played: Vec<_> = (0..4).map(|_| tick(&mut jb)).collect();
        assert_eq!(played, vec![Some(65534), Some(65535), Some(0), Some(1)]);
    }

    #[test]
    fn a_big_jump_resyncs_to_the_new_stream() {
        let mut jb = JitterBuffer::new();
        jb.push(&pkt(1));
        jb.push(&pkt(2));
        assert_eq!(tick(&mut jb), Some(1));
        jb.push(&pkt(5000));
        assert_eq!(jb.counters().resyncs, 1);
        assert_eq!(tick(&mut jb), Some(5000));
    }

    #[test]
    fn a_burst_far_ahead_is_skipped_to_bound_the_delay() {
        let mut jb = JitterBuffer::new();
        for seq in 0..20 {
            jb.push(&pkt(seq));
        }
        // Playout jumps so that at most MAX_DEPTH_FRAMES remain ahead.
        assert_eq!(tick(&mut jb), Some(19 - MAX_DEPTH_FRAMES + 1));
        assert!(jb.counters().skipped > 0);
    }
}
