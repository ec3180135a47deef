//! The router: one file per resource; request metrics and a JSON 404 for
//! unknown paths.

pub mod dashboard;
pub mod features;
pub mod flags;
pub mod models;
pub mod ops;
pub mod params;
pub mod trainings;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::ApiState;

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route(
            "/api/trainings",
            post(trainings::submit).get(trainings::list),
        )
        .route("/api/trainings/stats", get(trainings::stats))
        .route(
            "/api/trainings/{id}",
            get(trainings::show).delete(trainings::cancel),
        )
        .route("/api/trainings/{id}/retry", post(trainings::retry))
        .route("/api/trainings/{id}/rerun", post(trainings::rerun))
        .route("/api/trainings/{id}/logs", get(trainings::logs))
        .route("/api/models", get(models::list))
        .route(
            "/api/models/{*rest}",
            get(models::show)
                .post(models::act)
                .fallback(models::method_not_allowed),
        )
        .route("/api/features/{instrument}/window", get(features::window))
        .route("/api/instruments", get(dashboard::instruments))
        .route("/api/instruments/{instrument}/chart", get(dashboard::chart))
        .route("/api/params", get(dashboard::params))
        .route("/api/whoami", get(dashboard::whoami))
        .route("/api/flags", get(flags::list))
        .route("/api/flags/{id}", get(flags::show))
        .route("/api/flags/{id}/{action}", post(flags::decide))
        .route(
            "/preset/register/{strategy}/{instrument}",
            post(params::register),
        )
        .route("/param/{strategy}/{instrument}", get(params::advise))
        .route(
            "/param/{strategy}/{instrument}/resume",
            post(params::resume),
        )
        .route(
            "/learn/outcome/{strategy}/{instrument}/{preset_id}",
            post(params::outcome),
        )
        .merge(crate::dashboard::routes())
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!("no route {} {}", req.method(), req.uri().path()))
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), ready))
        .layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .layer(axum::middleware::from_fn(bounded_uri))
        .with_state(state)
}

/// Every answer under `/api`, `/param`, `/preset` and `/learn` reads or
/// checks against the views: while they do not reflect the topics (still
/// loading, or the broker unreachable) the answer is 503 with the reason
/// and `Retry-After`, never an empty or stale result presented as truth.
async fn ready(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let gated = ["/api/", "/param/", "/preset/", "/learn/"]
        .iter()
        .any(|p| path.starts_with(p));
    if gated {
        if let Some(why) = s.unready() {
            let mut r =
                axum::response::IntoResponse::into_response(ApiError::Unavailable(why.message()));
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
            return r;
        }
    }
    next.run(req).await
}

/// The longest request target (path and query, bytes) the API reads: every
/// identifier it takes is far shorter, and a longer one is the client's
/// mistake (414), not the server's.
pub const MAX_URI_BYTES: usize = 8_192;

async fn bounded_uri(req: Request, next: Next) -> Response {
    let len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if len > MAX_URI_BYTES {
        return axum::response::IntoResponse::into_response(ApiError::UriTooLong(format!(
            "the request target is {len} bytes; at most {MAX_URI_BYTES}"
        )));
    }
    next.run(req).await
}

/// Counts every request by method, route and status, and times it.
async fn track(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    s.metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
