//! Local stand-ins for the cascade's three providers, each speaking its documented wire
//! protocol so voxrelay's real adapters run unchanged:
//! - Deepgram live (`/v1/listen`, `Authorization: Token`, HTTP 401 otherwise): binary linear16
//!   16 kHz in; `Results` out (interim every 500 ms of audio; on `Finalize` a final one with
//!   `from_finalize: true` whose transcript is "heard <ms> ms"); `KeepAlive`, `CloseStream`.
//! - AssemblyAI Universal-Streaming v3 (`/v3/ws`, the bare key in `Authorization`, else close
//!   1008): `Begin` first; binary pcm_s16le 16 kHz frames, each 50-1000 ms (shorter or longer
//!   ones are counted as violations); a partial `Turn` every 500 ms of audio; `ForceEndpoint`
//!   ends the turn with an unformatted then a formatted `Turn` ("Heard <ms> ms."); `Terminate`
//!   is answered with `Termination` and a close.
//! - OpenAI chat completions and Anthropic messages over SSE (`/v1/chat/completions` with
//!   Bearer, `/v1/messages` with `x-api-key` + `anthropic-version`): the reply "You said: <last
//!   user text>. That is all." one word per event, 20 ms apart. When the request declares
//!   tools and does not end with a tool result, the reply is a call of the first tool with
//!   [`TOOL_ARGS`] instead (OpenAI `delta.tool_calls` chunks, `finish_reason: "tool_calls"`;
//!   Anthropic a `tool_use` block with `input_json_delta`s, `stop_reason: "tool_use"`); after
//!   a tool result it is [`reply_for_tool`] of the result.
//! - ElevenLabs stream-input (`/v1/text-to-speech/<voice>/stream-input`, `xi-api-key`;
//!   a bad key gets an error message and close 1008): each flushed text becomes 20 ms of 24 kHz
//!   tone per character (base64 pcm16 `audio` messages), `{"text": ""}` ends with `isFinal`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode as WsStatus;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[derive(Default)]
pub struct Log {
    pub stt_samples: usize,
    pub stt_connections: usize,
    pub finalizes: usize,
    pub llm_requests: Vec<Value>,
    /// ElevenLabs messages in order, as ("text"|"audio-out"|"end"|"final-out", detail).
    pub tts_events: Vec<(String, String)>,
    pub tts_rejected: usize,
    /// AssemblyAI: audio messages, those outside 50-1000 ms, endpoints forced, sessions ended.
    pub aai_frames: usize,
    pub aai_bad_frames: usize,
    pub aai_force_endpoints: usize,
    pub aai_terminated: usize,
    /// HTTP statuses the chat completions endpoint answers the next requests with (429: rate
    /// limited, 5xx: OpenAI's error bodies for each), before answering normally again.
    pub llm_failures: std::collections::VecDeque<u16>,
}

#[derive(Clone)]
pub struct Keys {
    pub deepgram: String,
    pub assemblyai: String,
    pub llm: String,
    pub elevenlabs: String,
}

pub const TOOL_ARGS: &str = r#"{"city":"Oslo"}"#;
pub const OPENAI_CALL_ID: &str = "call_fake1";
pub const ANTHROPIC_CALL_ID: &str = "toolu_fake1";

/// Reply text of the fake model after a tool result.
pub fn reply_for_tool(result: &str) -> String {
    format!("The tool said {result}. That is all.")
}

/// The result the request ends with, if it ends with one (either API's shape).
fn tool_result(body: &Value) -> Option<String> {
    let last = body["messages"].as_array()?.last()?;
    if last["role"] == "tool" {
        return last["content"].as_str().map(String::from);
    }
    let blocks = last["content"].as_array()?;
    blocks.iter().find(|b| b["type"] == "tool_result").and_then(|b| b["content"].as_str()).map(String::from)
}

/// Thirds of the arguments, as a model streams them.
fn args_pieces() -> [&'static str; 3] {
    [&TOOL_ARGS[..3], &TOOL_ARGS[3..8], &TOOL_ARGS[8..]]
}

/// Reply text of the fake model for a user message.
pub fn reply_for(user: &str) -> String {
    format!("You said: {user}. That is all.")
}

pub struct FakeCascade {
    pub stt_url: String,
    pub assemblyai_url: String,
    pub llm_url: String,
    pub tts_url: String,
    pub log: Arc<Mutex<Log>>,
}

impl FakeCascade {
    /// `tts_ms_per_char`: speech length per character of text (20 gives short answers).
    pub async fn start(keys: Keys, tts_ms_per_char: usize) -> Self {
        let log = Arc::new(Mutex::new(Log::default()));
        let stt = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tts = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let llm = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let aai = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let assemblyai_url = format!("ws://{}/v3/ws", aai.local_addr().unwrap());
        let (k, l) = (keys.clone(), log.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = aai.accept().await {
                tokio::spawn(assemblyai(tcp, k.assemblyai.clone(), l.clone()));
            }
        });
        let (stt_url, tts_url, llm_url) = (
            format!("ws://{}/v1/listen", stt.local_addr().unwrap()),
            format!("ws://{}", tts.local_addr().unwrap()),
            format!("http://{}/v1", llm.local_addr().unwrap()),
        );
        let (k, l) = (keys.clone(), log.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = stt.accept().await {
                tokio::spawn(deepgram(tcp, k.deepgram.clone(), l.clone()));
            }
        });
        let (k, l) = (keys.clone(), log.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = tts.accept().await {
                tokio::spawn(elevenlabs(tcp, k.elevenlabs.clone(), l.clone(), tts_ms_per_char));
            }
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/messages", post(anthropic))
            .with_state((keys.llm.clone(), log.clone()));
        tokio::spawn(async move { axum::serve(llm, app).await.unwrap() });
        Self { stt_url, assemblyai_url, llm_url, tts_url, log }
    }
}

fn reject(status: WsStatus, body: &str) -> ErrorResponse {
    let mut err = ErrorResponse::new(Some(body.to_string()));
    *err.status_mut() = status;
    err
}

async fn deepgram(tcp: tokio::net::TcpStream, key: String, log: Arc<Mutex<Log>>) {
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if auth != format!("Token {key}") {
            return Err(reject(WsStatus::UNAUTHORIZED, r#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials."}"#));
        }
        let q = req.uri().query().unwrap_or_default();
        assert!(q.contains("encoding=linear16") && q.contains("sample_rate=16000"), "query {q}");
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else { return };
    log.lock().unwrap().stt_connections += 1;
    let (mut tx, mut rx) = ws.split();
    let mut samples = 0usize;
    let mut since_interim = 0usize;
    while let Some(Ok(msg)) = rx.next().await {
        let out = match msg {
            Message::Binary(b) => {
                samples += b.len() / 2;
                since_interim += b.len() / 2;
                log.lock().unwrap().stt_samples += b.len() / 2;
                if since_interim < 8000 {
                    continue;
                }
                since_interim = 0;
                results(&format!("heard {} ms", samples / 16), false, false)
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str() {
                    Some("Finalize") => {
                        log.lock().unwrap().finalizes += 1;
                        let r = results(&format!("heard {} ms", samples / 16), true, true);
                        samples = 0;
                        r
                    }
                    Some("CloseStream") => return,
                    _ => continue,
                }
            }
            _ => continue,
        };
        if tx.send(Message::text(out.to_string())).await.is_err() {
            return;
        }
    }
}

// The handshake callback's error type is tungstenite's, large or not.
#[allow(clippy::result_large_err)]
async fn assemblyai(tcp: tokio::net::TcpStream, key: String, log: Arc<Mutex<Log>>) {
    let mut key_ok = false;
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        key_ok = req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(key.as_str());
        let q = req.uri().query().unwrap_or_default();
        assert_eq!(req.uri().path(), "/v3/ws");
        assert!(q.contains("sample_rate=16000") && q.contains("encoding=pcm_s16le") && q.contains("speech_model="), "query {q}");
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else { return };
    let (mut tx, mut rx) = ws.split();
    if !key_ok {
        let _ = tx
            .send(Message::Close(Some(CloseFrame { code: CloseCode::Policy, reason: "Unauthorized connection: Invalid API key".into() })))
            .await;
        return;
    }
    let begin = json!({"type": "Begin", "id": "fake-session", "expires_at": 4_000_000_000u64});
    if tx.send(Message::text(begin.to_string())).await.is_err() {
        return;
    }
    let mut samples = 0usize;
    let mut since_partial = 0usize;
    let mut turn_order = 0;
    let turn = |order: i32, text: String, end: bool, formatted: bool| {
        json!({"type": "Turn", "turn_order": order, "turn_is_formatted": formatted, "end_of_turn": end, "transcript": text,
            "end_of_turn_confidence": if end { 0.9 } else { 0.1 }, "words": [], "utterance": ""})
    };
    while let Some(Ok(msg)) = rx.next().await {
        let out = match msg {
            Message::Binary(b) => {
                let ms = b.len() / 32;
                {
                    let mut l = log.lock().unwrap();
                    l.aai_frames += 1;
                    l.stt_samples += b.len() / 2;
                    if !(50..=1000).contains(&ms) {
                        l.aai_bad_frames += 1;
                    }
                }
                samples += b.len() / 2;
                since_partial += b.len() / 2;
                if since_partial < 8000 {
                    continue;
                }
                since_partial = 0;
                vec![turn(turn_order, format!("heard {}", samples / 16), false, false)]
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str() {
                    Some("ForceEndpoint") => {
                        log.lock().unwrap().aai_force_endpoints += 1;
                        let ms = samples / 16;
                        samples = 0;
                        let order = turn_order;
                        turn_order += 1;
                        vec![turn(order, format!("heard {ms} ms"), true, false), turn(order, format!("Heard {ms} ms."), true, true)]
                    }
                    Some("Terminate") => {
                        log.lock().unwrap().aai_terminated += 1;
                        let end = json!({"type": "Termination", "audio_duration_seconds": 1, "session_duration_seconds": 1});
                        let _ = tx.send(Message::text(end.to_string())).await;
                        let _ = tx.send(Message::Close(None)).await;
                        return;
                    }
                    _ => continue,
                }
            }
            _ => continue,
        };
        for m in out {
            if tx.send(Message::text(m.to_string())).await.is_err() {
                return;
            }
        }
    }
}

fn results(text: &str, is_final: bool, from_finalize: bool) -> Value {
    json!({"type": "Results", "channel_index": [0, 1], "duration": 1.0, "start": 0.0, "is_final": is_final,
        "speech_final": is_final, "from_finalize": from_finalize,
        "channel": {"alternatives": [{"transcript": text, "confidence": 0.98, "words": []}]}, "metadata": {"request_id": "fake"}})
}

fn last_user_text(body: &Value) -> String {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    msgs.iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

fn sse(events: Vec<String>) -> HttpResponse {
    let stream = futures_util::stream::iter(events).then(|e| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::convert::Infallible>(e)
    });
    ([("content-type", "text/event-stream")], Body::from_stream(stream)).into_response()
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        out.push(if i == 0 { w.to_string() } else { format!(" {w}") });
    }
    out
}

async fn openai_chat(State((key, log)): State<(String, Arc<Mutex<Log>>)>, headers: HeaderMap, body: axum::Json<Value>) -> HttpResponse {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {key}")) {
        let err = json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}});
        return (StatusCode::UNAUTHORIZED, axum::Json(err)).into_response();
    }
    assert_eq!(body["stream"], true);
    log.lock().unwrap().llm_requests.push(body.0.clone());
    let failure = log.lock().unwrap().llm_failures.pop_front();
    if let Some(status) = failure {
        // As OpenAI documents its error codes: 429 with Retry-After, 500/503 server errors.
        let (kind, code, message) = match status {
            429 => ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
            503 => ("server_error", "service_unavailable", "The engine is currently overloaded, please try again later"),
            _ => ("server_error", "internal_error", "The server had an error while processing your request."),
        };
        let err = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
        let mut resp = (StatusCode::from_u16(status).unwrap(), axum::Json(err)).into_response();
        if status == 429 {
            resp.headers_mut().insert("retry-after", "1".parse().unwrap());
        }
        return resp;
    }
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let result = tool_result(&body);
    if let (Some(name), None) = (body["tools"][0]["function"]["name"].as_str(), &result) {
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": OPENAI_CALL_ID, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        )];
        for piece in args_pieces() {
            events.push(chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), Value::Null));
        }
        events.push(chunk(json!({}), json!("tool_calls")));
        events.push("data: [DONE]\n\n".into());
        return sse(events);
    }
    let text = match result {
        Some(r) => reply_for_tool(&r),
        None => reply_for(&last_user_text(&body)),
    };
    let mut events: Vec<String> = words(&text)
        .into_iter()
        .map(|w| format!("data: {}\n\n", json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]})))
        .collect();
    events.push("data: [DONE]\n\n".into());
    sse(events)
}

async fn anthropic(State((key, log)): State<(String, Arc<Mutex<Log>>)>, headers: HeaderMap, body: axum::Json<Value>) -> HttpResponse {
    if headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(&key) || headers.get("anthropic-version").is_none() {
        let err = json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}});
        return (StatusCode::UNAUTHORIZED, axum::Json(err)).into_response();
    }
    assert_eq!(body["messages"][0]["role"], "user", "Anthropic conversations start with the user");
    log.lock().unwrap().llm_requests.push(body.0.clone());
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let start = ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "content": []}}),
    );
    let result = tool_result(&body);
    if let (Some(name), None) = (body["tools"][0]["name"].as_str(), &result) {
        let mut events = vec![
            start,
            ev(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": ANTHROPIC_CALL_ID, "name": name, "input": {}}}),
            ),
        ];
        for piece in args_pieces() {
            events.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        events.push(ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 10}}),
        ));
        events.push(ev("message_stop", json!({"type": "message_stop"})));
        return sse(events);
    }
    let text = match result {
        Some(r) => reply_for_tool(&r),
        None => reply_for(&last_user_text(&body)),
    };
    let mut events = vec![
        start,
        ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ev("ping", json!({"type": "ping"})),
    ];
    for w in words(&text) {
        events.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
        ));
    }
    events.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
    events
        .push(ev("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 10}})));
    events.push(ev("message_stop", json!({"type": "message_stop"})));
    sse(events)
}

async fn elevenlabs(tcp: tokio::net::TcpStream, key: String, log: Arc<Mutex<Log>>, ms_per_char: usize) {
    let mut key_ok = false;
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        key_ok = req.headers().get("xi-api-key").and_then(|v| v.to_str().ok()) == Some(key.as_str());
        let path = req.uri().path();
        let q = req.uri().query().unwrap_or_default();
        assert!(path.starts_with("/v1/text-to-speech/") && path.ends_with("/stream-input"), "path {path}");
        assert!(q.contains("output_format=pcm_24000"), "query {q}");
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, check).await else { return };
    let (mut tx, mut rx) = ws.split();
    if !key_ok {
        log.lock().unwrap().tts_rejected += 1;
        let _ = tx.send(Message::text(json!({"message": "Invalid API key", "error": "invalid_api_key", "code": 1008}).to_string())).await;
        let _ = tx.send(Message::Close(Some(CloseFrame { code: CloseCode::Policy, reason: "Invalid API key".into() }))).await;
        return;
    }
    let mut first = true;
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(t.as_str()).unwrap();
        let text = v["text"].as_str().unwrap_or_default().to_string();
        if first {
            assert_eq!(text, " ", "the stream opens with a single space");
            first = false;
            continue;
        }
        if text.is_empty() {
            log.lock().unwrap().tts_events.push(("end".into(), String::new()));
            let _ = tx.send(Message::text(json!({"isFinal": true}).to_string())).await;
            let _ = tx.send(Message::Close(None)).await;
            return;
        }
        log.lock().unwrap().tts_events.push(("text".into(), text.clone()));
        let samples = text.trim().chars().count() * ms_per_char * 24;
        let pcm: Vec<u8> = (0..samples)
            .flat_map(|i| (((i as f64 * 330.0 * std::f64::consts::TAU / 24_000.0).sin() * 8000.0) as i16).to_le_bytes())
            .collect();
        for chunk in pcm.chunks(9600) {
            log.lock().unwrap().tts_events.push(("audio-out".into(), String::new()));
            let m = json!({"audio": B64.encode(chunk), "isFinal": null, "normalizedAlignment": null});
            if tx.send(Message::text(m.to_string())).await.is_err() {
                return;
            }
        }
    }
}
