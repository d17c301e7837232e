//! A room request for a room on another node, passed to that node as it came (method, path,
//! credential, body) and its answer passed back. The owner authenticates and answers; this node
//! only relays, once (a request already forwarded is never forwarded again).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use voxrelay_signaling::ApiError;
use voxrelay_signaling::room_wire::{RoomInfo, RoomList};

use voxrelay_signaling::forwarding::FORWARDED_HEADER;

const PASSED_ON: [HeaderName; 6] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::IF_MATCH,
    header::ACCEPT,
    HeaderName::from_static(voxrelay_signaling::node_auth::FORWARDED_FOR),
    HeaderName::from_static(voxrelay_signaling::node_auth::NODE_SIGNATURE),
];
const PASSED_BACK: [HeaderName; 5] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG, header::LINK, header::RETRY_AFTER];

/// Another node's own rooms (`GET /v1/rooms`, marked as forwarded so it answers for itself).
pub async fn rooms_of(http: &reqwest::Client, base: &str, headers: &HeaderMap, from: &str) -> Result<Vec<RoomInfo>, String> {
    let mut req = http.get(format!("{}/v1/rooms", base.trim_end_matches('/'))).header(FORWARDED_HEADER, from);
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    resp.json::<RoomList>().await.map(|l| l.rooms).map_err(|e| e.to_string())
}

pub async fn forward(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
    from: &str,
) -> Result<Response, ApiError> {
    let url = format!("{}{path_and_query}", base.trim_end_matches('/'));
    let mut req = http.request(method, &url).header(FORWARDED_HEADER, from).body(body);
    for name in PASSED_ON {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    let resp = req.send().await.map_err(|e| {
        tracing::warn!(%url, "cluster: forwarding a room request failed: {e}");
        ApiError::overloaded("the node holding this room did not answer; try again").with_code("room_node_unreachable")
    })?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = Response::builder().status(status).extension(voxrelay_signaling::error::Relayed);
    for name in PASSED_BACK {
        if let Some(v) = resp.headers().get(name.as_str()) {
            out = out.header(name, v.as_bytes());
        }
    }
    let body = resp
        .bytes()
        .await
        .map_err(|_| ApiError::overloaded("the node holding this room broke off its answer").with_code("room_node_unreachable"))?;
    out.body(Body::from(body)).map_err(|e| ApiError::internal(format!("relaying the answer: {e}")))
}
