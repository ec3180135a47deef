//! The control-plane HTTP API (`autotrain serve`, and inside `autotrain
//! demo`): the endpoints the seed systems' users expect, over topics.
//! Commands are events (`training.triggers`, `training.commands`,
//! `market.flags`, `param.presets`, `trade.outcomes`); reads come from
//! [`Views`] folded from topics by a follower thread.
//!
//! # Layout
//! - [`config`] — `[api]`: bind address, dev mode, tokens (as hashes).
//! - [`auth`] — bearer tokens → [`Principal`] (scopes, tenant).
//! - [`error`] — [`ApiError`] → JSON errors; extractors that make malformed
//!   requests 400/422.
//! - [`views`] — [`Views`]: trainings, registry, flags, a parameter
//!   controller replica; pure folds.
//! - [`charts`] — per-instrument closes and regimes for the dashboard.
//! - [`dashboard`] — the web dashboard (`/dashboard`): static page,
//!   vendored uPlot, live updates over server-sent events.
//! - [`state`] — [`ApiState`]: views, producer, metrics; the follower.
//! - [`routes`] — one file per resource; the router.
//! - [`metrics`] — `/metrics` text.
//! - [`openapi`] — `/openapi.json`.

pub mod auth;
pub mod charts;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod views;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use auth::{hash_token, Principal};
pub use config::{ApiConfig, Scope, TokenConfig};
pub use error::ApiError;
pub use routes::router;
pub use state::{ApiState, Setup, Unready};
pub use views::Views;

/// Serves the API on `listener` until `shutdown` resolves, with the views'
/// follower running beside it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (state, stop) = (state.clone(), stop.clone());
        std::thread::Builder::new()
            .name("api-views".into())
            .spawn(move || state.follow_until(&stop))?
    };
    // In-flight requests get `shutdown_grace_ms` after the signal; then the
    // server stops anyway (a request waiting on an unreachable broker must
    // not hold a SIGTERM for minutes).
    let grace = std::time::Duration::from_millis(state.config.shutdown_grace_ms);
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = signalled_tx.send(());
    };
    let served = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown);
    let served = tokio::select! {
        r = std::future::IntoFuture::into_future(served) => r,
        () = async {
            if signalled_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "requests still in flight after the shutdown grace; stopping anyway");
            Ok(())
        }
    };
    stop.store(true, Ordering::Relaxed);
    // The follower notices the flag within a poll (100 ms) unless a broker
    // call holds it; do not wait for that beyond the grace either.
    let _ = tokio::time::timeout(grace, tokio::task::spawn_blocking(move || follower.join())).await;
    served
}
