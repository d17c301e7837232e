//! `/healthz` (the process answers) and `/readyz` (it takes new sessions: not draining, audio
//! workers up).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use crate::Api;
use crate::error::ApiError;
use crate::limits::ClientIp;

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(api): State<Arc<Api>>) -> (StatusCode, Json<serde_json::Value>) {
    if api.engine.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"})))
    }
}

/// Metrics name every call, room and error the server has seen: readable with the API key, from
/// loopback (a sidecar scraper, the operator's own tools), or by anyone when the operator says
/// so (`--metrics-public`).
pub async fn metrics(
    State(api): State<Arc<Api>>,
    axum::Extension(ip): axum::Extension<ClientIp>,
    headers: axum::http::HeaderMap,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    let loopback = ip.0.is_some_and(|ip| ip.is_loopback()) || ip.0.is_none();
    if !(api.metrics_public || loopback) {
        api.auth.require_api_key(&headers)?;
    }
    let mut text = api.engine.metrics_text();
    text.push_str("# HELP voxrelay_api_errors_total API errors answered, by code.\n# TYPE voxrelay_api_errors_total counter\n");
    for (code, n) in api.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        text.push_str(&format!("voxrelay_api_errors_total{{code=\"{code}\"}} {n}\n"));
    }
    text.push_str(&api.limits.prometheus());
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallCreated, CallId, CallRequest, Engine, EventChannel, RtpCreated, SessionConfig, SessionId};
    use axum::http::{HeaderMap, HeaderValue, header};

    struct NoEngine;

    #[async_trait::async_trait]
    impl Engine for NoEngine {
        fn check_agent(&self, _: &str) -> Result<(), ApiError> {
            Ok(())
        }
        async fn create_call(&self, _: CallRequest) -> Result<CallCreated, ApiError> {
            Err(ApiError::internal("none"))
        }
        async fn end_call(&self, _: &CallId, _: Option<&SessionId>) -> Result<(), ApiError> {
            Ok(())
        }
        async fn create_rtp_session(&self, _: SessionConfig, _: SessionId, _: crate::Origin) -> Result<RtpCreated, ApiError> {
            Err(ApiError::internal("none"))
        }
        fn attach_events(&self, _: &CallId, _: bool) -> Result<EventChannel, ApiError> {
            Err(ApiError::internal("none"))
        }
        fn is_ready(&self) -> bool {
            true
        }
        fn metrics_text(&self) -> String {
            "voxrelay_active_calls 0\n".into()
        }
    }

    fn api(public: bool) -> Arc<Api> {
        Arc::new(Api::new(crate::Auth::new("sk_metrics".into()), Arc::new(NoEngine)).with_public_metrics(public))
    }

    fn key() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk_metrics"));
        h
    }

    #[tokio::test]
    async fn metrics_need_the_api_key_unless_loopback_or_public() {
        let remote = ClientIp(Some("203.0.113.9".parse().unwrap()));
        let local = ClientIp(Some("127.0.0.1".parse().unwrap()));
        let refused = metrics(State(api(false)), axum::Extension(remote), HeaderMap::new()).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        let (_, text) = metrics(State(api(false)), axum::Extension(remote), key()).await.unwrap();
        assert!(text.contains("voxrelay_active_calls 0"));
        assert!(metrics(State(api(false)), axum::Extension(local), HeaderMap::new()).await.is_ok());
        assert!(metrics(State(api(true)), axum::Extension(remote), HeaderMap::new()).await.is_ok());
    }
}
