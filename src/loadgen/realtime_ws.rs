//! `loadgen --transport ws`: Realtime sessions over WebSocket (`GET /v1/realtime`), as a
//! server-side app drives them: `session.update` with the run's turn detection, then one
//! `input_audio_buffer.append` of 20 ms (base64 pcm16 at 24 kHz) every 20 ms, as a microphone
//! streams; the agent's `response.audio.delta` chunks are decoded to measure what comes back.
//!
//! Cheap on purpose, like the other transports: the talk spurt is resampled and base64'd once
//! and shared by every session; each session is one task with one socket.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxrelay_media::{Resampler, SAMPLES_24K, SAMPLES_48K, SampleRate};

use super::{LoadgenConfig, Progress};
use crate::client::{Received, Sent};
use crate::loadgen::report::SessionResult;

/// The talk spurt as `append` messages of 20 ms each, made once for every session.
pub struct WsSpurt {
    pub appends: Vec<String>,
    pub silence: String,
}

fn append_message(pcm: &[i16; SAMPLES_24K]) -> String {
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    json!({"type": "input_audio_buffer.append", "audio": B64.encode(bytes)}).to_string()
}

impl WsSpurt {
    /// From 48 kHz mono PCM, through the server's own resampler.
    pub fn from_pcm48(pcm: &[i16]) -> anyhow::Result<WsSpurt> {
        let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_24K).map_err(|e| anyhow::anyhow!("resampler: {e:?}"))?;
        let mut appends = Vec::with_capacity(pcm.len() / SAMPLES_48K + 1);
        for chunk in pcm.chunks(SAMPLES_48K) {
            let mut f = [0i16; SAMPLES_48K];
            f[..chunk.len()].copy_from_slice(chunk);
            let mut pcm24 = [0i16; SAMPLES_24K];
            down.process(&f, &mut pcm24);
            appends.push(append_message(&pcm24));
        }
        Ok(WsSpurt { appends, silence: append_message(&[0; SAMPLES_24K]) })
    }

    pub fn duration_ms(&self) -> u64 {
        self.appends.len() as u64 * 20
    }
}

/// The session socket's URL for an http(s) base URL.
pub fn session_url(base: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(base)?;
    let ws = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(ws).map_err(|_| anyhow::anyhow!("cannot make a WebSocket URL of {base}"))?;
    url.set_path("/v1/realtime");
    url.set_query(Some("model=loadgen"));
    Ok(url.to_string())
}

/// One session: connect, talk in spurts for `cfg.duration`, close; measured like a WebRTC
/// session (turn latency from the last voiced frame sent to the first voiced delta back).
pub async fn run_session(
    index: usize,
    api_key: &str,
    spurt: &WsSpurt,
    cfg: &LoadgenConfig,
    progress: &Progress,
    leave: super::Leave,
) -> SessionResult {
    let mut result = SessionResult { index, ..Default::default() };
    let fail = |mut r: SessionResult, cause: String| {
        progress.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        r.failure = Some(cause);
        r
    };
    let request = session_url(&cfg.url).map_err(|e| e.to_string()).and_then(|u| u.into_client_request().map_err(|e| e.to_string()));
    let mut request = match request {
        Ok(r) => r,
        Err(e) => return fail(result, format!("url: {e}")),
    };
    match format!("Bearer {api_key}").parse() {
        Ok(v) => request.headers_mut().insert("authorization", v),
        Err(_) => return fail(result, "the API key is not a valid header value".into()),
    };
    let (ws, upgraded_ms) = match super::socket::dial(request).await {
        Ok(dialled) => dialled,
        Err(cause) => return fail(result, cause),
    };
    result.answer_ms = Some(upgraded_ms);
    result.connected_ms = Some(upgraded_ms);
    progress.up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (mut tx, mut rx) = ws.split();
    let update =
        json!({"type": "session.update", "session": {"turn_detection": {"type": "server_vad", "silence_duration_ms": cfg.silence_ms}}});
    if tx.send(Message::text(update.to_string())).await.is_err() {
        return fail(result, "socket closed before the first event".into());
    }

    // The same schedule as a WebRTC session: spurt, then silence long enough for the turn to
    // end and the echo to play in full.
    let gap_frames = (u64::from(cfg.silence_ms) + spurt.duration_ms() + 1000) / 20;
    let period = spurt.appends.len() as u64 + gap_frames;
    let spurts = ((cfg.duration * 1000.0) as u64).div_ceil(period * 20).max(1);
    let total = spurts * period;
    let (mut sent, mut received) = (Vec::<Sent>::with_capacity(total as usize), Vec::<Received>::new());
    let mut chunk = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut failure = None;
    while chunk < total {
        tokio::select! {
            _ = tick.tick() => {
                let (append, voiced) = match spurt.appends.get((chunk % period) as usize) {
                    Some(a) => (a.as_str(), true),
                    None => (spurt.silence.as_str(), false),
                };
                chunk += 1;
                if tx.send(Message::text(append)).await.is_err() {
                    failure = Some("socket closed mid-session".to_string());
                    break;
                }
                sent.push(Sent { at: Instant::now(), voiced });
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let Ok(v) = serde_json::from_str::<Value>(&t) else {
                        *result.events.entry("invalid_json".into()).or_default() += 1;
                        continue;
                    };
                    let kind = v["type"].as_str().unwrap_or("?").to_string();
                    if kind == "response.audio.delta" {
                        let bytes = B64.decode(v["delta"].as_str().unwrap_or_default()).unwrap_or_default();
                        let samples = bytes.chunks_exact(2).map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])));
                        let n = bytes.len() / 2;
                        let rms = (samples.map(|s| s * s).sum::<f64>() / n.max(1) as f64).sqrt();
                        let k = received.len() as u32;
                        received.push(Received { at: Instant::now(), seq: k as u16, timestamp: k * SAMPLES_24K as u32, payload_len: bytes.len(), rms: Some(rms), fec: false });
                    }
                    *result.events.entry(kind).or_default() += 1;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    failure = Some("server closed the socket".to_string());
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
    }
    if leave == super::Leave::HangUp {
        let _ = tx.close().await;
    }
    // Abrupt: both halves drop here, the TCP connection closes without a close frame.
    drop((tx, rx));
    if let Some(cause) = failure {
        return fail(result, cause);
    }
    super::socket::finish(result, &sent, &received, upgraded_ms, cfg, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_follows_the_base() {
        assert_eq!(session_url("http://127.0.0.1:8080").unwrap(), "ws://127.0.0.1:8080/v1/realtime?model=loadgen");
        assert_eq!(session_url("https://voice.example.com/").unwrap(), "wss://voice.example.com/v1/realtime?model=loadgen");
    }

    #[test]
    fn the_spurt_is_20_ms_pcm16_appends() {
        let pcm: Vec<i16> = (0..SAMPLES_48K * 5).map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16).collect();
        let s = WsSpurt::from_pcm48(&pcm).unwrap();
        assert_eq!(s.appends.len(), 5);
        for a in &s.appends {
            let v: Value = serde_json::from_str(a).unwrap();
            assert_eq!(v["type"], "input_audio_buffer.append");
            assert_eq!(B64.decode(v["audio"].as_str().unwrap()).unwrap().len(), SAMPLES_24K * 2);
        }
    }
}
