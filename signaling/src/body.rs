//! Reading request bodies with a hard size limit, checked before anything is parsed: the
//! declared Content-Length first (refused without reading), then the bytes actually received.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// JSON bodies of the credential endpoints are small; 64 KiB leaves room for long instructions.
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// A whole body must arrive within this, however it is paced: the header read timeout stops at
/// the headers, and a client dribbling a byte now and then would otherwise hold a connection
/// and a handler (and keep a draining server's connection open) for as long as it likes.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
    read_within(headers, body, limit, BODY_READ_TIMEOUT).await
}

async fn read_within(headers: &HeaderMap, body: Body, limit: usize, timeout: std::time::Duration) -> Result<Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(ApiError::too_large(limit)),
        Ok(Err(e)) => Err(ApiError::bad_request("body_unreadable", format!("the request body could not be read: {e}"))),
        Err(_) => Err(ApiError::from_status(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            &format!("the request body did not arrive within {} s", BODY_READ_TIMEOUT.as_secs()),
        )),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Parses an optional JSON body: empty means "all defaults".
pub async fn read_json<T: serde::de::DeserializeOwned + Default>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let bytes = read_limited(headers, body, MAX_JSON_BYTES).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    require_content_type(headers, "application/json")?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON for this endpoint: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body whose next byte never comes.
    struct Stalled;

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_never_finishes_is_refused_with_408() {
        let err = read_within(&HeaderMap::new(), Body::new(Stalled), 1024, std::time::Duration::from_millis(20)).await.unwrap_err();
        assert_eq!(err.status, axum::http::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(err.code, "request_timeout");
    }

    #[tokio::test]
    async fn too_large_and_declared_too_large_are_413() {
        let big = Body::from(vec![b'a'; 2048]);
        assert_eq!(read_limited(&HeaderMap::new(), big, 1024).await.unwrap_err().code, "body_too_large");
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "5000".parse().unwrap());
        assert_eq!(read_limited(&h, Body::empty(), 1024).await.unwrap_err().code, "body_too_large");
        assert_eq!(&read_limited(&HeaderMap::new(), Body::from("ok"), 1024).await.unwrap()[..], b"ok");
    }
}
