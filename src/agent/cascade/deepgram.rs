//! Speech-to-text over Deepgram's live WebSocket (`/v1/listen`): linear16 at 16 kHz in binary
//! frames, `Results` with interim and final transcripts out. Deepgram closes a stream after
//! 10 s without audio, and audio is gated to speech, so a `KeepAlive` goes out after 5 s of
//! quiet. At a commit, `Finalize` flushes what Deepgram holds; its answer carries
//! `from_finalize`. The connection itself is [`super::stt`]'s.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Request};

use super::CascadeConfig;
use super::stt::{SttIn, SttOut, SttWire};

pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(5);

pub fn url(cfg: &CascadeConfig) -> String {
    format!(
        "{}?model={}&language={}&encoding=linear16&sample_rate=16000&channels=1&interim_results=true&punctuate=true&smart_format=true",
        cfg.stt_url, cfg.stt_model, cfg.stt_language
    )
}

/// What one Deepgram message means for us.
pub fn parse(v: &Value) -> Vec<SttOut> {
    let mut out = Vec::new();
    match v["type"].as_str() {
        Some("Results") => {
            let text = v["channel"]["alternatives"][0]["transcript"].as_str().unwrap_or_default().trim();
            if v["is_final"] == true && !text.is_empty() {
                out.push(SttOut::Final(text.to_string()));
            }
            if v["from_finalize"] == true {
                out.push(SttOut::Finalized);
            }
        }
        Some("Error") | Some("error") => {
            let message = v["description"].as_str().or(v["message"].as_str()).unwrap_or("deepgram error").to_string();
            out.push(SttOut::Error { code: "provider_error", message: format!("deepgram: {message}") });
        }
        _ => {}
    }
    out
}

pub struct Deepgram {
    cfg: Arc<CascadeConfig>,
}

impl Deepgram {
    pub fn new(cfg: Arc<CascadeConfig>) -> Self {
        Self { cfg }
    }
}

impl SttWire for Deepgram {
    const NAME: &'static str = "deepgram";

    fn request(&self) -> Result<Request<()>, (&'static str, String)> {
        // Model and language come from the config file: a value a URL cannot carry is an error.
        let mut req = url(&self.cfg).into_client_request().map_err(|e| ("provider_error", format!("deepgram URL from the config: {e}")))?;
        let token = HeaderValue::from_str(&format!("Token {}", self.cfg.stt_key))
            .map_err(|_| ("provider_auth_failed", "deepgram key is not a valid header".to_string()))?;
        req.headers_mut().insert("authorization", token);
        Ok(req)
    }

    fn on_input(&mut self, input: SttIn) -> Vec<Message> {
        vec![match input {
            SttIn::Audio(a) => Message::binary(a),
            SttIn::Finalize => Message::text(r#"{"type":"Finalize"}"#),
        }]
    }

    fn keepalive(&mut self, idle: Duration) -> Option<Message> {
        (idle >= KEEPALIVE_AFTER).then(|| Message::text(r#"{"type":"KeepAlive"}"#))
    }

    fn close(&mut self) -> Message {
        Message::text(r#"{"type":"CloseStream"}"#)
    }

    fn parse(&mut self, v: &Value) -> Vec<SttOut> {
        parse(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finals_and_finalize_acknowledgements() {
        let r = json!({"type": "Results", "is_final": true, "speech_final": false, "from_finalize": true,
            "channel": {"alternatives": [{"transcript": " hello world ", "confidence": 0.9}]}});
        assert_eq!(parse(&r), [SttOut::Final("hello world".into()), SttOut::Finalized]);
        let interim = json!({"type": "Results", "is_final": false, "channel": {"alternatives": [{"transcript": "hel"}]}});
        assert!(parse(&interim).is_empty());
        assert!(parse(&json!({"type": "Metadata", "request_id": "x"})).is_empty());
    }
}
