//! `SessionStats`: per-session counters written by the audio worker, read by anyone.
//! Owns: the counter set. Must never: lock or allocate (plain relaxed atomics; readers get a
//! consistent-enough snapshot, not a transaction).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters of one session since it was created. Shared as `Arc<SessionStats>`.
        #[derive(Debug, Default)]
        pub struct SessionStats {
            $($(#[$doc])* pub(crate) $name: AtomicU64,)*
        }

        /// A plain copy of [`SessionStats`] at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl SessionStats {
            $($(#[$doc])* pub fn $name(&self) -> u64 { self.$name.load(Relaxed) })*

            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Relaxed),)* }
            }

            /// Overwrites every counter with the snapshot's (stats carried over; tests of what
            /// reads them).
            pub fn restore(&self, snapshot: &StatsSnapshot) {
                $(self.$name.store(snapshot.$name, Relaxed);)*
            }
        }

        impl StatsSnapshot {
            /// (name, value) of every counter, for exporters.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }

            /// Adds another session's counters (for totals across sessions).
            pub fn add(&mut self, other: &StatsSnapshot) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// RTP payloads taken from the ingress ring.
    packets_in,
    /// Opus packets decoded (not counting PLC).
    frames_decoded,
    /// Inbound frames of the caller's DTX silence: a DTX packet or the pause after one, neither
    /// decoded nor analysed (see `jitter`).
    dtx_frames,
    /// Frames synthesized instead of decoded from their own packet: `concealed + recovered`.
    plc_frames,
    /// Frames concealed (PLC, or fading repetition for G.711): lost, late or corrupt packets.
    concealed,
    /// Lost frames rebuilt from the next packet's in-band FEC (Opus).
    recovered,
    /// Sequence numbers never played: missing at playout time while later packets were here.
    lost,
    /// Ticks the jitter buffer held playout to grow its depth (each one also concealed).
    underruns,
    /// RFC 3550 interarrival jitter estimate, ms (rounded).
    jitter_ms,
    /// The jitter buffer's current target depth, ms.
    jitter_target_ms,
    /// Packets that arrived after their playout time.
    late,
    /// Packets received twice.
    duplicates,
    /// Packets without payload (RTP padding only, e.g. a browser's bandwidth probes): passed
    /// over, they take no tick.
    padding_packets,
    /// Packets skipped to bound the jitter delay or flushed by a sequence jump.
    jitter_skipped,
    /// Opus decode or encode failures (the frame is replaced by PLC or silence).
    codec_errors,
    /// Frames dropped because an output ring (egress, uplink) was full.
    ring_overflows,
    /// Packets pushed to egress (voiced + silence).
    frames_out,
    /// Of those, packets carrying agent speech.
    voiced_out,
    /// Agent frames dropped because their response was cancelled or cleared.
    agent_frames_dropped,
    /// Worker ticks run for this session.
    ticks,
    /// Inbound frames the echo guard judged to be the line's echo of the agent (phone calls).
    echo_frames,
    /// The 5 ms slot of the worker's 20 ms tick (0..4) the session's inbound half runs in: where
    /// its packets arrive (`tick_phase`). Its outbound half runs `OUTBOUND_SLOTS` later.
    tick_slot,
    /// 1 + the slot the session's frames go out in while the agent's response runs ahead of
    /// the outbound half (`SessionChain::early_frame`); 0 while they go at the outbound half.
    early_slot,
    /// Agent responses whose first frame went out before the outbound half (early).
    early_starts,
    /// Events (turn, playback, commit) handed to tokio on the uplink ring.
    uplink_events,
}

impl SessionStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // Only the worker writes, so load+store is enough and avoids a locked RMW per tick.
        counter.store(counter.load(Relaxed) + n, Relaxed);
    }

    pub(crate) fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Relaxed);
    }
}
