//! `voxrelay loadgen`: N concurrent WebRTC calls (full ICE/DTLS/SRTP through
//! [`crate::client`]), plain-RTP sessions, or phone calls over Twilio Media Streams
//! ([`phone`]) against a running server, ramped, for a bounded duration. Each call
//! speaks talk spurts separated by silences longer than `silence_duration_ms`, so the echo
//! agent answers each one, and measures setup times, turn latency, loss, jitter and events.
//!
//! Cheap on purpose, so the load generator does not become the bottleneck: the speech is
//! Opus-encoded once and shared by every call, silence is the 3-byte Opus silence packet, and
//! received audio is classified voiced/silent by packet size instead of being decoded.

mod churn;
mod phone;
mod realtime_ws;
mod report;
mod room;
mod room_agent;
mod socket;

pub use churn::{ChurnReport, ServerGauges, run_churn};
pub use phone::{PhoneSpurt, pacing_jitter_ms};

pub use report::{Dist, Report, SessionResult, loss_and_jitter, turn_latencies};
pub use room::{RoomReport, mouth_to_ear};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use serde_json::{Value, json};
use voxrelay_media::{OPUS_SILENCE, SAMPLES_48K};

use crate::client::{Client, ClientOptions, OutFrame};
use crate::transport::impair::NetworkFaults;

/// The default talk spurt: the espeak-ng sentence of tests/fixtures (2.8 s, 48 kHz mono).
const DEFAULT_SPEECH: &[u8] = include_bytes!("../../tests/fixtures/speech.wav");

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadTransport {
    /// Full WebRTC (ICE, DTLS, SRTP, SCTP), as browsers connect.
    Webrtc,
    /// Plain RTP to the server's opt-in ingest (POST /v1/rtp): loads the DSP path without
    /// encryption cost. The server must run with --rtp-ingest.
    Rtp,
    /// Phone calls: Twilio Media Streams (mu-law 8 kHz in base64 JSON over WebSocket) to
    /// /v1/telephony/twilio, as a Twilio number would send them.
    Twilio,
    /// Realtime sessions over WebSocket (GET /v1/realtime): pcm16 24 kHz appends every 20 ms,
    /// the agent's audio back as response.audio.delta, as a server-side app streams.
    Ws,
}

/// How a load-generator session ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Leave {
    /// As a well-behaved client: `DELETE` of the call (WebRTC, plain RTP), `stop` (phone), a
    /// close frame (WebSocket).
    HangUp,
    /// Without a word: a WebRTC peer closes without `DELETE`, a plain-RTP sender just stops,
    /// phone and WebSocket sessions drop their TCP connection without `stop` or a close frame.
    Abrupt,
}

#[derive(Clone, Debug, Args)]
pub struct LoadgenConfig {
    /// Base URL of the server under test (only this host is contacted).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Server API key. Default: VOXRELAY_API_KEY, else the key file in the data directory.
    #[arg(long, env = "VOXRELAY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[arg(long, value_enum, default_value_t = LoadTransport::Webrtc)]
    pub transport: LoadTransport,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 10)]
    pub sessions: usize,
    /// Sessions started per second.
    #[arg(long, default_value_t = 10.0)]
    pub ramp: f64,
    /// Seconds each session keeps talking once connected.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Talk spurt audio: a 48 kHz mono 16-bit WAV. Default: a built-in 2.8 s sentence.
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// `silence_duration_ms` requested for each session (the turn detector's wait).
    #[arg(long, default_value_t = 500)]
    pub silence_ms: u32,
    /// Write the full result here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// PID of the server, to report its CPU use over the run.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Local IP for the sessions' ICE candidates. Default: 127.0.0.1 when --url is on
    /// loopback, else 0.0.0.0 (every interface).
    #[arg(long)]
    pub bind_ip: Option<std::net::IpAddr>,
    /// The server's Twilio auth token, when it checks X-Twilio-Signature (--transport twilio).
    #[arg(long, env = "VOXRELAY_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,
    /// Room mode (PROTOCOL.md §4): load one room with --publishers and --subscribers instead of
    /// --sessions calls.
    #[arg(long)]
    pub room: Option<String>,
    /// Room mode: participants that publish the talk spurt (each at its own gain).
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,
    /// Room mode: participants that only listen.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,
    /// Room mode: receiving m-lines (slots) each subscriber offers.
    #[arg(long, default_value_t = 3)]
    pub slots: usize,
    /// WebRTC and plain-RTP calls: the agent that answers them (default: the server's `echo`),
    /// e.g. `openai-realtime` to load a provider bridge. Room mode: attach this agent; the
    /// publishers then take turns talking to it and the report has the agent's turn latency.
    #[arg(long)]
    pub agent: Option<String>,
    /// WebRTC calls: share of the RTP sent that is dropped, in percent (a bad network).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// WebRTC calls: each packet sent is delayed by a random 0..this many ms (reorders packets
    /// whose delays differ by more than a frame).
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Churn mode: this many calls in total, --sessions at a time, each talking for --duration
    /// and leaving, hang-ups and abrupt leaves in turn; reports the server's open fds, memory,
    /// live tasks, calls and worker sessions before, after and after --churn-idle seconds.
    #[arg(long)]
    pub churn: Option<usize>,
    /// Churn mode: seconds to wait idle after the last call before the final reading.
    #[arg(long, default_value_t = 60.0)]
    pub churn_idle: f64,
    /// Print progress every second.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub progress: bool,
    /// WebRTC calls: send Opus with DTX when the answer asks for it (`usedtx=1`), as browsers do:
    /// the talk spurt and its silence coded by an encoder in DTX, of a run of DTX packets only the
    /// first sent. `false`: a packet every 20 ms, silence as the 3-byte silence packet.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub dtx: bool,
}

impl LoadgenConfig {
    /// The network faults of session `index` (each session its own seed: losses differ).
    pub fn faults(&self, index: usize) -> NetworkFaults {
        NetworkFaults { loss: self.loss / 100.0, jitter: Duration::from_millis(self.jitter_ms), seed: index as u64 }
    }

    pub fn new(url: &str, api_key: &str, sessions: usize, duration: f64) -> Self {
        Self {
            url: url.into(),
            api_key: Some(api_key.into()),
            transport: LoadTransport::Webrtc,
            sessions,
            ramp: 20.0,
            duration,
            wav: None,
            silence_ms: 500,
            json: None,
            server_pid: None,
            bind_ip: None,
            twilio_auth_token: None,
            room: None,
            publishers: 2,
            subscribers: 10,
            slots: 3,
            agent: None,
            churn: None,
            churn_idle: 60.0,
            loss: 0.0,
            jitter_ms: 0,
            progress: false,
            dtx: true,
        }
    }
}

/// Opus frames of one talk spurt, shared by all sessions.
pub struct Spurt {
    pub frames: Vec<Bytes>,
    /// The spurt and the silence after it (see [`Spurt::gap_frames`]) coded by an encoder in
    /// DTX, for calls that send with DTX; empty until [`Spurt::with_dtx`].
    pub dtx_period: Vec<Bytes>,
}

impl Spurt {
    pub fn from_wav(bytes: &[u8]) -> anyhow::Result<Spurt> {
        Self::from_pcm48(&read_wav(bytes)?)
    }

    pub fn from_pcm48(pcm: &[i16]) -> anyhow::Result<Spurt> {
        let frames = crate::transport::webrtc::room_client::encode_speech(pcm, 1.0).map_err(anyhow::Error::msg)?;
        Ok(Spurt { frames: frames.into_iter().map(|(payload, _)| payload).collect(), dtx_period: Vec::new() })
    }

    /// Adds [`Spurt::dtx_period`] for `silence_ms`: the speech and its gap through one encoder,
    /// so the frames after speech are what a browser's would be (≈ 200 ms of coded silence, DTX
    /// packets, a comfort-noise update every 400 ms).
    pub fn with_dtx(mut self, pcm: &[i16], silence_ms: u32) -> anyhow::Result<Spurt> {
        let mut enc = voxrelay_media::OpusEncoder::new()?;
        enc.set_dtx(true)?;
        let mut buf = [0u8; voxrelay_media::MAX_OPUS_PACKET];
        let quiet = [0i16; SAMPLES_48K];
        let speech = pcm.chunks(SAMPLES_48K).map(|chunk| {
            let mut f = [0i16; SAMPLES_48K];
            f[..chunk.len()].copy_from_slice(chunk);
            f
        });
        let frames = speech.chain(std::iter::repeat_n(quiet, self.gap_frames(silence_ms)));
        self.dtx_period = frames
            .map(|f| enc.encode(&f, &mut buf).map(|n| Bytes::copy_from_slice(&buf[..n])))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("opus encode: {e}"))?;
        Ok(self)
    }

    pub fn duration_ms(&self) -> u64 {
        self.frames.len() as u64 * 20
    }

    /// Silence after each spurt: long enough for the turn to end and the echo to play in full.
    pub fn gap_frames(&self, silence_ms: u32) -> usize {
        ((u64::from(silence_ms) + self.duration_ms() + 1000) / 20) as usize
    }
}

/// A talk spurt WAV (48 kHz mono 16-bit, at least 200 ms) as PCM.
pub fn read_wav(bytes: &[u8]) -> anyhow::Result<Vec<i16>> {
    let mut reader = hound::WavReader::new(std::io::Cursor::new(bytes))?;
    let spec = reader.spec();
    anyhow::ensure!(
        spec.sample_rate == 48_000 && spec.channels == 1 && spec.bits_per_sample == 16,
        "talk spurt WAV must be 48 kHz mono 16-bit (got {} Hz, {} channels, {} bits)",
        spec.sample_rate,
        spec.channels,
        spec.bits_per_sample
    );
    let pcm: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>()?;
    anyhow::ensure!(pcm.len() >= SAMPLES_48K * 10, "talk spurt WAV is shorter than 200 ms");
    Ok(pcm)
}

/// Live counters for the progress line.
#[derive(Default)]
struct Progress {
    up: AtomicUsize,
    failed: AtomicUsize,
    done: AtomicUsize,
    latencies: std::sync::Mutex<Vec<f64>>,
}

/// Room mode: one room loaded with publishers and subscribers (`--room`).
pub async fn run_room(cfg: LoadgenConfig) -> anyhow::Result<RoomReport> {
    let room = cfg.room.clone().ok_or_else(|| anyhow::anyhow!("--room is required"))?;
    let api_key = api_key(&cfg)?;
    let pcm = talk_spurt(&cfg)?;
    crate::install_tls_provider();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let base = cfg.url.trim_end_matches('/').to_string();
    let mut cfg = cfg;
    cfg.bind_ip = Some(bind_ip(&cfg, &base)?);
    let report = room::run(&cfg, &room, &http, &base, &api_key, &pcm).await?;
    if let Some(path) = &cfg.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report)
}

/// `--api-key`, else the key file in the default data directory.
fn api_key(cfg: &LoadgenConfig) -> anyhow::Result<String> {
    match cfg.api_key.clone() {
        Some(k) => Ok(k),
        None => {
            let path = crate::config::ServeConfig::defaults().data_dir().join(crate::api_key::KEY_FILE);
            std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| anyhow::anyhow!("no --api-key and cannot read {}: {e}", path.display()))
        }
    }
}

/// The talk spurt's PCM: `--wav`, else the built-in sentence.
fn talk_spurt(cfg: &LoadgenConfig) -> anyhow::Result<Vec<i16>> {
    let wav = match &cfg.wav {
        Some(p) => std::fs::read(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?,
        None => DEFAULT_SPEECH.to_vec(),
    };
    read_wav(&wav)
}

/// `--bind-ip`, else loopback for a server on loopback and every interface otherwise.
fn bind_ip(cfg: &LoadgenConfig, base: &str) -> anyhow::Result<std::net::IpAddr> {
    if let Some(ip) = cfg.bind_ip {
        return Ok(ip);
    }
    let host = reqwest::Url::parse(base)?.host_str().unwrap_or("").trim_matches(['[', ']']).to_string();
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    Ok(if loopback { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv4Addr::UNSPECIFIED.into() })
}

/// What every session of a run shares: the server, the key, the talk spurt in each transport's
/// encoding.
struct Kit {
    http: reqwest::Client,
    base: String,
    api_key: String,
    spurt: Spurt,
    phone_spurt: PhoneSpurt,
    ws_spurt: realtime_ws::WsSpurt,
}

impl Kit {
    /// Checks the configuration and prepares the shared parts (sets `cfg.bind_ip`).
    fn prepare(cfg: &mut LoadgenConfig) -> anyhow::Result<Kit> {
        let api_key = api_key(cfg)?;
        let pcm = talk_spurt(cfg)?;
        if cfg.transport == LoadTransport::Twilio {
            // customParameters cannot set turn detection: phone calls get the server's default.
            let default_silence = voxrelay_media::TurnDetectConfig::default().silence_duration_ms;
            anyhow::ensure!(
                cfg.silence_ms == default_silence,
                "--transport twilio: phone calls use the server's silence_duration_ms ({default_silence} ms); --silence-ms cannot change it"
            );
        }
        anyhow::ensure!((0.0..100.0).contains(&cfg.loss), "--loss is a percentage below 100");
        anyhow::ensure!(
            cfg.transport == LoadTransport::Webrtc || (cfg.loss == 0.0 && cfg.jitter_ms == 0),
            "--loss and --jitter-ms apply to --transport webrtc (TCP transports lose nothing)"
        );
        crate::install_tls_provider();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let base = cfg.url.trim_end_matches('/').to_string();
        cfg.bind_ip = Some(bind_ip(cfg, &base)?);
        Ok(Kit {
            http,
            base,
            api_key,
            spurt: Spurt::from_pcm48(&pcm)?.with_dtx(&pcm, cfg.silence_ms)?,
            phone_spurt: PhoneSpurt::from_pcm48(&pcm)?,
            ws_spurt: realtime_ws::WsSpurt::from_pcm48(&pcm)?,
        })
    }

    /// One session of `cfg.transport`, from connecting to leaving.
    async fn session(&self, index: usize, cfg: &LoadgenConfig, progress: &Progress, leave: Leave) -> SessionResult {
        match cfg.transport {
            LoadTransport::Twilio => phone::run_session(index, &self.phone_spurt, cfg, progress, leave).await,
            LoadTransport::Ws => realtime_ws::run_session(index, &self.api_key, &self.ws_spurt, cfg, progress, leave).await,
            _ => run_session(index, &self.http, &self.base, &self.api_key, &self.spurt, cfg, progress, leave).await,
        }
    }
}

pub async fn run(cfg: LoadgenConfig) -> anyhow::Result<Report> {
    let mut cfg = cfg;
    let kit = Arc::new(Kit::prepare(&mut cfg)?);
    let base = kit.base.clone();
    let progress = Arc::new(Progress::default());
    let cpu_start = (cpu_seconds(None), cfg.server_pid.map(|p| cpu_seconds(Some(p))));
    let started = Instant::now();

    let mut tasks = Vec::with_capacity(cfg.sessions);
    let ramp_gap = Duration::from_secs_f64(1.0 / cfg.ramp.max(0.01));
    for index in 0..cfg.sessions {
        if index > 0 {
            tokio::time::sleep(ramp_gap).await;
        }
        let (kit, progress, cfg) = (kit.clone(), progress.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move { kit.session(index, &cfg, &progress, Leave::HangUp).await }));
    }
    let reporter = cfg.progress.then(|| {
        let (progress, total) = (progress.clone(), cfg.sessions);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let p95 = Dist::of(&progress.latencies.lock().unwrap_or_else(|p| p.into_inner())).p95;
                eprintln!(
                    "[{:>5.1}s] sessions up {}/{total}, failed {}, finished {}, p95 turn latency {p95:.0} ms",
                    started.elapsed().as_secs_f64(),
                    progress.up.load(Relaxed),
                    progress.failed.load(Relaxed),
                    progress.done.load(Relaxed),
                );
            }
        })
    });
    let mut report = Report {
        url: base.clone(),
        transport: format!("{:?}", cfg.transport).to_lowercase(),
        sessions_requested: cfg.sessions,
        duration_s: cfg.duration,
        silence_duration_ms: cfg.silence_ms,
        ..Default::default()
    };
    for t in tasks {
        report.sessions.push(t.await.unwrap_or_else(|e| SessionResult { failure: Some(format!("panic: {e}")), ..Default::default() }));
    }
    if let Some(r) = reporter {
        r.abort();
    }
    let wall = started.elapsed().as_secs_f64();
    report.duration_s = wall;
    report.loadgen_cpu_pct = (cpu_seconds(None) - cpu_start.0) * 100.0 / wall;
    if let (Some(pid), Some(start)) = (cfg.server_pid, cpu_start.1) {
        report.server_cpu_pct = Some((cpu_seconds(Some(pid)) - start) * 100.0 / wall);
    }
    report.aggregate();
    if let Some(path) = &cfg.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn run_session(
    index: usize,
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    spurt: &Spurt,
    cfg: &LoadgenConfig,
    progress: &Progress,
    leave: Leave,
) -> SessionResult {
    let mut result = SessionResult { index, ..Default::default() };
    let fail = |mut r: SessionResult, cause: String| {
        progress.failed.fetch_add(1, Relaxed);
        r.failure = Some(cause);
        r
    };
    let mut body = json!({"turn_detection": {"type": "server_vad", "silence_duration_ms": cfg.silence_ms}});
    if let Some(agent) = &cfg.agent {
        body["agent"] = json!(agent);
    }
    let connected = match cfg.transport {
        LoadTransport::Webrtc => connect_webrtc(http, base, api_key, &body, cfg.bind_ip, cfg.faults(index), cfg.dtx).await,
        LoadTransport::Rtp => {
            Client::connect_rtp(http, base, api_key, &body).await.map(|c| (c, api_key.to_string())).map_err(|e| e.cause())
        }
        LoadTransport::Twilio | LoadTransport::Ws => Err("phone calls and WebSocket sessions run in their own modules".into()),
    };
    let (mut client, token) = match connected {
        Ok(c) => c,
        Err(cause) => return fail(result, cause),
    };
    progress.up.fetch_add(1, Relaxed);
    result.answer_ms = Some(client.setup.answer.as_secs_f64() * 1000.0);
    result.connected_ms = Some(client.setup.connected.as_secs_f64() * 1000.0);
    let connected_at = Instant::now();

    // Spurt, then silence long enough for the turn to end and the echo to play in full.
    let gap_frames = spurt.gap_frames(cfg.silence_ms);
    let silence = OutFrame::Opus { payload: Bytes::from_static(&OPUS_SILENCE), voiced: false };
    let period_ms = spurt.duration_ms() + gap_frames as u64 * 20;
    // Whole periods covering at least --duration (a run is never shorter than asked).
    let spurts = ((cfg.duration * 1000.0) as u64).div_ceil(period_ms).max(1);
    for _ in 0..spurts {
        if client.dtx && spurt.dtx_period.len() == spurt.frames.len() + gap_frames {
            let voiced = |i: usize| i < spurt.frames.len();
            client.queue(spurt.dtx_period.iter().enumerate().map(|(i, f)| OutFrame::Opus { payload: f.clone(), voiced: voiced(i) }));
        } else {
            client.queue(spurt.frames.iter().map(|f| OutFrame::Opus { payload: f.clone(), voiced: true }));
            client.queue(std::iter::repeat_n(silence.clone(), gap_frames));
        }
    }
    let end = tokio::time::Instant::now() + Duration::from_millis(spurts * period_ms + 200);
    // Latencies go to the live progress line as each answer completes, not only at the end.
    let mut reported = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            ev = client.events.recv() => match ev {
                Some((_, ev)) => {
                    let kind = ev["type"].as_str().unwrap_or("?").to_string();
                    if kind == "response.done" {
                        let (_, so_far) = turn_latencies(&client.sent(), &client.received(), f64::from(cfg.silence_ms));
                        progress.latencies.lock().unwrap_or_else(|p| p.into_inner()).extend(so_far.iter().skip(reported));
                        reported = reported.max(so_far.len());
                    }
                    *result.events.entry(kind).or_default() += 1;
                }
                None => break,
            }
        }
    }
    if leave == Leave::HangUp
        && let Ok(resp) = http.delete(format!("{base}{}", client.location)).bearer_auth(&token).send().await
    {
        if !resp.status().is_success() {
            *result.events.entry(format!("client.delete_http_{}", resp.status().as_u16())).or_default() += 1;
        }
    }
    client.close().await;

    let sent = client.sent();
    let received = client.received();
    result.first_audio_ms =
        received.first().map(|r| r.at.duration_since(connected_at).as_secs_f64() * 1000.0 + result.connected_ms.unwrap_or(0.0));
    let (turns, latencies) = turn_latencies(&sent, &received, f64::from(cfg.silence_ms));
    result.turns_sent = turns;
    result.turns_answered = latencies.len();
    progress.latencies.lock().unwrap_or_else(|p| p.into_inner()).extend(latencies.iter().skip(reported));
    result.turn_latency_ms = latencies;
    let (lost, pct, jitter) = loss_and_jitter(&received, 48_000.0);
    result.packets_received = received.len();
    result.packets_lost = lost;
    result.loss_pct = pct;
    result.jitter_ms = jitter;
    progress.done.fetch_add(1, Relaxed);
    result
}

/// Like a browser: the API key mints a short-lived secret, the secret makes the call.
async fn connect_webrtc(
    http: &reqwest::Client,
    base: &str,
    api_key: &str,
    body: &Value,
    bind_ip: Option<std::net::IpAddr>,
    faults: NetworkFaults,
    dtx: bool,
) -> Result<(Client, String), String> {
    let secret = match http.post(format!("{base}/v1/realtime/sessions")).bearer_auth(api_key).json(body).send().await {
        Ok(r) if r.status().is_success() => match r.json::<Value>().await {
            Ok(v) => v["client_secret"]["value"].as_str().unwrap_or_default().to_string(),
            Err(_) => return Err("secret: bad JSON".into()),
        },
        Ok(r) => return Err(format!("secret: http_{}", r.status().as_u16())),
        Err(_) => return Err("secret: http".into()),
    };
    let mut opts = ClientOptions { decode: false, faults, dtx, ..Default::default() };
    if let Some(ip) = bind_ip {
        opts.bind_ip = ip;
    }
    let client = Client::connect(http, &format!("{base}/v1/realtime"), &secret, opts).await.map_err(|e| e.cause())?;
    Ok((client, secret))
}

/// User + system CPU seconds of a process (this one when `None`), from /proc; 0 when unknown.
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let Ok(stat) = std::fs::read_to_string(path) else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports these in USER_HZ, which is 100 on every mainstream kernel configuration.
    (ticks(11) + ticks(12)) / 100.0
}
