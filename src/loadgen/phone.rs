//! `loadgen --transport twilio`: simulated phone calls against the Media Streams bridge
//! (`/v1/telephony/twilio`), speaking Twilio's side of the protocol: `connected`, `start`,
//! `media` every 20 ms (base64 mu-law 8 kHz), every `mark` returned, `stop` at the end.
//!
//! Cheap on purpose, like the WebRTC side: the talk spurt is resampled, mu-law encoded and
//! base64'd once and shared by every call, and each call is one task with one socket. Marks
//! go back as soon as they arrive (a real line returns them once the audio before them has
//! played; the server's cost is the same, and the caller's playout is not what is measured).

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxrelay_media::{G711Law, Resampler, SAMPLES_48K, SampleRate, linear_to_ulaw};

use super::{LoadgenConfig, Progress};
use crate::client::{Received, Sent};
use crate::loadgen::report::SessionResult;

/// Samples in one 20 ms mu-law frame (one byte each).
const FRAME_8K: usize = 160;
/// A frame of mu-law silence (0xFF is the code for 0).
const SILENCE: [u8; FRAME_8K] = [0xFF; FRAME_8K];
/// Gaps longer than this between the server's frames separate two replies (the bridge sends
/// nothing while the agent is quiet), so they do not count as pacing jitter.
const REPLY_GAP: Duration = Duration::from_millis(200);

/// The talk spurt as Twilio `media` payloads, encoded once for every call.
pub struct PhoneSpurt {
    pub payloads: Vec<String>,
    pub silence: String,
}

impl PhoneSpurt {
    /// From 48 kHz mono PCM, through the server's own resampler and G.711 tables.
    pub fn from_pcm48(pcm: &[i16]) -> anyhow::Result<PhoneSpurt> {
        let mut down = Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_8K).map_err(|e| anyhow::anyhow!("resampler: {e:?}"))?;
        let mut payloads = Vec::with_capacity(pcm.len() / SAMPLES_48K + 1);
        for chunk in pcm.chunks(SAMPLES_48K) {
            let mut f = [0i16; SAMPLES_48K];
            f[..chunk.len()].copy_from_slice(chunk);
            let mut pcm8 = [0i16; FRAME_8K];
            down.process(&f, &mut pcm8);
            let codes: Vec<u8> = pcm8.iter().map(|&s| linear_to_ulaw(s)).collect();
            payloads.push(B64.encode(&codes));
        }
        Ok(PhoneSpurt { payloads, silence: B64.encode(SILENCE) })
    }

    pub fn duration_ms(&self) -> u64 {
        self.payloads.len() as u64 * 20
    }
}

/// The stream URL for an http(s) base URL, and the URL Twilio would have signed: the wss://
/// form, as the server's TwiML hands it out (`--public-url` or the Host header, https).
pub fn stream_urls(base: &str) -> anyhow::Result<(String, String)> {
    let path = voxrelay_signaling::telephony::STREAM_PATH;
    let url = reqwest::Url::parse(base)?;
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let ws = if url.scheme() == "https" { "wss" } else { "ws" };
    Ok((format!("{ws}://{authority}{path}"), format!("wss://{authority}{path}")))
}

fn start_message(stream_sid: &str, call_sid: &str) -> String {
    json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid, "start": {
        "accountSid": "AC00000000000000000000000000000000", "streamSid": stream_sid, "callSid": call_sid,
        "tracks": ["inbound"], "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
    .to_string()
}

fn media_message(stream_sid: &str, seq: u64, chunk: u64, payload: &str) -> String {
    // Counters are strings on Twilio's wire.
    format!(
        r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{chunk}","timestamp":"{}","payload":"{payload}"}},"streamSid":"{stream_sid}"}}"#,
        (chunk - 1) * 20
    )
}

/// One phone call: connect, talk in spurts for `cfg.duration`, hang up; measured like a
/// WebRTC session (turn latency from the last voiced frame sent to the first voiced frame back).
pub async fn run_session(index: usize, spurt: &PhoneSpurt, cfg: &LoadgenConfig, progress: &Progress, leave: super::Leave) -> SessionResult {
    let mut result = SessionResult { index, ..Default::default() };
    let fail = |mut r: SessionResult, cause: String| {
        progress.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        r.failure = Some(cause);
        r
    };
    let (url, signed) = match stream_urls(&cfg.url) {
        Ok(u) => u,
        Err(e) => return fail(result, format!("url: {e}")),
    };
    let mut request = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return fail(result, format!("url: {e}")),
    };
    if let Some(token) = &cfg.twilio_auth_token {
        let signature = voxrelay_signaling::telephony::twilio_signature(token, &signed, &[]);
        request.headers_mut().insert("x-twilio-signature", signature.parse().expect("base64 is a valid header value"));
    }
    let (ws, upgraded_ms) = match super::socket::dial(request).await {
        Ok(dialled) => dialled,
        Err(cause) => return fail(result, cause),
    };
    result.answer_ms = Some(upgraded_ms);
    result.connected_ms = Some(upgraded_ms);
    progress.up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (mut tx, mut rx) = ws.split();
    let stream_sid = format!("MZ{:032x}", 0x10ad_0000_0000_u128 + index as u128);
    let call_sid = format!("CA{:032x}", 0x10ad_0000_0000_u128 + index as u128);
    let opening = [r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#.to_string(), start_message(&stream_sid, &call_sid)];
    for m in opening {
        if tx.send(Message::text(m)).await.is_err() {
            return fail(result, "socket closed before start".into());
        }
    }

    // The same schedule as a WebRTC session: spurt, then silence long enough for the turn to
    // end and the echo to play in full.
    let gap_frames = (u64::from(cfg.silence_ms) + spurt.duration_ms() + 1000) / 20;
    let period = spurt.payloads.len() as u64 + gap_frames;
    // Whole periods covering at least --duration (a run is never shorter than asked).
    let spurts = ((cfg.duration * 1000.0) as u64).div_ceil(period * 20).max(1);
    let total = spurts * period;
    let (mut sent, mut received) = (Vec::<Sent>::with_capacity(total as usize), Vec::<Received>::new());
    let (mut seq, mut chunk) = (1u64, 0u64);
    let mut pcm = [0i16; FRAME_8K];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    // A late tick sends its frames at once, as a carrier's burst: the stream's timeline stays.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut failure = None;
    while chunk < total {
        tokio::select! {
            _ = tick.tick() => {
                let in_period = (chunk % period) as usize;
                let (payload, voiced) = match spurt.payloads.get(in_period) {
                    Some(p) => (p.as_str(), true),
                    None => (spurt.silence.as_str(), false),
                };
                seq += 1;
                chunk += 1;
                if tx.send(Message::text(media_message(&stream_sid, seq, chunk, payload))).await.is_err() {
                    failure = Some("socket closed mid-call".to_string());
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
                    let event = v["event"].as_str().unwrap_or("?").to_string();
                    match event.as_str() {
                        "media" => {
                            let bytes = B64.decode(v["media"]["payload"].as_str().unwrap_or_default()).unwrap_or_default();
                            let n = bytes.len().min(FRAME_8K);
                            G711Law::Mu.decode(&bytes[..n], &mut pcm[..n]);
                            let rms = (pcm[..n].iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / n.max(1) as f64).sqrt();
                            let k = received.len() as u32;
                            received.push(Received { at: Instant::now(), seq: k as u16, timestamp: k * FRAME_8K as u32, payload_len: bytes.len(), rms: Some(rms), fec: false });
                        }
                        "mark" => {
                            seq += 1;
                            let back = json!({"event": "mark", "sequenceNumber": seq.to_string(), "streamSid": stream_sid, "mark": v["mark"]});
                            if tx.send(Message::text(back.to_string())).await.is_err() {
                                failure = Some("socket closed mid-call".to_string());
                                break;
                            }
                        }
                        _ => {}
                    }
                    *result.events.entry(event).or_default() += 1;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    failure = Some("server closed the stream".to_string());
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
    }
    if leave == super::Leave::HangUp {
        seq += 1;
        let stop = json!({"event": "stop", "sequenceNumber": seq.to_string(), "streamSid": stream_sid,
            "stop": {"accountSid": "AC00000000000000000000000000000000", "callSid": call_sid}});
        let _ = tx.send(Message::text(stop.to_string())).await;
        let _ = tx.close().await;
    }
    // Abrupt: both halves drop here, the TCP connection closes without a word.
    drop((tx, rx));
    if let Some(cause) = failure {
        return fail(result, cause);
    }

    super::socket::finish(result, &sent, &received, upgraded_ms, cfg, progress)
}

/// RFC 3550's interarrival jitter estimator over the server's 20 ms frames, restarted at each
/// reply (the bridge sends nothing between replies), ms.
pub fn pacing_jitter_ms(received: &[Received]) -> f64 {
    let mut jitter = 0.0f64;
    for w in received.windows(2) {
        let gap = w[1].at.duration_since(w[0].at);
        if gap > REPLY_GAP {
            continue;
        }
        let d = (gap.as_secs_f64() * 1000.0 - 20.0).abs();
        jitter += (d - jitter) / 16.0;
    }
    jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_urls_follow_the_base_and_sign_the_wss_form() {
        let (url, signed) = stream_urls("http://127.0.0.1:8080").unwrap();
        assert_eq!(url, "ws://127.0.0.1:8080/v1/telephony/twilio");
        assert_eq!(signed, "wss://127.0.0.1:8080/v1/telephony/twilio");
        let (url, _) = stream_urls("https://voice.example.com/").unwrap();
        assert_eq!(url, "wss://voice.example.com/v1/telephony/twilio");
    }

    #[test]
    fn media_messages_are_twilios_shape() {
        let v: Value = serde_json::from_str(&media_message("MZ1", 7, 3, "//8=")).unwrap();
        assert_eq!(v["event"], "media");
        assert_eq!(v["sequenceNumber"], "7");
        assert_eq!(v["media"]["chunk"], "3");
        assert_eq!(v["media"]["timestamp"], "40");
        assert_eq!(v["media"]["payload"], "//8=");
        assert_eq!(v["streamSid"], "MZ1");
    }

    #[test]
    fn the_spurt_is_20_ms_mulaw_frames() {
        let pcm: Vec<i16> = (0..SAMPLES_48K * 5).map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16).collect();
        let s = PhoneSpurt::from_pcm48(&pcm).unwrap();
        assert_eq!(s.payloads.len(), 5);
        assert!(s.payloads.iter().all(|p| B64.decode(p).unwrap().len() == FRAME_8K));
        assert_eq!(B64.decode(&s.silence).unwrap(), SILENCE);
    }

    #[test]
    fn pacing_jitter_ignores_the_gaps_between_replies() {
        let t0 = Instant::now();
        let frame = |ms: u64| Received {
            at: t0 + Duration::from_millis(ms),
            seq: 0,
            timestamp: 0,
            payload_len: 160,
            rms: Some(1000.0),
            fec: false,
        };
        let steady: Vec<Received> = (0..50).map(|i| frame(i * 20)).chain((0..50).map(|i| frame(5000 + i * 20))).collect();
        assert!(pacing_jitter_ms(&steady) < 0.01);
        let uneven: Vec<Received> = (0..50).map(|i| frame(i * 20 + if i % 2 == 0 { 5 } else { 0 })).collect();
        assert!(pacing_jitter_ms(&uneven) > 3.0);
    }
}
