//! Call history (PROTOCOL.md §5 "Call history"): `GET /v1/calls` and `GET /v1/calls/<id>`,
//! behind the API key. The records are the server's (its store); this module is their wire
//! shape and the query's checks.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::error::ApiError as E;
use crate::ids::{ConversationId, RoomName};
use crate::{Api, ApiError};

/// `limit` when the query gives none, and the most one page may hold.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// One call or room participant, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallSummary {
    pub id: String,
    /// `webrtc`, `rtp`, `twilio`, `websocket`; a room's AI participant: `agent`.
    pub transport: String,
    /// The pipeline answering (`echo`, `openai-realtime`, ...); `null` for a person in a room.
    pub agent: Option<String>,
    pub room: Option<String>,
    pub identity: Option<String>,
    /// Unix seconds.
    pub started_at: u64,
    /// `null` while the call is live.
    pub ended_at: Option<u64>,
    /// `null` while live; else a `voxrelay_calls_ended_by_reason_total` label, a room leave
    /// reason, or `interrupted` (the server stopped without ending it: killed or crashed).
    pub end_reason: Option<String>,
    pub duration_ms: Option<u64>,
    /// The conversation the call continues (its session's `conversation`), if any.
    pub conversation: Option<String>,
}

/// `GET /v1/calls/<id>`: the summary, its transcript and its media counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallDetail {
    #[serde(flatten)]
    pub summary: CallSummary,
    pub transcript: Vec<TranscriptEntry>,
    /// Media counters at the end (packets, bytes, loss, concealment); `null` while live.
    pub counters: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptRole {
    User,
    Assistant,
}

impl TranscriptRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TranscriptRole::User => "user",
            TranscriptRole::Assistant => "assistant",
        }
    }
}

/// One turn of the conversation, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    pub role: TranscriptRole,
    /// Who spoke, in a room (the speaker, or the agent); `null` in a 1:1 call.
    pub identity: Option<String>,
    /// A caller's words (typed, a keypad digit, or the speech-to-text of a spoken turn: `null`
    /// when no transcription ran), the agent's response transcript.
    pub text: Option<String>,
    /// Since the call started.
    pub at_ms: u64,
    /// A response cut short (barge-in, a client's cancel, the call ending).
    pub interrupted: bool,
    #[serde(flatten)]
    pub detail: EntryDetail,
}

/// What an entry adds beyond the contract's fields (absent when empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryDetail {
    /// The conversation item (`item_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// An assistant response: `completed`, `cancelled` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// An assistant response: the audio the agent produced for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_ms: Option<u64>,
    /// An interrupted response: what the caller heard of it, and that as a fraction of
    /// `audio_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_fraction: Option<f64>,
    /// Function calls the agent made in this response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A function call's output, as the client sent it (role `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_output: Option<ToolOutput>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolOutput {
    pub call_id: String,
    pub output: String,
}

/// `GET /v1/calls`: newest first; `has_more` when older calls match (ask again with
/// `before=<the last id>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallList {
    pub data: Vec<CallSummary>,
    pub has_more: bool,
}

/// A checked `GET /v1/calls` query.
#[derive(Clone, Debug, PartialEq)]
pub struct CallQuery {
    pub room: Option<RoomName>,
    pub conversation: Option<ConversationId>,
    /// Calls started at or after this (unix seconds).
    pub since: Option<u64>,
    /// Calls started before this one (the previous page's last id).
    pub before: Option<String>,
    pub limit: usize,
}

impl CallQuery {
    /// Checks the query string's parameters: unknown ones and bad values are 400s that say
    /// which.
    pub fn parse(params: &HashMap<String, String>) -> Result<Self, ApiError> {
        if let Some(unknown) = params.keys().find(|k| !["room", "conversation", "since", "before", "limit"].contains(&k.as_str())) {
            let message = format!("unknown query parameter {unknown:?} (room, conversation, since, before, limit)");
            return Err(E::bad_request("unknown_parameter", message));
        }
        let number = |key: &str| {
            params.get(key).map(|v| {
                v.parse::<u64>()
                    .map_err(|_| E::bad_request("invalid_parameter", format!("{key} must be a non-negative integer (got {v:?})")))
            })
        };
        let limit = number("limit").transpose()?.map_or(DEFAULT_LIMIT as u64, |n| n);
        if limit == 0 || limit > MAX_LIMIT as u64 {
            return Err(E::bad_request("invalid_parameter", format!("limit is 1 to {MAX_LIMIT} (got {limit})")));
        }
        let before = params.get("before").map(|id| check_record_id(id).map(|()| id.clone())).transpose()?;
        Ok(CallQuery {
            room: params.get("room").map(|r| RoomName::parse(r)).transpose()?,
            conversation: params.get("conversation").map(|c| ConversationId::parse(c)).transpose()?,
            since: number("since").transpose()?,
            before,
            limit: limit as usize,
        })
    }
}

/// Record ids are ours (`rtc_…`, `part_…`): letters, digits and `_`, at most 64 bytes; anything
/// else cannot name a record.
pub fn check_record_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(E::bad_request("invalid_call_id", format!("{id:?} is not a call id")));
    }
    Ok(())
}

pub fn history_disabled() -> ApiError {
    E::not_found("history_disabled", "call history is off on this server (started with --database off)")
}

pub fn call_not_found(id: &str) -> ApiError {
    E::not_found("call_not_found", format!("no call {id:?} in the history"))
}

/// `GET /v1/calls?room=&since=&before=&limit=` (API key).
pub async fn list(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<CallList>, E> {
    api.auth.require_api_key(&headers)?;
    let query = CallQuery::parse(&params)?;
    api.engine.list_calls(query).await.map(Json)
}

/// `GET /v1/calls/<id>` (API key): the record with its transcript.
pub async fn get(State(api): State<Arc<Api>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<CallDetail>, E> {
    api.auth.require_api_key(&headers)?;
    check_record_id(&id)?;
    api.engine.call_record(&id).await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_query_is_checked_where_it_enters() {
        let q = CallQuery::parse(&params(&[])).unwrap();
        assert_eq!(q, CallQuery { room: None, conversation: None, since: None, before: None, limit: DEFAULT_LIMIT });
        let q = CallQuery::parse(&params(&[("room", "standup"), ("since", "1700000000"), ("limit", "3"), ("before", "rtc_abc")])).unwrap();
        assert_eq!(q.room.unwrap().as_str(), "standup");
        assert_eq!((q.since, q.limit, q.before.as_deref()), (Some(1_700_000_000), 3, Some("rtc_abc")));
        for (bad, code) in [
            (params(&[("limit", "0")]), "invalid_parameter"),
            (params(&[("limit", "501")]), "invalid_parameter"),
            (params(&[("limit", "ten")]), "invalid_parameter"),
            (params(&[("since", "-1")]), "invalid_parameter"),
            (params(&[("room", "a b")]), "invalid_name"),
            (params(&[("conversation", "short")]), "invalid_conversation"),
            (params(&[("before", "../x")]), "invalid_call_id"),
            (params(&[("order", "asc")]), "unknown_parameter"),
        ] {
            let e = CallQuery::parse(&bad).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (400, code), "{bad:?}");
        }
    }

    #[test]
    fn entries_carry_the_contract_fields_and_only_the_details_they_have() {
        let entry = TranscriptEntry {
            role: TranscriptRole::Assistant,
            identity: None,
            text: Some("[echo 1.2 s]".into()),
            at_ms: 2300,
            interrupted: true,
            detail: EntryDetail { status: Some("cancelled".into()), heard_ms: Some(400), heard_fraction: Some(0.33), ..Default::default() },
        };
        let v = serde_json::to_value(&entry).unwrap();
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["identity"], serde_json::Value::Null);
        assert_eq!(v["interrupted"], true);
        assert_eq!(v["heard_ms"], 400);
        assert!(v.get("tool_calls").is_none() && v.get("audio_ms").is_none());
        let back: TranscriptEntry = serde_json::from_value(v).unwrap();
        assert_eq!(back, entry);
    }
}
