//! A WebSocket request for a call on another node (a Realtime session socket placed there, a
//! call's events or sideband socket): this node opens the same socket on that node first, so the
//! client gets that node's refusal as it gave it (401, 404, 429), and only then accepts the
//! client's upgrade and relays messages both ways until either side closes.

use axum::body::Body;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use voxrelay_signaling::ApiError;
use voxrelay_signaling::forwarding::FORWARDED_HEADER;

/// The largest message relayed either way: a Realtime session's (audio appends), the largest
/// any socket takes; the node holding the call applies its own, smaller limits.
const MAX_MESSAGE_BYTES: usize = voxrelay_signaling::realtime_ws::MAX_MESSAGE_BYTES;

const PASSED_ON: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::SEC_WEBSOCKET_PROTOCOL,
    HeaderName::from_static(voxrelay_signaling::node_auth::FORWARDED_FOR),
    HeaderName::from_static(voxrelay_signaling::node_auth::NODE_SIGNATURE),
];

fn unreachable(e: impl std::fmt::Display) -> Response {
    tracing::warn!("cluster: relaying a socket to the call's node failed: {e}");
    ApiError::overloaded("the node holding this call did not answer; try again").with_code("call_node_unreachable").into_response()
}

pub async fn forward_socket(base: &str, path_and_query: &str, headers: &HeaderMap, ws: WebSocketUpgrade, from: &str) -> Response {
    let base = base.trim_end_matches('/');
    let url = match base.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}{path_and_query}"),
        Some((_, rest)) => format!("ws://{rest}{path_and_query}"),
        None => return unreachable(format!("a node's URL without a scheme: {base}")),
    };
    let mut request = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return unreachable(e),
    };
    for name in PASSED_ON {
        if let Some(v) = headers.get(&name) {
            request.headers_mut().insert(name, v.clone());
        }
    }
    if let Ok(v) = from.parse() {
        request.headers_mut().insert(HeaderName::from_static(FORWARDED_HEADER), v);
    }
    let config = tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE_BYTES));
    let (upstream, answer) = match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
        Ok(ok) => ok,
        Err(tungstenite::Error::Http(refusal)) => return passed_back(*refusal),
        Err(e) => return unreachable(e),
    };
    let ws = match answer.headers().get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|p| p.to_str().ok()) {
        Some(protocol) => ws.protocols([protocol.to_string()]),
        None => ws,
    };
    ws.max_message_size(MAX_MESSAGE_BYTES).on_upgrade(move |client| relay(client, upstream))
}

/// The holding node's refusal, status and JSON body as it sent them.
fn passed_back(refusal: tungstenite::http::Response<Option<Vec<u8>>>) -> Response {
    let status = StatusCode::from_u16(refusal.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = Response::builder().status(status).extension(voxrelay_signaling::error::Relayed);
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = refusal.headers().get(&name) {
            out = out.header(name, v);
        }
    }
    out.body(Body::from(refusal.into_body().unwrap_or_default())).unwrap_or_else(|e| unreachable(e))
}

type Upstream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Messages both ways until either side closes; a close is passed on. Pings are each side's own
/// (both libraries answer them).
async fn relay(client: WebSocket, upstream: Upstream) {
    let (mut to_client, mut from_client) = client.split();
    let (mut to_upstream, mut from_upstream) = upstream.split();
    let up = async {
        while let Some(Ok(msg)) = from_client.next().await {
            let closing = matches!(msg, ws::Message::Close(_));
            let msg = match msg {
                ws::Message::Text(t) => Message::text(t.as_str()),
                ws::Message::Binary(b) => Message::binary(b),
                ws::Message::Close(frame) => Message::Close(
                    frame.map(|f| tungstenite::protocol::CloseFrame { code: f.code.into(), reason: f.reason.as_str().into() }),
                ),
                ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
            };
            if to_upstream.send(msg).await.is_err() || closing {
                break;
            }
        }
        let _ = to_upstream.close().await;
    };
    let down = async {
        while let Some(Ok(msg)) = from_upstream.next().await {
            let closing = matches!(msg, Message::Close(_));
            let msg = match msg {
                Message::Text(t) => ws::Message::text(t.as_str()),
                Message::Binary(b) => ws::Message::binary(b),
                Message::Close(frame) => {
                    ws::Message::Close(frame.map(|f| ws::CloseFrame { code: f.code.into(), reason: f.reason.as_str().into() }))
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if to_client.send(msg).await.is_err() || closing {
                break;
            }
        }
        let _ = to_client.close().await;
    };
    // Either side ending ends both: the other half's close follows from the dropped streams.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
