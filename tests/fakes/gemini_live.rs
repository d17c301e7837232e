//! A local stand-in for the Gemini Live API (`BidiGenerateContent` over WebSocket), speaking
//! its documented messages so voxrelay's real adapter runs unchanged: the key in
//! `x-goog-api-key` (or `?key=`), a bad key closes the socket with 1008 "API key not valid",
//! `setup` first and nothing else before `setupComplete` (else 1007), `realtimeInput` audio as
//! `audio/pcm;rate=16000` inside `activityStart`/`activityEnd` (automatic activity detection
//! disabled), `serverContent` with `modelTurn` audio parts at 24 kHz, `outputTranscription`,
//! `inputTranscription`, `interrupted`, `turnComplete`, plus `sessionResumptionUpdate` and
//! `goAway`. Its "model" says the caller's last activity back (upsampled to 24 kHz), or a
//! tone, paced at 5x real time.
//!
//! Function calling: when `setup.tools[0].functionDeclarations` is given, an activity's end is
//! answered with a `toolCall` of the first function (args [`TOOL_ARGS`]) and no speech; the
//! model speaks (the activity back) once the matching `toolResponse` arrives.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

pub const PATH: &str = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent";
pub const REPLY_TRANSCRIPT: &str = "fake gemini reply";
const CHUNK_24K: usize = 2400;
pub const TOOL_CALL_ID: &str = "fc_fake1";
pub fn tool_args() -> Value {
    json!({"city": "Oslo"})
}
const CHUNK_EVERY: Duration = Duration::from_millis(20);

#[derive(Clone, Default)]
pub struct Behaviour {
    /// Answer the first turn with this long a 440 Hz tone (later turns say the caller back).
    pub tone_ms: Option<usize>,
    /// After the first completed turn on the first connection: send `goAway` and close 1 s later.
    pub go_away_after_first_turn: bool,
}

#[derive(Default)]
pub struct Log {
    /// Every client message (audio data elided), all connections.
    pub messages: Vec<Value>,
    /// 16 kHz samples received inside activities.
    pub audio_samples: usize,
    pub connections: usize,
    /// `setup` of each connection.
    pub setups: Vec<Value>,
    /// activityStart received while the model was speaking.
    pub interruptions: usize,
}

pub struct FakeGemini {
    pub url: String,
    pub log: Arc<Mutex<Log>>,
}

impl FakeGemini {
    pub async fn start(api_key: &str, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}{PATH}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let (key, log2) = (api_key.to_string(), log.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                n += 1;
                let (key, log, behaviour) = (key.clone(), log2.clone(), behaviour.clone());
                tokio::spawn(async move { serve(tcp, key, log, behaviour, n == 1).await });
            }
        });
        Self { url, log }
    }

    pub fn kinds(&self) -> Vec<String> {
        self.log.lock().unwrap().messages.iter().map(kind).collect()
    }
}

/// A short name for a client message: `setup`, `activityStart`, `audio`, `activityEnd`,
/// `clientContent`, `toolResponse`.
pub fn kind(m: &Value) -> String {
    if let Some(ri) = m.get("realtimeInput") {
        for k in ["activityStart", "activityEnd", "audio", "mediaChunks", "text"] {
            if ri.get(k).is_some() {
                return k.into();
            }
        }
    }
    m.as_object().and_then(|o| o.keys().next().cloned()).unwrap_or_default()
}

struct Speaking {
    audio: Vec<i16>,
    pos: usize,
    chunks: usize,
}

async fn close(tx: &mut (impl SinkExt<Message> + Unpin), code: u16, reason: &str) {
    let _ = tx.send(Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.to_string().into() }))).await;
}

async fn serve(tcp: tokio::net::TcpStream, key: String, log: Arc<Mutex<Log>>, behaviour: Behaviour, first_conn: bool) {
    let mut key_ok = false;
    let mut path_ok = false;
    let check = |req: &Request, resp: Response| {
        let header = req.headers().get("x-goog-api-key").and_then(|v| v.to_str().ok()).map(String::from);
        let query = req.uri().query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("key=")).map(String::from));
        key_ok = header.or(query).is_some_and(|k| k == key);
        path_ok = req.uri().path() == PATH;
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else { return };
    let (mut tx, mut rx) = ws.split();
    if !key_ok || !path_ok {
        // As the real service does: the upgrade succeeds, then the socket closes with the reason.
        close(&mut tx, 1008, "API key not valid. Please pass a valid API key.").await;
        return;
    }
    log.lock().unwrap().connections += 1;
    let mut setup_done = false;
    let mut in_activity = false;
    let mut activity: Vec<i16> = Vec::new();
    let mut transcribe_input = false;
    let mut tool: Option<String> = None;
    let mut waiting_tool = false;
    let mut speaking: Option<Speaking> = None;
    let mut turns = 0;
    let mut answers = 0;
    let mut closing_at: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(CHUNK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(text) = msg else { continue };
                let m: Value = match serde_json::from_str(text.as_str()) {
                    Ok(m) => m,
                    Err(_) => return close(&mut tx, 1007, "Invalid JSON payload received.").await,
                };
                let k = kind(&m);
                let mut logged = m.clone();
                if k == "audio" {
                    logged["realtimeInput"]["audio"]["data"] = json!("<elided>");
                }
                log.lock().unwrap().messages.push(logged);
                if !setup_done {
                    if k != "setup" {
                        return close(&mut tx, 1007, "setup must be the first message").await;
                    }
                    setup_done = true;
                    transcribe_input = m["setup"].get("inputAudioTranscription").is_some();
                    tool = m["setup"]["tools"][0]["functionDeclarations"][0]["name"].as_str().map(String::from);
                    log.lock().unwrap().setups.push(m["setup"].clone());
                    if tx.send(Message::text(json!({"setupComplete": {}}).to_string())).await.is_err() {
                        return;
                    }
                    continue;
                }
                match k.as_str() {
                    "activityStart" => {
                        in_activity = true;
                        activity.clear();
                        if speaking.take().is_some() {
                            log.lock().unwrap().interruptions += 1;
                            let _ = tx.send(Message::text(json!({"serverContent": {"interrupted": true}}).to_string())).await;
                        }
                    }
                    "audio" => {
                        let a = &m["realtimeInput"]["audio"];
                        assert_eq!(a["mimeType"], "audio/pcm;rate=16000", "16 kHz pcm in");
                        assert!(in_activity, "with activity detection disabled, audio belongs in an activity");
                        let bytes = B64.decode(a["data"].as_str().unwrap()).unwrap();
                        activity.extend(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
                        log.lock().unwrap().audio_samples += bytes.len() / 2;
                    }
                    "activityEnd" => {
                        in_activity = false;
                        if transcribe_input {
                            let t = json!({"serverContent": {"inputTranscription": {"text": format!("user said {} ms", activity.len() / 16)}}});
                            let _ = tx.send(Message::text(t.to_string())).await;
                        }
                        if let Some(name) = tool.clone() {
                            waiting_tool = true;
                            let call = json!({"toolCall": {"functionCalls": [{"id": TOOL_CALL_ID, "name": name, "args": tool_args()}]}});
                            let _ = tx.send(Message::text(call.to_string())).await;
                            continue;
                        }
                        answers += 1;
                        let audio = match behaviour.tone_ms.filter(|_| answers == 1) {
                            Some(ms) => tone(ms),
                            None => activity.iter().flat_map(|&s| [s, s, s]).step_by(2).collect(),
                        };
                        speaking = Some(Speaking { audio, pos: 0, chunks: 0 });
                    }
                    "toolResponse" => {
                        let r = &m["toolResponse"]["functionResponses"][0];
                        assert!(waiting_tool && r["id"] == TOOL_CALL_ID, "a response to the call made: {m}");
                        assert!(r["response"].is_object(), "a function response is an object");
                        waiting_tool = false;
                        let audio = activity.iter().flat_map(|&s| [s, s, s]).step_by(2).collect();
                        speaking = Some(Speaking { audio, pos: 0, chunks: 0 });
                    }
                    "clientContent" if m["clientContent"]["turnComplete"] == true => {
                        speaking = Some(Speaking { audio: tone(1000), pos: 0, chunks: 0 });
                    }
                    _ => {}
                }
            }
            _ = tick.tick(), if speaking.is_some() || closing_at.is_some() => {
                if closing_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    return close(&mut tx, 1000, "").await;
                }
                let Some(s) = speaking.as_mut() else { continue };
                let mut out = Vec::new();
                if s.pos < s.audio.len() {
                    let end = (s.pos + CHUNK_24K).min(s.audio.len());
                    let bytes: Vec<u8> = s.audio[s.pos..end].iter().flat_map(|v| v.to_le_bytes()).collect();
                    s.pos = end;
                    s.chunks += 1;
                    let mut content = json!({"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": B64.encode(bytes)}}]}});
                    if s.chunks == 1 {
                        content["outputTranscription"] = json!({"text": REPLY_TRANSCRIPT});
                    }
                    out.push(json!({"serverContent": content}));
                } else {
                    speaking = None;
                    turns += 1;
                    out.push(json!({"serverContent": {"generationComplete": true}}));
                    out.push(json!({"serverContent": {"turnComplete": true}}));
                    out.push(json!({"sessionResumptionUpdate": {"newHandle": format!("handle-{turns}"), "resumable": true}}));
                    if first_conn && behaviour.go_away_after_first_turn && closing_at.is_none() {
                        out.push(json!({"goAway": {"timeLeft": "1s"}}));
                        closing_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                }
                for m in out {
                    if tx.send(Message::text(m.to_string())).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn tone(ms: usize) -> Vec<i16> {
    (0..ms * 24).map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / 24_000.0).sin() * 8000.0) as i16).collect()
}
