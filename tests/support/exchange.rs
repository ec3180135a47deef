//! A local exchange for the connector tests: serves Binance-style klines
//! and CoinGecko-style OHLC ranges over real HTTP from recorded bars (the
//! bundled real files), with scripted faults: 429 with `Retry-After`, 500,
//! a truncated body, an out-of-order page, a page of the wrong range.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use autotrain_schemas::Bar;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

/// What the next request gets instead of a correct answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    RateLimited {
        retry_after_s: u64,
    },
    ServerError,
    /// The right body cut in half.
    Truncated,
    /// The right rows in reverse order.
    OutOfOrder,
    /// The previous answer again (an endpoint ignoring the range).
    Previous,
}

/// One request the server answered: (path, start of the asked range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub path: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub fault: Option<Fault>,
}

#[derive(Debug, Default)]
pub struct ExchangeState {
    pub bars: Vec<Bar>,
    pub faults: VecDeque<Fault>,
    pub served: Vec<Served>,
    previous: Option<String>,
}

type Shared = Arc<Mutex<ExchangeState>>;

#[derive(Debug)]
pub struct ExchangeServer {
    pub addr: SocketAddr,
    pub state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ExchangeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ExchangeServer {
    /// Starts on a free local port, serving `bars` (sorted by ts).
    pub async fn start(bars: Vec<Bar>) -> anyhow::Result<Self> {
        let state: Shared = Arc::new(Mutex::new(ExchangeState {
            bars,
            ..ExchangeState::default()
        }));
        let app = Router::new()
            .route("/api/v3/klines", get(klines))
            .route("/api/v3/coins/{coin}/ohlc/range", get(ohlc_range))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ExchangeServer { addr, state, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push_faults(&self, faults: &[Fault]) {
        self.lock().faults.extend(faults.iter().copied());
    }

    pub fn served(&self) -> Vec<Served> {
        self.lock().served.clone()
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, ExchangeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn num(q: &std::collections::HashMap<String, String>, k: &str) -> i64 {
    q.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn answer(state: &Shared, path: String, from_ms: i64, to_ms: i64, rows: Vec<Value>) -> Response {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    let fault = s.faults.pop_front();
    s.served.push(Served {
        path,
        from_ms,
        to_ms,
        fault,
    });
    let body = Value::Array(rows.clone()).to_string();
    let json_body =
        |text: String| ([(header::CONTENT_TYPE, "application/json")], text).into_response();
    let response = match fault {
        Some(Fault::RateLimited { retry_after_s }) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_s.to_string())],
            "{\"code\":-1003,\"msg\":\"Too many requests\"}",
        )
            .into_response(),
        Some(Fault::ServerError) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "upstream timeout").into_response()
        }
        Some(Fault::Truncated) => json_body(body[..body.len() / 2].to_string()),
        Some(Fault::OutOfOrder) => {
            let mut reversed = rows;
            reversed.reverse();
            json_body(Value::Array(reversed).to_string())
        }
        Some(Fault::Previous) => json_body(s.previous.clone().unwrap_or_else(|| body.clone())),
        None => json_body(body.clone()),
    };
    s.previous = Some(body);
    response
}

async fn klines(
    State(state): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let (from, to, limit) = (
        num(&q, "startTime"),
        num(&q, "endTime"),
        num(&q, "limit").max(1),
    );
    let rows: Vec<Value> = {
        let s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.bars
            .iter()
            .filter(|b| b.ts >= from && b.ts <= to)
            .take(limit as usize)
            .map(|b| {
                json!([
                    b.ts,
                    b.open.to_string(),
                    b.high.to_string(),
                    b.low.to_string(),
                    b.close.to_string(),
                    b.volume.to_string(),
                    b.ts + 1_799_999,
                    "0",
                    1,
                    "0",
                    "0",
                    "0"
                ])
            })
            .collect()
    };
    answer(&state, "/api/v3/klines".into(), from, to + 1, rows)
}

async fn ohlc_range(
    State(state): State<Shared>,
    Path(coin): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let (from, to) = (num(&q, "from") * 1_000, num(&q, "to") * 1_000);
    let rows: Vec<Value> = {
        let s = state.lock().unwrap_or_else(|p| p.into_inner());
        let step = 1_800_000;
        s.bars
            .iter()
            .filter(|b| b.ts + step >= from && b.ts + step <= to)
            .map(|b| json!([b.ts + step, b.open, b.high, b.low, b.close]))
            .collect()
    };
    answer(
        &state,
        format!("/api/v3/coins/{coin}/ohlc/range"),
        from,
        to,
        rows,
    )
}
