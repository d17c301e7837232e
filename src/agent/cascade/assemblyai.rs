//! Speech-to-text over AssemblyAI's Universal-Streaming v3 WebSocket (`/v3/ws`): raw pcm_s16le
//! at 16 kHz in binary frames of 50-1000 ms (AssemblyAI refuses shorter ones, so our 20 ms
//! frames are batched), `Begin`, `Turn` and `Termination` out. The key goes in the
//! `Authorization` header, bare. The connection itself is [`super::stt`]'s.
//!
//! Our turn detector decides turns: AssemblyAI's own end-of-turn model is told to wait for
//! certainty (`end_of_turn_confidence_threshold=1`) and at our commit `ForceEndpoint` ends the
//! turn at once. With `format_turns=true` an ended turn comes twice, raw then formatted; the
//! formatted one is the transcript. A `ForceEndpoint` with nothing new to end may go
//! unanswered; the cascade then stops waiting after its finalize timeout.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request};

use super::CascadeConfig;
use super::stt::{SttIn, SttOut, SttWire};

/// AssemblyAI's shortest accepted audio message: 50 ms at 16 kHz, pcm16.
pub const MIN_CHUNK_BYTES: usize = 16_000 * 2 / 20;

pub fn url(cfg: &CascadeConfig) -> String {
    format!(
        "{}?sample_rate=16000&encoding=pcm_s16le&speech_model={}&format_turns=true&end_of_turn_confidence_threshold=1",
        cfg.stt_url, cfg.stt_model
    )
}

pub struct AssemblyAi {
    cfg: Arc<CascadeConfig>,
    /// Audio not sent yet (less than [`MIN_CHUNK_BYTES`]).
    pending: Vec<u8>,
    /// `ForceEndpoint`s sent and not yet answered by an ended, formatted turn.
    forced: usize,
}

impl AssemblyAi {
    pub fn new(cfg: Arc<CascadeConfig>) -> Self {
        Self { cfg, pending: Vec::with_capacity(MIN_CHUNK_BYTES * 2), forced: 0 }
    }
}

impl SttWire for AssemblyAi {
    const NAME: &'static str = "assemblyai";

    fn request(&self) -> Result<Request<()>, (&'static str, String)> {
        let mut req =
            url(&self.cfg).into_client_request().map_err(|e| ("provider_error", format!("assemblyai URL from the config: {e}")))?;
        let key = HeaderValue::from_str(&self.cfg.stt_key)
            .map_err(|_| ("provider_auth_failed", "assemblyai key is not a valid header".to_string()))?;
        req.headers_mut().insert("authorization", key);
        Ok(req)
    }

    fn on_input(&mut self, input: SttIn) -> Vec<Message> {
        match input {
            SttIn::Audio(a) => {
                self.pending.extend_from_slice(&a);
                if self.pending.len() < MIN_CHUNK_BYTES {
                    return Vec::new();
                }
                vec![Message::binary(std::mem::take(&mut self.pending))]
            }
            SttIn::Finalize => {
                let mut out = Vec::new();
                if !self.pending.is_empty() {
                    // The turn's last words must be heard before it is ended; pad to the minimum.
                    let mut tail = std::mem::take(&mut self.pending);
                    tail.resize(tail.len().max(MIN_CHUNK_BYTES), 0);
                    out.push(Message::binary(tail));
                }
                self.forced += 1;
                out.push(Message::text(r#"{"type":"ForceEndpoint"}"#));
                out
            }
        }
    }

    /// Without `inactivity_timeout` AssemblyAI does not close idle sessions: nothing to send.
    fn keepalive(&mut self, _idle: Duration) -> Option<Message> {
        None
    }

    fn close(&mut self) -> Message {
        Message::text(r#"{"type":"Terminate"}"#)
    }

    fn parse(&mut self, v: &Value) -> Vec<SttOut> {
        let mut out = Vec::new();
        match v["type"].as_str() {
            Some("Turn") if v["end_of_turn"] == true && v["turn_is_formatted"] == true => {
                let text = v["transcript"].as_str().unwrap_or_default().trim();
                if !text.is_empty() {
                    out.push(SttOut::Final(text.to_string()));
                }
                if self.forced > 0 {
                    self.forced -= 1;
                    out.push(SttOut::Finalized);
                }
            }
            _ if v.get("error").is_some() => {
                let message = v["error"].as_str().unwrap_or("assemblyai error");
                out.push(SttOut::Error { code: "provider_error", message: format!("assemblyai: {message}") });
            }
            _ => {}
        }
        out
    }

    fn reset(&mut self) {
        // Audio held for the reconnect is batched again; an unanswered endpoint never will be.
        self.pending.clear();
        self.forced = 0;
    }

    /// AssemblyAI closes with 1008 (or a 4xxx code whose reason says so) for a refused key.
    fn close_code(&self, code: u16, reason: &str) -> &'static str {
        let r = reason.to_ascii_lowercase();
        if code == 1008 || r.contains("unauthori") || r.contains("invalid api key") {
            "provider_auth_failed"
        } else {
            "provider_disconnected"
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::agent::cascade::{LlmDialect, SttProvider};

    fn cfg() -> Arc<CascadeConfig> {
        Arc::new(CascadeConfig {
            stt: SttProvider::AssemblyAi,
            stt_key: "aai".into(),
            stt_model: "universal-streaming-english".into(),
            stt_url: "wss://streaming.assemblyai.com/v3/ws".into(),
            stt_language: "en".into(),
            llm: LlmDialect::OpenAi,
            llm_key: String::new(),
            llm_model: String::new(),
            llm_base_url: String::new(),
            max_tokens: 1,
            tts_key: String::new(),
            tts_voice: String::new(),
            tts_model: String::new(),
            tts_base_url: String::new(),
            connect_timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn audio_is_batched_to_50_ms_and_a_commit_flushes_then_forces_the_endpoint() {
        let mut a = AssemblyAi::new(cfg());
        let req = a.request().unwrap();
        assert_eq!(req.headers()["authorization"], "aai", "the bare key");
        let q = req.uri().query().unwrap();
        assert!(
            q.contains("sample_rate=16000") && q.contains("encoding=pcm_s16le") && q.contains("speech_model=universal-streaming-english"),
            "{q}"
        );
        let frame = vec![1u8; 640];
        assert!(a.on_input(SttIn::Audio(frame.clone())).is_empty());
        assert!(a.on_input(SttIn::Audio(frame.clone())).is_empty());
        let sent = a.on_input(SttIn::Audio(frame.clone()));
        assert!(matches!(&sent[..], [Message::Binary(b)] if b.len() == 1920), "60 ms in one message");
        a.on_input(SttIn::Audio(frame));
        let sent = a.on_input(SttIn::Finalize);
        assert!(matches!(&sent[0], Message::Binary(b) if b.len() == MIN_CHUNK_BYTES && b[639] == 1 && b[640] == 0), "tail padded to 50 ms");
        assert_eq!(sent[1], Message::text(r#"{"type":"ForceEndpoint"}"#));
        assert_eq!(a.close(), Message::text(r#"{"type":"Terminate"}"#));
    }

    #[test]
    fn the_formatted_end_of_turn_is_the_transcript_and_answers_the_endpoint() {
        let mut a = AssemblyAi::new(cfg());
        let turn = |text: &str, end: bool, formatted: bool| {
            json!({"type": "Turn", "turn_order": 0, "turn_is_formatted": formatted, "end_of_turn": end, "transcript": text,
                "end_of_turn_confidence": 0.9, "words": []})
        };
        assert!(a.parse(&json!({"type": "Begin", "id": "s", "expires_at": 1})).is_empty());
        assert!(a.parse(&turn("hi my", false, false)).is_empty(), "partials are not final");
        a.on_input(SttIn::Finalize);
        assert!(a.parse(&turn("hi my name", true, false)).is_empty(), "the raw end waits for the formatted one");
        assert_eq!(a.parse(&turn("Hi, my name.", true, true)), [SttOut::Final("Hi, my name.".into()), SttOut::Finalized]);
        assert_eq!(a.parse(&turn("Later.", true, true)), [SttOut::Final("Later.".into())], "its own endpoint: no finalize owed");
        assert!(matches!(&a.parse(&json!({"error": "Invalid audio"}))[..], [SttOut::Error { code: "provider_error", .. }]));
        assert!(a.parse(&json!({"type": "Termination", "audio_duration_seconds": 1, "session_duration_seconds": 1})).is_empty());
        assert_eq!(a.close_code(1008, "Unauthorized connection"), "provider_auth_failed");
    }
}
