//! Where in the 20 ms tick a session's halves run: its inbound half right after its packets
//! usually arrive, its outbound half [`OUTBOUND_SLOTS`] later.
//! Owns: the per-slot arrival counts of one session and the choice of its inbound slot.
//! Must never: read a clock (the slot index is the input) or allocate.
//!
//! # Why
//! A worker used to run every session's inbound half at the same deadline, so a caller's packet
//! waited 0–20 ms for it depending on where in the tick the call's packets happen to arrive (a
//! fixed phase per call: one call always waited ≈ 3 ms, another ≈ 18). A call's packets keep
//! their phase (the sender's 20 ms clock), so the worker splits the tick into [`SLOTS`] slots of
//! 5 ms and runs each session in the slot after its packets have arrived: the wait is 0–5 ms.
//!
//! # How
//! At every slot the worker reports how many packets are queued for the session; the growth
//! since the last report is counted as arrivals in that slot. Every [`RETHINK_TICKS`] ticks the
//! session moves to the slot that minimizes the summed wait of what arrived, if that beats the
//! current slot by [`MIN_GAIN`] of a slot per packet and [`MIN_SAVING`] of the sum: arrival times wobble, and each move
//! changes one tick's length by 5–15 ms. A packet arriving in slot `s` waits
//! `(slot − s) mod SLOTS` slots, except one arriving in the slot right after the chosen one: it
//! missed its tick, and the jitter buffer, finding the frame due missing, grows by a frame for
//! every packet of the call for seconds. That costs [`LATE_SLOTS`], so a call whose packets
//! straddle a slot boundary (≈ 1 ms of jitter is enough) is served at the later slot.

/// Slots per 20 ms tick (5 ms each).
pub const SLOTS: u8 = 4;
/// The outbound half runs this many slots (10 ms) after the inbound half: tokio's call task
/// has that long to hand the agent's answer to a turn event to the worker.
pub const OUTBOUND_SLOTS: u8 = 2;
/// Ticks (1 s) of arrivals weighed before the slot is reconsidered.
pub const RETHINK_TICKS: u32 = 50;
/// What a packet that just missed its slot costs, in slots of waiting: it makes the jitter
/// buffer hold a frame more (20 ms) for the call's next few seconds, about 40 slots' worth of
/// its packets (a slot that leaves more than ≈ 2.5 % of arrivals just late is not chosen).
const LATE_SLOTS: u32 = 40;
/// A move must save at least this many slots per arrival on average (1.25 ms)…
const MIN_GAIN: f32 = 0.25;
/// …and cut the summed wait by this fraction: arrivals spread over the whole tick (no slot is
/// better) make the costs differ by a late packet or two, which is noise.
const MIN_SAVING: f32 = 0.25;
/// Arrivals needed in a window before anything is decided (half of a 20 ms stream's).
const MIN_ARRIVALS: u32 = RETHINK_TICKS / 2;

#[derive(Clone, Debug)]
pub struct TickPhase {
    inbound: u8,
    arrivals: [u32; SLOTS as usize],
    /// Packets queued at the last report (the inbound half empties the queue).
    queued: usize,
    ticks: u32,
}

impl TickPhase {
    pub fn new(inbound: u8) -> Self {
        TickPhase { inbound: inbound % SLOTS, arrivals: [0; SLOTS as usize], queued: 0, ticks: 0 }
    }

    pub fn inbound_slot(&self) -> u8 {
        self.inbound
    }

    pub fn outbound_slot(&self) -> u8 {
        (self.inbound + OUTBOUND_SLOTS) % SLOTS
    }

    /// At `slot`, `queued` packets wait for the session (before its inbound half, if this is
    /// its slot).
    pub fn observe(&mut self, slot: u8, queued: usize) {
        let arrived = queued.saturating_sub(self.queued);
        self.arrivals[(slot % SLOTS) as usize] += arrived as u32;
        self.queued = queued;
    }

    /// The inbound half ran and took every queued packet.
    pub fn drained(&mut self) {
        self.queued = 0;
    }

    /// After the outbound half (the tick is complete, so the next inbound slot may move):
    /// returns true if it moved.
    pub fn tick_done(&mut self) -> bool {
        self.ticks += 1;
        if self.ticks < RETHINK_TICKS {
            return false;
        }
        self.ticks = 0;
        let total: u32 = self.arrivals.iter().sum();
        let arrivals = std::mem::take(&mut self.arrivals);
        if total < MIN_ARRIVALS {
            return false;
        }
        let cost = |slot: u8| -> u32 {
            let wait = |s: u8| if s == (slot + 1) % SLOTS { LATE_SLOTS } else { u32::from((slot + SLOTS - s) % SLOTS) };
            arrivals.iter().zip(0u8..).map(|(&n, s)| n * wait(s)).sum()
        };
        let Some(best) = (0..SLOTS).min_by_key(|&s| (cost(s), (s + SLOTS - self.inbound) % SLOTS)) else {
            return false;
        };
        let (now, then) = (cost(self.inbound), cost(best));
        let saved = now.saturating_sub(then) as f32 / total as f32;
        if best != self.inbound && saved >= MIN_GAIN && then as f32 <= now as f32 * (1.0 - MIN_SAVING) {
            self.inbound = best;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `ticks` ticks of a worker for a session whose packet arrives in `arrive(tick)`'s
    /// slot; returns the inbound slot at the end and the mean wait in slots.
    fn run(phase: &mut TickPhase, ticks: u32, arrive: impl Fn(u32) -> u8) -> f32 {
        let mut queued = 0;
        let mut waited = 0u32;
        let mut arrived_at = None;
        let mut awaiting_inbound = true;
        let mut served = 0;
        for tick in 0..ticks {
            for slot in 0..SLOTS {
                if arrive(tick) == slot {
                    queued += 1;
                    arrived_at.get_or_insert(tick * SLOTS as u32 + slot as u32);
                }
                phase.observe(slot, queued);
                if !awaiting_inbound && slot == phase.outbound_slot() {
                    awaiting_inbound = true;
                    phase.tick_done();
                }
                if awaiting_inbound && slot == phase.inbound_slot() {
                    if let Some(at) = arrived_at.take() {
                        waited += tick * SLOTS as u32 + slot as u32 - at;
                        served += 1;
                    }
                    queued = 0;
                    phase.drained();
                    awaiting_inbound = false;
                }
            }
        }
        waited as f32 / served.max(1) as f32
    }

    #[test]
    fn a_steady_call_moves_to_the_slot_its_packets_arrive_in() {
        for arrival in 0..SLOTS {
            let mut phase = TickPhase::new(0);
            run(&mut phase, 2 * RETHINK_TICKS, |_| arrival);
            assert_eq!(phase.inbound_slot(), arrival, "packets arriving in slot {arrival}");
            let waited = run(&mut phase, RETHINK_TICKS, |_| arrival);
            assert_eq!(waited, 0.0, "once moved, a packet waits for no later slot");
        }
    }

    #[test]
    fn arrivals_split_between_two_slots_take_the_later_one() {
        // Jitter around a slot boundary: slot 1 or 2. Serving at 1 would leave half the
        // packets a whole tick late; at 2 the early half waits one slot.
        let mut phase = TickPhase::new(0);
        run(&mut phase, 2 * RETHINK_TICKS, |t| 1 + (t % 2) as u8);
        assert_eq!(phase.inbound_slot(), 2);
        assert_eq!(phase.outbound_slot(), 0);
    }

    #[test]
    fn a_few_stragglers_just_after_the_slot_move_the_session_to_theirs() {
        // 1 packet in 20 arrives 5 ms later than the rest: serving them at slot 1 would leave
        // the jitter buffer short of a frame once a second.
        let mut phase = TickPhase::new(1);
        run(&mut phase, 2 * RETHINK_TICKS, |t| if t % 20 == 7 { 2 } else { 1 });
        assert_eq!(phase.inbound_slot(), 2);
    }

    #[test]
    fn a_silent_session_or_a_small_gain_does_not_move() {
        let mut phase = TickPhase::new(2);
        run(&mut phase, 3 * RETHINK_TICKS, |_| SLOTS); // never arrives
        assert_eq!(phase.inbound_slot(), 2);
        // Arrivals all over the tick: no slot is clearly better.
        let mut phase = TickPhase::new(3);
        run(&mut phase, 3 * RETHINK_TICKS, |t| (t % 4) as u8);
        assert_eq!(phase.inbound_slot(), 3);
    }

    #[test]
    fn bursts_count_each_packet() {
        let mut phase = TickPhase::new(0);
        phase.observe(1, 3);
        phase.observe(2, 3);
        phase.observe(3, 5);
        assert_eq!(phase.arrivals, [0, 3, 0, 2]);
        phase.drained();
        phase.observe(0, 1);
        assert_eq!(phase.arrivals, [1, 3, 0, 2]);
    }
}
