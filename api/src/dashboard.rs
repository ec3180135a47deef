//! The web dashboard at `/dashboard`: one static page (`api/dashboard/`)
//! that reads the JSON API with the bearer token the user gives it, so
//! it has exactly the API's authentication and scopes (reads need
//! `ml:read`; a button shows only when `/api/whoami` lists its scope, and
//! the server refuses regardless). Charts are drawn with uPlot, vendored
//! from npm with its licence (`scripts/vendor-dashboard`); nothing loads
//! from elsewhere. `/dashboard/events` streams server-sent events when
//! the views fold new records, and the page refreshes what changed.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;

use crate::auth::Principal;
use crate::config::Scope;
use crate::error::ApiError;
use crate::state::ApiState;

const INDEX: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");
const UPLOT_JS: &str = include_str!("../dashboard/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../dashboard/vendor/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../dashboard/vendor/LICENSE.uPlot");

/// Changes folded into one event at most this often.
const COALESCE: Duration = Duration::from_millis(500);

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, kind)], body)
}

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/dashboard", get(|| async { Html(INDEX) }))
        .route("/dashboard/", get(|| async { Html(INDEX) }))
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/dashboard/vendor/uPlot.iife.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", UPLOT_JS) }),
        )
        .route(
            "/dashboard/vendor/uPlot.min.css",
            get(|| async { asset("text/css; charset=utf-8", UPLOT_CSS) }),
        )
        .route(
            "/dashboard/vendor/LICENSE.uPlot",
            get(|| async { asset("text/plain; charset=utf-8", UPLOT_LICENSE) }),
        )
        .route("/dashboard/events", get(events))
}

/// Server-sent events: `changed` with the records folded per topic so
/// far, at once and then whenever the views moved (at most every 500 ms);
/// comments keep the connection alive.
async fn events(
    State(s): State<ApiState>,
    p: Principal,
) -> Result<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    p.require(Scope::Read)?;
    let rx = s.changes.subscribe();
    let snapshot = |s: &ApiState| {
        let v = s.views();
        Event::default()
            .event("changed")
            .json_data(serde_json::json!({
                "records": v.tallies.records,
                "caught_up": v.caught_up,
            }))
            .unwrap_or_else(|_| Event::default().event("changed"))
    };
    let first = snapshot(&s);
    let rest = futures::stream::unfold((rx, s), move |(mut rx, s)| async move {
        rx.changed().await.ok()?;
        tokio::time::sleep(COALESCE).await;
        rx.borrow_and_update();
        let e = snapshot(&s);
        Some((Ok(e), (rx, s)))
    });
    let stream = futures::StreamExt::chain(futures::stream::once(async { Ok(first) }), rest);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
