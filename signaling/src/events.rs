//! Realtime events on the `oai-events` data channel (PROTOCOL.md §2): parsing client events
//! (either naming), and the server events as typed values ([`ServerEvent`], carrying the
//! [`Item`]s and [`Response`]s of `items`) written out in the call's dialect with a unique
//! `event_id`. Names are mapped here ([`Dialect::name`]) and nowhere else.

mod id_source;
mod items;
mod server;

use serde_json::{Map, Value};

use crate::wire::{BetaSession, GaSession};

pub use id_source::IdSource;
pub use items::{
    CancelReason, ContentPart, ErrorKind, Item, ItemKind, ItemStatus, Response, ResponseError, ResponseStatus, Role, StatusDetails,
};
pub use server::{CallRef, ErrorDetail, PartRef, ServerEvent, StampedEvent};

/// A call started at `/v1/realtime` speaks the beta names; one started at
/// `/v1/realtime/calls` speaks the GA names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Beta,
    Ga,
}

impl Dialect {
    /// Maps a beta event name to this dialect's name.
    pub fn name(self, beta: &str) -> &str {
        if self == Dialect::Beta {
            return beta;
        }
        match beta {
            "conversation.item.created" => "conversation.item.added",
            "response.audio_transcript.delta" => "response.output_audio_transcript.delta",
            "response.audio_transcript.done" => "response.output_audio_transcript.done",
            "response.audio.done" => "response.output_audio.done",
            "response.audio.delta" => "response.output_audio.delta",
            "response.text.delta" => "response.output_text.delta",
            "response.text.done" => "response.output_text.done",
            other => other,
        }
    }
}

/// The largest client event accepted. Over WebRTC, audio comes on the track, so events are
/// small; a bigger one is refused with an `error` event, not parsed. 64 KiB matches the
/// `a=max-message-size:65536` our SDP answer advertises.
pub const MAX_CLIENT_EVENT_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub enum SessionUpdate {
    Beta(BetaSession),
    Ga(GaSession),
}

impl SessionUpdate {
    /// The live session's settings after this update, or why it is refused (then nothing
    /// changes). The one place that decides, for the call and for a transport that needs the
    /// audio formats in the order the client sent them.
    pub fn applied_to(self, config: &crate::SessionConfig) -> Result<crate::SessionConfig, crate::ApiError> {
        let mut next = config.clone();
        match self {
            SessionUpdate::Beta(s) => next.apply_beta(s)?,
            SessionUpdate::Ga(s) => next.apply_ga(s)?,
        }
        if next.agent != config.agent {
            return Err(crate::ApiError::bad_request("agent_change_unsupported", "the agent of a live call cannot change"));
        }
        if next.conversation != config.conversation {
            return Err(crate::ApiError::bad_request("conversation_change_unsupported", "the conversation of a live call cannot change"));
        }
        Ok(next)
    }
}

/// What a `response.create` asks of that one response (its `response` object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseOptions {
    /// `modalities: ["text"]` (beta) or `output_modalities: ["text"]` (GA): text deltas, no
    /// audio; `None` when the response does not say (the session's modalities decide).
    pub text_only: Option<bool>,
    /// Instructions for this response instead of the session's.
    pub instructions: Option<String>,
}

impl ResponseOptions {
    fn parse(response: Option<&Value>) -> Result<Self, crate::ApiError> {
        use crate::ApiError;
        let mut options = ResponseOptions::default();
        let Some(r) = response.filter(|r| !r.is_null()) else { return Ok(options) };
        let Some(r) = r.as_object() else {
            return Err(ApiError::bad_request("invalid_value", "response.create: \"response\" must be an object"));
        };
        let list = |key: &str| -> Result<Option<Vec<&str>>, ApiError> {
            match r.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|m| m.as_str().filter(|m| *m == "audio" || *m == "text"))
                    .collect::<Option<Vec<_>>>()
                    .filter(|m| !m.is_empty())
                    .map(Some)
                    .ok_or_else(|| ApiError::bad_request("invalid_value", format!("response.{key} must be a non-empty list of \"audio\" and \"text\""))),
                Some(_) => Err(ApiError::bad_request("invalid_value", format!("response.{key} must be a list"))),
            }
        };
        if let Some(m) = list("modalities")? {
            options.text_only = Some(!m.contains(&"audio"));
        }
        if let Some(m) = list("output_modalities")? {
            if m.len() != 1 {
                return Err(ApiError::bad_request("invalid_output_modalities", "response.output_modalities must be [\"audio\"] or [\"text\"]"));
            }
            options.text_only = Some(m[0] == "text");
        }
        match r.get("instructions") {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) if text.len() <= crate::wire::MAX_INSTRUCTIONS_BYTES => options.instructions = Some(text.clone()),
            Some(Value::String(_)) => {
                return Err(ApiError::bad_request(
                    "instructions_too_long",
                    format!("response.instructions must be at most {} bytes", crate::wire::MAX_INSTRUCTIONS_BYTES),
                ));
            }
            Some(_) => return Err(ApiError::bad_request("invalid_value", "response.instructions must be a string")),
        }
        // Out-of-band responses (outside the conversation) are a different thing; not silently
        // answered in the conversation instead.
        if r.get("conversation").and_then(Value::as_str).is_some_and(|c| c != "auto") {
            return Err(ApiError::bad_request(
                "unsupported_value",
                "response.conversation other than \"auto\" (out-of-band responses) is not supported by voxrelay",
            ));
        }
        Ok(options)
    }
}

#[derive(Debug)]
pub enum ClientEvent {
    SessionUpdate(SessionUpdate),
    InputAudioAppend,
    InputAudioCommit,
    InputAudioClear,
    /// A text message from the user (`conversation.item.create`).
    ItemCreate { item_id: Option<String>, text: String },
    /// The result of a function the model called (`conversation.item.create` with an item of
    /// type `function_call_output`); `output` is passed on as the client wrote it.
    FunctionCallOutput { item_id: Option<String>, call_id: String, output: String },
    ItemTruncate { item_id: String, audio_end_ms: u64 },
    ResponseCreate(ResponseOptions),
    ResponseCancel { response_id: Option<String> },
    OutputAudioClear,
}

#[derive(Debug, Clone)]
pub struct EventError {
    pub code: &'static str,
    pub message: String,
    pub event_id: Option<String>,
}

/// A parsed client event and the `event_id` it carried, if any.
pub struct Parsed {
    pub event_id: Option<String>,
    pub event: ClientEvent,
}

/// The audio of an `input_audio_buffer.append` (WebSocket sessions), decoded from base64.
pub struct Append {
    pub event_id: Option<String>,
    pub audio: Vec<u8>,
}

/// Reads an `input_audio_buffer.append` without building a JSON tree (it may carry megabytes of
/// base64). `None`: the text is not an append (or not JSON): it is a client event for
/// [`parse_client_event`], which reports what is wrong with it.
pub fn parse_append(text: &str) -> Option<Result<Append, EventError>> {
    use base64::Engine as _;
    use std::borrow::Cow;

    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        audio: Option<Cow<'a, str>>,
        #[serde(default)]
        event_id: Option<String>,
    }
    let head: Head = serde_json::from_str(text).ok()?;
    if head.kind != "input_audio_buffer.append" {
        return None;
    }
    let err = |code, message: &str| EventError { code, message: message.into(), event_id: head.event_id.clone() };
    let Some(audio) = head.audio.as_deref() else {
        return Some(Err(err("invalid_event", "input_audio_buffer.append needs \"audio\" (base64)")));
    };
    Some(match base64::engine::general_purpose::STANDARD.decode(audio) {
        Ok(audio) => Ok(Append { event_id: head.event_id.clone(), audio }),
        Err(e) => Err(err("invalid_value", &format!("input_audio_buffer.append: audio is not valid base64: {e}"))),
    })
}

pub fn parse_client_event(text: &str) -> Result<Parsed, EventError> {
    let err = |code, message: String, event_id: Option<String>| EventError { code, message, event_id };
    if text.len() > MAX_CLIENT_EVENT_BYTES {
        return Err(err("event_too_large", format!("client events are limited to {MAX_CLIENT_EVENT_BYTES} bytes"), None));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| err("invalid_json", format!("the event is not valid JSON: {e}"), None))?;
    let Value::Object(mut obj) = value else {
        return Err(err("invalid_event", "an event must be a JSON object".into(), None));
    };
    let event_id = obj.get("event_id").and_then(Value::as_str).map(String::from);
    let kind = match obj.get("type").and_then(Value::as_str) {
        Some(t) => t.to_string(),
        None => return Err(err("missing_type", "the event has no string \"type\"".into(), event_id)),
    };
    let bad = |msg: String| err("invalid_event", msg, event_id.clone());
    let event = match kind.as_str() {
        "session.update" => {
            let session = obj.remove("session").unwrap_or(Value::Object(Map::new()));
            let is_ga = session.get("type").is_some() || session.get("audio").is_some() || session.get("output_modalities").is_some();
            if is_ga {
                let s: GaSession = serde_json::from_value(session).map_err(|e| bad(format!("session.update: {e}")))?;
                ClientEvent::SessionUpdate(SessionUpdate::Ga(s))
            } else {
                let s: BetaSession = serde_json::from_value(session).map_err(|e| bad(format!("session.update: {e}")))?;
                ClientEvent::SessionUpdate(SessionUpdate::Beta(s))
            }
        }
        "input_audio_buffer.append" => ClientEvent::InputAudioAppend,
        "input_audio_buffer.commit" => ClientEvent::InputAudioCommit,
        "input_audio_buffer.clear" => ClientEvent::InputAudioClear,
        "conversation.item.create" => {
            let item = obj.get("item").ok_or_else(|| bad("conversation.item.create needs an \"item\"".into()))?;
            let item_id = item.get("id").and_then(Value::as_str).map(String::from);
            match item.get("type").and_then(Value::as_str) {
                None | Some("message") => {}
                Some("function_call_output") => {
                    let call_id = item
                        .get("call_id")
                        .and_then(Value::as_str)
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| err("invalid_value", "a function_call_output item needs a string \"call_id\"".into(), event_id.clone()))?;
                    let output = item
                        .get("output")
                        .and_then(Value::as_str)
                        .ok_or_else(|| err("invalid_value", "a function_call_output item needs a string \"output\"".into(), event_id.clone()))?;
                    let event = ClientEvent::FunctionCallOutput { item_id, call_id: call_id.into(), output: output.into() };
                    return Ok(Parsed { event_id, event });
                }
                Some(other) => {
                    return Err(err(
                        "invalid_value",
                        format!("conversation.item.create: item type {other:?} is not supported (\"message\" or \"function_call_output\")"),
                        event_id,
                    ));
                }
            }
            let text = item
                .get("content")
                .and_then(Value::as_array)
                .map(|parts| {
                    parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
                })
                .unwrap_or_default();
            ClientEvent::ItemCreate { item_id, text }
        }
        "conversation.item.truncate" => {
            let item_id = obj
                .get("item_id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("conversation.item.truncate needs \"item_id\"".into()))?
                .to_string();
            let audio_end_ms = obj
                .get("audio_end_ms")
                .and_then(Value::as_u64)
                .ok_or_else(|| bad("conversation.item.truncate needs a non-negative integer \"audio_end_ms\"".into()))?;
            ClientEvent::ItemTruncate { item_id, audio_end_ms }
        }
        "response.create" => ClientEvent::ResponseCreate(
            ResponseOptions::parse(obj.get("response")).map_err(|e| err(e.code, e.message, event_id.clone()))?,
        ),
        "response.cancel" => ClientEvent::ResponseCancel {
            response_id: obj.get("response_id").and_then(Value::as_str).map(String::from),
        },
        "output_audio_buffer.clear" => ClientEvent::OutputAudioClear,
        other => {
            return Err(err("unknown_event_type", format!("unknown client event type {other:?}"), event_id));
        }
    };
    Ok(Parsed { event_id, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ga_names_are_mapped_and_beta_kept() {
        assert_eq!(Dialect::Ga.name("conversation.item.created"), "conversation.item.added");
        assert_eq!(Dialect::Beta.name("conversation.item.created"), "conversation.item.created");
        assert_eq!(Dialect::Ga.name("response.audio.done"), "response.output_audio.done");
        assert_eq!(Dialect::Ga.name("response.done"), "response.done");
    }

    #[test]
    fn appends_are_read_apart_from_other_events() {
        let a = parse_append(r#"{"type":"input_audio_buffer.append","event_id":"e1","audio":"AAEC\/w=="}"#).unwrap().ok().unwrap();
        assert_eq!((a.audio, a.event_id.as_deref()), (vec![0, 1, 2, 255], Some("e1")));
        assert!(parse_append(r#"{"type":"response.create","audio":"AAEC"}"#).is_none());
        assert!(parse_append("not json").is_none(), "left to parse_client_event, which says why");
        let e = parse_append(r#"{"type":"input_audio_buffer.append","audio":"***"}"#).unwrap().err().unwrap();
        assert_eq!(e.code, "invalid_value");
        let e = parse_append(r#"{"type":"input_audio_buffer.append","event_id":"e2"}"#).unwrap().err().unwrap();
        assert_eq!((e.code, e.event_id.as_deref()), ("invalid_event", Some("e2")));
    }

    #[test]
    fn bad_events_carry_their_event_id_back() {
        let e = parse_client_event(r#"{"type":"nope","event_id":"e1"}"#).err().unwrap();
        assert_eq!((e.code, e.event_id.as_deref()), ("unknown_event_type", Some("e1")));
        assert_eq!(parse_client_event("{not json").err().unwrap().code, "invalid_json");
        assert!(matches!(parse_client_event(r#"{"type":"response.create"}"#).unwrap().event, ClientEvent::ResponseCreate(o) if o == ResponseOptions::default()));
    }

    #[test]
    fn response_options_in_both_shapes() {
        let opts = |text: &str| match parse_client_event(text).map(|p| p.event) {
            Ok(ClientEvent::ResponseCreate(o)) => Ok(o),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.code),
        };
        assert_eq!(opts(r#"{"type":"response.create","response":{"modalities":["text"]}}"#).unwrap().text_only, Some(true));
        assert_eq!(opts(r#"{"type":"response.create","response":{"modalities":["text","audio"]}}"#).unwrap().text_only, Some(false));
        assert_eq!(opts(r#"{"type":"response.create","response":{"output_modalities":["text"],"instructions":"Be brief."}}"#).unwrap().text_only, Some(true));
        assert_eq!(opts(r#"{"type":"response.create","response":{"instructions":"x"}}"#).unwrap().text_only, None);
        assert_eq!(opts(r#"{"type":"response.create","response":{"instructions":"Be brief."}}"#).unwrap().instructions.as_deref(), Some("Be brief."));
        assert_eq!(opts(r#"{"type":"response.create","response":{"output_modalities":["audio","text"]}}"#), Err("invalid_output_modalities"));
        assert_eq!(opts(r#"{"type":"response.create","response":{"modalities":["video"]}}"#), Err("invalid_value"));
        assert_eq!(opts(r#"{"type":"response.create","response":{"conversation":"none"}}"#), Err("unsupported_value"));
    }

    #[test]
    fn function_call_output_items_are_parsed_and_checked() {
        let ok = r#"{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"call_1","output":"{\"t\":21}"}}"#;
        match parse_client_event(ok).unwrap().event {
            ClientEvent::FunctionCallOutput { call_id, output, .. } => assert_eq!((call_id.as_str(), output.as_str()), ("call_1", r#"{"t":21}"#)),
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"type":"conversation.item.create","event_id":"e","item":{"type":"function_call_output","output":"x"}}"#,
            r#"{"type":"conversation.item.create","event_id":"e","item":{"type":"function_call_output","call_id":"c","output":7}}"#,
            r#"{"type":"conversation.item.create","event_id":"e","item":{"type":"function_call","call_id":"c"}}"#,
        ] {
            let e = parse_client_event(bad).err().unwrap();
            assert_eq!((e.code, e.event_id.as_deref()), ("invalid_value", Some("e")), "{bad}");
        }
    }
}
