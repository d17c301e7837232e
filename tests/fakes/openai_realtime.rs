//! A local stand-in for OpenAI's Realtime WebSocket API (`wss://api.openai.com/v1/realtime`),
//! speaking its documented wire protocol closely enough that voxrelay's real adapter runs
//! unchanged: `Authorization: Bearer` checked at the upgrade (HTTP 401 with an
//! `invalid_api_key` error body otherwise), `session.created` first, GA event names, or the
//! beta names when the client sends `OpenAI-Beta: realtime=v1`; base64 little-endian pcm16 at
//! 24 kHz both ways. Its "model" answers each response by saying the last committed user audio
//! back (so tests can check the audio path end to end), paced at 5x real time, with the
//! transcript "fake reply".
//!
//! Function calling: when the session declares tools, a response that does not follow a
//! `function_call_output` item is a call of the first tool with [`TOOL_ARGUMENTS`] (streamed as
//! two `response.function_call_arguments.delta`s, then `.done`, the item's
//! `response.output_item.done`, and `response.done` with the function_call item as output).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

pub const REPLY_TRANSCRIPT: &str = "fake reply";
/// The arguments of the fake model's function calls.
pub const TOOL_ARGUMENTS: &str = r#"{"city":"Oslo"}"#;
/// Audio per `response.output_audio.delta`: 100 ms at 24 kHz.
const DELTA_SAMPLES: usize = 2400;
/// A delta every 20 ms: five times real time, as providers stream faster than playback.
const DELTA_EVERY: Duration = Duration::from_millis(20);

#[derive(Clone, Default)]
pub struct Behaviour {
    /// During the first response on the first connection, after this many audio deltas the
    /// TCP connection is dropped without a close frame.
    pub drop_after_deltas: Option<usize>,
    /// Answer with this many ms of a 440 Hz tone instead of the user's audio.
    pub tone_ms: Option<usize>,
    /// The first upgrade attempts are refused with these HTTP statuses (e.g. 429, 503), each
    /// with OpenAI's JSON error body; later ones are accepted.
    pub refuse_first: Vec<u16>,
    /// The first this many `response.create` get no answer at all (a provider gone quiet).
    pub ignore_responses: usize,
}

#[derive(Default)]
pub struct Log {
    /// Client event types in arrival order (all connections), `append` included.
    pub events: Vec<Value>,
    /// Samples appended to the input buffer (all connections).
    pub appended_samples: usize,
    pub connections: usize,
    pub rejected: usize,
}

pub struct FakeOpenAi {
    pub url: String,
    pub log: Arc<Mutex<Log>>,
}

impl FakeOpenAi {
    pub async fn start(api_key: &str, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/realtime", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Log::default()));
        let (key, log2) = (api_key.to_string(), log.clone());
        tokio::spawn(async move {
            let mut first = true;
            let mut attempt = 0;
            while let Ok((tcp, _)) = listener.accept().await {
                let (key, log, behaviour) = (key.clone(), log2.clone(), behaviour.clone());
                let refuse = behaviour.refuse_first.get(attempt).copied();
                attempt += 1;
                let first_conn = refuse.is_none() && std::mem::replace(&mut first, false);
                tokio::spawn(async move { serve(tcp, key, log, behaviour, first_conn, refuse).await });
            }
        });
        Self { url, log }
    }

    pub fn types(&self) -> Vec<String> {
        self.log.lock().unwrap().events.iter().map(|e| e["type"].as_str().unwrap_or("?").to_string()).collect()
    }

    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.log.lock().unwrap().events.iter().filter(|e| e["type"] == kind).cloned().collect()
    }
}

struct Conn {
    beta: bool,
    session: Value,
    input: Vec<i16>,
    last_user_audio: Vec<i16>,
    last_item: Option<String>,
    /// `type` of the last item the client created (`message`, `function_call_output`).
    last_created: Option<String>,
    counter: u64,
    /// The response being streamed: (id, item id, remaining audio, deltas sent, transcript sent).
    streaming: Option<Streaming>,
    /// `response.create`s left unanswered so far (see `Behaviour::ignore_responses`).
    ignored: usize,
}

struct Streaming {
    id: String,
    item_id: String,
    audio: Vec<i16>,
    pos: usize,
    deltas: usize,
}

impl Conn {
    fn id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_fake{}", self.counter)
    }

    fn name(&self, ga: &'static str, beta: &'static str) -> &'static str {
        if self.beta { beta } else { ga }
    }

    fn event(&mut self, ty: &str, mut body: Value) -> Message {
        body["type"] = json!(ty);
        body["event_id"] = json!(self.id("event"));
        Message::text(body.to_string())
    }
}

async fn serve(tcp: tokio::net::TcpStream, key: String, log: Arc<Mutex<Log>>, behaviour: Behaviour, first_conn: bool, refuse: Option<u16>) {
    let mut beta = false;
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if let Some(status) = refuse {
            let (kind, code) = if status == 429 { ("requests", "rate_limit_exceeded") } else { ("server_error", "server_error") };
            let body = json!({"error": {"message": format!("fake refusal {status}"), "type": kind, "code": code, "param": null}});
            let mut err = ErrorResponse::new(Some(body.to_string()));
            *err.status_mut() = StatusCode::from_u16(status).unwrap();
            return Err(err);
        }
        beta = req.headers().get("openai-beta").is_some_and(|v| v == "realtime=v1");
        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let model_given = req.uri().query().is_some_and(|q| q.contains("model="));
        if auth != format!("Bearer {key}") || req.uri().path() != "/v1/realtime" || !model_given {
            let body = json!({"error": {"message": "Incorrect API key provided: sk-wr***ng.", "type": "invalid_request_error", "code": "invalid_api_key", "param": null}});
            let mut err = ErrorResponse::new(Some(body.to_string()));
            *err.status_mut() = StatusCode::UNAUTHORIZED;
            return Err(err);
        }
        Ok(resp)
    };
    let ws = match tokio_tungstenite::accept_hdr_async(tcp, check).await {
        Ok(ws) => ws,
        Err(_) => {
            log.lock().unwrap().rejected += 1;
            return;
        }
    };
    log.lock().unwrap().connections += 1;
    let (mut tx, mut rx) = ws.split();
    let mut c = Conn {
        beta,
        session: json!({}),
        input: Vec::new(),
        last_user_audio: Vec::new(),
        last_item: None,
        last_created: None,
        counter: 0,
        streaming: None,
        ignored: 0,
    };
    let session_id = c.id("sess");
    let created = c.event(
        "session.created",
        json!({"session": {"id": session_id, "object": "realtime.session", "type": "realtime", "model": "gpt-realtime"}}),
    );
    tx.send(created).await.unwrap();
    let mut tick = tokio::time::interval(DELTA_EVERY);
    // Idle time must not turn into a burst of deltas when a response starts.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Message::Text(text) = msg else { continue };
                let ev: Value = serde_json::from_str(text.as_str()).expect("client sends JSON");
                let mut logged = ev.clone();
                if ev["type"] == "input_audio_buffer.append" {
                    logged["audio"] = json!("<elided>");
                }
                log.lock().unwrap().events.push(logged);
                for out in handle(&mut c, &ev, &log, &behaviour) {
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
            }
            _ = tick.tick(), if c.streaming.is_some() => {
                let s = c.streaming.as_mut().unwrap();
                if first_conn && behaviour.drop_after_deltas.is_some_and(|n| s.deltas >= n) {
                    // An abrupt network loss: no close frame.
                    return;
                }
                let out = stream_step(&mut c);
                for m in out {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn handle(c: &mut Conn, ev: &Value, log: &Arc<Mutex<Log>>, behaviour: &Behaviour) -> Vec<Message> {
    let ty = ev["type"].as_str().unwrap_or_default();
    match ty {
        "session.update" => {
            if let Some(obj) = ev["session"].as_object() {
                for (k, v) in obj {
                    c.session[k] = v.clone();
                }
            }
            let session = c.session.clone();
            vec![c.event("session.updated", json!({"session": session}))]
        }
        "input_audio_buffer.append" => {
            let bytes = B64.decode(ev["audio"].as_str().unwrap_or_default()).expect("base64 audio");
            assert_eq!(bytes.len() % 2, 0, "pcm16 comes in whole samples");
            c.input.extend(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
            log.lock().unwrap().appended_samples += bytes.len() / 2;
            Vec::new()
        }
        "input_audio_buffer.clear" => {
            c.input.clear();
            vec![c.event("input_audio_buffer.cleared", json!({}))]
        }
        "input_audio_buffer.commit" => {
            if c.input.len() < 2400 {
                return vec![c.event(
                    "error",
                    json!({"error": {"type": "invalid_request_error", "code": "input_audio_buffer_commit_empty",
                    "message": "buffer too small", "param": null, "event_id": ev["event_id"]}}),
                )];
            }
            let item_id = c.id("item");
            let previous = c.last_item.replace(item_id.clone());
            let ms = c.input.len() / 24;
            c.last_user_audio = std::mem::take(&mut c.input);
            let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": null}]});
            let mut out = vec![
                c.event("input_audio_buffer.committed", json!({"previous_item_id": previous, "item_id": item_id})),
                c.event(
                    c.name("conversation.item.added", "conversation.item.created"),
                    json!({"previous_item_id": previous, "item": item}),
                ),
            ];
            let transcription =
                if c.beta { &c.session["input_audio_transcription"] } else { &c.session["audio"]["input"]["transcription"] };
            if !transcription.is_null() {
                let transcript = format!("user said {ms} ms");
                out.push(c.event(
                    "conversation.item.input_audio_transcription.completed",
                    json!({"item_id": item_id, "content_index": 0, "transcript": transcript}),
                ));
            }
            out
        }
        "conversation.item.create" => {
            let item_id = c.id("item");
            let mut item = ev["item"].clone();
            item["id"] = json!(item_id);
            c.last_created = item["type"].as_str().map(String::from);
            let previous = c.last_item.replace(item_id);
            vec![
                c.event(
                    c.name("conversation.item.added", "conversation.item.created"),
                    json!({"previous_item_id": previous, "item": item}),
                ),
            ]
        }
        "conversation.item.truncate" => {
            vec![c.event(
                "conversation.item.truncated",
                json!({"item_id": ev["item_id"], "content_index": ev["content_index"], "audio_end_ms": ev["audio_end_ms"]}),
            )]
        }
        "response.create" => {
            if c.ignored < behaviour.ignore_responses {
                c.ignored += 1;
                return Vec::new();
            }
            if c.streaming.is_some() {
                return vec![c.event(
                    "error",
                    json!({"error": {"type": "invalid_request_error", "code": "conversation_already_has_active_response",
                    "message": "active response in progress", "param": null, "event_id": ev["event_id"]}}),
                )];
            }
            let (id, item_id) = (c.id("resp"), c.id("item"));
            let tool = c.session["tools"].as_array().and_then(|t| t.first()).and_then(|t| t["name"].as_str()).map(String::from);
            if let Some(name) = tool.filter(|_| c.last_created.as_deref() != Some("function_call_output")) {
                return function_call(c, &id, &item_id, &name);
            }
            let audio = match behaviour.tone_ms {
                Some(ms) => (0..ms * 24).map(|i| ((i as f64 * 440.0 * std::f64::consts::TAU / 24_000.0).sin() * 8000.0) as i16).collect(),
                None => c.last_user_audio.clone(),
            };
            c.last_item = Some(item_id.clone());
            let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "status": "in_progress", "role": "assistant", "content": []});
            let out = vec![
                c.event("response.created", json!({"response": {"id": id, "object": "realtime.response", "status": "in_progress", "output": []}})),
                c.event("response.output_item.added", json!({"response_id": id, "output_index": 0, "item": item})),
                c.event("response.content_part.added", json!({"response_id": id, "item_id": item_id, "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})),
            ];
            c.streaming = Some(Streaming { id, item_id, audio, pos: 0, deltas: 0 });
            out
        }
        "response.cancel" => match c.streaming.take() {
            Some(s) => vec![c.event(
                "response.done",
                json!({"response": {"id": s.id, "object": "realtime.response", "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "client_cancelled"}, "output": []}}),
            )],
            None => vec![c.event(
                "error",
                json!({"error": {"type": "invalid_request_error", "code": "response_cancel_not_active",
                "message": "no active response", "param": null, "event_id": ev["event_id"]}}),
            )],
        },
        _ => Vec::new(),
    }
}

/// What the fake reports after each spoken response, as the Realtime API does.
pub fn rate_limits() -> Value {
    json!([{"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0},
        {"name": "tokens", "limit": 50000, "remaining": 49000, "reset_seconds": 1.2}])
}

/// A whole response that is one function call, as the Realtime API streams it.
fn function_call(c: &mut Conn, id: &str, item_id: &str, name: &str) -> Vec<Message> {
    let call_id = c.id("call");
    c.last_item = Some(item_id.to_string());
    let item = |status: &str, args: &str| json!({"id": item_id, "object": "realtime.item", "type": "function_call", "status": status, "name": name, "call_id": call_id, "arguments": args});
    let ids = json!({"response_id": id, "item_id": item_id, "output_index": 0, "call_id": call_id});
    let (head, tail) = TOOL_ARGUMENTS.split_at(5);
    let mut out = vec![
        c.event("response.created", json!({"response": {"id": id, "object": "realtime.response", "status": "in_progress", "output": []}})),
        c.event("response.output_item.added", json!({"response_id": id, "output_index": 0, "item": item("in_progress", "")})),
    ];
    for part in [head, tail] {
        let mut d = ids.clone();
        d["delta"] = json!(part);
        out.push(c.event("response.function_call_arguments.delta", d));
    }
    let mut done = ids;
    done["name"] = json!(name);
    done["arguments"] = json!(TOOL_ARGUMENTS);
    out.push(c.event("response.function_call_arguments.done", done));
    out.push(
        c.event("response.output_item.done", json!({"response_id": id, "output_index": 0, "item": item("completed", TOOL_ARGUMENTS)})),
    );
    out.push(c.event(
        "response.done",
        json!({"response": {"id": id, "object": "realtime.response", "status": "completed", "status_details": null,
        "output": [item("completed", TOOL_ARGUMENTS)], "usage": {"total_tokens": 0}}}),
    ));
    out
}

fn stream_step(c: &mut Conn) -> Vec<Message> {
    let (audio_ev, transcript_ev) = (
        c.name("response.output_audio.delta", "response.audio.delta"),
        c.name("response.output_audio_transcript.delta", "response.audio_transcript.delta"),
    );
    let s = c.streaming.as_mut().unwrap();
    let (id, item_id) = (s.id.clone(), s.item_id.clone());
    let ids = json!({"response_id": id, "item_id": item_id, "output_index": 0, "content_index": 0});
    if s.pos < s.audio.len() {
        let end = (s.pos + DELTA_SAMPLES).min(s.audio.len());
        let bytes: Vec<u8> = s.audio[s.pos..end].iter().flat_map(|v| v.to_le_bytes()).collect();
        s.pos = end;
        s.deltas += 1;
        let first = s.deltas == 1;
        let mut body = ids.clone();
        body["delta"] = json!(B64.encode(bytes));
        let mut out = vec![c.event(audio_ev, body)];
        if first {
            for word in ["fake", " reply"] {
                let mut t = ids.clone();
                t["delta"] = json!(word);
                out.push(c.event(transcript_ev, t));
            }
        }
        return out;
    }
    c.streaming = None;
    let mut done = ids.clone();
    done["transcript"] = json!(REPLY_TRANSCRIPT);
    let item = json!({"id": item_id, "object": "realtime.item", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_audio", "transcript": REPLY_TRANSCRIPT}]});
    vec![
        c.event(c.name("response.output_audio.done", "response.audio.done"), ids.clone()),
        c.event(c.name("response.output_audio_transcript.done", "response.audio_transcript.done"), done),
        c.event("response.output_item.done", json!({"response_id": id, "output_index": 0, "item": item})),
        c.event(
            "response.done",
            json!({"response": {"id": id, "object": "realtime.response", "status": "completed", "status_details": null,
            "output": [item], "usage": {"total_tokens": 0}}}),
        ),
        c.event("rate_limits.updated", json!({"rate_limits": rate_limits()})),
    ]
}
