//! PROTOCOL.md §8: a Realtime voice session over WebSocket (`GET /v1/realtime` without
//! `call_id`). This module authenticates the upgrade, picks the session's settings and event
//! names, and relays messages; the session itself (audio framing, pacing, events) is the root
//! crate's WebSocket transport.
//!
//! Credentials: `Authorization: Bearer <API key or client secret>`, or, for browsers (which
//! cannot set headers on a WebSocket), the subprotocol `openai-insecure-api-key.<secret>` next
//! to `realtime`, as OpenAI accepts it. The server then selects `realtime`.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::header::SEC_WEBSOCKET_PROTOCOL;
use axum::response::Response;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::auth::{Caller, bearer};
use crate::error::ApiError;
use crate::events::Dialect;
use crate::ids::SessionId;
use crate::keepalive::{Keepalive, PING_EVERY, Tick};
use crate::limits::ClientIp;
use crate::wire::SessionConfig;
use crate::{Api, SocketMessage, WsSessionRequest};

/// The largest client message: OpenAI allows 15 MiB of audio in one `append`; base64 and the
/// event around it fit in 16 MiB. A bigger message closes the socket (axum answers it with a
/// close frame, "message too big").
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// The subprotocol prefix browsers put the client secret in.
const KEY_PROTOCOL_PREFIX: &str = "openai-insecure-api-key.";

/// What the query of `GET /v1/realtime` may say about a session socket.
#[derive(Debug, Default)]
pub struct SessionQuery {
    /// `ga` or `beta` (default): which event names the session speaks from its first event.
    pub dialect: Option<String>,
}

pub async fn session_socket(
    api: &Api,
    ip: ClientIp,
    headers: &HeaderMap,
    query: SessionQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let caller = match bearer(headers) {
        Ok(token) => api.auth.caller_token(token).await?,
        Err(missing) => match protocol_secret(headers) {
            Some(token) => api.auth.caller_token(&token).await?,
            None => return Err(missing),
        },
    };
    let dialect = match query.dialect.as_deref() {
        None | Some("beta") => Dialect::Beta,
        Some("ga") => Dialect::Ga,
        Some(other) => {
            return Err(ApiError::bad_request("invalid_parameters", format!("dialect must be \"ga\" or \"beta\", not {other:?}")));
        }
    };
    let (session_id, config, secret) = match caller {
        Caller::ApiKey => (SessionId::random(), SessionConfig::default(), None),
        Caller::Secret(grant) => (grant.session_id.clone(), grant.config, Some(grant.session_id)),
    };
    let origin = crate::Origin { ip: api.limits.limited_ip(ip), secret };
    api.admit()?;
    api.engine.check_session(&config)?;
    let slot = api.limits.open_socket(ip)?;
    let channel = api.engine.open_realtime_session(WsSessionRequest { config, dialect, session_id, origin })?;
    Ok(ws.protocols(["realtime"]).max_message_size(MAX_MESSAGE_BYTES).max_frame_size(MAX_MESSAGE_BYTES).on_upgrade(
        move |socket| async move {
            let _slot = slot;
            relay(socket, channel.to_client, channel.from_client).await
        },
    ))
}

/// The secret of an `openai-insecure-api-key.<secret>` subprotocol, if one was offered.
pub(crate) fn protocol_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(KEY_PROTOCOL_PREFIX).map(String::from))
        .filter(|s| !s.is_empty())
}

/// Relays until either side ends. What the client sends waits for room in the session's bounded
/// queue before the next message is read (the session takes audio in real time); server events
/// keep flowing meanwhile. A client silent through two pings is gone ([`crate::keepalive`]).
async fn relay(mut socket: WebSocket, mut outbound: mpsc::UnboundedReceiver<String>, inbound: mpsc::Sender<SocketMessage>) {
    let mut held: Option<SocketMessage> = None;
    let mut alive = Keepalive::new(Instant::now());
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            out = outbound.recv() => match out {
                Some(text) => {
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
            },
            permit = inbound.reserve(), if held.is_some() => match (permit, held.take()) {
                (Ok(permit), Some(msg)) => permit.send(msg),
                (Ok(_), None) => {}
                (Err(_), _) => break,
            },
            msg = socket.recv(), if held.is_none() => {
                alive.heard(Instant::now());
                match msg {
                    Some(Ok(Message::Text(text))) => held = Some(SocketMessage::Text(text.to_string())),
                    Some(Ok(Message::Binary(b))) => held = Some(SocketMessage::Binary(b.len())),
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::info!("realtime socket error: {e}");
                        break;
                    }
                }
            }
            _ = pings.tick() => {
                let now = Instant::now();
                if held.is_some() {
                    // Not reading (the session's queue is full): the client was heard just now.
                    alive.heard(now);
                }
                match alive.tick(now) {
                    Tick::Ping => {
                        if socket.send(Message::Ping(Default::default())).await.is_err() {
                            break;
                        }
                    }
                    Tick::GiveUp => {
                        tracing::info!("realtime socket: no answer to two pings, closing");
                        let _ = inbound.try_send(SocketMessage::Lost);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_secret_comes_from_the_browser_subprotocol() {
        let mut h = HeaderMap::new();
        h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("realtime, openai-insecure-api-key.ek_abc, openai-beta.realtime-v1"));
        assert_eq!(protocol_secret(&h).as_deref(), Some("ek_abc"));
        h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("realtime, openai-insecure-api-key."));
        assert_eq!(protocol_secret(&h), None);
        assert_eq!(protocol_secret(&HeaderMap::new()), None);
    }
}
