//! Reading request bodies with a hard size limit, checked before anything is parsed: the
//! declared Content-Length first (refused without reading), then the bytes actually received.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// JSON bodies of the credential endpoints are small; 64 KiB leaves room for long instructions.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

pub fn require_content_type(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    match content_type(headers) {
        Some(ct) if ct == expected => Ok(()),
        _ => Err(ApiError::unsupported_media_type(expected)),
    }
}

pub async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::too_large(limit))
}

/// Parses an optional JSON body: empty means "all defaults".
pub async fn read_json<T: serde::de::DeserializeOwned + Default>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let bytes = read_limited(headers, body, MAX_JSON_BYTES).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    require_content_type(headers, "application/json")?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON for this endpoint: {e}")))
}
