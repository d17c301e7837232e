//! OpenAI Realtime over WebSocket, the protocol half: what to send for each bridge command and
//! what each server event means for the call. No I/O, so every mapping is unit-tested.
//!
//! Our server VAD stays authoritative: upstream `turn_detection` is off, and we drive it with
//! `input_audio_buffer.commit` + `response.create`, `response.cancel` + `conversation.item.truncate`.
//! Both event namings are understood (GA `response.output_audio.delta`, beta `response.audio.delta`).

use std::collections::{HashMap, VecDeque};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use voxrelay_media::SAMPLES_24K;
use voxrelay_signaling::SessionConfig;

use crate::agent::bridge::{Cmd, Link};
use crate::agent::history::Dialogue;
pub use crate::agent::history::HISTORY_BUDGET_CHARS;
use crate::agent::pcm::Framer;
use crate::agent::providers::{OpenAiConfig, OpenAiDialect};
use crate::agent::{AgentNotice, AgentOutput, speaker_label};

struct Active {
    num: u64,
    upstream_id: String,
    item_id: Option<String>,
    cancelled: bool,
    transcript: String,
}

pub struct Session {
    cfg: OpenAiConfig,
    session: SessionConfig,
    /// Local responses asked for with `response.create`, not yet `response.created`:
    /// (number, cancelled meanwhile).
    awaiting: VecDeque<(u64, bool)>,
    active: Option<Active>,
    /// The last response that finished upstream, (number, assistant item id): its audio may
    /// still be playing here, so a barge-in truncates it without cancelling anything.
    finished: Option<(u64, String, String)>,
    /// Local item ids of commits not yet acknowledged upstream, in order.
    commits: VecDeque<String>,
    /// Upstream user item id → our item id (for transcripts).
    items: HashMap<String, String>,
    history: Dialogue,
    framer: Framer,
    /// The provider refused our key (no point retrying fast).
    pub auth_failed: bool,
}

pub fn audio_append(pcm: &[i16; SAMPLES_24K]) -> String {
    let mut bytes = [0u8; SAMPLES_24K * 2];
    for (b, s) in bytes.chunks_exact_mut(2).zip(pcm) {
        b.copy_from_slice(&s.to_le_bytes());
    }
    format!(r#"{{"type":"input_audio_buffer.append","audio":"{}"}}"#, B64.encode(bytes))
}

impl Session {
    pub fn new(cfg: OpenAiConfig, session: SessionConfig) -> Self {
        Self {
            cfg,
            session,
            awaiting: VecDeque::new(),
            active: None,
            finished: None,
            commits: VecDeque::new(),
            items: HashMap::new(),
            history: Dialogue::default(),
            framer: Framer::default(),
            auth_failed: false,
        }
    }

    /// Starts from a conversation's dialogue so far.
    pub fn resuming(mut self, prior: Dialogue) -> Self {
        self.history = prior;
        self
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.cfg
    }

    pub fn url(&self) -> String {
        let sep = if self.cfg.base_url.contains('?') { '&' } else { '?' };
        format!("{}{sep}model={}", self.cfg.base_url, self.cfg.model)
    }

    pub fn beta(&self) -> bool {
        self.cfg.dialect == OpenAiDialect::Beta
    }

    fn voice(&self) -> &str {
        // The session's voice, unless it is the wire default: then the operator's choice.
        if self.session.voice == SessionConfig::default().voice { &self.cfg.voice } else { &self.session.voice }
    }

    /// `response.create`, with what the client asked of this response in the upstream's dialect.
    fn response_create(&self, options: &voxrelay_signaling::events::ResponseOptions) -> Value {
        let mut response = serde_json::Map::new();
        if options.text_only == Some(true) {
            let key = if self.beta() { "modalities" } else { "output_modalities" };
            response.insert(key.into(), json!(["text"]));
        }
        if let Some(text) = &options.instructions {
            response.insert("instructions".into(), json!(text));
        }
        if response.is_empty() { json!({"type": "response.create"}) } else { json!({"type": "response.create", "response": response}) }
    }

    pub fn session_update(&self) -> Value {
        let transcription = self.session.input_audio_transcription.as_ref().map(|t| {
            let model = t.get("model").and_then(Value::as_str).unwrap_or(&self.cfg.transcription_model);
            json!({"model": model})
        });
        let session = if self.beta() {
            json!({
                "modalities": ["audio", "text"],
                "instructions": self.session.instructions,
                "voice": self.voice(),
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "turn_detection": null,
                "input_audio_transcription": transcription,
            })
        } else {
            let format = json!({"type": "audio/pcm", "rate": 24000});
            json!({
                "type": "realtime",
                "model": self.cfg.model,
                "output_modalities": ["audio"],
                "instructions": self.session.instructions,
                "audio": {
                    "input": {"format": format, "turn_detection": null, "transcription": transcription},
                    "output": {"format": format, "voice": self.voice()},
                },
            })
        };
        let mut session = session;
        // Same place and shape in both dialects; the client's declarations pass through as-is.
        session["tools"] = self.session.tools_json();
        session["tool_choice"] = self.session.tool_choice.clone();
        json!({"type": "session.update", "session": session})
    }

    /// The dialogue so far as items to recreate on a fresh upstream session.
    pub fn replay(&self) -> Vec<Value> {
        let beta = self.beta();
        self.history
            .turns()
            .iter()
            .map(|(role, text)| {
                let kind = match (*role, beta) {
                    ("user", _) => "input_text",
                    (_, true) => "text",
                    (_, false) => "output_text",
                };
                json!({"type": "conversation.item.create", "item": {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}})
            })
            .collect()
    }

    /// Messages to send for a command (audio is sent by the caller with [`audio_append`]).
    pub fn on_cmd(&mut self, cmd: Cmd, link: &mut Link) -> Vec<String> {
        let v = match cmd {
            Cmd::Audio { pcm, .. } => return vec![audio_append(&pcm)],
            Cmd::SpeechStarted => return Vec::new(),
            Cmd::Configure(s) => {
                self.session = s;
                self.session_update()
            }
            Cmd::Commit { item_id } => {
                self.commits.push_back(item_id);
                json!({"type": "input_audio_buffer.commit"})
            }
            Cmd::ClearInput => json!({"type": "input_audio_buffer.clear"}),
            Cmd::Text { text, .. } => {
                self.history.push("user", &text);
                json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
            }
            // Realtime message items have no speaker field: a short text item names who speaks
            // just before their audio turn is committed.
            Cmd::Speaker(name) => {
                let text = speaker_label(&name);
                self.history.push("user", &text);
                json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
            }
            Cmd::FunctionOutput { call_id, output } => {
                json!({"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call_id, "output": output}})
            }
            Cmd::StartResponse(num, options) => {
                if self.auth_failed {
                    link.output(num, failed("provider_auth_failed", "the provider refused this server's API key"));
                    return Vec::new();
                }
                self.awaiting.push_back((num, false));
                self.response_create(&options)
            }
            Cmd::CancelResponse { response, played } => return self.cancel(response, played.as_millis() as u64),
        };
        vec![v.to_string()]
    }

    fn cancel(&mut self, num: u64, played_ms: u64) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(a) = self.active.as_mut().filter(|a| a.num == num && !a.cancelled) {
            a.cancelled = true;
            out.push(json!({"type": "response.cancel", "response_id": a.upstream_id}).to_string());
            if let Some(item) = a.item_id.clone().filter(|_| played_ms > 0) {
                out.push(
                    json!({"type": "conversation.item.truncate", "item_id": item, "content_index": 0, "audio_end_ms": played_ms})
                        .to_string(),
                );
            }
            // What the caller heard of it is what the model should remember saying.
            let heard = std::mem::take(&mut a.transcript);
            if played_ms > 0 {
                self.history.push("assistant", &heard);
            }
        } else if let Some((_, item, transcript)) = self.finished.take().filter(|(n, ..)| *n == num) {
            if played_ms > 0 {
                out.push(
                    json!({"type": "conversation.item.truncate", "item_id": item, "content_index": 0, "audio_end_ms": played_ms})
                        .to_string(),
                );
            }
            // The whole answer was remembered at response.done; keep only what was heard.
            let heard = if played_ms > 0 { transcript.as_str() } else { "" };
            self.history.replace_last("assistant", &transcript, heard);
        } else if let Some(entry) = self.awaiting.iter_mut().find(|(n, _)| *n == num) {
            entry.1 = true;
            out.push(json!({"type": "response.cancel"}).to_string());
        }
        out
    }

    /// The upstream connection is gone: responses in flight cannot finish.
    pub fn on_disconnect(&mut self, link: &mut Link, code: &str, message: &str) {
        if let Some(a) = self.active.take().filter(|a| !a.cancelled) {
            self.flush_partial(a.num, link);
            link.output(a.num, failed(code, message));
        }
        for (num, cancelled) in self.awaiting.drain(..) {
            if !cancelled {
                link.output(num, failed(code, message));
            }
        }
        self.commits.clear();
        self.framer.clear();
    }

    fn flush_partial(&mut self, num: u64, link: &mut Link) {
        if let Some(frame) = self.framer.flush() {
            link.output(num, AgentOutput::Audio(frame));
        }
    }

    fn on_audio_delta(&mut self, num: u64, b64: &str, link: &mut Link) {
        let Ok(bytes) = B64.decode(b64) else {
            link.error("provider_protocol_error", "audio delta is not base64");
            return;
        };
        self.framer.push(&bytes, |frame| link.output(num, AgentOutput::Audio(frame)));
    }

    /// One server event.
    pub fn on_event(&mut self, ev: &Value, link: &mut Link) {
        let ty = ev["type"].as_str().unwrap_or_default();
        match ty {
            "response.created" => {
                let upstream_id = ev["response"]["id"].as_str().unwrap_or_default().to_string();
                let Some((num, cancelled)) = self.awaiting.pop_front() else { return };
                self.active = Some(Active { num, upstream_id, item_id: None, cancelled, transcript: String::new() });
            }
            "response.output_item.added" => {
                if let Some(a) = self.active.as_mut() {
                    if a.item_id.is_none() && ev["item"]["type"] == "message" {
                        a.item_id = ev["item"]["id"].as_str().map(String::from);
                    }
                }
            }
            // The finished item carries call id, name and arguments in both dialects (beta's
            // `response.function_call_arguments.done` may lack the name).
            "response.output_item.done" if ev["item"]["type"] == "function_call" => {
                let Some(a) = self.active.as_ref().filter(|a| !a.cancelled) else { return };
                let item = &ev["item"];
                let (Some(call_id), Some(name)) = (item["call_id"].as_str(), item["name"].as_str()) else {
                    link.error("provider_protocol_error", "openai-realtime: a function_call item without call_id or name");
                    return;
                };
                let arguments = item["arguments"].as_str().unwrap_or("{}").to_string();
                link.output(a.num, AgentOutput::FunctionCall { call_id: call_id.into(), name: name.into(), arguments });
            }
            "response.output_audio.delta" | "response.audio.delta" => {
                let Some(a) = self.active.as_mut().filter(|a| !a.cancelled) else { return };
                if a.item_id.is_none() {
                    a.item_id = ev["item_id"].as_str().map(String::from);
                }
                let num = a.num;
                self.on_audio_delta(num, ev["delta"].as_str().unwrap_or_default(), link);
            }
            "response.output_audio_transcript.delta"
            | "response.audio_transcript.delta"
            | "response.output_text.delta"
            | "response.text.delta" => {
                let Some(a) = self.active.as_mut().filter(|a| !a.cancelled) else { return };
                let delta = ev["delta"].as_str().unwrap_or_default();
                a.transcript.push_str(delta);
                link.output(a.num, AgentOutput::TranscriptDelta(delta.to_string()));
            }
            "response.done" => {
                let Some(a) = self.active.take() else { return };
                if a.cancelled {
                    self.framer.clear();
                    return;
                }
                self.flush_partial(a.num, link);
                let status = ev["response"]["status"].as_str().unwrap_or("completed");
                if status == "failed" || status == "incomplete" {
                    let err = &ev["response"]["status_details"]["error"];
                    let code = err["code"].as_str().or(err["type"].as_str()).unwrap_or(status);
                    let message = err["message"].as_str().unwrap_or("the provider ended the response early");
                    link.output(a.num, failed(&provider_code(code), message));
                } else {
                    link.output(a.num, AgentOutput::Done);
                }
                self.history.push("assistant", &a.transcript);
                self.finished = a.item_id.map(|item| (a.num, item, a.transcript));
            }
            // The client budgets by these; they are the provider account's, so passed on as-is.
            "rate_limits.updated" => {
                if let Some(limits) = ev.get("rate_limits").filter(|l| l.is_array()) {
                    link.notice(AgentNotice::RateLimits(limits.clone()));
                }
            }
            "input_audio_buffer.committed" => {
                if let (Some(local), Some(upstream)) = (self.commits.pop_front(), ev["item_id"].as_str()) {
                    if self.items.len() >= 64 {
                        self.items.clear();
                    }
                    self.items.insert(upstream.to_string(), local);
                }
            }
            "conversation.item.input_audio_transcription.completed" => {
                let transcript = ev["transcript"].as_str().unwrap_or_default().to_string();
                let upstream = ev["item_id"].as_str().unwrap_or_default();
                if let Some(item_id) = self.items.remove(upstream) {
                    self.history.push("user", &transcript);
                    link.notice(AgentNotice::InputTranscript { item_id, transcript });
                }
            }
            "error" => {
                let err = &ev["error"];
                let code = err["code"].as_str().unwrap_or("provider_error");
                let message = err["message"].as_str().unwrap_or("provider error");
                match code {
                    // A cancel racing the response's natural end: nothing is wrong. The provider takes
                    // events in order, so a cancelled response it never created (it went quiet,
                    // see `AGENT_SILENCE_LIMIT`) never will be: stop waiting for it, or the next
                    // response's `response.created` would be taken for it.
                    "response_cancel_not_active" => {
                        if let Some(i) = self.awaiting.iter().position(|(_, cancelled)| *cancelled) {
                            self.awaiting.remove(i);
                        }
                    }
                    "invalid_api_key" => {
                        self.auth_failed = true;
                        link.error("provider_auth_failed", format!("openai-realtime: {message}"));
                    }
                    _ => link.error(&provider_code(code), format!("openai-realtime: {message}")),
                }
            }
            _ => {}
        }
    }
}

fn failed(code: &str, message: &str) -> AgentOutput {
    AgentOutput::Failed { code: code.into(), message: message.into() }
}

/// Our error code for an upstream one: rate limits keep their meaning, the rest are provider
/// errors (the upstream code stays in the message).
fn provider_code(code: &str) -> String {
    match code {
        "rate_limit_exceeded" | "rate_limited" => "provider_rate_limited".into(),
        "invalid_api_key" => "provider_auth_failed".into(),
        c if c.starts_with("provider_") => c.into(),
        _ => "provider_error".into(),
    }
}

#[cfg(test)]
mod tests;
