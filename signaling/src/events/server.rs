//! Server events (PROTOCOL.md §2) as values: one variant per event type, named by its beta
//! name. [`ServerEvent::to_json`] is the only place one becomes text: it names the event in the
//! call's dialect ([`Dialect::name`]) and stamps its `event_id`.

use serde::Serialize;
use serde_json::Value;

use super::Dialect;
use super::items::{ContentPart, ErrorKind, Item, Response};

/// A server event, without its `event_id` (stamped when it is written out).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum ServerEvent {
    /// `session`: the session object in the call's dialect (`SessionConfig::beta_json`/`ga_json`).
    #[serde(rename = "session.created")]
    SessionCreated { session: Value },
    #[serde(rename = "session.updated")]
    SessionUpdated { session: Value },

    /// `audio_start_ms` counts from the call's first inbound audio sample.
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted { audio_start_ms: u64, item_id: String },
    /// `item_id` is `null` when the turn's start was cleared.
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped { audio_end_ms: u64, item_id: Option<String> },
    #[serde(rename = "input_audio_buffer.committed")]
    InputCommitted { previous_item_id: Option<String>, item_id: String },
    #[serde(rename = "input_audio_buffer.cleared")]
    InputCleared,
    /// A keypad digit (phone calls): `event` is the key, `received_at` Unix seconds.
    #[serde(rename = "input_audio_buffer.dtmf_event_received")]
    DtmfReceived { event: String, received_at: u64 },

    #[serde(rename = "conversation.item.created")]
    ItemCreated { previous_item_id: Option<String>, item: Item },
    #[serde(rename = "conversation.item.input_audio_transcription.completed")]
    InputTranscriptionCompleted { item_id: String, content_index: u32, transcript: String },
    #[serde(rename = "conversation.item.truncated")]
    ItemTruncated { item_id: String, content_index: u32, audio_end_ms: u64 },

    #[serde(rename = "response.created")]
    ResponseCreated { response: Response },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded { response_id: String, output_index: u32, item: Item },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone { response_id: String, output_index: u32, item: Item },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        #[serde(flatten)]
        at: PartRef,
        part: ContentPart,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        #[serde(flatten)]
        at: PartRef,
        part: ContentPart,
    },
    #[serde(rename = "response.audio_transcript.delta")]
    AudioTranscriptDelta {
        #[serde(flatten)]
        at: PartRef,
        delta: String,
    },
    #[serde(rename = "response.audio_transcript.done")]
    AudioTranscriptDone {
        #[serde(flatten)]
        at: PartRef,
        transcript: String,
    },
    /// Text of a text-only response (`response.create` with `modalities: ["text"]`).
    #[serde(rename = "response.text.delta")]
    TextDelta {
        #[serde(flatten)]
        at: PartRef,
        delta: String,
    },
    #[serde(rename = "response.text.done")]
    TextDone {
        #[serde(flatten)]
        at: PartRef,
        text: String,
    },
    /// One chunk of the agent's audio, base64 in the session's output format (WebSocket
    /// sessions; over WebRTC the audio is on the track).
    #[serde(rename = "response.audio.delta")]
    AudioDelta {
        #[serde(flatten)]
        at: PartRef,
        delta: String,
    },
    #[serde(rename = "response.audio.done")]
    AudioDone {
        #[serde(flatten)]
        at: PartRef,
    },
    /// A call's arguments, whole (providers hand them over whole; see `call::tools`).
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        #[serde(flatten)]
        call: CallRef,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        #[serde(flatten)]
        call: CallRef,
        name: String,
        arguments: String,
    },
    #[serde(rename = "response.done")]
    ResponseDone { response: Response },

    #[serde(rename = "output_audio_buffer.started")]
    OutputAudioStarted { response_id: String },
    #[serde(rename = "output_audio_buffer.stopped")]
    OutputAudioStopped { response_id: String },
    /// `response_id` is `null` when no response was playing.
    #[serde(rename = "output_audio_buffer.cleared")]
    OutputAudioCleared { response_id: Option<String> },

    /// The provider's limits, passed on as it reported them.
    #[serde(rename = "rate_limits.updated")]
    RateLimitsUpdated { rate_limits: Value },
    #[serde(rename = "error")]
    Error { error: ErrorDetail },
    /// voxrelay's own: the call will be ended in `seconds_left` seconds, and why
    /// (`idle_timeout`, `max_call_duration`, `server_draining`). For an idle timeout, speaking
    /// (or any client event) starts the count again.
    #[serde(rename = "session.ending")]
    SessionEnding { reason: String, seconds_left: u64 },
}

/// Where a content part is: response, item, and their indexes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartRef {
    pub response_id: String,
    pub item_id: String,
    pub output_index: u32,
    pub content_index: u32,
}

/// Which function call of a response an arguments event belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallRef {
    pub response_id: String,
    pub item_id: String,
    pub output_index: u32,
    pub call_id: String,
}

/// An `error` event's `error`. `event_id` names the client event it answers, if any; `param`
/// is always `null` (kept: OpenAI clients read it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: ErrorKind,
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    pub event_id: Option<String>,
}

impl ServerEvent {
    /// An error in what the client sent; `event_id` is the offending client event's.
    pub fn invalid_request(code: impl Into<String>, message: impl Into<String>, event_id: Option<String>) -> Self {
        let error = ErrorDetail { kind: ErrorKind::InvalidRequestError, code: code.into(), message: message.into(), param: None, event_id };
        ServerEvent::Error { error }
    }

    /// A problem on the server's side (a provider), not in anything the client sent.
    pub fn server_error(code: impl Into<String>, message: impl Into<String>) -> Self {
        let error = ErrorDetail { kind: ErrorKind::ServerError, code: code.into(), message: message.into(), param: None, event_id: None };
        ServerEvent::Error { error }
    }

    /// The event as the client receives it: named in `dialect`, stamped with `event_id`.
    #[allow(clippy::expect_used, reason = "string keys only, no fallible Serialize impl: cannot fail")]
    pub fn to_json(&self, dialect: Dialect, event_id: &str) -> String {
        // Cannot fail: every map key is a string, and no Serialize impl here reports errors.
        let mut value = serde_json::to_value(self).expect("server events serialize");
        if let Value::Object(fields) = &mut value {
            if let Some(Value::String(kind)) = fields.get_mut("type") {
                *kind = dialect.name(kind).to_string();
            }
            fields.insert("event_id".into(), Value::String(event_id.into()));
        }
        if dialect == Dialect::Ga {
            ga_content_types(&mut value);
        }
        value.to_string()
    }
}

/// GA names an assistant message's content parts `output_audio`/`output_text` (beta: `audio`/
/// `text`); the `part` of content-part events keeps the short names in both.
fn ga_content_types(event: &mut Value) {
    let fix = |item: &mut Value| {
        if item.get("role").and_then(Value::as_str) != Some("assistant") {
            return;
        }
        for part in item.get_mut("content").and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(Value::String(kind)) = part.get_mut("type") {
                match kind.as_str() {
                    "audio" => *kind = "output_audio".into(),
                    "text" => *kind = "output_text".into(),
                    _ => {}
                }
            }
        }
    };
    if let Some(item) = event.get_mut("item") {
        fix(item);
    }
    for item in event.pointer_mut("/response/output").and_then(Value::as_array_mut).into_iter().flatten() {
        fix(item);
    }
}

/// A server event as a call emits it: stamped with its unique `event_id` when it is made, in the
/// call's dialect, written out with [`StampedEvent::to_json`].
#[derive(Clone, Debug, PartialEq)]
pub struct StampedEvent {
    pub dialect: Dialect,
    pub event_id: String,
    pub event: ServerEvent,
}

impl StampedEvent {
    pub fn to_json(&self) -> String {
        self.event.to_json(self.dialect, &self.event_id)
    }
}

#[cfg(test)]
mod tests;
