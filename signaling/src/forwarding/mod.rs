//! Scale-out (several nodes on one Redis): a request is served by the node that holds what it
//! is about. A room's requests go to the room's node ([`rooms`]); a new 1:1 call goes to the
//! least-loaded node and a live call's requests to the node that made its id ([`calls`]). The
//! engine says where; these layers pass the request on, once, and answer with that node's
//! answer. Without a cluster the engine always says "here" and a layer costs a path match.

pub mod calls;
pub mod rooms;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};

use crate::body::read_limited;
use crate::sdp::MAX_SDP_BYTES;
use crate::{Api, ApiError};

/// Set on a request one node passes to another; such a request is never passed on again.
pub const FORWARDED_HEADER: &str = "x-voxrelay-forwarded";

/// The largest body passed on: an offer with its session object (the largest any request takes).
const MAX_FORWARDED_BYTES: usize = MAX_SDP_BYTES * 2;

/// Whether this node should answer a request another node says belongs elsewhere: it was
/// already passed on once (the nodes' views differ for a moment), so it is not passed again.
pub(crate) fn already_forwarded(req: &Request) -> bool {
    req.headers().contains_key(FORWARDED_HEADER)
}

/// Passes `req` to the node at `base` and answers with its answer: an HTTP request as it came
/// (method, path, credential, body), a WebSocket as a socket relayed both ways.
pub(crate) async fn pass_on(api: &Api, base: &str, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    // The owner limits the client, not this node.
    if let Some(ip) = parts.extensions.get::<crate::limits::ClientIp>().and_then(|ip| ip.0) {
        for (name, value) in api.auth.node_key.vouch(ip, crate::auth::unix_now()) {
            if let Ok(value) = value.parse() {
                parts.headers.insert(name, value);
            }
        }
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    if is_upgrade(&parts.headers) {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => api.engine.forward_socket(base, &path, &parts.headers, ws).await,
            Err(e) => e.into_response(),
        };
    }
    let body = match read_limited(&parts.headers, Body::new(body), MAX_FORWARDED_BYTES).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    api.engine.forward(base, parts.method, &path, &parts.headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

fn is_upgrade(headers: &axum::http::HeaderMap) -> bool {
    headers.get(axum::http::header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The answer when the nodes disagree about where something lives (a claim just changed hands).
pub(crate) fn moved(code: &'static str, what: &str) -> Response {
    let message = format!("the nodes disagree about where this {what} lives (it just changed hands); try again");
    ApiError::overloaded(message).with_code(code).into_response()
}
