//! `voxrelay loadgen --room R --publishers P --subscribers S [--slots K]`: one room, P
//! participants that only publish (the speech fixture in talk spurts, each at its own gain so
//! every publisher's Opus payloads are distinct) and S that only listen on K slots, all through
//! the real WebRTC room client. The shape of LiveKit's `lk load-test --audio-publishers
//! --subscribers`.
//!
//! Mouth-to-ear latency added by the SFU: for every packet a subscriber receives, the time
//! since its publisher sent the same payload (publisher and subscribers share this process's
//! clock). Payloads identify their publisher; a payload repeats only once per spurt loop, so
//! the latest send at or before the receive is the one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use super::report::{Dist, loss_and_jitter};
use super::{LoadgenConfig, cpu_seconds};
use crate::client::Received;
use crate::transport::webrtc::room_client::{ReceivedPacket, RoomClient, RoomClientOptions, SentPacket, encode_speech};

/// A gap between a publisher's spurts: shorter than the speaker window, so a publisher stays an
/// active speaker for the whole run (a steady forwarding load).
const SPURT_GAP: Duration = Duration::from_millis(300);

#[derive(Clone, Debug, Default, Serialize)]
pub struct RoomReport {
    pub url: String,
    pub room: String,
    pub publishers: usize,
    pub subscribers: usize,
    pub slots: usize,
    pub joined: usize,
    pub failed: usize,
    pub failures: Vec<String>,
    pub duration_s: f64,
    /// POST join → answer, and start → connected with `room-events` open.
    pub answer_ms: Dist,
    pub join_ms: Dist,
    /// Packets per second into the server (publishers) and out of it (to subscribers).
    pub packets_in_per_s: f64,
    pub packets_out_per_s: f64,
    pub loss_pct: Dist,
    pub jitter_ms: Dist,
    /// Publisher send → subscriber receive of the same packet.
    pub mouth_to_ear_ms: Dist,
    /// With `--agent`: turns taken, turns the agent answered, and the turn latency (a
    /// participant's end of speech → the agent's first packet at a subscriber, minus
    /// `--silence-ms`).
    pub agent: Option<String>,
    pub agent_turns: usize,
    pub agent_answered: usize,
    pub agent_turn_ms: Dist,
    /// CPU while the publishers talk (after every join), % of one core.
    pub server_cpu_pct: Option<f64>,
    pub loadgen_cpu_pct: f64,
}

impl RoomReport {
    pub fn summary(&self) -> String {
        let d = |x: &Dist| format!("p50 {:.1} / p95 {:.1} / p99 {:.1} / max {:.1}", x.p50, x.p95, x.p99, x.max);
        let mut s = format!(
            "room {} at {}: {} publishers, {} subscribers x {} slots, {:.0} s\n\
             joined {} / failed {}\n\
             answer ms          {}\n\
             joined ms          {}\n\
             packets/s          in {:.0}, out {:.0}\n\
             loss %             {}\n\
             jitter ms          {}\n\
             mouth-to-ear ms    {}\n",
            self.room,
            self.url,
            self.publishers,
            self.subscribers,
            self.slots,
            self.duration_s,
            self.joined,
            self.failed,
            d(&self.answer_ms),
            d(&self.join_ms),
            self.packets_in_per_s,
            self.packets_out_per_s,
            d(&self.loss_pct),
            d(&self.jitter_ms),
            d(&self.mouth_to_ear_ms),
        );
        if let Some(agent) = &self.agent {
            s.push_str(&format!(
                "agent {agent}: {} of {} turns answered; turn latency ms {}\n",
                self.agent_answered,
                self.agent_turns,
                d(&self.agent_turn_ms)
            ));
        }
        if let Some(cpu) = self.server_cpu_pct {
            s.push_str(&format!("server CPU         {cpu:.1} % of a core\n"));
        }
        s.push_str(&format!("loadgen CPU        {:.1} % of a core\n", self.loadgen_cpu_pct));
        for f in &self.failures {
            s.push_str(&format!("failure: {f}\n"));
        }
        s
    }
}

async fn mint(http: &reqwest::Client, base: &str, key: &str, room: &str, identity: &str, publish: bool) -> Result<String, String> {
    let body = json!({"identity": identity, "publish": publish, "subscribe": !publish, "ttl_seconds": 3600});
    let resp = http
        .post(format!("{base}/v1/rooms/{room}/tokens"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .map_err(|_| "token: http".to_string())?;
    if !resp.status().is_success() {
        return Err(format!("token: http_{}", resp.status().as_u16()));
    }
    let v: serde_json::Value = resp.json().await.map_err(|_| "token: bad JSON".to_string())?;
    Ok(v["token"].as_str().unwrap_or_default().to_string())
}

pub async fn run(
    cfg: &LoadgenConfig,
    room: &str,
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    pcm: &[i16],
) -> anyhow::Result<RoomReport> {
    let (publishers, subscribers, slots) = (cfg.publishers, cfg.subscribers, cfg.slots);
    let mut report = RoomReport {
        url: base.to_string(),
        room: room.to_string(),
        publishers,
        subscribers,
        slots,
        duration_s: cfg.duration,
        agent: cfg.agent.clone(),
        ..Default::default()
    };
    // The room is made for everyone (a room made by a join takes 50 participants).
    let body = json!({"name": room, "max_participants": publishers + subscribers + 1});
    let resp = http.post(format!("{base}/v1/rooms")).bearer_auth(api_key).json(&body).send().await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        anyhow::ensure!(status.as_u16() == 409, "creating room {room}: {status} {text}");
        eprintln!("room {room} exists already: its max_participants applies");
    }
    let bind_ip = cfg.bind_ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let ramp_gap = Duration::from_secs_f64(1.0 / cfg.ramp.max(0.01));
    // Subscribers first, so they hear the publishers from their first packet.
    let mut joins = Vec::new();
    for i in 0..subscribers + publishers {
        if i > 0 {
            tokio::time::sleep(ramp_gap).await;
        }
        let publish = i >= subscribers;
        let identity = if publish { format!("pub-{}", i - subscribers) } else { format!("sub-{i}") };
        let (http, base, key, room) = (http.clone(), base.to_string(), api_key.to_string(), room.to_string());
        let opts = RoomClientOptions { slots: if publish { 0 } else { slots }, publish, audio_levels: true, bind_ip, ..Default::default() };
        joins.push(tokio::spawn(async move {
            let token = mint(&http, &base, &key, &room, &identity, publish).await?;
            RoomClient::join(&http, &base, &room, &token, opts).await.map_err(|e| format!("{identity}: {}", e.cause()))
        }));
    }
    if let Some(agent) = &cfg.agent {
        super::room_agent::attach(http, base, api_key, room, agent, cfg.silence_ms).await?;
    }
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    for (i, j) in joins.into_iter().enumerate() {
        match j.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(c) if i >= subscribers => pubs.push(c),
            Ok(c) => subs.push(c),
            Err(e) => report.failures.push(e),
        }
    }
    report.joined = subs.len() + pubs.len();
    report.failed = report.failures.len();
    let clients: Vec<&RoomClient> = subs.iter().chain(pubs.iter()).collect();
    report.answer_ms = Dist::of(&clients.iter().map(|c| c.answer_time.as_secs_f64() * 1000.0).collect::<Vec<_>>());
    report.join_ms = Dist::of(&clients.iter().map(|c| c.connect_time.as_secs_f64() * 1000.0).collect::<Vec<_>>());
    drop(clients);

    // Each publisher talks for the whole run, spurt after spurt. CPU is measured over this
    // steady phase only (joins cost DTLS handshakes, which are not forwarding).
    let cpu_start = (cpu_seconds(None), cfg.server_pid.map(|p| cpu_seconds(Some(p))));
    let talk_start = Instant::now();
    let mut turns = Vec::new();
    if cfg.agent.is_some() {
        turns = super::room_agent::take_turns(&mut pubs, pcm, cfg.silence_ms, cfg.duration).await?;
    }
    for (i, p) in pubs.iter().enumerate().filter(|_| cfg.agent.is_none()) {
        let frames = encode_speech(pcm, 1.0 - 0.01 * (i % 50) as f32).map_err(anyhow::Error::msg)?;
        let gap = (SPURT_GAP.as_millis() / 20) as usize;
        let period = (frames.len() + gap) as f64 * 0.02;
        let loops = ((cfg.duration / period).ceil() as usize).max(1);
        for _ in 0..loops {
            p.queue_encoded(frames.iter().cloned());
            p.queue_silence(gap);
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.duration) + Duration::from_secs(30);
    while pubs.iter().any(|p| p.queued() > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let talked = talk_start.elapsed().as_secs_f64();
    report.loadgen_cpu_pct = (cpu_seconds(None) - cpu_start.0) * 100.0 / talked;
    if let (Some(pid), Some(start)) = (cfg.server_pid, cpu_start.1) {
        report.server_cpu_pct = Some((cpu_seconds(Some(pid)) - start) * 100.0 / talked);
    }
    for c in subs.iter().chain(pubs.iter()) {
        c.close().await;
    }

    let sent: Vec<Vec<SentPacket>> = pubs.iter().map(|p| p.sent()).collect();
    let received: Vec<Vec<ReceivedPacket>> = subs.iter().map(|s| s.received()).collect();
    report.packets_in_per_s = sent.iter().map(Vec::len).sum::<usize>() as f64 / talked;
    report.packets_out_per_s = received.iter().map(Vec::len).sum::<usize>() as f64 / talked;
    report.mouth_to_ear_ms = Dist::of(&mouth_to_ear(&sent, &received));
    if cfg.agent.is_some() {
        report.agent_turns = turns.len();
        report.agent_answered = turns.iter().filter(|(_, answered)| *answered).count();
        report.agent_turn_ms = Dist::of(&super::room_agent::turn_latencies(&turns, &pubs, &subs, cfg.silence_ms));
    }
    let (mut loss, mut jitter) = (Vec::new(), Vec::new());
    for stream in received.iter().flat_map(|r| by_stream(r)) {
        let (_, pct, j) = loss_and_jitter(&stream, 48_000.0);
        loss.push(pct);
        jitter.push(j);
    }
    report.loss_pct = Dist::of(&loss);
    report.jitter_ms = Dist::of(&jitter);
    Ok(report)
}

/// One subscriber's packets split by slot (SSRC), as the load generator's `Received`.
fn by_stream(packets: &[ReceivedPacket]) -> Vec<Vec<Received>> {
    let mut streams: HashMap<u32, Vec<Received>> = HashMap::new();
    for p in packets {
        streams.entry(p.ssrc).or_default().push(Received {
            at: p.at,
            seq: p.seq,
            timestamp: p.timestamp,
            payload_len: p.payload.len(),
            rms: None,
            fec: false,
        });
    }
    streams.into_values().filter(|s| s.len() > 1).collect()
}

/// Receive time minus the latest send of the same payload at or before it, in ms, for every
/// received voiced packet (silence packets are identical across publishers).
pub fn mouth_to_ear(sent: &[Vec<SentPacket>], received: &[Vec<ReceivedPacket>]) -> Vec<f64> {
    let mut sends: HashMap<&Bytes, Vec<Instant>> = HashMap::new();
    for p in sent.iter().flatten().filter(|p| p.voiced) {
        sends.entry(&p.payload).or_default().push(p.at);
    }
    for times in sends.values_mut() {
        times.sort();
    }
    let mut out = Vec::new();
    for r in received.iter().flatten() {
        let Some(times) = sends.get(&r.payload) else { continue };
        let i = times.partition_point(|t| *t <= r.at);
        if i > 0 {
            out.push(r.at.duration_since(times[i - 1]).as_secs_f64() * 1000.0);
        }
    }
    out
}
