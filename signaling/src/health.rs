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
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], api.engine.metrics_text())
}
