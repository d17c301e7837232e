//! Text-to-speech over ElevenLabs' stream-input WebSocket
//! (`/v1/text-to-speech/{voice}/stream-input`, `output_format=pcm_24000`): text goes in as it is
//! written, each sentence flushed so speech starts on the first one; audio comes back as base64
//! pcm16 at 24 kHz, ending with `isFinal`. One connection per response (ElevenLabs ends the
//! stream after the empty-text end-of-input message).

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::CascadeConfig;
use super::llm::LlmError;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub fn url(cfg: &CascadeConfig) -> String {
    format!("{}/v1/text-to-speech/{}/stream-input?model_id={}&output_format=pcm_24000", cfg.tts_base_url, cfg.tts_voice, cfg.tts_model)
}

/// The first message: a space opens the stream and carries the settings.
pub fn begin() -> String {
    json!({"text": " ", "voice_settings": {"stability": 0.5, "similarity_boost": 0.8}}).to_string()
}

pub fn text(sentence: &str) -> String {
    json!({"text": sentence, "flush": true}).to_string()
}

/// End of input: the rest is spoken, then `isFinal`.
pub fn end() -> String {
    json!({"text": ""}).to_string()
}

#[derive(Debug, PartialEq)]
pub enum TtsMsg {
    Audio(String),
    Final,
    Error(LlmError),
    Other,
}

pub fn parse(v: &Value) -> TtsMsg {
    if let Some(a) = v.get("audio").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        return TtsMsg::Audio(a.to_string());
    }
    if v.get("isFinal").and_then(Value::as_bool) == Some(true) {
        return TtsMsg::Final;
    }
    if let Some(e) = v.get("error").or_else(|| v.get("message")) {
        let text = e.as_str().map(String::from).unwrap_or_else(|| e.to_string());
        let lower = text.to_ascii_lowercase();
        let code = if lower.contains("api_key") || lower.contains("api key") || lower.contains("unauthorized") {
            "provider_auth_failed"
        } else if lower.contains("quota") || lower.contains("rate") {
            "provider_rate_limited"
        } else {
            "provider_error"
        };
        return TtsMsg::Error(LlmError { code, message: format!("elevenlabs: {text}") });
    }
    TtsMsg::Other
}

pub async fn connect(cfg: &CascadeConfig) -> Result<Ws, LlmError> {
    let mut req = url(cfg).into_client_request().map_err(|e| LlmError { code: "provider_error", message: format!("bad TTS URL: {e}") })?;
    let key = HeaderValue::from_str(&cfg.tts_key).map_err(|_| LlmError { code: "provider_auth_failed", message: "elevenlabs key is not a valid header".into() })?;
    req.headers_mut().insert("xi-api-key", key);
    match tokio::time::timeout(cfg.connect_timeout, tokio_tungstenite::connect_async_with_config(req, None, true)).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            let code = if r.status() == 401 || r.status() == 403 { "provider_auth_failed" } else { "provider_error" };
            Err(LlmError { code, message: format!("elevenlabs answered HTTP {}", r.status()) })
        }
        Ok(Err(e)) => Err(LlmError { code: "provider_unavailable", message: format!("elevenlabs unreachable: {e}") }),
        Err(_) => Err(LlmError { code: "provider_unavailable", message: "elevenlabs: no answer to the handshake".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_final_and_errors() {
        assert_eq!(parse(&json!({"audio": "AAA=", "isFinal": null, "normalizedAlignment": null})), TtsMsg::Audio("AAA=".into()));
        assert_eq!(parse(&json!({"isFinal": true})), TtsMsg::Final);
        let TtsMsg::Error(e) = parse(&json!({"message": "Invalid API key", "error": "invalid_api_key", "code": 1008})) else { panic!() };
        assert_eq!(e.code, "provider_auth_failed");
    }
}
