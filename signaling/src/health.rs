//! `/healthz` (the process answers) and `/readyz` (it takes new sessions: not draining, audio
//! workers up).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use crate::Api;

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

pub async fn metrics(State(api): State<Arc<Api>>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let mut text = api.engine.metrics_text();
    text.push_str("# HELP voxrelay_api_errors_total API errors answered, by code.\n# TYPE voxrelay_api_errors_total counter\n");
    for (code, n) in api.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        text.push_str(&format!("voxrelay_api_errors_total{{code=\"{code}\"}} {n}\n"));
    }
    text.push_str(&api.limits.prometheus());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
