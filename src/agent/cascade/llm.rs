//! The reply, streamed token by token over server-sent events: OpenAI chat completions
//! (`POST /chat/completions`, `stream: true`, `choices[0].delta.content`, `data: [DONE]`) or
//! Anthropic messages (`POST /messages`, `content_block_delta` / `text_delta`, `message_stop`).
//!
//! Function calling: the session's tools go in the request (OpenAI `tools[].function`,
//! Anthropic `tools[].input_schema`); streamed calls (OpenAI `delta.tool_calls[i]`, Anthropic
//! `tool_use` blocks with `input_json_delta`) are assembled here and returned whole when the
//! stream ends. In the dialogue a call is a `function_call` turn and its result a
//! `function_call_output` turn, both JSON text; see [`request_body`] for how each API wants them.

use std::collections::HashSet;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use voxrelay_signaling::wire::Tool;

use super::{CascadeConfig, LlmDialect};

/// Dialogue turns as (role, text) with role `user` or `assistant`, or [`CALL`] / [`OUTPUT`].
pub type Turns<'a> = &'a [(&'static str, String)];

/// A function call the model made: text `{"call_id","name","arguments"}`.
pub const CALL: &str = "function_call";
/// The client's result for a call: text `{"call_id","output"}`.
pub const OUTPUT: &str = "function_call_output";

/// What the model may call and how freely (`SessionConfig::tools` / `tool_choice`).
pub struct ToolSpec<'a> {
    pub tools: &'a [Tool],
    pub choice: &'a Value,
}

/// A complete function call from the model; `arguments` is JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ToolCall {
    /// The dialogue turn recording this call.
    pub fn turn(&self) -> String {
        json!({"call_id": self.id, "name": self.name, "arguments": self.arguments}).to_string()
    }
}

pub fn output_turn(call_id: &str, output: &str) -> String {
    json!({"call_id": call_id, "output": output}).to_string()
}

/// One piece of a streamed reply.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    Text(String),
    /// A call begins at `index` (OpenAI's tool call index, Anthropic's content block index).
    CallStart { index: u64, id: String, name: String },
    CallArgs { index: u64, json: String },
}

/// Calls assembled from [`Chunk`]s, in the order they began.
#[derive(Default)]
struct Calls(Vec<(u64, ToolCall)>);

impl Calls {
    fn apply(&mut self, chunk: Chunk) {
        match chunk {
            Chunk::CallStart { index, id, name } => self.0.push((index, ToolCall { id, name, arguments: String::new() })),
            Chunk::CallArgs { index, json } => {
                if let Some((_, c)) = self.0.iter_mut().rev().find(|(i, _)| *i == index) {
                    c.arguments.push_str(&json);
                }
            }
            Chunk::Text(_) => {}
        }
    }

    fn finish(self) -> Vec<ToolCall> {
        self.0
            .into_iter()
            .map(|(_, mut c)| {
                // A call without parameters streams no argument text.
                if c.arguments.trim().is_empty() {
                    c.arguments = "{}".into();
                }
                c
            })
            .collect()
    }
}

fn turn_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Calls that have their output in the dialogue. Both APIs refuse a call without a result
/// (the client never answered, or the budget dropped one half), so only pairs are sent.
fn paired_calls(turns: Turns<'_>) -> HashSet<String> {
    let ids = |role: &str| -> HashSet<String> {
        turns.iter().filter(|(r, _)| *r == role).filter_map(|(_, t)| turn_json(t)["call_id"].as_str().map(String::from)).collect()
    };
    let outputs = ids(OUTPUT);
    ids(CALL).into_iter().filter(|c| outputs.contains(c)).collect()
}

fn openai_messages(system: &str, turns: Turns<'_>) -> Vec<Value> {
    let paired = paired_calls(turns);
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (role, text) in turns {
        match *role {
            CALL => {
                let v = turn_json(text);
                let Some(id) = v["call_id"].as_str().filter(|id| paired.contains(*id)) else { continue };
                let call = json!({"id": id, "type": "function", "function": {"name": v["name"], "arguments": v["arguments"]}});
                // Words the model said before calling belong to the same assistant message.
                match messages.last_mut().filter(|m| m["role"] == "assistant") {
                    Some(m) => match m["tool_calls"].as_array_mut() {
                        Some(calls) => calls.push(call),
                        None => m["tool_calls"] = json!([call]),
                    },
                    None => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            OUTPUT => {
                let v = turn_json(text);
                if let Some(id) = v["call_id"].as_str().filter(|id| paired.contains(*id)) {
                    messages.push(json!({"role": "tool", "tool_call_id": id, "content": v["output"]}));
                }
            }
            _ => messages.push(json!({"role": role, "content": text})),
        }
    }
    messages
}

/// Anthropic wants alternating roles starting with the user: runs are merged into one message
/// (plain text stays a string; with tool blocks, content is a list of blocks) and leading
/// assistant turns are dropped.
fn anthropic_messages(turns: Turns<'_>) -> Vec<Value> {
    let paired = paired_calls(turns);
    let mut included: HashSet<String> = HashSet::new();
    let mut merged: Vec<(&str, Vec<Value>)> = Vec::new();
    for (role, text) in turns {
        let (role, block) = match *role {
            CALL => {
                let v = turn_json(text);
                let Some(id) = v["call_id"].as_str().filter(|id| paired.contains(*id) && !merged.is_empty()) else { continue };
                included.insert(id.to_string());
                let input = serde_json::from_str::<Value>(v["arguments"].as_str().unwrap_or("{}")).ok().filter(Value::is_object);
                ("assistant", json!({"type": "tool_use", "id": id, "name": v["name"], "input": input.unwrap_or_else(|| json!({}))}))
            }
            OUTPUT => {
                let v = turn_json(text);
                let Some(id) = v["call_id"].as_str().filter(|id| included.contains(*id)) else { continue };
                ("user", json!({"type": "tool_result", "tool_use_id": id, "content": v["output"]}))
            }
            "user" => ("user", json!({"type": "text", "text": text})),
            _ => ("assistant", json!({"type": "text", "text": text})),
        };
        if merged.is_empty() && role == "assistant" {
            continue;
        }
        match merged.last_mut() {
            Some((r, blocks)) if *r == role => blocks.push(block),
            _ => merged.push((role, vec![block])),
        }
    }
    merged
        .into_iter()
        .map(|(role, blocks)| {
            if blocks.iter().all(|b| b["type"] == "text") {
                let text: Vec<&str> = blocks.iter().filter_map(|b| b["text"].as_str()).collect();
                json!({"role": role, "content": text.join("\n")})
            } else {
                json!({"role": role, "content": blocks})
            }
        })
        .collect()
}

#[derive(Debug, PartialEq)]
pub struct LlmError {
    pub code: &'static str,
    pub message: String,
}

pub fn request_body(cfg: &CascadeConfig, system: &str, turns: Turns<'_>, tools: &ToolSpec<'_>) -> Value {
    let forced = tools.choice.get("name").cloned();
    match cfg.llm {
        LlmDialect::OpenAi => {
            let messages = openai_messages(system, turns);
            let mut body = json!({"model": cfg.llm_model, "stream": true, "max_tokens": cfg.max_tokens, "messages": messages});
            if !tools.tools.is_empty() {
                let defs: Vec<Value> = tools
                    .tools
                    .iter()
                    .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                    .collect();
                body["tools"] = json!(defs);
                body["tool_choice"] = match forced {
                    Some(name) => json!({"type": "function", "function": {"name": name}}),
                    None => tools.choice.clone(),
                };
            }
            body
        }
        LlmDialect::Anthropic => {
            let messages = anthropic_messages(turns);
            let mut body = json!({"model": cfg.llm_model, "stream": true, "max_tokens": cfg.max_tokens, "system": system, "messages": messages});
            if !tools.tools.is_empty() {
                let defs: Vec<Value> =
                    tools.tools.iter().map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters})).collect();
                body["tools"] = json!(defs);
                body["tool_choice"] = match (forced, tools.choice.as_str()) {
                    (Some(name), _) => json!({"type": "tool", "name": name}),
                    (None, Some("required")) => json!({"type": "any"}),
                    (None, Some("none")) => json!({"type": "none"}),
                    _ => json!({"type": "auto"}),
                };
            }
            body
        }
    }
}

/// One SSE event's data: the pieces of reply it carries (often none), or a failure; `done` is
/// set at the end of the stream.
pub fn parse_data(dialect: LlmDialect, data: &str, done: &mut bool) -> Result<Vec<Chunk>, LlmError> {
    if dialect == LlmDialect::OpenAi && data.trim() == "[DONE]" {
        *done = true;
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(data).map_err(|e| LlmError { code: "provider_protocol_error", message: format!("bad SSE data: {e}") })?;
    match dialect {
        LlmDialect::OpenAi => {
            if let Some(err) = v.get("error") {
                return Err(LlmError { code: "provider_error", message: err["message"].as_str().unwrap_or("error").to_string() });
            }
            let delta = &v["choices"][0]["delta"];
            let mut out: Vec<Chunk> = delta["content"].as_str().filter(|t| !t.is_empty()).map(|t| Chunk::Text(t.into())).into_iter().collect();
            for (i, call) in delta["tool_calls"].as_array().into_iter().flatten().enumerate() {
                let index = call["index"].as_u64().unwrap_or(i as u64);
                // The first chunk of a call carries its id and name; later ones only arguments.
                if let (Some(id), Some(name)) = (call["id"].as_str(), call["function"]["name"].as_str()) {
                    out.push(Chunk::CallStart { index, id: id.into(), name: name.into() });
                }
                if let Some(args) = call["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
                    out.push(Chunk::CallArgs { index, json: args.into() });
                }
            }
            Ok(out)
        }
        LlmDialect::Anthropic => match v["type"].as_str() {
            Some("content_block_delta") if v["delta"]["type"] == "text_delta" => {
                Ok(v["delta"]["text"].as_str().map(|t| Chunk::Text(t.into())).into_iter().collect())
            }
            Some("content_block_start") if v["content_block"]["type"] == "tool_use" => {
                let block = &v["content_block"];
                let index = v["index"].as_u64().unwrap_or(0);
                match (block["id"].as_str(), block["name"].as_str()) {
                    (Some(id), Some(name)) => Ok(vec![Chunk::CallStart { index, id: id.into(), name: name.into() }]),
                    _ => Err(LlmError { code: "provider_protocol_error", message: "anthropic: tool_use block without id or name".into() }),
                }
            }
            Some("content_block_delta") if v["delta"]["type"] == "input_json_delta" => {
                let index = v["index"].as_u64().unwrap_or(0);
                Ok(v["delta"]["partial_json"].as_str().map(|j| Chunk::CallArgs { index, json: j.into() }).into_iter().collect())
            }
            Some("message_stop") => {
                *done = true;
                Ok(Vec::new())
            }
            Some("error") => {
                let kind = v["error"]["type"].as_str().unwrap_or("error");
                let code = if kind == "rate_limit_error" || kind == "overloaded_error" { "provider_rate_limited" } else { "provider_error" };
                Err(LlmError { code, message: format!("anthropic: {kind}: {}", v["error"]["message"].as_str().unwrap_or("")) })
            }
            _ => Ok(Vec::new()),
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

/// Streams the reply's tokens into `tokens` until the reply ends; returns the function calls
/// the model made, if any.
pub async fn stream(
    http: &reqwest::Client,
    cfg: &CascadeConfig,
    system: &str,
    turns: Turns<'_>,
    tools: &ToolSpec<'_>,
    tokens: mpsc::UnboundedSender<String>,
) -> Result<Vec<ToolCall>, LlmError> {
    let body = request_body(cfg, system, turns, tools);
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
    let mut calls = Calls::default();
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|e| LlmError { code: "provider_disconnected", message: format!("LLM stream broke: {e}") })?;
        buf.extend_from_slice(&chunk);
        // SSE lines end in \n (or \r\n); `data:` lines carry the payload.
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(data) = line.strip_prefix("data:") {
                for chunk in parse_data(cfg.llm, data.trim_start(), &mut done)? {
                    match chunk {
                        Chunk::Text(t) => {
                            if tokens.send(t).is_err() {
                                return Ok(Vec::new());
                            }
                        }
                        other => calls.apply(other),
                    }
                }
                if done {
                    return Ok(calls.finish());
                }
            }
        }
    }
    if done { Ok(calls.finish()) } else { Err(LlmError { code: "provider_disconnected", message: "LLM stream ended early".into() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_dialects_parse_tokens_ends_and_errors() {
        let mut done = false;
        let oa = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        assert_eq!(parse_data(LlmDialect::OpenAi, oa, &mut done), Ok(vec![Chunk::Text("Hi".into())]));
        assert_eq!(parse_data(LlmDialect::OpenAi, "[DONE]", &mut done), Ok(vec![]));
        assert!(done);
        let mut done = false;
        let an = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Yo"}}"#;
        assert_eq!(parse_data(LlmDialect::Anthropic, an, &mut done), Ok(vec![Chunk::Text("Yo".into())]));
        let err = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(parse_data(LlmDialect::Anthropic, err, &mut done).unwrap_err().code, "provider_rate_limited");
        assert_eq!(parse_data(LlmDialect::Anthropic, r#"{"type":"message_stop"}"#, &mut done), Ok(vec![]));
        assert!(done);
        assert_eq!(status_error(401, "no").code, "provider_auth_failed");
    }

    fn cfg(llm: LlmDialect) -> CascadeConfig {
        CascadeConfig {
            stt: super::super::SttProvider::Deepgram,
            stt_key: String::new(),
            stt_model: String::new(),
            stt_url: String::new(),
            stt_language: String::new(),
            llm,
            llm_key: String::new(),
            llm_model: "m".into(),
            llm_base_url: String::new(),
            max_tokens: 100,
            tts_key: String::new(),
            tts_voice: String::new(),
            tts_model: String::new(),
            tts_base_url: String::new(),
            connect_timeout: std::time::Duration::from_secs(1),
        }
    }

    fn dialogue() -> Vec<(&'static str, String)> {
        let call = ToolCall { id: "call_1".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() };
        let unanswered = ToolCall { id: "call_2".into(), name: "get_weather".into(), arguments: "{}".into() };
        vec![
            ("user", "weather?".into()),
            ("assistant", "Checking.".into()),
            (CALL, call.turn()),
            (OUTPUT, output_turn("call_1", r#"{"temp_c":21}"#)),
            (CALL, unanswered.turn()),
            ("user", "and?".into()),
        ]
    }

    #[test]
    fn tools_and_calls_take_each_apis_shape_and_unanswered_calls_are_left_out() {
        let tools = [Tool { name: "get_weather".into(), description: "d".into(), parameters: json!({"type": "object"}) }];
        let choice = json!({"type": "function", "name": "get_weather"});
        let spec = ToolSpec { tools: &tools, choice: &choice };

        let oa = request_body(&cfg(LlmDialect::OpenAi), "sys", &dialogue(), &spec);
        assert_eq!(oa["tools"], json!([{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}}}]));
        assert_eq!(oa["tool_choice"], json!({"type": "function", "function": {"name": "get_weather"}}));
        assert_eq!(oa["messages"], json!([
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\":21}"},
            {"role": "user", "content": "and?"},
        ]));

        let an = request_body(&cfg(LlmDialect::Anthropic), "sys", &dialogue(), &spec);
        assert_eq!(an["tools"], json!([{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}]));
        assert_eq!(an["tool_choice"], json!({"type": "tool", "name": "get_weather"}));
        assert_eq!(an["messages"], json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "{\"temp_c\":21}"}, {"type": "text", "text": "and?"}]},
        ]));
        let none = request_body(&cfg(LlmDialect::Anthropic), "sys", &dialogue(), &ToolSpec { tools: &[], choice: &json!("auto") });
        assert!(none.get("tools").is_none());
    }

    #[test]
    fn streamed_tool_calls_are_assembled_in_both_dialects() {
        let mut done = false;
        let mut calls = Calls::default();
        for data in [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Oslo\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ] {
            parse_data(LlmDialect::OpenAi, data, &mut done).unwrap().into_iter().for_each(|c| calls.apply(c));
        }
        assert_eq!(calls.finish(), [ToolCall { id: "call_9".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() }]);

        let mut calls = Calls::default();
        for data in [
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_time","input":{}}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
        ] {
            parse_data(LlmDialect::Anthropic, data, &mut done).unwrap().into_iter().for_each(|c| calls.apply(c));
        }
        let start = r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_2","name":"w","input":{}}}"#;
        let part = r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}"#;
        for data in [start, part] {
            parse_data(LlmDialect::Anthropic, data, &mut done).unwrap().into_iter().for_each(|c| calls.apply(c));
        }
        let got = calls.finish();
        assert_eq!(got[0].arguments, "{}", "a call without parameters has empty arguments");
        assert_eq!((got[1].id.as_str(), got[1].arguments.as_str()), ("toolu_2", r#"{"a":1}"#));
        assert!(parse_data(LlmDialect::Anthropic, r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use"}}"#, &mut done).is_err());
    }
}
