//! PROTOCOL.md §3: WHIP ingest (RFC 9725) and WHEP playback, both as room participants (§4).
//! A WHIP publisher is a participant that only sends (its token needs `publish`); a WHEP viewer
//! only receives, each receiving audio m-line being a slot (its token needs `subscribe`). The
//! resource is the participant: `/v1/whip/<room>/<identity>` (or `/v1/whep/...`), and `PATCH`
//! (trickle ICE, ICE restart) and `DELETE` act on it with the same credentials as leaving.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Api;
use crate::body::{read_limited, require_content_type};
use crate::error::ApiError as E;
use crate::ids::{ParticipantId, RoomName, SessionId};
use crate::room_token::RoomAction;
use crate::rooms::{JoinRequest, may_act_on, read_offer, room_token, sdp_created};
use crate::sdpfrag::{IceFragment, MAX_SDPFRAG_BYTES, SDPFRAG_TYPE};

const ACCEPT_PATCH: header::HeaderName = header::HeaderName::from_static("accept-patch");

/// The two directions of §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// WHIP: the client publishes.
    Ingest,
    /// WHEP: the client plays.
    Egress,
}

impl Flow {
    fn path(self) -> &'static str {
        match self {
            Flow::Ingest => "whip",
            Flow::Egress => "whep",
        }
    }
}

/// What a `PATCH` did.
pub enum IcePatched {
    /// Candidates added (204).
    Trickled,
    /// ICE restarted: the server's new credentials and candidates (200 + sdpfrag), new ETag.
    Restarted { fragment: IceFragment, etag: String },
}

/// `POST /v1/whip/<room>`.
pub async fn whip(State(api): State<Arc<Api>>, headers: HeaderMap, Path(room): Path<String>, body: Body) -> Result<Response, E> {
    offer(api, headers, room, body, Flow::Ingest).await
}

/// `POST /v1/whep/<room>`.
pub async fn whep(State(api): State<Arc<Api>>, headers: HeaderMap, Path(room): Path<String>, body: Body) -> Result<Response, E> {
    offer(api, headers, room, body, Flow::Egress).await
}

async fn offer(api: Arc<Api>, headers: HeaderMap, room: String, body: Body, flow: Flow) -> Result<Response, E> {
    let room = RoomName::parse(&room)?;
    let action = if flow == Flow::Ingest { RoomAction::Publish } else { RoomAction::Subscribe };
    let claims = room_token(&api, &headers, &room, action)?;
    let (offer, summary) = read_offer(&headers, body).await?;
    match flow {
        Flow::Ingest if !summary.audio_lines.first().is_some_and(|l| l.direction.sends()) => {
            return Err(E::bad_request("invalid_offer", "a WHIP offer's audio m-line must send (sendonly)"));
        }
        Flow::Egress if !summary.audio_lines.iter().any(|l| l.direction.receives()) => {
            return Err(E::bad_request("invalid_offer", "a WHEP offer needs at least one receiving (recvonly) audio m-line"));
        }
        _ => {}
    }
    api.admit()?;
    let identity = claims.sub.clone();
    let answer = api.engine.join_room(JoinRequest { room: room.clone(), claims, offer, summary }).await?;
    let etag = crate::sdpfrag::sdp_attribute(&answer, "ice-ufrag").map(etag_of);
    let mut resp = sdp_created(answer, &format!("/v1/{}/{room}/{identity}", flow.path()));
    let h = resp.headers_mut();
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, v);
    }
    h.insert(ACCEPT_PATCH, HeaderValue::from_static(SDPFRAG_TYPE));
    for link in ice_links(&api.engine.ice_servers(&SessionId::random())) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    Ok(resp)
}

/// The ETag of a resource: its current ICE username fragment, quoted (it changes exactly when
/// an ICE restart does).
pub fn etag_of(ufrag: &str) -> String {
    format!("\"{ufrag}\"")
}

/// RFC 9725 §4.6: one `Link: <url>; rel="ice-server"` per URL of each ICE server.
fn ice_links(servers: &[serde_json::Value]) -> Vec<String> {
    let quoted = |s: &str| s.replace(['"', '\\'], "");
    let mut out = Vec::new();
    for server in servers {
        let urls: Vec<&str> = match &server["urls"] {
            serde_json::Value::String(u) => vec![u.as_str()],
            serde_json::Value::Array(a) => a.iter().filter_map(|u| u.as_str()).collect(),
            _ => Vec::new(),
        };
        for url in urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (server["username"].as_str(), server["credential"].as_str()) {
                link.push_str(&format!("; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"", quoted(u), quoted(c)));
            }
            out.push(link);
        }
    }
    out
}

/// `PATCH /v1/whip/<room>/<identity>` (and WHEP): trickled candidates → 204; new ICE
/// credentials → ICE restart, 200 with the server's fragment and a new ETag.
pub async fn patch(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path((room, identity)): Path<(String, String)>,
    body: Body,
) -> Result<Response, E> {
    let room = RoomName::parse(&room)?;
    let identity = ParticipantId::parse(&identity)?;
    may_act_on(&api, &headers, &room, &identity)?;
    let (fragment, if_match) = read_fragment(&headers, body).await?;
    Ok(patched_response(api.engine.patch_ice(&room, &identity, fragment, if_match).await?))
}

/// A `PATCH` body and its `If-Match`.
pub(crate) async fn read_fragment(headers: &HeaderMap, body: Body) -> Result<(IceFragment, Option<String>), E> {
    require_content_type(headers, SDPFRAG_TYPE)?;
    let bytes = read_limited(headers, body, MAX_SDPFRAG_BYTES).await?;
    let text = std::str::from_utf8(&bytes).map_err(|_| E::bad_request("invalid_sdpfrag", "the fragment is not UTF-8 text"))?;
    let fragment = IceFragment::parse(text)?;
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok((fragment, if_match))
}

/// 204 for trickled candidates; 200 with the server's fragment and new ETag for a restart.
pub(crate) fn patched_response(patched: IcePatched) -> Response {
    match patched {
        IcePatched::Trickled => StatusCode::NO_CONTENT.into_response(),
        IcePatched::Restarted { fragment, etag } => {
            let mut resp = (StatusCode::OK, fragment.to_text()).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG_TYPE));
            if let Ok(v) = HeaderValue::from_str(&etag) {
                h.insert(header::ETAG, v);
            }
            resp
        }
    }
}

/// `DELETE /v1/whip/<room>/<identity>` (and WHEP) → 200: the participant leaves.
pub async fn delete(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path((room, identity)): Path<(String, String)>,
) -> Result<StatusCode, E> {
    let room = RoomName::parse(&room)?;
    let identity = ParticipantId::parse(&identity)?;
    let removed = may_act_on(&api, &headers, &room, &identity)?;
    api.engine.leave_room(&room, &identity, removed).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_become_link_headers() {
        let servers =
            serde_json::json!([{"urls": ["turn:h:3478?transport=udp", "turns:h:5349"], "username": "1700:s", "credential": "c=="}]);
        let links = ice_links(servers.as_array().unwrap());
        assert_eq!(links.len(), 2);
        assert_eq!(
            links[0],
            r#"<turn:h:3478?transport=udp>; rel="ice-server"; username="1700:s"; credential="c=="; credential-type="password""#
        );
    }
}
