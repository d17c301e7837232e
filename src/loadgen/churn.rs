//! `voxrelay loadgen --churn N`: N calls in total, `--sessions` at a time, each talking for
//! `--duration` and leaving, a polite hang-up and an abrupt leave in turn (see [`Leave`]). It
//! reads the server's `/metrics` before, once the server has no call left, and again after
//! `--churn-idle` seconds: open fds, resident memory, live tokio tasks, live calls and worker
//! sessions. Whatever a call leaves behind shows as growth between the first and the last.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Dist, Kit, Leave, LoadgenConfig, Progress};

/// How long the server may take to end the calls that left abruptly (a plain-RTP sender that
/// just stopped is dropped ≈ 20 s later: 5 s quiet, then 15 s of grace).
const SETTLE_WAIT: Duration = Duration::from_secs(60);

/// The server's gauges that a leak moves (from `/metrics`).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ServerGauges {
    pub open_fds: u64,
    pub resident_bytes: u64,
    pub alive_tasks: u64,
    pub active_calls: u64,
    pub media_sessions: u64,
    /// Connections the server's WebRTC loops hold (1:1 calls and room participants on `--rtc-loop`).
    pub loop_connections: u64,
    /// Ended calls by reason, since the server started.
    pub ended_by_reason: BTreeMap<String, u64>,
}

impl ServerGauges {
    /// Reads them from the server's `/metrics`.
    pub async fn read(http: &reqwest::Client, base: &str) -> anyhow::Result<ServerGauges> {
        let text = http.get(format!("{base}/metrics")).send().await?.error_for_status()?.text().await?;
        Ok(Self::parse(&text))
    }

    fn parse(text: &str) -> ServerGauges {
        let mut g = ServerGauges::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else { continue };
            let Ok(v) = value.parse::<f64>() else { continue };
            let v = v as u64;
            match name {
                "process_open_fds" => g.open_fds = v,
                "process_resident_memory_bytes" => g.resident_bytes = v,
                "voxrelay_tokio_alive_tasks" => g.alive_tasks = v,
                "voxrelay_active_calls" => g.active_calls = v,
                "voxrelay_media_sessions" => g.media_sessions = v,
                "voxrelay_webrtc_loop_connections" => g.loop_connections = v,
                _ => {
                    if let Some(reason) =
                        name.strip_prefix("voxrelay_calls_ended_by_reason_total{reason=\"").and_then(|r| r.strip_suffix("\"}"))
                    {
                        g.ended_by_reason.insert(reason.to_string(), v);
                    }
                }
            }
        }
        g
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    pub transport: String,
    pub calls: usize,
    pub concurrency: usize,
    pub hung_up: usize,
    pub abrupt: usize,
    pub failed: usize,
    /// Failures by cause (the first words of each).
    pub failures: BTreeMap<String, usize>,
    pub turns_sent: usize,
    pub turns_answered: usize,
    pub turn_latency_ms: Dist,
    pub wall_s: f64,
    pub before: ServerGauges,
    /// Once the server had no call and no worker session left (or `SETTLE_WAIT` passed).
    pub after: ServerGauges,
    pub after_idle: ServerGauges,
    pub idle_s: f64,
}

impl ChurnReport {
    pub fn summary(&self) -> String {
        let mb = |b: u64| b as f64 / 1e6;
        let row = |name: &str, g: &ServerGauges| {
            format!(
                "{name:<11} fds {:>5}  rss {:>7.1} MB  tasks {:>5}  calls {:>4}  sessions {:>4}\n",
                g.open_fds,
                mb(g.resident_bytes),
                g.alive_tasks,
                g.active_calls,
                g.media_sessions
            )
        };
        let mut out = format!(
            "churn: {} {} calls, {} at a time, in {:.0} s ({:.1} calls/s): {} hung up, {} left abruptly, {} failed\n",
            self.calls,
            self.transport,
            self.concurrency,
            self.wall_s,
            self.calls as f64 / self.wall_s.max(1e-9),
            self.hung_up,
            self.abrupt,
            self.failed
        );
        for (cause, n) in &self.failures {
            out.push_str(&format!("  failed: {cause} ×{n}\n"));
        }
        out.push_str(&format!(
            "turns answered {}/{}, latency p50 {:.0} ms, p99 {:.0} ms\n",
            self.turns_answered, self.turns_sent, self.turn_latency_ms.p50, self.turn_latency_ms.p99
        ));
        out.push_str(&row("before", &self.before));
        out.push_str(&row("after", &self.after));
        out.push_str(&row(&format!("idle {:.0} s", self.idle_s), &self.after_idle));
        let ended: Vec<String> = self.after_idle.ended_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
        out.push_str(&format!("server: calls ended by reason: {}\n", ended.join(", ")));
        out
    }
}

/// Runs `total` calls through the server, `cfg.sessions` at a time.
pub async fn run_churn(cfg: LoadgenConfig, total: usize) -> anyhow::Result<ChurnReport> {
    let mut cfg = cfg;
    let concurrency = cfg.sessions.max(1);
    let kit = Arc::new(Kit::prepare(&mut cfg)?);
    let before = ServerGauges::read(&kit.http, &kit.base).await?;
    let progress = Arc::new(Progress::default());
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let ramp_gap = Duration::from_secs_f64(1.0 / cfg.ramp.max(0.01));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for index in 0..total {
        let slot = slots.clone().acquire_owned().await?;
        if index > 0 {
            tokio::time::sleep(ramp_gap).await;
        }
        let leave = if index % 2 == 0 { Leave::HangUp } else { Leave::Abrupt };
        let (kit, progress, session_cfg) = (kit.clone(), progress.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            let result = kit.session(index, &session_cfg, &progress, leave).await;
            drop(slot);
            result
        }));
        if cfg.progress && index % 100 == 99 {
            eprintln!("[{:>6.1}s] churn: {} calls started", started.elapsed().as_secs_f64(), index + 1);
        }
    }
    let mut report = ChurnReport {
        transport: format!("{:?}", cfg.transport).to_lowercase(),
        calls: total,
        concurrency,
        hung_up: total.div_ceil(2),
        abrupt: total / 2,
        failed: 0,
        failures: BTreeMap::new(),
        turns_sent: 0,
        turns_answered: 0,
        turn_latency_ms: Dist::default(),
        wall_s: 0.0,
        before,
        after: ServerGauges::default(),
        after_idle: ServerGauges::default(),
        idle_s: cfg.churn_idle,
    };
    let mut latencies = Vec::new();
    for t in tasks {
        let result = t.await?;
        if let Some(cause) = result.failure {
            report.failed += 1;
            let short: String = cause.split_whitespace().take(4).collect::<Vec<_>>().join(" ");
            *report.failures.entry(short).or_default() += 1;
        }
        report.turns_sent += result.turns_sent;
        report.turns_answered += result.turns_answered;
        latencies.extend(result.turn_latency_ms);
    }
    report.wall_s = started.elapsed().as_secs_f64();
    report.turn_latency_ms = Dist::of(&latencies);
    let settle = Instant::now();
    loop {
        let g = ServerGauges::read(&kit.http, &kit.base).await?;
        if (g.active_calls == 0 && g.media_sessions == 0 && g.loop_connections == 0) || settle.elapsed() > SETTLE_WAIT {
            report.after = g;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(cfg.churn_idle.max(0.0))).await;
    report.after_idle = ServerGauges::read(&kit.http, &kit.base).await?;
    if let Some(path) = &cfg.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_from_the_exposition() {
        let text = "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds 42\n\
                    process_resident_memory_bytes 1048576\nvoxrelay_tokio_alive_tasks 17\nvoxrelay_active_calls 3\n\
                    voxrelay_media_sessions 2\nvoxrelay_calls_ended_by_reason_total{reason=\"hung_up\"} 5\n\
                    voxrelay_calls_ended_total 9\n";
        let g = ServerGauges::parse(text);
        assert_eq!((g.open_fds, g.resident_bytes, g.alive_tasks, g.active_calls, g.media_sessions), (42, 1_048_576, 17, 3, 2));
        assert_eq!(g.ended_by_reason.get("hung_up"), Some(&5));
        assert_eq!(g.ended_by_reason.len(), 1);
    }
}
