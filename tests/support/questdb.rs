//! A local stand-in for QuestDB's ILP-over-HTTP endpoint (no QuestDB
//! server can run here): `GET /settings` (protocol negotiation) and
//! `POST /write` storing the line-protocol text, with scripted failures.
//! It keeps lines as sent; the tests apply QuestDB's upsert-key semantics.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

#[derive(Debug, Default)]
pub struct IlpState {
    /// Every accepted line, in arrival order.
    pub lines: Vec<String>,
    /// Requests to /write answered with a 500 before accepting again.
    pub fail_next: usize,
    pub failed: usize,
    pub writes: usize,
    /// Latency added to every write (a slow database).
    pub delay: std::time::Duration,
}

type Shared = Arc<Mutex<IlpState>>;

#[derive(Debug)]
pub struct IlpServer {
    pub addr: SocketAddr,
    pub state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for IlpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl IlpServer {
    pub async fn start() -> anyhow::Result<Self> {
        let state: Shared = Arc::default();
        let app = Router::new()
            .route("/settings", get(settings))
            .route("/write", post(write))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(IlpServer { addr, state, task })
    }

    /// A questdb-rs configuration string for this endpoint (the client's
    /// own retries off, so failures reach the sink's retry loop).
    pub fn conf(&self) -> String {
        format!("http::addr={};retry_timeout=0;", self.addr)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, IlpState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn settings() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "config": {"line.proto.support.versions": [1, 2], "cairo.max.file.name.length": 127},
        "preferences.version": 0,
        "preferences": {}
    }))
}

async fn write(State(state): State<Shared>, body: String) -> impl IntoResponse {
    let delay = state.lock().unwrap_or_else(|p| p.into_inner()).delay;
    tokio::time::sleep(delay).await;
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s.writes += 1;
    if s.fail_next > 0 {
        s.fail_next -= 1;
        s.failed += 1;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "{\"code\":\"internal error\"}",
        )
            .into_response();
    }
    s.lines.extend(body.lines().map(str::to_string));
    StatusCode::NO_CONTENT.into_response()
}
