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

/// 200 once the views have read every followed topic and the brokers
/// answer; 503 before, while the follower reads again, or while no broker
/// answers (with since when and why).
pub async fn health(State(s): State<ApiState>) -> Response {
    let error = s
        .follower_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let caught_up = s.views().caught_up;
    let outage = s.settings.link.outage();
    let status = match (&outage, &error, caught_up) {
        (Some(_), _, _) => "broker_unreachable",
        (None, Some(_), _) => "degraded",
        (None, None, false) => "starting",
        (None, None, true) => "ok",
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let broker = match &outage {
        None => json!({"reachable": true}),
        Some(o) => json!({
            "reachable": false,
            "unreachable_since_ms": o.since_ms,
            "unreachable_since": chrono::DateTime::from_timestamp_millis(o.since_ms).map(|t| t.to_rfc3339()),
            "unreachable_for_s": o.lasted.as_secs_f64(),
            "error": o.reason,
        }),
    };
    let body = json!({
        "status": status,
        "views_caught_up": caught_up,
        "broker": broker,
        "error": error.or_else(|| s.unready().map(|u| u.message())),
        "uptime_s": s.started.elapsed().as_secs_f64(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    let mut r = (code, Json(body)).into_response();
    if code != StatusCode::OK {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
    }
    r
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
