//! A room's requests are served by the node the room lives on: this layer asks the engine where
//! a request's room lives and, when it is another node, passes the request there.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{already_forwarded, moved, pass_on};
use crate::Api;
use crate::ids::RoomName;

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
    if already_forwarded(&req) {
        return moved("room_moved", "room");
    }
    pass_on(&api, &base, req).await
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
