//! `/health`, `/metrics`, `/openapi.json`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::auth::authenticate;
use crate::config::Scope;
use crate::error::ApiError;
use crate::state::ApiState;

/// 200 once the views have read every followed topic, 503 before (or
/// while the follower reconnects), with what is known.
pub async fn health(State(s): State<ApiState>) -> Response {
    let error = s
        .follower_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let caught_up = s.views().caught_up;
    let status = match (&error, caught_up) {
        (Some(_), _) => "degraded",
        (None, false) => "starting",
        (None, true) => "ok",
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": status,
        "views_caught_up": caught_up,
        "error": error,
        "uptime_s": s.started.elapsed().as_secs_f64(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    (code, Json(body)).into_response()
}

pub async fn metrics(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if !s.config.metrics_public {
        authenticate(&s.config, &headers)?.require(Scope::Read)?;
    }
    let text = crate::metrics::render(&s).await;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
