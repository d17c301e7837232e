//! What server events carry (PROTOCOL.md §2, OpenAI Realtime's shapes): conversation items,
//! their content parts, and responses. Serialize-only values: the conversation builds them, and
//! [`super::ServerEvent::to_json`] writes them out.
//!
//! Fields the protocol defines are always present, `null` when unset (`previous_item_id`,
//! `transcript` of an `input_audio` part, `status_details`, `usage`): clients read them by key.

use serde::{Serialize, Serializer};

/// A conversation item (`"object": "realtime.item"`).
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub id: String,
    pub kind: ItemKind,
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            id: &'a str,
            object: &'static str,
            #[serde(flatten)]
            kind: &'a ItemKind,
        }
        Wire { id: &self.id, object: "realtime.item", kind: &self.kind }.serialize(s)
    }
}

/// An item's `type` and the fields that type has.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ItemKind {
    Message {
        status: ItemStatus,
        role: Role,
        content: Vec<ContentPart>,
    },
    /// The model calls a tool; `arguments` is a JSON string, passed on as the model wrote it.
    FunctionCall {
        status: ItemStatus,
        call_id: String,
        name: String,
        arguments: String,
    },
    /// The client's result for a call (it has no `status`: the client created it whole).
    FunctionCallOutput {
        call_id: String,
        output: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    InProgress,
    Completed,
    /// Cut short: a cancelled or failed response.
    Incomplete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// One part of a message's `content`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text the user typed (or a keypad digit, as text).
    InputText { text: String },
    /// A committed turn of the caller's audio; `transcript` is `null` until transcription
    /// (which arrives as its own event).
    InputAudio { transcript: Option<String> },
    /// The assistant's spoken answer and its transcript so far.
    Audio { transcript: String },
    /// The assistant's answer of a text-only response.
    Text { text: String },
}

impl Item {
    pub fn new(id: impl Into<String>, kind: ItemKind) -> Self {
        Self { id: id.into(), kind }
    }

    /// A completed user message of typed text.
    pub fn user_text(id: impl Into<String>, text: impl Into<String>) -> Self {
        let content = vec![ContentPart::InputText { text: text.into() }];
        Self::new(id, ItemKind::Message { status: ItemStatus::Completed, role: Role::User, content })
    }

    /// A completed user message holding a committed audio turn.
    pub fn user_audio(id: impl Into<String>) -> Self {
        let content = vec![ContentPart::InputAudio { transcript: None }];
        Self::new(id, ItemKind::Message { status: ItemStatus::Completed, role: Role::User, content })
    }

    /// The assistant's message of a response: `content` is empty while it is in progress, one
    /// audio part with its transcript once it ends.
    pub fn assistant(id: impl Into<String>, status: ItemStatus, content: Vec<ContentPart>) -> Self {
        Self::new(id, ItemKind::Message { status, role: Role::Assistant, content })
    }

    pub fn function_call(
        id: impl Into<String>,
        status: ItemStatus,
        call_id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        let kind = ItemKind::FunctionCall { status, call_id: call_id.into(), name: name.into(), arguments: arguments.into() };
        Self::new(id, kind)
    }

    pub fn function_call_output(id: impl Into<String>, call_id: impl Into<String>, output: impl Into<String>) -> Self {
        Self::new(id, ItemKind::FunctionCallOutput { call_id: call_id.into(), output: output.into() })
    }
}

/// A response (`"object": "realtime.response"`), as `response.created` and `response.done`
/// carry it. Its `usage` is always `null`: voxrelay counts no tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub id: String,
    pub status: ResponseStatus,
    pub status_details: Option<StatusDetails>,
    pub output: Vec<Item>,
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            id: &'a str,
            object: &'static str,
            status: ResponseStatus,
            status_details: &'a Option<StatusDetails>,
            output: &'a [Item],
            usage: Option<()>,
        }
        let Response { id, status, status_details, output } = self;
        Wire { id, object: "realtime.response", status: *status, status_details, output, usage: None }.serialize(s)
    }
}

impl Response {
    pub fn new(id: impl Into<String>, status: ResponseStatus, status_details: Option<StatusDetails>, output: Vec<Item>) -> Self {
        Self { id: id.into(), status, status_details, output }
    }

    /// A response just created: in progress, no output yet.
    pub fn in_progress(id: impl Into<String>) -> Self {
        Self::new(id, ResponseStatus::InProgress, None, Vec::new())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    InProgress,
    Completed,
    Cancelled,
    Failed,
    Incomplete,
}

/// Why a response did not complete.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StatusDetails {
    Cancelled { reason: CancelReason },
    Failed { error: ResponseError },
}

/// What cancelled a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The caller spoke over it (barge-in).
    TurnDetected,
    /// `response.cancel` or `output_audio_buffer.clear`.
    ClientCancelled,
    /// The server ended the call while it ran.
    CallEnded,
}

/// The error a failed response reports in its `status_details`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResponseError {
    #[serde(rename = "type")]
    pub kind: ErrorKind,
    pub code: String,
    pub message: String,
}

/// Whose mistake an error is (`error.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Something the client sent.
    InvalidRequestError,
    /// Something on the server's side (a provider), not in anything the client sent.
    ServerError,
}
