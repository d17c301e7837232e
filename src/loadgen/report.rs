//! What the load generator measured: per-session results, their aggregate (p50/p95/p99/max),
//! the summary table and the JSON report. Pure functions over the recorded samples.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::client::{Received, Sent};

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Dist {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Dist {
    pub fn of(values: &[f64]) -> Dist {
        if values.is_empty() {
            return Dist::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        // Nearest-rank percentiles: an observed value, never an interpolation.
        let pick = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Dist { count: v.len(), p50: pick(50.0), p95: pick(95.0), p99: pick(99.0), max: v[v.len() - 1] }
    }
}

/// One session's outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SessionResult {
    pub index: usize,
    pub failure: Option<String>,
    pub answer_ms: Option<f64>,
    pub connected_ms: Option<f64>,
    pub first_audio_ms: Option<f64>,
    pub turns_sent: usize,
    pub turns_answered: usize,
    pub turn_latency_ms: Vec<f64>,
    pub packets_received: usize,
    pub packets_lost: u64,
    pub loss_pct: f64,
    pub jitter_ms: f64,
    pub events: BTreeMap<String, usize>,
}

/// Turn latency per spurt: last voiced frame sent → first voiced packet received after it,
/// minus the silence the turn detector must wait for. `spurt_ends` are indices into `sent`.
pub fn turn_latencies(sent: &[Sent], received: &[Received], silence_ms: f64) -> (usize, Vec<f64>) {
    let mut ends = Vec::new();
    for (i, s) in sent.iter().enumerate() {
        let next_quiet = sent.get(i + 1).is_none_or(|n| !n.voiced);
        if s.voiced && next_quiet {
            ends.push(s.at);
        }
    }
    let mut latencies = Vec::new();
    for (k, end) in ends.iter().enumerate() {
        let next_end = ends.get(k + 1);
        let answer = received.iter().find(|r| r.at > *end && r.voiced() && next_end.is_none_or(|n| r.at < *n));
        if let Some(r) = answer {
            latencies.push(r.at.duration_since(*end).as_secs_f64() * 1000.0 - silence_ms);
        }
    }
    (ends.len(), latencies)
}

/// Loss from RTP sequence numbers (with wrap-around) and RFC 3550 interarrival jitter, ms.
pub fn loss_and_jitter(received: &[Received], clock_hz: f64) -> (u64, f64, f64) {
    if received.len() < 2 {
        return (0, 0.0, 0.0);
    }
    let mut ext: i64 = i64::from(received[0].seq);
    let (mut lo, mut hi) = (ext, ext);
    let mut jitter = 0.0f64;
    for w in received.windows(2) {
        let delta = i64::from(w[1].seq.wrapping_sub(w[0].seq) as i16);
        ext += delta;
        lo = lo.min(ext);
        hi = hi.max(ext);
        let arrival = w[1].at.duration_since(w[0].at).as_secs_f64();
        let media = f64::from(w[1].timestamp.wrapping_sub(w[0].timestamp) as i32) / clock_hz;
        jitter += ((arrival - media).abs() - jitter) / 16.0;
    }
    let expected = (hi - lo + 1) as u64;
    let lost = expected.saturating_sub(received.len() as u64);
    (lost, lost as f64 * 100.0 / expected as f64, jitter * 1000.0)
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub url: String,
    /// `webrtc`, `rtp` or `twilio`.
    pub transport: String,
    pub sessions_requested: usize,
    pub sessions_connected: usize,
    pub sessions_failed: usize,
    pub failures_by_cause: BTreeMap<String, usize>,
    /// How long the run took (ramp included): at least `--duration`, since each call speaks
    /// whole spurt periods covering it.
    pub duration_s: f64,
    pub silence_duration_ms: u32,
    pub answer_ms: Dist,
    pub connected_ms: Dist,
    pub first_audio_ms: Dist,
    pub turn_latency_ms: Dist,
    pub turns_sent: usize,
    pub turns_answered: usize,
    pub loss_pct: Dist,
    pub jitter_ms: Dist,
    pub events_received: usize,
    pub events_by_type: BTreeMap<String, usize>,
    /// CPU of the server process over the run, % of one core (when `--server-pid` is given).
    pub server_cpu_pct: Option<f64>,
    /// CPU of the load generator itself, % of one core.
    pub loadgen_cpu_pct: f64,
    pub sessions: Vec<SessionResult>,
}

impl Report {
    pub fn aggregate(&mut self) {
        let ok: Vec<&SessionResult> = self.sessions.iter().filter(|s| s.failure.is_none()).collect();
        self.sessions_connected = ok.len();
        self.sessions_failed = self.sessions.len() - ok.len();
        self.failures_by_cause.clear();
        for s in self.sessions.iter().filter_map(|s| s.failure.as_ref()) {
            *self.failures_by_cause.entry(s.clone()).or_default() += 1;
        }
        let collect = |f: &dyn Fn(&SessionResult) -> Option<f64>| Dist::of(&ok.iter().filter_map(|s| f(s)).collect::<Vec<_>>());
        self.answer_ms = collect(&|s| s.answer_ms);
        self.connected_ms = collect(&|s| s.connected_ms);
        self.first_audio_ms = collect(&|s| s.first_audio_ms);
        self.loss_pct = collect(&|s| Some(s.loss_pct));
        self.jitter_ms = collect(&|s| Some(s.jitter_ms));
        self.turn_latency_ms = Dist::of(&ok.iter().flat_map(|s| s.turn_latency_ms.iter().copied()).collect::<Vec<_>>());
        self.turns_sent = ok.iter().map(|s| s.turns_sent).sum();
        self.turns_answered = ok.iter().map(|s| s.turns_answered).sum();
        self.events_by_type.clear();
        for s in &ok {
            for (k, v) in &s.events {
                *self.events_by_type.entry(k.clone()).or_default() += v;
            }
        }
        self.events_received = self.events_by_type.values().sum();
    }

    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "sessions: {} requested, {} connected, {} failed", self.sessions_requested, self.sessions_connected, self.sessions_failed);
        for (cause, n) in &self.failures_by_cause {
            let _ = writeln!(out, "  failed: {n} x {cause}");
        }
        let _ = writeln!(out, "ran {:.1} s", self.duration_s);
        let _ = writeln!(out, "turns: {} sent, {} answered; events received: {}", self.turns_sent, self.turns_answered, self.events_received);
        let _ = writeln!(out, "{:<34} {:>8} {:>8} {:>8} {:>8} {:>7}", "metric", "p50", "p95", "p99", "max", "n");
        for (name, d) in [
            ("time to answer (ms)", self.answer_ms),
            (if self.transport == "twilio" { "time to stream upgraded (ms)" } else { "time to ICE/DTLS connected (ms)" }, self.connected_ms),
            ("time to first inbound audio (ms)", self.first_audio_ms),
            ("turn latency - silence (ms)", self.turn_latency_ms),
            ("inbound loss (%)", self.loss_pct),
            ("inbound jitter (ms)", self.jitter_ms),
        ] {
            let _ = writeln!(out, "{name:<34} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7}", d.p50, d.p95, d.p99, d.max, d.count);
        }
        if let Some(cpu) = self.server_cpu_pct {
            let _ = writeln!(out, "server CPU: {cpu:.1}% of one core");
        }
        let _ = writeln!(out, "load generator CPU: {:.1}% of one core", self.loadgen_cpu_pct);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn nearest_rank_percentiles() {
        let d = Dist::of(&(1..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!((d.p50, d.p95, d.p99, d.max, d.count), (50.0, 95.0, 99.0, 100.0, 100));
        assert_eq!(Dist::of(&[]), Dist::default());
    }

    #[test]
    fn loss_counts_gaps_across_wraparound() {
        let t0 = Instant::now();
        let rx: Vec<Received> = [65534u16, 65535, 1, 2]
            .iter()
            .enumerate()
            .map(|(i, &seq)| Received {
                at: t0 + Duration::from_millis(20 * i as u64),
                seq,
                timestamp: u32::from(seq) * 960,
                payload_len: 80,
                rms: None,
                fec: false,
            })
            .collect();
        let (lost, pct, _) = loss_and_jitter(&rx, 48_000.0);
        assert_eq!(lost, 1);
        assert!((pct - 20.0).abs() < 1e-9);
    }

    #[test]
    fn turn_latency_is_measured_from_the_end_of_each_spurt() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let sent = vec![
            Sent { at: at(0), voiced: true },
            Sent { at: at(20), voiced: true },
            Sent { at: at(40), voiced: false },
        ];
        let voiced = |ms: u64| Received { at: at(ms), seq: 0, timestamp: 0, payload_len: 80, rms: None, fec: false };
        let (turns, lat) = turn_latencies(&sent, &[voiced(10), voiced(620)], 500.0);
        assert_eq!(turns, 1);
        assert_eq!(lat, vec![100.0]);
    }
}
