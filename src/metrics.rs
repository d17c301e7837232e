//! Process-wide counters, rendered in Prometheus text format at `/metrics`. Plain atomics:
//! updated from tokio tasks per packet, so no locks and no allocation on update.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::sync::Arc;

use voxrelay_media::{MediaEvent, StatsSnapshot, TICK_BUCKETS_US, WorkerStats};
use voxrelay_signaling::EndReason;
use voxrelay_signaling::room_wire::RoomCounters;

#[derive(Default)]
pub struct Metrics {
    pub calls_started: AtomicU64,
    pub calls_ended: AtomicU64,
    /// Ended calls by [`EndReason`] (index order).
    calls_ended_by: [AtomicU64; EndReason::ALL.len()],
    pub calls_rejected: AtomicU64,
    pub rtp_packets_in: AtomicU64,
    pub rtp_bytes_in: AtomicU64,
    /// Inbound packets that carried an RFC 6464 audio level (negotiated and sent by the peer).
    pub rtp_audio_levels_in: AtomicU64,
    pub rtp_packets_out: AtomicU64,
    pub rtp_bytes_out: AtomicU64,
    pub speech_started: AtomicU64,
    pub turns_committed: AtomicU64,
    pub playbacks_cleared: AtomicU64,
    pub ring_overflows: AtomicU64,
    /// Phone stream messages refused (malformed, unknown, out of place).
    pub phone_bad_messages: AtomicU64,
    /// Client events dropped over a call's event rate (`signaling::limits::EventRate`).
    pub client_events_limited: AtomicU64,
    /// Response created → first agent audio frame (non-cumulative bucket counts, then +Inf).
    agent_latency_buckets: [AtomicU64; AGENT_LATENCY_BUCKETS_MS.len() + 1],
    agent_latency_sum_us: AtomicU64,
    /// The rooms' forwarding, summed over every room (each room adds its deltas every tick).
    pub rooms: RoomTotals,
}

/// Room counters summed over all rooms, live and closed.
#[derive(Default)]
pub struct RoomTotals {
    pub participants_joined: AtomicU64,
    /// Participants in rooms now (each room reports its change in size).
    participants: std::sync::atomic::AtomicI64,
    packets_in: AtomicU64,
    packets_forwarded: AtomicU64,
    bytes_forwarded: AtomicU64,
    slot_switches: AtomicU64,
    dropped_not_publishing: AtomicU64,
    dropped_rate_limited: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_before_switch: AtomicU64,
    dropped_agent_tap: AtomicU64,
    /// Packets dropped at a full room queue (the room task fell behind).
    pub dropped_room_queue: AtomicU64,
}

impl RoomTotals {
    /// Adds what a room counted since its last report (`now` - `before`).
    pub fn add(&self, now: &RoomCounters, before: &RoomCounters, size_change: i64) {
        if size_change != 0 {
            self.participants.fetch_add(size_change, Relaxed);
        }
        let pairs = [
            (&self.packets_in, now.packets_in - before.packets_in),
            (&self.packets_forwarded, now.packets_forwarded - before.packets_forwarded),
            (&self.bytes_forwarded, now.bytes_forwarded - before.bytes_forwarded),
            (&self.slot_switches, now.slot_switches - before.slot_switches),
            (&self.dropped_not_publishing, now.dropped_not_publishing - before.dropped_not_publishing),
            (&self.dropped_rate_limited, now.dropped_rate_limited - before.dropped_rate_limited),
            (&self.dropped_queue_full, now.dropped_queue_full - before.dropped_queue_full),
            (&self.dropped_before_switch, now.dropped_before_switch - before.dropped_before_switch),
            (&self.dropped_agent_tap, now.dropped_agent_tap - before.dropped_agent_tap),
        ];
        for (counter, delta) in pairs {
            if delta > 0 {
                counter.fetch_add(delta, Relaxed);
            }
        }
    }

    /// Prometheus text; `rooms` is the live room count.
    pub fn render(&self, rooms: usize) -> String {
        let mut out = String::with_capacity(1024);
        let live = self.participants.load(Relaxed).max(0);
        let _ = writeln!(out, "# HELP voxrelay_rooms Live rooms.\n# TYPE voxrelay_rooms gauge\nvoxrelay_rooms {rooms}");
        let _ = writeln!(
            out,
            "# HELP voxrelay_room_participants Participants in rooms.\n# TYPE voxrelay_room_participants gauge\nvoxrelay_room_participants {live}"
        );
        let counters: [(&str, &str, &AtomicU64); 5] = [
            ("voxrelay_room_participants_joined_total", "Room joins accepted.", &self.participants_joined),
            ("voxrelay_room_packets_in_total", "Packets received from room publishers.", &self.packets_in),
            (
                "voxrelay_room_packets_forwarded_total",
                "Packets sent to room subscribers (one per slot carrying them).",
                &self.packets_forwarded,
            ),
            ("voxrelay_room_bytes_forwarded_total", "Payload bytes sent to room subscribers.", &self.bytes_forwarded),
            ("voxrelay_room_slot_switches_total", "Slot assignments changed (a speaker put on or taken off a slot).", &self.slot_switches),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
        let name = "voxrelay_room_packets_dropped_total";
        let _ = writeln!(out, "# HELP {name} Room packets not forwarded, by reason.\n# TYPE {name} counter");
        for (reason, v) in [
            ("not_publishing", &self.dropped_not_publishing),
            ("rate_limited", &self.dropped_rate_limited),
            ("subscriber_queue_full", &self.dropped_queue_full),
            ("before_switch", &self.dropped_before_switch),
            ("room_queue_full", &self.dropped_room_queue),
            ("agent_tap_full", &self.dropped_agent_tap),
        ] {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", v.load(Relaxed));
        }
        out
    }
}

/// Upper bounds (ms) of the agent latency histogram: the echo agent answers in well under a
/// millisecond; network providers take hundreds.
pub const AGENT_LATENCY_BUCKETS_MS: [u64; 10] = [1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500];

impl Metrics {
    /// An inbound packet carried an RFC 6464 audio level.
    pub fn audio_level_in(&self) {
        self.rtp_audio_levels_in.fetch_add(1, Relaxed);
    }

    pub fn rtp_in(&self, bytes: u64) {
        self.rtp_packets_in.fetch_add(1, Relaxed);
        self.rtp_bytes_in.fetch_add(bytes, Relaxed);
    }

    pub fn rtp_out(&self, bytes: u64) {
        self.rtp_packets_out.fetch_add(1, Relaxed);
        self.rtp_bytes_out.fetch_add(bytes, Relaxed);
    }

    pub fn agent_latency(&self, d: std::time::Duration) {
        let ms = d.as_millis() as u64;
        let i = AGENT_LATENCY_BUCKETS_MS.iter().position(|&b| ms <= b).unwrap_or(AGENT_LATENCY_BUCKETS_MS.len());
        self.agent_latency_buckets[i].fetch_add(1, Relaxed);
        self.agent_latency_sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// A tokio-side push into a full ring (the frame or command was dropped, never waited for).
    pub fn ring_overflow(&self) {
        self.ring_overflows.fetch_add(1, Relaxed);
    }

    pub fn client_event_limited(&self) {
        self.client_events_limited.fetch_add(1, Relaxed);
    }

    /// One call ended, for this reason.
    pub fn call_ended(&self, reason: EndReason) {
        self.calls_ended.fetch_add(1, Relaxed);
        self.calls_ended_by[reason.index()].fetch_add(1, Relaxed);
    }

    pub fn media_event(&self, ev: &MediaEvent) {
        let counter = match ev {
            MediaEvent::SpeechStarted { .. } => &self.speech_started,
            MediaEvent::Committed { .. } => &self.turns_committed,
            MediaEvent::PlaybackCleared { .. } => &self.playbacks_cleared,
            _ => return,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition; `gauges` are (name, help, value) read at scrape time.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::with_capacity(2048);
        let counters: [(&str, &str, &AtomicU64); 14] = [
            ("voxrelay_calls_started_total", "Calls accepted.", &self.calls_started),
            ("voxrelay_calls_ended_total", "Calls torn down.", &self.calls_ended),
            ("voxrelay_calls_rejected_total", "Call offers refused (overload or draining).", &self.calls_rejected),
            ("voxrelay_rtp_packets_in_total", "RTP packets received from peers.", &self.rtp_packets_in),
            ("voxrelay_rtp_bytes_in_total", "RTP payload bytes received from peers.", &self.rtp_bytes_in),
            ("voxrelay_rtp_audio_levels_in_total", "Received RTP packets that carried an RFC 6464 audio level.", &self.rtp_audio_levels_in),
            ("voxrelay_rtp_packets_out_total", "RTP packets sent to peers.", &self.rtp_packets_out),
            ("voxrelay_rtp_bytes_out_total", "RTP payload bytes sent to peers.", &self.rtp_bytes_out),
            ("voxrelay_vad_speech_started_total", "Speech onsets detected.", &self.speech_started),
            ("voxrelay_turns_committed_total", "User turns committed.", &self.turns_committed),
            ("voxrelay_barge_ins_total", "Agent playbacks cut by the caller or client.", &self.playbacks_cleared),
            ("voxrelay_ring_overflows_total", "Frames or commands dropped at a full tokio->worker ring.", &self.ring_overflows),
            ("voxrelay_phone_bad_messages_total", "Phone stream messages refused (logged, call unaffected).", &self.phone_bad_messages),
            (
                "voxrelay_client_events_limited_total",
                "Client events dropped over a call's event rate (error event sent).",
                &self.client_events_limited,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let name = "voxrelay_calls_ended_by_reason_total";
        let _ = writeln!(out, "# HELP {name} Calls torn down, by why.\n# TYPE {name} counter");
        for reason in EndReason::ALL {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", reason.label(), self.calls_ended_by[reason.index()].load(Relaxed));
        }
        let name = "voxrelay_agent_first_audio_seconds";
        let _ = writeln!(out, "# HELP {name} Response created to the agent's first audio frame.\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in AGENT_LATENCY_BUCKETS_MS.iter().enumerate() {
            cumulative += self.agent_latency_buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e3);
        }
        cumulative += self.agent_latency_buckets[AGENT_LATENCY_BUCKETS_MS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {cumulative}", self.agent_latency_sum_us.load(Relaxed) as f64 / 1e6);
        out
    }
}

/// The process's own gauges (the standard Prometheus names, from /proc where there is one) and
/// the tokio runtime's live tasks: what a leak shows in first (`voxrelay loadgen --churn`).
pub fn render_process() -> String {
    let mut out = String::with_capacity(512);
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let resident_kb =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    if let Some(kb) = resident_kb {
        let name = "process_resident_memory_bytes";
        let _ = writeln!(out, "# HELP {name} Resident memory size in bytes.\n# TYPE {name} gauge\n{name} {}", kb * 1024);
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let name = "voxrelay_tokio_alive_tasks";
        let _ = writeln!(
            out,
            "# HELP {name} Tasks alive on the tokio runtime.\n# TYPE {name} gauge\n{name} {}",
            rt.metrics().num_alive_tasks()
        );
    }
    out
}

/// The audio workers' side: per-session counters summed over all sessions (live and ended;
/// per-session gauges, in ms or a tick slot, are left out: a sum of them means nothing) and each worker's
/// per-tick DSP time histogram.
pub fn render_media(totals: &StatsSnapshot, workers: &[Arc<WorkerStats>]) -> String {
    let mut out = String::with_capacity(4096);
    for (name, v) in totals.fields() {
        if name.ends_with("_ms") || name == "tick_slot" || name == "early_slot" {
            continue;
        }
        let help = name.replace('_', " ");
        let _ = writeln!(
            out,
            "# HELP voxrelay_media_{name}_total Audio workers: {help}, summed over all sessions, live and ended.\n\
             # TYPE voxrelay_media_{name}_total counter\nvoxrelay_media_{name}_total {v}"
        );
    }
    let name = "voxrelay_worker_tick_seconds";
    let _ = writeln!(out, "# HELP {name} DSP time of one 20 ms tick of an audio worker (all its sessions).\n# TYPE {name} histogram");
    for (i, w) in workers.iter().enumerate() {
        let mut cumulative = 0;
        for (b, bound) in TICK_BUCKETS_US.iter().enumerate() {
            cumulative += w.buckets[b].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{worker=\"{i}\",le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
        }
        let ticks = w.ticks.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{worker=\"{i}\",le=\"+Inf\"}} {ticks}");
        let _ = writeln!(out, "{name}_sum{{worker=\"{i}\"}} {}", w.busy_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{worker=\"{i}\"}} {ticks}");
    }
    let _ = writeln!(out, "# HELP voxrelay_worker_late_ticks_total Ticks an audio worker started after their deadline.");
    let _ = writeln!(out, "# TYPE voxrelay_worker_late_ticks_total counter");
    for (i, w) in workers.iter().enumerate() {
        let _ = writeln!(out, "voxrelay_worker_late_ticks_total{{worker=\"{i}\"}} {}", w.late_ticks.load(Relaxed));
    }
    let _ = writeln!(out, "# HELP voxrelay_worker_realtime Whether an audio worker got real-time scheduling (1) or not (0).");
    let _ = writeln!(out, "# TYPE voxrelay_worker_realtime gauge");
    for (i, w) in workers.iter().enumerate() {
        let _ = writeln!(out, "voxrelay_worker_realtime{{worker=\"{i}\"}} {}", u8::from(w.realtime.load(Relaxed)));
    }
    let _ = writeln!(out, "# HELP voxrelay_worker_sessions Sessions an audio worker ticks.");
    let _ = writeln!(out, "# TYPE voxrelay_worker_sessions gauge");
    for (i, w) in workers.iter().enumerate() {
        let _ = writeln!(out, "voxrelay_worker_sessions{{worker=\"{i}\"}} {}", w.sessions.load(Relaxed));
    }
    out
}
