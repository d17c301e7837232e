//! Events WebSockets: `GET /v1/rtp/<id>/events` (a plain-RTP session's event stream) and
//! `GET /v1/calls/<id>/events` (an operator watching any call). Each text message is one JSON
//! event as on the data channel; text the client sends is handled as a client event.

use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::Api;
use crate::error::ApiError;
use crate::limits::ClientIp;
use crate::ws_pump::pump;

/// A client message larger than this closes the socket (client events are small; audio never
/// travels here).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

pub async fn rtp_events(
    state: State<Arc<Api>>,
    ip: Extension<ClientIp>,
    headers: HeaderMap,
    id: Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    upgrade(state, ip, headers, id, ws, true).await
}

pub async fn call_events(
    state: State<Arc<Api>>,
    ip: Extension<ClientIp>,
    headers: HeaderMap,
    id: Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    upgrade(state, ip, headers, id, ws, false).await
}

async fn upgrade(
    State(api): State<Arc<Api>>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
    plain_rtp: bool,
) -> Result<Response, ApiError> {
    api.auth.require_api_key(&headers)?;
    let slot = api.limits.open_socket(ip)?;
    let channel = api.engine.attach_events(&crate::CallId::from_client(&id), plain_rtp)?;
    Ok(ws.max_message_size(MAX_MESSAGE_BYTES).on_upgrade(move |socket| async move {
        let _slot = slot;
        pump(socket, channel.to_client, channel.from_client, from_client, "events").await
    }))
}

/// `GET /v1/realtime`: with `call_id=<id>` (API key), OpenAI's sideband control socket on a live
/// call: its events, and client events (`session.update`, `response.create`, tool outputs) from
/// a server-side app; no audio. Without it, a Realtime voice session over this WebSocket
/// ([`crate::realtime_ws`]).
pub async fn realtime_socket(
    State(api): State<Arc<Api>>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    Query(query): Query<RealtimeQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade_required =
        |e: WebSocketUpgradeRejection| ApiError::bad_request("websocket_upgrade_required", format!("this endpoint is a WebSocket: {e}"));
    let Some(call_id) = query.call_id else {
        // Credentials first, so an unauthenticated probe learns nothing else.
        if ws.is_err() {
            api.auth.caller(&headers).await?;
        }
        let ws = ws.map_err(upgrade_required)?;
        let query = crate::realtime_ws::SessionQuery { dialect: query.dialect };
        return crate::realtime_ws::session_socket(&api, ip, &headers, query, ws).await;
    };
    api.auth.require_api_key(&headers)?;
    let ws = ws.map_err(upgrade_required)?;
    let slot = api.limits.open_socket(ip)?;
    let channel = api.engine.attach_events(&crate::CallId::from_client(&call_id), false)?;
    Ok(ws.max_message_size(MAX_MESSAGE_BYTES).on_upgrade(move |socket| async move {
        let _slot = slot;
        pump(socket, channel.to_client, channel.from_client, from_client, "sideband").await
    }))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct RealtimeQuery {
    pub call_id: Option<String>,
    /// Accepted as OpenAI clients send it; the session's model is the one it was made with.
    #[allow(dead_code)]
    pub model: Option<String>,
    /// Session sockets: `ga` for GA event names from the first event (default beta).
    pub dialect: Option<String>,
}

/// Text is a client event; a binary frame becomes a marker the call answers with an `error`
/// event (audio never travels here).
fn from_client(msg: Message) -> Option<String> {
    match msg {
        Message::Text(text) => Some(text.to_string()),
        Message::Binary(_) => Some("\u{0}binary".into()),
        _ => None,
    }
}
