//! The one mapping from an API failure to an HTTP status and the JSON error body of
//! PROTOCOL.md: `{"error":{"type","code","message"}}`. Every handler returns `ApiError`, so a
//! client never sees a plain-text or empty error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Broad class, OpenAI style: `invalid_request_error`, `authentication_error`, ...
    pub kind: &'static str,
    /// Stable machine-readable code tests and clients match on.
    pub code: &'static str,
    pub message: String,
    /// Seconds, for 429/503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, code, message: message.into(), retry_after: None }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", code, message)
    }
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", code, message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_error", code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", code, message)
    }
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "body_too_large",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }
    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_content_type",
            format!("Content-Type must be {expected}"),
        )
    }
    pub fn overloaded(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "overloaded", message);
        e.retry_after = Some(1);
        e
    }
    /// 429 with `Retry-After: seconds`.
    pub fn rate_limited(message: impl Into<String>, retry_after_s: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limited", message);
        e.retry_after = Some(retry_after_s.max(1));
        e
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_request_error", code, message)
    }
    /// 429 `room_full` (PROTOCOL.md §4): the room is at its `max_participants`.
    pub fn room_full(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "invalid_request_error", "room_full", message)
    }
    /// 405 for a known path and a method it does not take.
    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method_not_allowed", "this endpoint does not take that method")
    }
    /// 412: a conditional request (`If-Match`) names a state the resource is no longer in.
    pub fn precondition_failed(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, "invalid_request_error", code, message)
    }
    /// 422: well-formed, but asks for something this resource does not do.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error", code, message)
    }
    /// 503 `cluster_unavailable`: several nodes, and their Redis cannot be reached now, so
    /// `what` (a consequence, said to the client) until it is back.
    pub fn cluster_unavailable(what: &str) -> Self {
        Self::overloaded(format!("the cluster's Redis cannot be reached, so {what}; try again shortly")).with_code("cluster_unavailable")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal_error", message)
    }
    /// An error the framework or the HTTP layer produced (no handler of ours): its status kept,
    /// a code named after the status, and `message` (their text) when there is one.
    pub fn from_status(status: StatusCode, message: &str) -> Self {
        let (kind, code) = match status.as_u16() {
            400 => ("invalid_request_error", "invalid_request"),
            401 => ("authentication_error", "missing_credentials"),
            403 => ("permission_error", "forbidden"),
            404 => ("invalid_request_error", "not_found"),
            405 => ("invalid_request_error", "method_not_allowed"),
            408 => ("invalid_request_error", "request_timeout"),
            413 => ("invalid_request_error", "body_too_large"),
            415 => ("invalid_request_error", "unsupported_content_type"),
            422 => ("invalid_request_error", "unprocessable"),
            426 => ("invalid_request_error", "upgrade_required"),
            429 => ("rate_limit_error", "rate_limited"),
            431 => ("invalid_request_error", "request_headers_too_large"),
            500..=599 => ("server_error", "internal_error"),
            _ => ("invalid_request_error", "http_error"),
        };
        let message =
            if message.is_empty() { status.canonical_reason().unwrap_or("request refused").to_string() } else { message.to_string() };
        Self::new(status, kind, code, message)
    }
    /// The same error under a more precise code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"type": self.kind, "code": self.code, "message": self.message}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Marks an answer relayed from another node of the cluster: its errors are that node's JSON
/// errors as it sent them (and counted there), not framework errors to rewrite.
#[derive(Clone, Copy, Debug)]
pub struct Relayed;

/// Marks a response as an API error, for the error counters in `/metrics`.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        resp.extensions_mut().insert(ErrorCode(self.code));
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
