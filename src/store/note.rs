//! What the store is told: a call (or room participant) opened, a line of its transcript, its
//! end. The conversation produces [`Note`]s without a clock; whoever drains them stamps the time.

use std::time::{SystemTime, UNIX_EPOCH};

use voxrelay_signaling::CallId;
use voxrelay_signaling::call_history::ToolCall;

/// A stored record's id: a 1:1 call's id (`rtc_…`), a room participant's (`part_…`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RecordId(String);

impl RecordId {
    /// A room participant's or room agent's record.
    pub fn participant() -> Self {
        RecordId(voxrelay_signaling::auth::random_id("part_"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&CallId> for RecordId {
    fn from(id: &CallId) -> Self {
        RecordId(id.as_str().to_string())
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Unix milliseconds, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixMs(pub u64);

impl UnixMs {
    pub fn now() -> Self {
        UnixMs::from(SystemTime::now())
    }
}

impl From<SystemTime> for UnixMs {
    fn from(t: SystemTime) -> Self {
        UnixMs(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
    }
}

/// A line of a conversation, as the conversation saw it happen.
#[derive(Clone, Debug, PartialEq)]
pub enum Note {
    /// A spoken turn was committed (its words follow as [`Note::UserTranscript`] when a
    /// transcription runs).
    UserAudio { item_id: String },
    /// Typed text, or a keypad digit as the agent reads it.
    UserText { item_id: String, text: String },
    /// The speech-to-text of a spoken turn.
    UserTranscript { item_id: String, text: String },
    /// A response ended: completed, failed, or cut short (`heard_ms` then says how much of its
    /// `audio_ms` the caller heard).
    Response { item_id: String, text: String, status: &'static str, audio_ms: u64, heard_ms: Option<u64>, tool_calls: Vec<ToolCall> },
    /// The client's output for a function call the agent made.
    ToolOutput { item_id: String, call_id: String, output: String },
}

/// A call or room participant begins.
#[derive(Clone, Debug, PartialEq)]
pub struct Opened {
    pub id: RecordId,
    /// `webrtc`, `plain_rtp`, `twilio`, `websocket`, `room`, `agent`.
    pub transport: &'static str,
    pub agent: Option<String>,
    pub room: Option<String>,
    pub identity: Option<String>,
    /// The conversation it continues (a session's `conversation`).
    pub conversation: Option<String>,
    pub at: UnixMs,
}

/// Everything the store is sent, in the order it happened.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreEvent {
    Opened(Opened),
    /// `identity`: who spoke, in a room.
    Note {
        id: RecordId,
        at: UnixMs,
        identity: Option<String>,
        note: Note,
    },
    Closed {
        id: RecordId,
        at: UnixMs,
        reason: &'static str,
        counters: Option<serde_json::Map<String, serde_json::Value>>,
    },
}
