//! One slot: an outgoing audio stream of a subscriber (one receiving m-line of its offer) that
//! carries whichever publisher the room puts on it, forwarded without decoding.
//! Owns: the RTP header rewrite (SSRC, sequence number, timestamp, marker) that keeps the slot
//! one continuous stream across speaker switches. Must never: touch the payload, allocate, read
//! the clock (arrival time is an input), or decide who is on the slot (the room does).
//!
//! How a switch is made continuous: the slot keeps its own SSRC, and the first packet of a new
//! source is numbered `last + 1` with a timestamp advanced by the wall time since the slot's
//! last packet (at least one 20 ms frame). Offsets from the source's numbering are fixed from
//! then on, so the source's own gaps (loss) and timestamp jumps (silence, DTX) pass through as
//! they are. A jitter buffer therefore sees neither a sequence gap nor a timestamp jump at a
//! switch, only a talkspurt start (marker bit set), where it may adapt its playout delay.
//! Packets of the new source older than its first forwarded one would collide with the previous
//! speaker's numbers: they are dropped and counted.

use std::time::{Duration, Instant};

/// RTP clock of Opus (RFC 7587): always 48 kHz, whatever the audio bandwidth.
pub const OPUS_CLOCK_HZ: u64 = 48_000;
/// One 20 ms frame in RTP ticks: the least a switch advances the timestamp.
const MIN_SWITCH_TICKS: u32 = 960;
/// How far past its first packet a source must get before the before-the-switch check stops
/// (≈ 20 s of packets). Without an end, serial-number order would call every packet "before"
/// once the source's numbering has moved half its range (≈ 11 min) on.
const SWITCH_GUARD_PACKETS: u16 = 1_000;
/// Wall time beyond this between two sources is forwarded as this (a timestamp gap of minutes
/// tells a receiver nothing more than one of seconds, and the tick count must fit `u32`).
const MAX_SWITCH_GAP: Duration = Duration::from_secs(60);

/// A publisher's track, as the room numbers it: small and `Copy`, so the per-packet path never
/// clones an identity string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey(pub u32);

/// The header fields of a publisher's packet that a slot rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceHeader {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
}

/// The header to send on the slot's stream (the payload goes out unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHeader {
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
}

/// Why a packet offered to a slot was not forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The slot carries another track (or none): the normal case for most packets.
    NotOnSlot,
    /// Older than the first packet forwarded from this source after a switch.
    BeforeSwitch,
}

/// The source currently mapped onto the slot's numbering.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    track: TrackKey,
    /// The publisher's SSRC at the switch: a new SSRC (the publisher restarted its sender) is a
    /// new mapping, like a switch.
    ssrc: u32,
    first_seq: u16,
    /// Still dropping packets older than `first_seq` (until the source is well past it).
    guarding: bool,
    seq_offset: u16,
    ts_offset: u32,
}

/// The newest packet the slot sent.
#[derive(Clone, Copy, Debug)]
struct Sent {
    seq: u16,
    timestamp: u32,
    at: Instant,
}

/// Forwarding counters of one slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounters {
    pub forwarded: u64,
    /// Sources mapped onto the slot (the first one included).
    pub switches: u64,
    pub dropped_before_switch: u64,
}

#[derive(Debug)]
pub struct Slot {
    ssrc: u32,
    /// The track the room put on the slot; its packets are mapped from the first one that arrives.
    assigned: Option<TrackKey>,
    mapping: Option<Mapping>,
    last: Option<Sent>,
    /// Numbering of the slot's very first packet (random in production, fixed in tests).
    initial_seq: u16,
    initial_timestamp: u32,
    pub counters: SlotCounters,
}

impl Slot {
    /// A slot with its own SSRC and starting numbers (RFC 3550 §5.1 asks for random ones).
    pub fn new(ssrc: u32, initial_seq: u16, initial_timestamp: u32) -> Self {
        Slot { ssrc, assigned: None, mapping: None, last: None, initial_seq, initial_timestamp, counters: SlotCounters::default() }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    pub fn assigned(&self) -> Option<TrackKey> {
        self.assigned
    }

    /// Puts `track` on the slot (or clears it). Reassigning the current track changes nothing;
    /// any other change maps the next packet as a switch.
    pub fn assign(&mut self, track: Option<TrackKey>) {
        if self.assigned != track {
            self.assigned = track;
            self.mapping = None;
        }
    }

    /// The header to forward `header` with, if `track` is on this slot.
    pub fn forward(&mut self, track: TrackKey, header: SourceHeader, now: Instant) -> Result<SlotHeader, Skip> {
        if self.assigned != Some(track) {
            return Err(Skip::NotOnSlot);
        }
        let (mut mapping, switched) = match self.mapping {
            Some(m) if m.ssrc == header.ssrc => (m, false),
            _ => {
                self.counters.switches += 1;
                (self.map_switch(track, header, now), true)
            }
        };
        if mapping.guarding {
            // A fresh mapping never lands here: its first packet is `first_seq` itself.
            if seq_before(header.seq, mapping.first_seq) {
                self.counters.dropped_before_switch += 1;
                return Err(Skip::BeforeSwitch);
            }
            mapping.guarding = header.seq.wrapping_sub(mapping.first_seq) < SWITCH_GUARD_PACKETS;
        }
        self.mapping = Some(mapping);
        let out = SlotHeader {
            ssrc: self.ssrc,
            seq: header.seq.wrapping_add(mapping.seq_offset),
            timestamp: header.timestamp.wrapping_add(mapping.ts_offset),
            marker: header.marker || switched,
        };
        // Reordered packets go out with their own numbers but do not move the slot's head.
        if self.last.is_none_or(|l| seq_before(l.seq, out.seq)) {
            self.last = Some(Sent { seq: out.seq, timestamp: out.timestamp, at: now });
        }
        self.counters.forwarded += 1;
        Ok(out)
    }

    /// Offsets that continue the slot's numbering from its last packet with `header`.
    fn map_switch(&self, track: TrackKey, header: SourceHeader, now: Instant) -> Mapping {
        let (seq, timestamp) = match self.last {
            None => (self.initial_seq, self.initial_timestamp),
            Some(last) => {
                let gap = now.saturating_duration_since(last.at).min(MAX_SWITCH_GAP);
                let ticks = (gap.as_micros() as u64 * OPUS_CLOCK_HZ / 1_000_000) as u32;
                (last.seq.wrapping_add(1), last.timestamp.wrapping_add(ticks.max(MIN_SWITCH_TICKS)))
            }
        };
        Mapping {
            track,
            ssrc: header.ssrc,
            first_seq: header.seq,
            guarding: true,
            seq_offset: seq.wrapping_sub(header.seq),
            ts_offset: timestamp.wrapping_sub(header.timestamp),
        }
    }

    /// The track whose packets the slot is numbering now (after its first packet arrived).
    pub fn mapped(&self) -> Option<TrackKey> {
        self.mapping.map(|m| m.track)
    }
}

/// RFC 3550 serial-number order: `a` comes before `b`, modulo 2^16.
fn seq_before(a: u16, b: u16) -> bool {
    (a.wrapping_sub(b) as i16) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TrackKey = TrackKey(1);
    const B: TrackKey = TrackKey(2);

    fn pkt(ssrc: u32, seq: u16, timestamp: u32) -> SourceHeader {
        SourceHeader { ssrc, seq, timestamp, marker: false }
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_switch_continues_numbering_and_advances_time_by_the_gap() {
        let t0 = Instant::now();
        let mut slot = Slot::new(0xCAFE, 100, 5_000);
        slot.assign(Some(A));
        // A talks for three frames, with its own (arbitrary, wrapping) numbering.
        for i in 0..3u16 {
            let h =
                slot.forward(A, pkt(0xA, 65_534u16.wrapping_add(i), 4_000_000_000u32.wrapping_add(960 * i as u32)), ms(t0, 20 * i as u64));
            let h = h.unwrap();
            assert_eq!((h.ssrc, h.seq, h.timestamp, h.marker), (0xCAFE, 100 + i, 5_000 + 960 * i as u32, i == 0));
        }
        // B takes the slot; its first packet arrives 130 ms after A's last.
        slot.assign(Some(B));
        assert_eq!(slot.forward(A, pkt(0xA, 1, 4_000_002_880), ms(t0, 60)), Err(Skip::NotOnSlot));
        let h = slot.forward(B, pkt(0xB, 7, 123), ms(t0, 170)).unwrap();
        assert_eq!((h.seq, h.timestamp, h.marker), (103, 5_000 + 2 * 960 + 130 * 48, true));
        // B's own loss and silence pass through as gaps of the same size.
        let h = slot.forward(B, pkt(0xB, 9, 123 + 960 * 10), ms(t0, 380)).unwrap();
        assert_eq!((h.seq, h.timestamp, h.marker), (105, 5_000 + 2 * 960 + 130 * 48 + 9_600, false));
        assert_eq!(slot.counters, SlotCounters { forwarded: 5, switches: 2, dropped_before_switch: 0 });
    }

    #[test]
    fn a_quick_switch_still_moves_time_forward_one_frame() {
        let t0 = Instant::now();
        let mut slot = Slot::new(1, 0, 0);
        slot.assign(Some(A));
        slot.forward(A, pkt(0xA, 10, 10), t0).unwrap();
        slot.assign(Some(B));
        let h = slot.forward(B, pkt(0xB, 50, 50), ms(t0, 2)).unwrap();
        assert_eq!((h.seq, h.timestamp), (1, 960));
    }

    #[test]
    fn packets_from_before_the_switch_are_dropped_reordered_ones_after_it_pass() {
        let t0 = Instant::now();
        let mut slot = Slot::new(1, 0, 0);
        slot.assign(Some(A));
        let first = slot.forward(A, pkt(0xA, 500, 0), t0).unwrap();
        assert_eq!(slot.forward(A, pkt(0xA, 499, 0), t0), Err(Skip::BeforeSwitch));
        let late = slot.forward(A, pkt(0xA, 502, 1920), ms(t0, 40)).unwrap();
        let reordered = slot.forward(A, pkt(0xA, 501, 960), ms(t0, 41)).unwrap();
        assert_eq!((first.seq, reordered.seq, late.seq), (0, 1, 2));
        // The reordered packet did not move the head: the next switch continues after 2.
        slot.assign(Some(B));
        assert_eq!(slot.forward(B, pkt(0xB, 0, 0), ms(t0, 60)).unwrap().seq, 3);
        assert_eq!(slot.counters.dropped_before_switch, 1);
    }

    #[test]
    fn a_long_stream_wraps_its_numbers_without_drops() {
        let t0 = Instant::now();
        let mut slot = Slot::new(1, 0, 0);
        slot.assign(Some(A));
        // 70 000 packets (23 min): the source's sequence numbers wrap, and pass "half a range
        // before" the first one, which a plain serial-number check would drop.
        for i in 0..70_000u32 {
            let h = slot.forward(A, pkt(0xA, (1_000 + i) as u16, i.wrapping_mul(960)), ms(t0, 20 * i as u64)).unwrap();
            assert_eq!((h.seq, h.timestamp), (i as u16, i.wrapping_mul(960)), "packet {i}");
        }
        assert_eq!(slot.counters.forwarded, 70_000);
    }

    #[test]
    fn a_publisher_restarting_its_sender_is_a_switch() {
        let t0 = Instant::now();
        let mut slot = Slot::new(1, 0, 0);
        slot.assign(Some(A));
        slot.forward(A, pkt(0xA, 40_000, 7), t0).unwrap();
        let h = slot.forward(A, pkt(0xA2, 3, 99), ms(t0, 20)).unwrap();
        assert_eq!((h.seq, h.timestamp, h.marker), (1, 960, true));
        assert_eq!(slot.counters.switches, 2);
    }

    #[test]
    fn reassigning_the_same_track_keeps_the_mapping_and_an_empty_slot_forwards_nothing() {
        let t0 = Instant::now();
        let mut slot = Slot::new(1, 0, 0);
        assert_eq!(slot.forward(A, pkt(0xA, 1, 1), t0), Err(Skip::NotOnSlot));
        slot.assign(Some(A));
        slot.forward(A, pkt(0xA, 1, 1), t0).unwrap();
        slot.assign(Some(A));
        assert!(!slot.forward(A, pkt(0xA, 2, 961), ms(t0, 20)).unwrap().marker);
        slot.assign(None);
        assert_eq!(slot.forward(A, pkt(0xA, 3, 1921), ms(t0, 40)), Err(Skip::NotOnSlot));
        assert_eq!(slot.mapped(), None);
        // Back after a long absence: the timestamp gap is capped.
        slot.assign(Some(A));
        let h = slot.forward(A, pkt(0xA, 9_000, 5), ms(t0, 3_600_000)).unwrap();
        assert_eq!((h.seq, h.timestamp), (2, 960 + 60 * 48_000));
    }
}
