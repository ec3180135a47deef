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
//! - [`state`] — [`ApiState`]: views, producer, metrics; the follower.
//! - [`routes`] — one file per resource; the router.
//! - [`metrics`] — `/metrics` text.
//! - [`openapi`] — `/openapi.json`.

pub mod auth;
pub mod config;
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
pub use state::{ApiState, Setup};
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
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || follower.join()).await;
    served
}
