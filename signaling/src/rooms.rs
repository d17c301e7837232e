//! PROTOCOL.md §4 over HTTP: room tokens, joining with an SDP offer, leaving, and the room API.
//! Every handler checks its credential first (API key, or a room token for this room with the
//! grant the action needs), then the request, then asks the engine.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::{bearer, unix_now};
use crate::body::{read_json, read_limited, require_content_type};
use crate::error::ApiError;
use crate::ids::{ParticipantId, RoomName};
use crate::room_token::{DEFAULT_TTL_S, MAX_TTL_S, RoomAction, RoomClaims, RoomGrant};
use crate::room_wire::{CreateRoomRequest, MintTokenRequest, MintedToken, MuteRequest, RoomInfo, RoomList};
use crate::events::Dialect;
use crate::sdp::{MAX_SDP_BYTES, OfferSummary, OfferedCodec, inspect_offer};
use crate::wire::{BetaSession, GaSession, SessionConfig};
use crate::{Api, ApiError as E};

/// Everything needed to join one participant to a room.
pub struct JoinRequest {
    pub room: RoomName,
    pub claims: RoomClaims,
    pub offer: String,
    pub summary: OfferSummary,
}

/// An AI participant to attach to a room (PROTOCOL.md §4).
pub struct AgentSpec {
    pub room: RoomName,
    pub identity: ParticipantId,
    pub name: String,
    /// The session body's shape decides the names of the agent's events (beta or GA).
    pub dialect: Dialect,
    pub config: SessionConfig,
}

/// The identity an agent gets when the body names none.
pub const DEFAULT_AGENT_IDENTITY: &str = "agent";

/// Reads an agent body: a §1 session body (the beta shape, or the GA one when it has `type`,
/// `audio` or `output_modalities`) plus `identity` and `name`.
pub fn agent_spec(room: RoomName, mut body: serde_json::Map<String, serde_json::Value>) -> Result<AgentSpec, E> {
    let text = |body: &mut serde_json::Map<String, serde_json::Value>, key: &str| match body.remove(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(E::bad_request("invalid_json", format!("{key} must be a string"))),
    };
    let identity = ParticipantId::parse(text(&mut body, "identity")?.as_deref().unwrap_or(DEFAULT_AGENT_IDENTITY))?;
    let name = text(&mut body, "name")?.unwrap_or_else(|| identity.to_string());
    if name.len() > 256 {
        return Err(E::bad_request("invalid_name", "name is at most 256 bytes"));
    }
    let ga = ["type", "audio", "output_modalities"].iter().any(|k| body.contains_key(*k));
    let mut config = SessionConfig::default();
    let body = serde_json::Value::Object(body);
    let invalid = |e: serde_json::Error| E::bad_request("invalid_json", format!("the body is not a valid session body: {e}"));
    let dialect = if ga {
        config.apply_ga(serde_json::from_value::<GaSession>(body).map_err(invalid)?)?;
        Dialect::Ga
    } else {
        config.apply_beta(serde_json::from_value::<BetaSession>(body).map_err(invalid)?)?;
        Dialect::Beta
    };
    Ok(AgentSpec { room, identity, name, dialect, config })
}

/// `POST /v1/rooms/<room>/agent` (API key) → 201: an AI participant joins (the room is made
/// under the same auto-create rule as a join).
pub async fn attach_agent(State(api): State<Arc<Api>>, headers: HeaderMap, Path(room): Path<String>, body: Body) -> Result<Response, E> {
    api.auth.require_api_key(&headers)?;
    let room = RoomName::parse(&room)?;
    let body: serde_json::Map<String, serde_json::Value> = read_json(&headers, body).await?;
    let spec = agent_spec(room.clone(), body)?;
    api.engine.check_session(&spec.config)?;
    api.admit()?;
    let attached = api.engine.attach_agent(spec).await?;
    let mut resp = (StatusCode::CREATED, Json(attached)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/rooms/{room}/agent")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// `DELETE /v1/rooms/<room>/agent` (API key) → 204; a response in progress is cancelled.
pub async fn detach_agent(State(api): State<Arc<Api>>, headers: HeaderMap, Path(room): Path<String>) -> Result<StatusCode, E> {
    api.auth.require_api_key(&headers)?;
    api.engine.detach_agent(&RoomName::parse(&room)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/rooms/<room>/tokens` (API key).
pub async fn mint_token(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Body,
) -> Result<Json<MintedToken>, E> {
    api.auth.require_api_key(&headers)?;
    let room = RoomName::parse(&room)?;
    let req: MintTokenRequest = read_json(&headers, body).await?;
    let identity = req.identity.as_deref().ok_or_else(|| E::bad_request("missing_identity", "identity is required"))?;
    let identity = ParticipantId::parse(identity)?;
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TTL_S);
    if ttl == 0 || ttl > MAX_TTL_S {
        return Err(E::bad_request("invalid_ttl", format!("ttl_seconds must be 1 to {MAX_TTL_S}")));
    }
    let name = req.name.unwrap_or_else(|| identity.to_string());
    if name.len() > 256 {
        return Err(E::bad_request("invalid_name", "name is at most 256 bytes"));
    }
    let grant = RoomGrant {
        publish: req.publish.unwrap_or(true),
        subscribe: req.subscribe.unwrap_or(true),
        publish_data: req.publish_data.unwrap_or(true),
        admin: req.admin.unwrap_or(false),
        ..RoomGrant::default_for(room.clone())
    };
    let claims = RoomClaims::new(identity.clone(), name, grant, unix_now(), ttl);
    let token = api.auth.room_tokens.mint(&claims)?;
    Ok(Json(MintedToken { token, expires_at: claims.exp, identity, room }))
}

/// The claims of the request's room token for `room`, checked for `action`.
pub(crate) fn room_token(api: &Api, headers: &HeaderMap, room: &RoomName, action: RoomAction) -> Result<RoomClaims, E> {
    let claims = api.auth.room_tokens.verify(bearer(headers)?, unix_now())?;
    claims.require(room, action)?;
    Ok(claims)
}

/// `POST /v1/rooms/<room>/join` (room token, SDP offer) → 201 SDP answer.
pub async fn join(State(api): State<Arc<Api>>, headers: HeaderMap, Path(room): Path<String>, body: Body) -> Result<Response, E> {
    let room = RoomName::parse(&room)?;
    let claims = room_token(&api, &headers, &room, RoomAction::Join)?;
    let (offer, summary) = read_offer(&headers, body).await?;
    api.admit()?;
    let identity = claims.sub.clone();
    let answer = api.engine.join_room(JoinRequest { room: room.clone(), claims, offer, summary }).await?;
    Ok(sdp_created(answer, &format!("/v1/rooms/{room}/participants/{identity}")))
}

/// A room participant's SDP offer (Opus only: rooms forward packets as they are).
pub(crate) async fn read_offer(headers: &HeaderMap, body: Body) -> Result<(String, OfferSummary), E> {
    require_content_type(headers, "application/sdp")?;
    let bytes = read_limited(headers, body, MAX_SDP_BYTES).await?;
    let offer = String::from_utf8(bytes.to_vec()).map_err(|_| E::bad_request("invalid_offer", "the SDP offer is not UTF-8 text"))?;
    let summary = inspect_offer(&offer)?;
    if summary.codec != OfferedCodec::Opus {
        // Rooms forward packets as they are: everyone must speak the same codec.
        return Err(E::bad_request("unsupported_codec", "rooms forward Opus only: the offer's audio m-lines must offer opus/48000/2"));
    }
    Ok((offer, summary))
}

/// `201 Created` with an SDP answer and its resource's `Location`.
pub(crate) fn sdp_created(answer: String, location: &str) -> Response {
    let mut resp = (StatusCode::CREATED, answer).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    resp
}

/// `DELETE /v1/rooms/<room>/participants/<identity>`: the participant itself (its room token)
/// leaves; the API key or an admin token removes it.
pub async fn remove_participant(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path((room, identity)): Path<(String, String)>,
) -> Result<StatusCode, E> {
    let room = RoomName::parse(&room)?;
    let identity = ParticipantId::parse(&identity)?;
    let removed_by_admin = may_act_on(&api, &headers, &room, &identity)?;
    api.engine.leave_room(&room, &identity, removed_by_admin).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who may act on a participant's connection (leave, WHIP/WHEP `PATCH`/`DELETE`): its own room
/// token, an admin token of the room, or the API key. `true` when it is someone else.
pub(crate) fn may_act_on(api: &Api, headers: &HeaderMap, room: &RoomName, identity: &ParticipantId) -> Result<bool, E> {
    if api.auth.require_api_key(headers).is_ok() {
        return Ok(true);
    }
    let claims = room_token(api, headers, room, RoomAction::Join)?;
    if claims.sub != *identity {
        claims.require(room, RoomAction::Admin)?;
    }
    Ok(claims.sub != *identity)
}

/// `GET /v1/rooms/<room>` (API key).
pub async fn get(State(api): State<Arc<Api>>, headers: HeaderMap, Path(room): Path<String>) -> Result<Json<RoomInfo>, E> {
    api.auth.require_api_key(&headers)?;
    let room = RoomName::parse(&room)?;
    api.engine.room_info(&room).await.map(Json)
}

/// `POST /v1/rooms` (API key) → 201.
pub async fn create(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Result<Response, E> {
    api.auth.require_api_key(&headers)?;
    let req: CreateRoomRequest = read_json(&headers, body).await?;
    let name = req.name.as_deref().ok_or_else(|| E::bad_request("missing_name", "name is required"))?;
    let room = RoomName::parse(name)?;
    // The agent's body is checked before the room exists, so a bad one creates nothing.
    let agent = req.agent.map(|body| agent_spec(room.clone(), body)).transpose()?;
    if let Some(spec) = &agent {
        api.engine.check_session(&spec.config)?;
        api.admit()?;
    }
    let mut info = api.engine.create_room(&room, req.max_participants, req.empty_timeout_seconds).await?;
    if let Some(spec) = agent {
        api.engine.attach_agent(spec).await?;
        info = api.engine.room_info(&room).await?;
    }
    let mut resp = (StatusCode::CREATED, Json(info)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/rooms/{room}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// `GET /v1/rooms` (API key).
pub async fn list(State(api): State<Arc<Api>>, headers: HeaderMap) -> Result<Json<RoomList>, E> {
    api.auth.require_api_key(&headers)?;
    // Another node asking for this node's rooms (it lists the cluster's itself).
    if headers.contains_key(crate::forwarding::FORWARDED_HEADER) {
        return Ok(Json(RoomList { rooms: api.engine.list_rooms().await }));
    }
    Ok(Json(RoomList { rooms: api.engine.list_cluster_rooms(&headers).await? }))
}

/// `DELETE /v1/rooms/<room>` (API key) → 204.
pub async fn delete(State(api): State<Arc<Api>>, headers: HeaderMap, Path(room): Path<String>) -> Result<StatusCode, E> {
    api.auth.require_api_key(&headers)?;
    api.engine.delete_room(&RoomName::parse(&room)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/rooms/<room>/participants/<identity>/mute` (API key or admin token) `{muted}`.
pub async fn mute(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path((room, identity)): Path<(String, String)>,
    body: Body,
) -> Result<Json<serde_json::Value>, E> {
    let room = RoomName::parse(&room)?;
    let identity = ParticipantId::parse(&identity)?;
    if api.auth.require_api_key(&headers).is_err() {
        room_token(&api, &headers, &room, RoomAction::Admin)?;
    }
    let req: MuteRequest = read_json(&headers, body).await?;
    let muted = req.muted.ok_or_else(|| E::bad_request("missing_muted", "muted (true or false) is required"))?;
    api.engine.mute_participant(&room, &identity, muted).await?;
    Ok(Json(serde_json::json!({"room": room, "identity": identity, "muted": muted})))
}

pub(crate) fn rooms_disabled() -> ApiError {
    ApiError::not_found("rooms_disabled", "rooms are not available on this server")
}
