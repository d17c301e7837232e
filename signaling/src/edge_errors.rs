//! The last line of the JSON error contract (PROTOCOL.md: every error is
//! `{"error":{"type","code","message"}}`): failures that no handler of ours produced — axum's
//! extractor rejections (a path id that is not UTF-8, a WebSocket request without its upgrade
//! headers), a body the framework refused — come back as plain text or empty. This middleware
//! rewrites any error response that is not already an [`ApiError`] into one, keeping its status
//! and its headers, and refuses oversized request headers with a JSON 431 before hyper's own,
//! bodiless one applies.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode, Relayed};

/// Request headers beyond these get a JSON 431. hyper's parser is set a little above (see the
/// listener) and answers a bare 431 only for requests too large even for it.
pub const MAX_HEADER_COUNT: usize = 64;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How much of a framework rejection's text body is kept as the message.
const MAX_MESSAGE: usize = 512;

pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if let Err(e) = check_headers(req.headers()) {
        return e.into_response();
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let ours = resp.extensions().get::<ErrorCode>().is_some() || resp.extensions().get::<Relayed>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || ours {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_MESSAGE * 4).await {
        Ok(b) => String::from_utf8_lossy(&b).chars().take(MAX_MESSAGE).collect::<String>(),
        Err(_) => String::new(),
    };
    let err = ApiError::from_status(status, text.trim());
    let json = err.clone().into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    parts.extensions.insert(ErrorCode(err.code));
    let (_, body) = json.into_parts();
    Response::from_parts(parts, Body::new(body))
}

pub fn check_headers(headers: &HeaderMap) -> Result<(), ApiError> {
    let bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers.len() > MAX_HEADER_COUNT || bytes > MAX_HEADER_BYTES {
        return Err(ApiError::from_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!(
                "request headers are limited to {MAX_HEADER_COUNT} fields and {MAX_HEADER_BYTES} bytes ({} fields, {bytes} bytes sent)",
                headers.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn call(app: Router, req: axum::http::Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
        let resp = app.layer(axum::middleware::from_fn(json_errors)).oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn framework_rejections_become_json_with_their_status() {
        async fn by_id(axum::extract::Path(id): axum::extract::Path<String>) -> String {
            id
        }
        let app = Router::new().route("/x/{id}", get(by_id));
        let req = axum::http::Request::get("/x/%FF%FE").body(Body::empty()).unwrap();
        let (status, headers, body) = call(app, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert!(body["error"]["message"].as_str().unwrap().contains("UTF-8"), "{body}");
    }

    #[tokio::test]
    async fn an_empty_error_keeps_its_headers_and_gets_a_body() {
        async fn teapot() -> Response {
            (StatusCode::UPGRADE_REQUIRED, [(header::UPGRADE, "websocket")]).into_response()
        }
        let app = Router::new().route("/t", get(teapot));
        let (status, headers, body) = call(app, axum::http::Request::get("/t").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
        assert_eq!(headers[header::UPGRADE], "websocket");
        assert_eq!(body["error"]["code"], "upgrade_required");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }

    #[tokio::test]
    async fn api_errors_and_successes_pass_untouched() {
        async fn ok() -> &'static str {
            "fine"
        }
        async fn api() -> ApiError {
            ApiError::conflict("room_exists", "it exists")
        }
        let app = Router::new().route("/ok", get(ok)).route("/api", get(api));
        let resp = app
            .clone()
            .layer(axum::middleware::from_fn(json_errors))
            .oneshot(axum::http::Request::get("/ok").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let (status, _, body) = call(app, axum::http::Request::get("/api").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "room_exists");
    }

    #[tokio::test]
    async fn another_nodes_errors_are_relayed_as_they_came() {
        async fn relayed() -> Response {
            let body = r#"{"error":{"type":"rate_limit_error","code":"client_secret_in_use","message":"busy"}}"#;
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, [(header::CONTENT_TYPE, "application/json")], body).into_response();
            resp.extensions_mut().insert(Relayed);
            resp
        }
        let app = Router::new().route("/r", get(relayed));
        let (status, _, body) = call(app, axum::http::Request::get("/r").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!((body["error"]["code"].as_str(), body["error"]["message"].as_str()), (Some("client_secret_in_use"), Some("busy")));
    }

    #[tokio::test]
    async fn too_many_or_too_large_headers_get_a_json_431() {
        let app = Router::new().route("/ok", get(|| async { "fine" }));
        let mut req = axum::http::Request::get("/ok");
        for i in 0..=MAX_HEADER_COUNT {
            req = req.header(format!("x-h{i}"), "v");
        }
        let (status, _, body) = call(app.clone(), req.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(body["error"]["code"], "request_headers_too_large");
        let big = "a".repeat(MAX_HEADER_BYTES);
        let req = axum::http::Request::get("/ok").header("cookie", big).body(Body::empty()).unwrap();
        let (status, _, _) = call(app, req).await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
