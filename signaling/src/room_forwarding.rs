//! Scale-out (several nodes on one Redis): a room's requests are served by the node the room
//! lives on. This layer asks the engine where a request's room lives and, when it is another
//! node, has the engine pass the request there and answers with that node's answer. Without a
//! cluster the engine always says "here" and this layer costs a path match.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::body::read_limited;
use crate::ids::RoomName;
use crate::sdp::MAX_SDP_BYTES;
use crate::{Api, ApiError};

/// Set on a request one node passes to another; such a request is never passed on again.
pub const FORWARDED_HEADER: &str = "x-voxrelay-forwarded";

/// The room a request is about, and whether it may create the room (and so claims it). Room
/// tokens are signed and valid on every node: minting one is served anywhere.
fn room_of<'p>(method: &Method, path: &'p str) -> Option<(&'p str, bool)> {
    let rest = path.strip_prefix("/v1/")?;
    let (kind, rest) = rest.split_once('/')?;
    let (room, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let creates = *method == Method::POST;
    match (kind, tail) {
        ("rooms", "tokens") => None,
        ("rooms", "join" | "agent") => Some((room, creates)),
        ("rooms", _) => Some((room, false)),
        ("whip" | "whep", "") => Some((room, creates)),
        ("whip" | "whep", _) => Some((room, false)),
        _ => None,
    }
}

pub async fn forward_rooms(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    let Some((room, claim)) = room_of(req.method(), req.uri().path()) else { return next.run(req).await };
    // A bad name is the handler's 400 to give.
    let Ok(room) = RoomName::parse(room) else { return next.run(req).await };
    let base = match api.engine.room_home(&room, claim).await {
        Ok(None) => return next.run(req).await,
        Ok(Some(base)) => base,
        Err(e) => return e.into_response(),
    };
    if req.headers().contains_key(FORWARDED_HEADER) {
        let message = "the nodes disagree about where this room lives (a claim just changed hands); try again";
        return ApiError::overloaded(message).with_code("room_moved").into_response();
    }
    let (mut parts, body) = req.into_parts();
    let body = match read_limited(&parts.headers, Body::new(body), MAX_SDP_BYTES).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    // The owner limits the client, not this node.
    if let Some(ip) = parts.extensions.get::<crate::limits::ClientIp>().and_then(|ip| ip.0) {
        for (name, value) in api.auth.node_key.vouch(ip, crate::auth::unix_now()) {
            if let Ok(value) = value.parse() {
                parts.headers.insert(name, value);
            }
        }
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    api.engine.forward(&base, parts.method, &path, &parts.headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_requests_are_found_by_path_and_only_creating_ones_claim() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(room_of(&post, "/v1/rooms/standup/join"), Some(("standup", true)));
        assert_eq!(room_of(&post, "/v1/whip/stage"), Some(("stage", true)));
        assert_eq!(room_of(&post, "/v1/whep/stage"), Some(("stage", true)));
        assert_eq!(room_of(&post, "/v1/rooms/standup/agent"), Some(("standup", true)));
        assert_eq!(room_of(&Method::PATCH, "/v1/whip/stage/alice"), Some(("stage", false)));
        assert_eq!(room_of(&get, "/v1/rooms/standup"), Some(("standup", false)));
        assert_eq!(room_of(&Method::DELETE, "/v1/rooms/standup/participants/bob"), Some(("standup", false)));
        assert_eq!(room_of(&post, "/v1/rooms/standup/tokens"), None);
        assert_eq!(room_of(&get, "/v1/rooms"), None);
        assert_eq!(room_of(&post, "/v1/realtime/calls"), None);
    }
}
