//! Events WebSockets: `GET /v1/rtp/<id>/events` (a plain-RTP session's event stream) and
//! `GET /v1/calls/<id>/events` (an operator watching any call). Each text message is one JSON
//! event as on the data channel; text the client sends is handled as a client event.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::Api;
use crate::error::ApiError;
use crate::ws_pump::pump;

/// A client message larger than this closes the socket (client events are small; audio never
/// travels here).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

pub async fn rtp_events(state: State<Arc<Api>>, headers: HeaderMap, id: Path<String>, ws: WebSocketUpgrade) -> Result<Response, ApiError> {
    upgrade(state, headers, id, ws, true).await
}

pub async fn call_events(state: State<Arc<Api>>, headers: HeaderMap, id: Path<String>, ws: WebSocketUpgrade) -> Result<Response, ApiError> {
    upgrade(state, headers, id, ws, false).await
}

async fn upgrade(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
    plain_rtp: bool,
) -> Result<Response, ApiError> {
    api.auth.require_api_key(&headers)?;
    let channel = api.engine.attach_events(&crate::CallId::from_client(&id), plain_rtp)?;
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| pump(socket, channel.to_client, channel.from_client, from_client, "events")))
}

/// `GET /v1/realtime?call_id=<id>` (API key): OpenAI's sideband control socket on a live call:
/// its events, and client events (`session.update`, `response.create`, tool outputs) from a
/// server-side app; no audio. Without `call_id` this is where Realtime sessions over WebSocket
/// will be; until then it says so.
pub async fn realtime_socket(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(query): Query<RealtimeQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Some(call_id) = query.call_id else {
        api.auth.caller(&headers)?;
        return Err(ApiError::unprocessable(
            "websocket_sessions_unsupported",
            "Realtime sessions over WebSocket are not available on this server yet: use WebRTC (POST /v1/realtime/calls), \
             or attach to a live call with ?call_id=",
        ));
    };
    api.auth.require_api_key(&headers)?;
    let ws = ws.map_err(|e| ApiError::bad_request("websocket_upgrade_required", format!("this endpoint is a WebSocket: {e}")))?;
    let channel = api.engine.attach_events(&crate::CallId::from_client(&call_id), false)?;
    Ok(ws
        .max_message_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| pump(socket, channel.to_client, channel.from_client, from_client, "sideband")))
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct RealtimeQuery {
    pub call_id: Option<String>,
    /// Accepted as OpenAI clients send it; the session's model is the one it was made with.
    #[allow(dead_code)]
    pub model: Option<String>,
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
