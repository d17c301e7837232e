//! The reply, streamed token by token over server-sent events: OpenAI chat completions
//! (`POST /chat/completions`, `stream: true`, `choices[0].delta.content`, `data: [DONE]`) or
//! Anthropic messages (`POST /messages`, `content_block_delta` / `text_delta`, `message_stop`).

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{CascadeConfig, LlmDialect};

/// Dialogue turns as (role, text) with role `user` or `assistant`.
pub type Turns<'a> = &'a [(&'static str, String)];

#[derive(Debug, PartialEq)]
pub struct LlmError {
    pub code: &'static str,
    pub message: String,
}

pub fn request_body(cfg: &CascadeConfig, system: &str, turns: Turns<'_>) -> Value {
    match cfg.llm {
        LlmDialect::OpenAi => {
            let mut messages = vec![json!({"role": "system", "content": system})];
            messages.extend(turns.iter().map(|(role, text)| json!({"role": role, "content": text})));
            json!({"model": cfg.llm_model, "stream": true, "max_tokens": cfg.max_tokens, "messages": messages})
        }
        LlmDialect::Anthropic => {
            // Anthropic wants alternating roles starting with the user: merge runs, drop a
            // leading assistant turn.
            let mut merged: Vec<(&str, String)> = Vec::new();
            for (role, text) in turns {
                if merged.is_empty() && *role == "assistant" {
                    continue;
                }
                match merged.last_mut() {
                    Some((r, t)) if r == role => {
                        t.push('\n');
                        t.push_str(text);
                    }
                    _ => merged.push((role, text.clone())),
                }
            }
            let messages: Vec<Value> = merged.iter().map(|(role, text)| json!({"role": role, "content": text})).collect();
            json!({"model": cfg.llm_model, "stream": true, "max_tokens": cfg.max_tokens, "system": system, "messages": messages})
        }
    }
}

/// One SSE event's data: `Ok(Some(text))` a token, `Ok(None)` nothing to say, `Err` a failure;
/// `done` is set at the end of the stream.
pub fn parse_data(dialect: LlmDialect, data: &str, done: &mut bool) -> Result<Option<String>, LlmError> {
    if dialect == LlmDialect::OpenAi && data.trim() == "[DONE]" {
        *done = true;
        return Ok(None);
    }
    let v: Value = serde_json::from_str(data).map_err(|e| LlmError { code: "provider_protocol_error", message: format!("bad SSE data: {e}") })?;
    match dialect {
        LlmDialect::OpenAi => {
            if let Some(err) = v.get("error") {
                return Err(LlmError { code: "provider_error", message: err["message"].as_str().unwrap_or("error").to_string() });
            }
            Ok(v["choices"][0]["delta"]["content"].as_str().filter(|t| !t.is_empty()).map(String::from))
        }
        LlmDialect::Anthropic => match v["type"].as_str() {
            Some("content_block_delta") if v["delta"]["type"] == "text_delta" => Ok(v["delta"]["text"].as_str().map(String::from)),
            Some("message_stop") => {
                *done = true;
                Ok(None)
            }
            Some("error") => {
                let kind = v["error"]["type"].as_str().unwrap_or("error");
                let code = if kind == "rate_limit_error" || kind == "overloaded_error" { "provider_rate_limited" } else { "provider_error" };
                Err(LlmError { code, message: format!("anthropic: {kind}: {}", v["error"]["message"].as_str().unwrap_or("")) })
            }
            _ => Ok(None),
        },
    }
}

fn status_error(status: u16, body: &str) -> LlmError {
    let code = match status {
        401 | 403 => "provider_auth_failed",
        429 | 529 => "provider_rate_limited",
        _ => "provider_error",
    };
    let excerpt: String = body.chars().take(300).collect();
    LlmError { code, message: format!("LLM answered HTTP {status}: {excerpt}") }
}

/// Streams the reply's tokens into `tokens` until the reply ends.
pub async fn stream(
    http: &reqwest::Client,
    cfg: &CascadeConfig,
    system: &str,
    turns: Turns<'_>,
    tokens: mpsc::UnboundedSender<String>,
) -> Result<(), LlmError> {
    let body = request_body(cfg, system, turns);
    let req = match cfg.llm {
        LlmDialect::OpenAi => http.post(format!("{}/chat/completions", cfg.llm_base_url)).bearer_auth(&cfg.llm_key),
        LlmDialect::Anthropic => http
            .post(format!("{}/messages", cfg.llm_base_url))
            .header("x-api-key", &cfg.llm_key)
            .header("anthropic-version", "2023-06-01"),
    };
    let resp = req
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .map_err(|e| LlmError { code: "provider_unavailable", message: format!("LLM unreachable: {e}") })?;
    let status = resp.status().as_u16();
    if status != 200 {
        let text = resp.text().await.unwrap_or_default();
        return Err(status_error(status, &text));
    }
    let mut bytes = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut done = false;
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|e| LlmError { code: "provider_disconnected", message: format!("LLM stream broke: {e}") })?;
        buf.extend_from_slice(&chunk);
        // SSE lines end in \n (or \r\n); `data:` lines carry the payload.
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(data) = line.strip_prefix("data:") {
                if let Some(t) = parse_data(cfg.llm, data.trim_start(), &mut done)? {
                    if tokens.send(t).is_err() {
                        return Ok(());
                    }
                }
                if done {
                    return Ok(());
                }
            }
        }
    }
    if done { Ok(()) } else { Err(LlmError { code: "provider_disconnected", message: "LLM stream ended early".into() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_parse_tokens_ends_and_errors() {
        let mut done = false;
        let oa = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        assert_eq!(parse_data(LlmDialect::OpenAi, oa, &mut done), Ok(Some("Hi".into())));
        assert_eq!(parse_data(LlmDialect::OpenAi, "[DONE]", &mut done), Ok(None));
        assert!(done);
        let mut done = false;
        let an = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Yo"}}"#;
        assert_eq!(parse_data(LlmDialect::Anthropic, an, &mut done), Ok(Some("Yo".into())));
        let err = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(parse_data(LlmDialect::Anthropic, err, &mut done).unwrap_err().code, "provider_rate_limited");
        assert_eq!(parse_data(LlmDialect::Anthropic, r#"{"type":"message_stop"}"#, &mut done), Ok(None));
        assert!(done);
        assert_eq!(status_error(401, "no").code, "provider_auth_failed");
    }
}
