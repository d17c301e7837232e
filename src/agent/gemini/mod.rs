//! The `gemini-live` agent: Google's Gemini Live API (`BidiGenerateContent` over WebSocket).
//! The connection loop is [`crate::agent::upstream`]'s; this is the protocol mapping.
//!
//! Turns stay ours: automatic activity detection upstream is disabled and our turn detector
//! drives `activityStart`/`activityEnd`; the model answers each activity end by itself, so its
//! answer can come before the response that asks for it ([`turn`] holds it for that response).
//! Caller audio is resampled 24 → 16 kHz (`audio/pcm;rate=16000`), the model speaks pcm16 at
//! 24 kHz. A barge-in's `activityStart` interrupts generation upstream
//! (`activityHandling: START_OF_ACTIVITY_INTERRUPTS`).
//! `goAway` is answered by reconnecting with the session-resumption handle once the current
//! turn is done (or at once when idle), so the conversation survives the provider's connection
//! limits. Messages are read tolerantly: camelCase or snake_case field names.
//!
//! Function calling: the session's tools go in `setup.tools[0].functionDeclarations`. A
//! `toolCall` ends our response with its function calls (the model waits for the results); the
//! client's output goes back as `toolResponse`, and the model's continuation answers the
//! client's next `response.create`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request};
use voxrelay_media::{Resampler, SAMPLES_24K, SampleRate};
use voxrelay_signaling::SessionConfig;

use super::bridge::{Cmd, Link};
use super::history::Dialogue;
use super::pcm::Framer;
use super::providers::GeminiConfig;
use super::upstream::{self, Protocol, Reply};
use super::{AgentNotice, AgentOutput};
use turn::Turn;

mod turn;

const SAMPLES_16K: usize = SAMPLES_24K * 2 / 3;
/// Calls remembered for their `toolResponse`; a client that never answers must not grow
/// memory, so past this many the book starts over (late outputs are then refused).
const MAX_OPEN_CALLS: usize = 64;

/// `prior`: the dialogue of the conversation this call continues (sent as context when the
/// session opens).
pub async fn run(cfg: GeminiConfig, session: SessionConfig, prior: Dialogue, link: Link) {
    let mut gemini = Gemini::new(cfg, session);
    gemini.history = prior;
    upstream::run(gemini, link).await;
}

pub struct Gemini {
    cfg: GeminiConfig,
    session: SessionConfig,
    /// `setupComplete` seen on this connection; until then messages wait in `outbox`.
    ready: bool,
    outbox: Vec<String>,
    /// 24 → 16 kHz is 3:2; the media resampler does integer ratios, so via 48 kHz.
    up_48k: Resampler,
    down_16k: Resampler,
    in_activity: bool,
    /// The model was given a turn end (activity end or text) it has not answered yet.
    triggered: bool,
    awaiting: VecDeque<u64>,
    active: Option<Turn>,
    /// A finished model turn no response has claimed yet (see [`turn`]).
    unclaimed: Option<Turn>,
    user_item: Option<String>,
    user_text: String,
    handle: Option<String>,
    go_away: bool,
    /// Settings changed mid-call: Gemini takes them only at setup, so reconnect (resuming).
    settings_changed: bool,
    history: Dialogue,
    framer: Framer,
    bad_rate_reported: bool,
    auth_failed: bool,
    /// Function calls the model made that wait for the client: call id → function name
    /// (`toolResponse` names the function again).
    open_calls: HashMap<String, String>,
    calls_made: u64,
}

/// `v[camel]` or `v[snake]`: field names have changed between versions of the docs and SDKs.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake)).filter(|x| !x.is_null())
}

impl Gemini {
    #[allow(clippy::expect_used, reason = "fixed, supported rates: cannot fail")]
    pub fn new(cfg: GeminiConfig, session: SessionConfig) -> Self {
        Self {
            cfg,
            session,
            ready: false,
            outbox: Vec::new(),
            up_48k: Resampler::new(SampleRate::HZ_24K, SampleRate::HZ_48K).expect("24 -> 48 kHz is supported"),
            down_16k: Resampler::new(SampleRate::HZ_48K, SampleRate::HZ_16K).expect("48 -> 16 kHz is supported"),
            in_activity: false,
            triggered: false,
            awaiting: VecDeque::new(),
            active: None,
            unclaimed: None,
            user_item: None,
            user_text: String::new(),
            handle: None,
            go_away: false,
            settings_changed: false,
            history: Dialogue::default(),
            framer: Framer::default(),
            bad_rate_reported: false,
            auth_failed: false,
            open_calls: HashMap::new(),
            calls_made: 0,
        }
    }

    fn voice(&self) -> &str {
        if self.session.voice == SessionConfig::default().voice { &self.cfg.voice } else { &self.session.voice }
    }

    pub fn setup(&self) -> Value {
        let mut setup = json!({
            "model": self.cfg.model,
            "generationConfig": {
                "responseModalities": ["AUDIO"],
                "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": self.voice()}}},
            },
            "realtimeInputConfig": {
                "automaticActivityDetection": {"disabled": true},
                "activityHandling": "START_OF_ACTIVITY_INTERRUPTS",
            },
            "outputAudioTranscription": {},
            "sessionResumption": match &self.handle { Some(h) => json!({"handle": h}), None => json!({}) },
        });
        if !self.session.instructions.is_empty() {
            setup["systemInstruction"] = json!({"parts": [{"text": self.session.instructions}]});
        }
        if self.session.input_audio_transcription.is_some() {
            setup["inputAudioTranscription"] = json!({});
        }
        // Live has no per-session tool choice: "none" is no tools declared.
        if !self.session.tools.is_empty() && self.session.tool_choice != "none" {
            let declarations: Vec<Value> = self
                .session
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
                .collect();
            setup["tools"] = json!([{"functionDeclarations": declarations}]);
        }
        json!({"setup": setup})
    }

    fn replay(&self) -> Option<String> {
        if self.history.turns().is_empty() {
            return None;
        }
        let turns: Vec<Value> = self
            .history
            .turns()
            .iter()
            .map(|(role, text)| json!({"role": if *role == "user" { "user" } else { "model" }, "parts": [{"text": text}]}))
            .collect();
        Some(json!({"clientContent": {"turns": turns, "turnComplete": false}}).to_string())
    }

    fn audio(&mut self, pcm: &[i16; SAMPLES_24K]) -> String {
        let mut wide = [0i16; SAMPLES_24K * 2];
        let mut out = [0i16; SAMPLES_16K];
        self.up_48k.process(pcm, &mut wide);
        self.down_16k.process(&wide, &mut out);
        let mut bytes = [0u8; SAMPLES_16K * 2];
        for (b, s) in bytes.chunks_exact_mut(2).zip(out) {
            b.copy_from_slice(&s.to_le_bytes());
        }
        json!({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": B64.encode(bytes)}}}).to_string()
    }

    fn activity_start(&mut self, out: &mut Vec<String>) {
        if !self.in_activity {
            self.in_activity = true;
            self.new_user_turn();
            out.push(json!({"realtimeInput": {"activityStart": {}}}).to_string());
        }
    }

    fn translate(&mut self, cmd: Cmd, link: &mut Link) -> Vec<String> {
        let mut out = Vec::new();
        match cmd {
            Cmd::Configure(s) => {
                let changed = s.instructions != self.session.instructions
                    || s.voice != self.session.voice
                    || s.input_audio_transcription.is_some() != self.session.input_audio_transcription.is_some()
                    || s.tools != self.session.tools
                    || s.tool_choice != self.session.tool_choice;
                self.session = s;
                self.settings_changed |= changed;
            }
            Cmd::SpeechStarted => self.activity_start(&mut out),
            Cmd::Audio { pcm, .. } => {
                self.activity_start(&mut out);
                out.push(self.audio(&pcm));
            }
            Cmd::Commit { item_id } => {
                if self.in_activity {
                    self.in_activity = false;
                    self.triggered = true;
                    out.push(json!({"realtimeInput": {"activityEnd": {}}}).to_string());
                }
                self.user_item = Some(item_id);
                self.user_text.clear();
            }
            // Gemini has no way to drop audio already sent in an activity; the turn it is in
            // still ends at the next commit. Nothing is sent.
            Cmd::ClearInput => {}
            // Who speaks next, in the context without asking for an answer (turnComplete false);
            // the audio turn that follows is answered as usual.
            Cmd::Speaker(name) => {
                let text = crate::agent::speaker_label(&name);
                self.history.push("user", &text);
                out.push(
                    json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": false}}).to_string(),
                );
            }
            Cmd::Text { text, .. } => {
                self.new_user_turn();
                self.history.push("user", &text);
                self.triggered = true;
                out.push(
                    json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}}).to_string(),
                );
            }
            Cmd::FunctionOutput { call_id, output } => match self.open_calls.remove(&call_id) {
                Some(name) => {
                    // The model continues from the results; the next response.create must not
                    // add an empty user turn.
                    self.new_user_turn();
                    self.triggered = true;
                    out.push(tool_response(&call_id, &name, &output).to_string());
                }
                None => link.error("unknown_call_id", format!("gemini-live no longer waits for function call {call_id:?} (cancelled)")),
            },
            // Gemini Live fixes its response modality and system instruction at setup, and answers
            // a turn as soon as it ends. A per-response instruction is the user's words that ask
            // for the answer when nothing has asked yet; after a turn already did, it is too late
            // and the client is told so. A text-only response still comes as audio upstream
            // (dropped by the conversation; its transcription is the text).
            Cmd::StartResponse(num, options) => {
                if self.auth_failed {
                    link.output(
                        num,
                        AgentOutput::Failed {
                            code: "provider_auth_failed".into(),
                            message: "the provider refused this server's API key".into(),
                        },
                    );
                    return out;
                }
                let triggered = std::mem::take(&mut self.triggered);
                if triggered {
                    self.claim(num, link);
                } else {
                    // What the model said unasked is not this answer (it was cancelled or is stale).
                    self.new_user_turn();
                    self.awaiting.push_back(num);
                }
                match options.instructions {
                    Some(_) if triggered => link.error(
                        "unsupported_value",
                        "gemini-live answers a turn as soon as it ends: response.instructions cannot reach this answer (set session instructions instead)",
                    ),
                    Some(text) => {
                        let text = format!("[Instructions for this answer: {text}]");
                        out.push(json!({"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": true}}).to_string());
                    }
                    // Nothing new to answer: ask for a model turn explicitly.
                    None if !triggered => out.push(json!({"clientContent": {"turnComplete": true}}).to_string()),
                    None => {}
                }
            }
            Cmd::CancelResponse { response, .. } => {
                // Generation upstream stops on the barge-in's activityStart; Gemini has no item
                // truncation, so its context keeps the whole answer.
                if let Some(a) = self.active.as_mut().filter(|a| a.num == Some(response)) {
                    a.cancelled = true;
                }
                self.awaiting.retain(|n| *n != response);
            }
        }
        out
    }

    fn finish_turn(&mut self, link: &mut Link) {
        if let Some(item_id) = self.user_item.take() {
            let transcript = std::mem::take(&mut self.user_text);
            if !transcript.is_empty() {
                self.history.push("user", transcript.trim());
                link.notice(AgentNotice::InputTranscript { item_id, transcript: transcript.trim().to_string() });
            }
        }
        let Some(mut a) = self.active.take() else { return };
        if let Some(frame) = self.framer.flush() {
            a.emit(AgentOutput::Audio(frame), link);
        }
        a.emit(AgentOutput::Done, link);
        self.history.push("model", &a.transcript);
        if a.claimable() {
            self.unclaimed = Some(a);
        }
    }

    /// The model turn output belongs to (bound to the response waiting longest on its first
    /// output; held for one to come when none waits).
    fn active(&mut self) -> &mut Turn {
        active_turn(&mut self.active, &mut self.awaiting)
    }

    /// Response `num` asked for the model's answer to the last user turn: a turn the model
    /// began (or finished) before the request came is it; otherwise the next one is.
    fn claim(&mut self, num: u64, link: &mut Link) {
        if let Some(mut done) = self.unclaimed.take().filter(Turn::claimable) {
            done.claim(num, link);
        } else if let Some(a) = self.active.as_mut().filter(|a| a.claimable()) {
            a.claim(num, link);
        } else {
            self.awaiting.push_back(num);
        }
    }

    /// The user spoke, typed or answered a function call: a model turn nobody claimed is stale.
    fn new_user_turn(&mut self) {
        self.unclaimed = None;
        if let Some(a) = self.active.as_mut() {
            a.make_stale();
        }
    }

    fn on_audio(&mut self, mime: &str, data: &str, link: &mut Link) {
        let rate_ok = !mime.contains("rate=") || mime.contains("rate=24000");
        if !rate_ok {
            if !std::mem::replace(&mut self.bad_rate_reported, true) {
                link.error("provider_protocol_error", format!("gemini-live sent audio as {mime}; expected 24 kHz pcm"));
            }
            return;
        }
        let Ok(bytes) = B64.decode(data) else {
            link.error("provider_protocol_error", "gemini-live audio is not base64");
            return;
        };
        // Borrowed apart from the framer.
        let a = active_turn(&mut self.active, &mut self.awaiting);
        self.framer.push(&bytes, |frame| a.emit(AgentOutput::Audio(frame), link));
    }

    fn on_transcript(&mut self, text: &str, link: &mut Link) {
        let a = self.active();
        a.transcript.push_str(text);
        a.emit(AgentOutput::TranscriptDelta(text.to_string()), link);
    }

    /// The model calls functions: they end the current response (Gemini waits for the results).
    fn on_tool_call(&mut self, tc: &Value, link: &mut Link) {
        let calls = field(tc, "functionCalls", "function_calls").and_then(Value::as_array).cloned().unwrap_or_default();
        let cancelled = self.active().cancelled;
        for call in calls {
            let Some(name) = call.get("name").and_then(Value::as_str) else {
                link.error("provider_protocol_error", "gemini-live sent a function call without a name");
                continue;
            };
            self.calls_made += 1;
            let id = call.get("id").and_then(Value::as_str).map(String::from).unwrap_or_else(|| format!("call_{}", self.calls_made));
            let arguments = call.get("args").filter(|a| !a.is_null()).cloned().unwrap_or_else(|| json!({})).to_string();
            if cancelled {
                continue;
            }
            if self.open_calls.len() >= MAX_OPEN_CALLS {
                self.open_calls.clear();
            }
            self.open_calls.insert(id.clone(), name.to_string());
            self.active().emit(AgentOutput::FunctionCall { call_id: id, name: name.into(), arguments }, link);
        }
        self.finish_turn(link);
    }

    pub fn on_server_message(&mut self, v: &Value, link: &mut Link) -> Reply {
        let mut reply = Reply::default();
        if field(v, "setupComplete", "setup_complete").is_some() {
            if self.settings_changed {
                // A session.update arrived while this connection's setup was in flight: the
                // setup is stale and nothing else has gone out yet, so hand over to a connection
                // set up with the new settings; what waits in the outbox moves with it (see
                // `opening`), even mid-activity.
                reply.reconnect = Some("session settings changed during setup".into());
                return reply;
            }
            self.ready = true;
            reply.send = std::mem::take(&mut self.outbox);
        }
        if let Some(h) = field(v, "sessionResumptionUpdate", "session_resumption_update") {
            let resumable = h.get("resumable").and_then(Value::as_bool).unwrap_or(true);
            if let Some(handle) = field(h, "newHandle", "new_handle").and_then(Value::as_str).filter(|_| resumable) {
                self.handle = Some(handle.to_string());
            }
        }
        if let Some(sc) = field(v, "serverContent", "server_content") {
            if let Some(parts) = field(sc, "modelTurn", "model_turn").and_then(|t| t.get("parts")).and_then(Value::as_array) {
                for part in parts {
                    if let Some(inline) = field(part, "inlineData", "inline_data") {
                        let mime = field(inline, "mimeType", "mime_type").and_then(Value::as_str).unwrap_or("audio/pcm");
                        let data = inline.get("data").and_then(Value::as_str).unwrap_or_default();
                        if mime.starts_with("audio/") {
                            self.on_audio(mime, data, link);
                        }
                    } else if let Some(text) = part.get("text").and_then(Value::as_str) {
                        // Thoughts are not speech.
                        if part.get("thought").and_then(Value::as_bool) != Some(true) {
                            self.on_transcript(text, link);
                        }
                    }
                }
            }
            if let Some(t) = field(sc, "outputTranscription", "output_transcription").and_then(|t| t.get("text")).and_then(Value::as_str) {
                self.on_transcript(t, link);
            }
            if let Some(t) = field(sc, "inputTranscription", "input_transcription").and_then(|t| t.get("text")).and_then(Value::as_str) {
                self.user_text.push_str(t);
            }
            let interrupted = sc.get("interrupted").and_then(Value::as_bool) == Some(true);
            let complete = field(sc, "turnComplete", "turn_complete").and_then(Value::as_bool) == Some(true);
            if interrupted || complete {
                self.finish_turn(link);
                if self.go_away {
                    reply.reconnect = Some("the provider asked to move (goAway)".into());
                }
            }
        }
        if let Some(tc) = field(v, "toolCall", "tool_call") {
            self.on_tool_call(tc, link);
        }
        if let Some(tc) = field(v, "toolCallCancellation", "tool_call_cancellation") {
            for id in tc.get("ids").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                if self.open_calls.remove(id).is_some() {
                    link.error(
                        "function_call_cancelled",
                        format!("gemini-live cancelled function call {id:?}; its output will not be used"),
                    );
                }
            }
        }
        if let Some(g) = field(v, "goAway", "go_away") {
            let left = field(g, "timeLeft", "time_left").and_then(Value::as_str).unwrap_or("?");
            if self.active.is_some() {
                self.go_away = true;
            } else {
                reply.reconnect = Some(format!("the provider asked to move (goAway, {left} left)"));
            }
        }
        reply
    }
}

/// [`Gemini::active`] on its two fields, for callers that hold another field at the same time.
fn active_turn<'a>(active: &'a mut Option<Turn>, awaiting: &mut VecDeque<u64>) -> &'a mut Turn {
    active.get_or_insert_with(|| Turn::new(awaiting.pop_front()))
}

/// `toolResponse` for one call: an output that is a JSON object is the response itself; any
/// other output is wrapped as `{"output": ...}` (Gemini wants an object).
pub fn tool_response(call_id: &str, name: &str, output: &str) -> Value {
    let response = match serde_json::from_str::<Value>(output) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"output": output}),
    };
    json!({"toolResponse": {"functionResponses": [{"id": call_id, "name": name, "response": response}]}})
}

impl Protocol for Gemini {
    const NAME: &'static str = "gemini-live";

    fn request(&self) -> Result<Request<()>, String> {
        let mut req = self.cfg.base_url.as_str().into_client_request().map_err(|e| format!("bad provider URL: {e}"))?;
        // The header keeps the key out of URLs (and so out of proxies' logs).
        let key = HeaderValue::from_str(&self.cfg.api_key).map_err(|_| "the API key has characters a header cannot carry".to_string())?;
        req.headers_mut().insert("x-goog-api-key", key);
        Ok(req)
    }

    fn connect_timeout(&self) -> Duration {
        self.cfg.connect_timeout
    }

    fn opening(&mut self, _reconnect: bool) -> Vec<String> {
        // A connection that never completed setup sent nothing but its setup: what waited for
        // it (caller audio, an activity in progress) goes out on this one instead of being lost.
        let (unsent, in_activity) = if self.ready { (Vec::new(), false) } else { (std::mem::take(&mut self.outbox), self.in_activity) };
        self.ready = false;
        self.in_activity = in_activity;
        self.go_away = false;
        self.settings_changed = false;
        self.outbox.clear();
        if self.handle.is_none() {
            // A new upstream session (the first, or one that cannot be resumed): it gets the
            // dialogue so far (a resumed conversation's, this call's after a reconnect).
            self.outbox.extend(self.replay());
        }
        self.outbox.extend(unsent);
        vec![self.setup().to_string()]
    }

    fn on_cmd(&mut self, cmd: Cmd, link: &mut Link) -> Vec<String> {
        let out = self.translate(cmd, link);
        if self.ready {
            out
        } else {
            self.outbox.extend(out);
            Vec::new()
        }
    }

    fn on_message(&mut self, text: &str, link: &mut Link) -> Reply {
        let mut reply = match serde_json::from_str::<Value>(text) {
            Ok(v) => self.on_server_message(&v, link),
            Err(e) => {
                tracing::debug!("gemini-live: unparsable message: {e}");
                Reply::default()
            }
        };
        if reply.reconnect.is_none() {
            reply.reconnect = self.wants_reconnect();
        }
        reply
    }

    fn wants_reconnect(&mut self) -> Option<String> {
        let idle = self.ready && self.active.is_none() && self.awaiting.is_empty() && !self.in_activity;
        (self.settings_changed && idle).then(|| "session settings changed (Gemini takes them at setup)".into())
    }

    fn on_disconnect(&mut self, link: &mut Link, code: &str, message: &str) {
        if let Some(a) = self.active.take()
            && let (Some(num), false) = (a.num, a.cancelled)
        {
            link.output(num, AgentOutput::Failed { code: code.into(), message: message.into() });
        }
        for num in self.awaiting.drain(..) {
            link.output(num, AgentOutput::Failed { code: code.into(), message: message.into() });
        }
        // The next response asks the new connection afresh.
        self.unclaimed = None;
        self.framer.clear();
        self.triggered = false;
    }

    /// Gemini reports refusals in the close frame: 1008 with "API key not valid", quota as
    /// "RESOURCE_EXHAUSTED"/"quota", bad requests as 1007.
    fn close_code(&self, code: u16, reason: &str) -> Option<&'static str> {
        let r = reason.to_ascii_lowercase();
        if r.contains("api key") || r.contains("permission") || r.contains("unauthenticated") {
            Some("provider_auth_failed")
        } else if r.contains("quota") || r.contains("exhausted") || r.contains("rate") {
            Some("provider_rate_limited")
        } else if code == 1007 || code == 1008 || code == 1011 {
            Some("provider_error")
        } else {
            None
        }
    }

    fn auth_failed(&self) -> bool {
        self.auth_failed
    }

    fn set_auth_failed(&mut self, failed: bool) {
        self.auth_failed = failed;
    }
}

#[cfg(test)]
mod tests;
