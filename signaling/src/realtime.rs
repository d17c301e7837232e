//! PROTOCOL.md §1–2 handlers: minting client secrets (beta and GA shapes) and starting or
//! ending WebRTC calls. Order of checks on a call: credentials (401), content type (415), size
//! (413), then the offer itself (400), so a client learns the most basic problem first.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::{BETA_SECRET_TTL_S, Caller, GA_SECRET_TTL_RANGE_S, GA_SECRET_TTL_S};
use crate::body::{read_json, read_limited, require_content_type};
use crate::error::ApiError;
use crate::events::Dialect;
use crate::ids::{CallId, SessionId};
use crate::sdp::{MAX_SDP_BYTES, inspect_offer};
use crate::wire::{BetaSession, ClientSecretRequest, GaSession, SessionConfig};
use crate::{Api, CallRequest};

pub async fn create_session(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    api.auth.require_api_key(&headers)?;
    let req: BetaSession = read_json(&headers, body).await?;
    let out = mint_beta_session(&api, req)?;
    publish_secret(&api, &out["client_secret"]["value"]).await;
    Ok(Json(out))
}

/// The beta session object with a fresh `client_secret` (also what the web page's helper
/// answers, [`crate::web`]).
pub(crate) fn mint_beta_session(api: &Api, req: BetaSession) -> Result<Value, ApiError> {
    api.admit()?;
    let mut config = SessionConfig::default();
    config.apply_beta(req)?;
    api.engine.check_session(&config)?;
    let id = SessionId::random();
    let (value, expires_at) = api.auth.mint(id.clone(), config.clone(), BETA_SECRET_TTL_S)?;
    let mut out = config.beta_json(id.as_str());
    out["client_secret"] = json!({"value": value, "expires_at": expires_at});
    add_ice_servers(api, &id, &mut out);
    Ok(out)
}

pub async fn create_client_secret(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    api.auth.require_api_key(&headers)?;
    api.admit()?;
    let req: ClientSecretRequest = read_json(&headers, body).await?;
    let ttl = match req.expires_after {
        None => GA_SECRET_TTL_S,
        Some(e) => {
            if e.anchor.as_deref().is_some_and(|a| a != "created_at") {
                return Err(ApiError::bad_request("invalid_expires_after", "expires_after.anchor must be \"created_at\""));
            }
            if !GA_SECRET_TTL_RANGE_S.contains(&e.seconds) {
                return Err(ApiError::bad_request(
                    "invalid_expires_after",
                    format!("expires_after.seconds must be within {}..{}", GA_SECRET_TTL_RANGE_S.start(), GA_SECRET_TTL_RANGE_S.end()),
                ));
            }
            e.seconds
        }
    };
    let mut config = SessionConfig::default();
    if let Some(s) = req.session {
        config.apply_ga(s)?;
    }
    api.engine.check_session(&config)?;
    let id = SessionId::random();
    let (value, expires_at) = api.auth.mint(id.clone(), config.clone(), ttl)?;
    api.auth.publish(&value, api.engine.place_secret()).await;
    let mut out = json!({"value": value, "expires_at": expires_at, "session": config.ga_json(id.as_str())});
    add_ice_servers(&api, &id, &mut out);
    Ok(Json(out))
}

/// Several nodes: every node accepts the secret before the client has it.
pub(crate) async fn publish_secret(api: &Api, value: &Value) {
    if let Some(value) = value.as_str() {
        api.auth.publish(value, api.engine.place_secret()).await;
    }
}

fn add_ice_servers(api: &Api, session_id: &SessionId, out: &mut Value) {
    let servers = api.engine.ice_servers(session_id);
    if !servers.is_empty() {
        out["ice_servers"] = Value::Array(servers);
    }
}

pub async fn create_call_beta(
    state: State<Arc<Api>>,
    Extension(ip): Extension<crate::limits::ClientIp>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create_call(state, ip, headers, body, Dialect::Beta).await
}

pub async fn create_call_ga(
    state: State<Arc<Api>>,
    Extension(ip): Extension<crate::limits::ClientIp>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    create_call(state, ip, headers, body, Dialect::Ga).await
}

async fn create_call(
    State(api): State<Arc<Api>>,
    ip: crate::limits::ClientIp,
    headers: HeaderMap,
    body: Body,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    let caller = api.auth.caller(&headers).await?;
    let (offer, session) = read_call_body(&headers, body).await?;
    let summary = inspect_offer(&offer)?;
    let by_secret = matches!(caller, Caller::Secret(_));
    let (session_id, mut config) = match caller {
        Caller::ApiKey => (SessionId::random(), SessionConfig::default()),
        Caller::Secret(grant) => (grant.session_id, grant.config),
    };
    let origin = crate::Origin { ip: api.limits.limited_ip(ip), secret: by_secret.then(|| session_id.clone()) };
    if let Some(session) = session {
        // The SDKs' `session` field: settings applied before the call starts; a client secret's
        // agent stays the one it was minted for.
        let (agent, conversation) = (config.agent.clone(), config.conversation.clone());
        config.apply_ga(session)?;
        if by_secret && config.agent != agent {
            return Err(ApiError::bad_request("agent_change_unsupported", "the agent of a client secret's session cannot change"));
        }
        // A secret minted for a conversation stays in it (one minted without may name one).
        if by_secret && conversation.is_some() && config.conversation != conversation {
            return Err(ApiError::bad_request(
                "conversation_change_unsupported",
                "the conversation of a client secret's session cannot change",
            ));
        }
    }
    api.engine.check_session(&config)?;
    let created = api.engine.create_call(CallRequest { offer, summary, config, dialect, session_id, origin }).await?;
    let location = format!("/v1/realtime/calls/{}", created.call_id);
    // The ETag a PATCH's If-Match names (an ICE restart): the server's ICE ufrag, as for WHIP.
    let etag = crate::sdpfrag::sdp_attribute(&created.answer_sdp, "ice-ufrag").map(crate::whip::etag_of);
    let mut resp = (StatusCode::CREATED, created.answer_sdp).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}

pub async fn end_call(State(api): State<Arc<Api>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    // A client secret may end only calls of its own session; the API key may end any.
    let owner = match api.auth.call_owner(&headers).await? {
        Caller::ApiKey => None,
        Caller::Secret(grant) => Some(grant.session_id),
    };
    api.engine.end_call(&CallId::from_client(&id), owner.as_ref()).await?;
    Ok(Json(json!({"id": id, "object": "realtime.call", "deleted": true})))
}

/// `PATCH /v1/realtime/calls/<id>` (`application/trickle-ice-sdpfrag`): trickled candidates
/// (204) or an ICE restart (200 + the server's fragment, `ETag`), with WHIP's rules (§3). The
/// call's `ETag` is its server ICE ufrag, quoted; a restart needs `If-Match` (it or `*`).
pub async fn patch_call(State(api): State<Arc<Api>>, headers: HeaderMap, Path(id): Path<String>, body: Body) -> Result<Response, ApiError> {
    let owner = match api.auth.call_owner(&headers).await? {
        Caller::ApiKey => None,
        Caller::Secret(grant) => Some(grant.session_id),
    };
    let (fragment, if_match) = crate::whip::read_fragment(&headers, body).await?;
    let patched = api.engine.patch_call_ice(&CallId::from_client(&id), owner.as_ref(), fragment, if_match).await?;
    Ok(crate::whip::patched_response(patched))
}

/// The offer of `POST /v1/realtime/calls`: raw SDP, or the SDKs' multipart form (`sdp` and an
/// optional GA `session` JSON object).
async fn read_call_body(headers: &HeaderMap, body: Body) -> Result<(String, Option<GaSession>), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let utf8 = |b: Vec<u8>| String::from_utf8(b).map_err(|_| ApiError::bad_request("invalid_offer", "the SDP offer is not UTF-8 text"));
    let Some(boundary) = crate::multipart::boundary(content_type) else {
        require_content_type(headers, "application/sdp")?;
        let bytes = read_limited(headers, body, MAX_SDP_BYTES).await?;
        return Ok((utf8(bytes.to_vec())?, None));
    };
    // The offer plus a session object.
    let bytes = read_limited(headers, body, MAX_SDP_BYTES * 2).await?;
    let mut offer = None;
    let mut session = None;
    for (name, value) in crate::multipart::fields(&bytes, &boundary)? {
        match name.as_str() {
            "sdp" => offer = Some(utf8(value)?),
            "session" => {
                let parsed: GaSession = serde_json::from_slice(&value)
                    .map_err(|e| ApiError::bad_request("invalid_json", format!("the session field is not a valid session object: {e}")))?;
                session = Some(parsed);
            }
            other => {
                return Err(ApiError::bad_request("unknown_parameter", format!("unknown form field {other:?} (expected sdp, session)")));
            }
        }
    }
    let offer = offer.ok_or_else(|| ApiError::bad_request("missing_sdp", "the form has no sdp field"))?;
    Ok((offer, session))
}

/// `POST /v1/realtime/calls/<id>/hangup` (the SDKs' `calls.hangup`): ends the call, 200.
pub async fn hangup(state: State<Arc<Api>>, headers: HeaderMap, path: Path<String>) -> Result<StatusCode, ApiError> {
    let _ = end_call(state, headers, path).await?;
    Ok(StatusCode::OK)
}

/// A known path with a method it does not take: a JSON error like any other.
pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such endpoint")
}
