//! The rooms' wire contract (PROTOCOL.md §4) as types: the events on the `room-events` data
//! channel both ways, and the bodies of the room API. Rooms speak only these; no `json!`.

use serde::{Deserialize, Serialize};

use crate::ids::{ParticipantId, RoomName};

/// The data channel a room participant opens for room events.
pub const ROOM_EVENTS_LABEL: &str = "room-events";
/// The largest `data.send` payload (PROTOCOL.md §4), counted as the JSON text of `payload`.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// A client event larger than this is refused unparsed (a `data.send` at its limit fits).
pub const MAX_ROOM_CLIENT_EVENT_BYTES: usize = 24 * 1024;

/// One participant as others see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParticipantView {
    pub identity: ParticipantId,
    pub name: String,
    pub publishing: bool,
    pub muted: bool,
    /// Present (true) on the room's AI participant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub agent: bool,
}

/// One entry of `active_speakers`: a level in 0..=1 (loudness over the speaker window).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpeakerLevel {
    pub identity: ParticipantId,
    pub level: f32,
}

/// Why a participant left (`participant.left`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It hung up (DELETE, or closed its connection).
    Left,
    /// Its connection failed or timed out.
    Disconnected,
    /// It joined again from another connection.
    Replaced,
    /// An admin removed it.
    Removed,
    RoomDeleted,
    /// The server is shutting down.
    ServerShutdown,
}

impl LeaveReason {
    /// As the call history records it.
    pub fn label(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::Replaced => "replaced",
            LeaveReason::Removed => "removed",
            LeaveReason::RoomDeleted => "room_deleted",
            LeaveReason::ServerShutdown => "server_shutdown",
        }
    }
}

/// Server → participant, on `room-events`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum RoomEvent {
    /// `slots`: the mids of the participant's slots, in slot order.
    #[serde(rename = "room.joined")]
    Joined { room: RoomName, identity: ParticipantId, participants: Vec<ParticipantView>, slots: Vec<String> },
    #[serde(rename = "participant.joined")]
    ParticipantJoined { participant: ParticipantView },
    #[serde(rename = "participant.left")]
    ParticipantLeft { identity: ParticipantId, reason: LeaveReason },
    #[serde(rename = "track.muted")]
    TrackMuted { identity: ParticipantId },
    #[serde(rename = "track.unmuted")]
    TrackUnmuted { identity: ParticipantId },
    /// Loudest first.
    #[serde(rename = "active_speakers")]
    ActiveSpeakers { speakers: Vec<SpeakerLevel> },
    /// `identity`: who the slot carries now (`null`: nobody).
    #[serde(rename = "slot.assigned")]
    SlotAssigned { slot: usize, mid: String, identity: Option<ParticipantId> },
    #[serde(rename = "data.received")]
    DataReceived { from: ParticipantId, payload: serde_json::Value, topic: Option<String> },
    #[serde(rename = "error")]
    Error { error: RoomError },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoomError {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl RoomEvent {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        RoomEvent::Error { error: RoomError { kind: "invalid_request_error", code, message: message.into() } }
    }

    #[allow(clippy::expect_used, reason = "string keys only, no fallible Serialize impl: cannot fail")]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("room events serialize")
    }
}

/// Participant → server, on `room-events`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum RoomClientEvent {
    /// To everyone else, or to the identities in `to`.
    #[serde(rename = "data.send")]
    DataSend {
        payload: serde_json::Value,
        #[serde(default)]
        topic: Option<String>,
        #[serde(default)]
        to: Option<Vec<ParticipantId>>,
    },
    #[serde(rename = "mute")]
    Mute { muted: bool },
}

impl RoomClientEvent {
    /// Parses one client event; the error is the `error` event to answer with.
    pub fn parse(text: &str) -> Result<Self, RoomEvent> {
        if text.len() > MAX_ROOM_CLIENT_EVENT_BYTES {
            return Err(RoomEvent::error("event_too_large", format!("room client events are at most {MAX_ROOM_CLIENT_EVENT_BYTES} bytes")));
        }
        let event: Self =
            serde_json::from_str(text).map_err(|e| RoomEvent::error("invalid_event", format!("not a room client event: {e}")))?;
        if let RoomClientEvent::DataSend { payload, .. } = &event {
            let size = payload.to_string().len();
            if size > MAX_DATA_BYTES {
                return Err(RoomEvent::error(
                    "payload_too_large",
                    format!("data.send payloads are at most {MAX_DATA_BYTES} bytes (got {size})"),
                ));
            }
        }
        Ok(event)
    }
}

/// `POST /v1/rooms/<room>/tokens` body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintTokenRequest {
    pub identity: Option<String>,
    pub name: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub publish: Option<bool>,
    pub subscribe: Option<bool>,
    pub publish_data: Option<bool>,
    pub admin: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MintedToken {
    pub token: String,
    pub expires_at: u64,
    pub identity: ParticipantId,
    pub room: RoomName,
}

/// `POST /v1/rooms` body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoomRequest {
    pub name: Option<String>,
    pub max_participants: Option<usize>,
    pub empty_timeout_seconds: Option<u64>,
    /// An AI participant to attach at once: the body of `POST /v1/rooms/<room>/agent`.
    pub agent: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /v1/rooms/<room>/agent` answer (201).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AgentAttached {
    pub room: RoomName,
    pub identity: ParticipantId,
    /// The pipeline answering (`echo`, `openai-realtime`, ...).
    pub agent: String,
}

/// `POST /v1/rooms/<room>/participants/<identity>/mute` body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuteRequest {
    pub muted: Option<bool>,
}

/// `GET /v1/rooms`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomList {
    pub rooms: Vec<RoomInfo>,
}

/// `GET /v1/rooms/<room>`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: Option<RoomName>,
    pub max_participants: usize,
    pub empty_timeout_seconds: u64,
    pub participants: Vec<ParticipantInfo>,
    /// Identities speaking now, loudest first.
    pub speaking: Vec<ParticipantId>,
    pub counters: RoomCounters,
    /// Several nodes: the base URL of the node the room lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    #[serde(flatten)]
    pub view: ParticipantView,
    pub slots: usize,
    pub packets_in: u64,
    pub packets_out: u64,
}

/// Forwarding counters of a room since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCounters {
    pub packets_in: u64,
    pub packets_forwarded: u64,
    pub bytes_forwarded: u64,
    pub slot_switches: u64,
    /// Dropped because the participant is muted or lacks the publish grant.
    pub dropped_not_publishing: u64,
    /// Dropped by the per-publisher packet rate cap.
    pub dropped_rate_limited: u64,
    /// Dropped because a subscriber's send queue was full.
    pub dropped_queue_full: u64,
    /// Older than a slot's switch (see `room::slot`).
    pub dropped_before_switch: u64,
    /// Not copied to the agent's listener of that participant (its ring was full).
    pub dropped_agent_tap: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_the_protocol_shapes() {
        let alice = ParticipantId::parse("alice").unwrap();
        let ev = RoomEvent::SlotAssigned { slot: 1, mid: "2".into(), identity: Some(alice.clone()) };
        assert_eq!(ev.to_json(), r#"{"type":"slot.assigned","slot":1,"mid":"2","identity":"alice"}"#);
        let ev = RoomEvent::ParticipantLeft { identity: alice, reason: LeaveReason::RoomDeleted };
        assert_eq!(ev.to_json(), r#"{"type":"participant.left","identity":"alice","reason":"room_deleted"}"#);
        let err = RoomEvent::error("invalid_event", "x").to_json();
        assert_eq!(err, r#"{"type":"error","error":{"type":"invalid_request_error","code":"invalid_event","message":"x"}}"#);
    }

    #[test]
    fn client_events_parse_and_oversized_data_is_refused() {
        let ev = RoomClientEvent::parse(r#"{"type":"data.send","payload":{"text":"hi"},"to":["bob"]}"#).unwrap();
        assert!(matches!(ev, RoomClientEvent::DataSend { to: Some(ref to), .. } if to[0].as_str() == "bob"));
        assert_eq!(RoomClientEvent::parse(r#"{"type":"mute","muted":true}"#).unwrap(), RoomClientEvent::Mute { muted: true });
        let big = format!(r#"{{"type":"data.send","payload":"{}"}}"#, "x".repeat(MAX_DATA_BYTES));
        assert!(matches!(RoomClientEvent::parse(&big), Err(RoomEvent::Error { error }) if error.code == "payload_too_large"));
        let huge = "x".repeat(MAX_ROOM_CLIENT_EVENT_BYTES + 1);
        assert!(matches!(RoomClientEvent::parse(&huge), Err(RoomEvent::Error { error }) if error.code == "event_too_large"));
        assert!(matches!(RoomClientEvent::parse(r#"{"type":"nope"}"#), Err(RoomEvent::Error { error }) if error.code == "invalid_event"));
    }
}
