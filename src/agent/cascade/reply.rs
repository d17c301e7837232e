//! One cascade response: the LLM's tokens stream into the transcript and, sentence by sentence,
//! into ElevenLabs, whose audio streams back as frames. The TTS connection is opened while the
//! LLM request is in flight, so neither waits for the other. Dropping (aborting) the task
//! cancels both: the HTTP stream and the WebSocket close.
//!
//! A reply that is only a function call says nothing: the TTS connection is dropped unused and
//! the response ends with the call. Words before a call are spoken first.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::elevenlabs::{self, TtsMsg};
use super::llm::{self, LlmError, ToolCall, ToolSpec};
use super::sentences::Sentences;
use super::CascadeConfig;
use crate::agent::AgentOutput;
use crate::agent::pcm::Framer;
use voxrelay_signaling::wire::Tool;
use serde_json::Value;

/// Everything the LLM request is made of, owned by the response task.
pub struct Prompt {
    pub system: String,
    pub turns: Vec<(&'static str, String)>,
    pub tools: Vec<Tool>,
    pub tool_choice: Value,
}

pub enum RespMsg {
    Out(u64, AgentOutput),
}

/// Aborts a spawned task when dropped (so aborting the response aborts its LLM request).
struct AbortOnDrop(tokio::task::JoinHandle<Result<Vec<ToolCall>, LlmError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn respond(
    cfg: Arc<CascadeConfig>,
    http: reqwest::Client,
    num: u64,
    prompt: Prompt,
    out: mpsc::UnboundedSender<RespMsg>,
) {
    let send = |o: AgentOutput| {
        let _ = out.send(RespMsg::Out(num, o));
    };
    match run(&cfg, http, num, prompt, &out).await {
        Ok(calls) => {
            for c in calls {
                send(AgentOutput::FunctionCall { call_id: c.id, name: c.name, arguments: c.arguments });
            }
            send(AgentOutput::Done)
        }
        Err(e) => send(AgentOutput::Failed { code: e.code.into(), message: e.message }),
    }
}

async fn run(
    cfg: &Arc<CascadeConfig>,
    http: reqwest::Client,
    num: u64,
    prompt: Prompt,
    out: &mpsc::UnboundedSender<RespMsg>,
) -> Result<Vec<ToolCall>, LlmError> {
    let (tok_tx, mut tok_rx) = mpsc::unbounded_channel();
    let llm_cfg = cfg.clone();
    let mut llm_task = AbortOnDrop(tokio::spawn(async move {
        let tools = ToolSpec { tools: &prompt.tools, choice: &prompt.tool_choice };
        llm::stream(&http, &llm_cfg, &prompt.system, &prompt.turns, &tools, tok_tx).await
    }));
    let ws = elevenlabs::connect(cfg).await?;
    let (mut sink, mut stream) = ws.split();
    let ws_err = |e: tokio_tungstenite::tungstenite::Error| LlmError { code: "provider_disconnected", message: format!("elevenlabs: {e}") };
    sink.send(Message::text(elevenlabs::begin())).await.map_err(ws_err)?;
    let mut sentences = Sentences::default();
    let mut framer = Framer::default();
    let mut llm_done = false;
    let mut spoken = false;
    let mut calls = Vec::new();
    loop {
        tokio::select! {
            tok = tok_rx.recv(), if !llm_done => match tok {
                Some(t) => {
                    let _ = out.send(RespMsg::Out(num, AgentOutput::TranscriptDelta(t.clone())));
                    for s in sentences.push(&t) {
                        spoken = true;
                        sink.send(Message::text(elevenlabs::text(&s))).await.map_err(ws_err)?;
                    }
                }
                None => {
                    llm_done = true;
                    match (&mut llm_task.0).await {
                        Ok(Ok(c)) => calls = c,
                        Ok(Err(e)) => return Err(e),
                        Err(e) => return Err(LlmError { code: "provider_error", message: format!("LLM task: {e}") }),
                    }
                    if let Some(s) = sentences.finish() {
                        spoken = true;
                        sink.send(Message::text(elevenlabs::text(&s))).await.map_err(ws_err)?;
                    }
                    if !spoken && !calls.is_empty() {
                        // Nothing to say, only calls to make: no speech to wait for.
                        return Ok(calls);
                    }
                    sink.send(Message::text(elevenlabs::end())).await.map_err(ws_err)?;
                }
            },
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Close(f))) => {
                        let reason = f.map(|f| f.reason.to_string()).unwrap_or_default();
                        if let TtsMsg::Error(e) = elevenlabs::parse(&serde_json::json!({"message": reason})) {
                            if !reason.is_empty() {
                                return Err(e);
                            }
                        }
                        return Err(LlmError { code: "provider_disconnected", message: "elevenlabs closed before the end of the speech".into() });
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(ws_err(e)),
                    None => return Err(LlmError { code: "provider_disconnected", message: "elevenlabs stream ended early".into() }),
                };
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| LlmError { code: "provider_protocol_error", message: format!("elevenlabs: {e}") })?;
                match elevenlabs::parse(&v) {
                    TtsMsg::Audio(b64) => {
                        let bytes = B64.decode(b64).map_err(|e| LlmError { code: "provider_protocol_error", message: format!("elevenlabs audio: {e}") })?;
                        framer.push(&bytes, |f| {
                            let _ = out.send(RespMsg::Out(num, AgentOutput::Audio(f)));
                        });
                    }
                    TtsMsg::Final => {
                        if let Some(f) = framer.flush() {
                            let _ = out.send(RespMsg::Out(num, AgentOutput::Audio(f)));
                        }
                        return Ok(calls);
                    }
                    TtsMsg::Error(e) => return Err(e),
                    TtsMsg::Other => {}
                }
            }
        }
    }
}
