//! PROTOCOL.md §7: plain RTP sessions for load testing and gateways. Opt-in on the server, API
//! key only (no client secrets: there is no encryption on this path, so it is an operator's
//! tool, not something to hand to a browser).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Api;
use crate::body::read_json;
use crate::error::ApiError;
use crate::ids::{CallId, SessionId};
use crate::wire::{BetaSession, SessionConfig};

pub async fn create(
    State(api): State<Arc<Api>>,
    axum::Extension(ip): axum::Extension<crate::limits::ClientIp>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    api.auth.require_api_key(&headers)?;
    let req: BetaSession = read_json(&headers, body).await?;
    let mut config = SessionConfig::default();
    config.apply_beta(req)?;
    api.engine.check_session(&config)?;
    let origin = crate::Origin { ip: api.limits.limited_ip(ip), secret: None };
    let created = api.engine.create_rtp_session(config, SessionId::random(), origin).await?;
    let location = format!("/v1/rtp/{}", created.id);
    let body = json!({
        "id": created.id,
        "rtp": {"ip": created.ip, "port": created.port},
        "payload_type": created.payload_type,
        "codec": "opus/48000/2",
        "location": location,
    });
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

pub async fn end(State(api): State<Arc<Api>>, headers: HeaderMap, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    api.auth.require_api_key(&headers)?;
    if !id.starts_with("rtp_") {
        return Err(ApiError::not_found("call_not_found", format!("no live RTP session {id:?}")));
    }
    api.engine.end_call(&CallId::from_client(&id), None).await?;
    Ok(Json(json!({"id": id, "object": "rtp.session", "deleted": true})))
}
