//! [`FetchError`]: what can go wrong fetching and publishing bars, and
//! whether trying again can help.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("rate limited (HTTP 429){}", .retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("server error HTTP {status}: {body}")]
    Server { status: u16, body: String },
    #[error("request failed: {0}")]
    Transport(String),
    #[error("response unreadable: {0}")]
    Malformed(String),
    #[error("request refused HTTP {status} (not retried): {body}")]
    Client { status: u16, body: String },
    #[error("{0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] autotrain_kafka::KafkaError),
    #[error("encoding: {0}")]
    Wire(#[from] autotrain_schemas::WireError),
}

impl FetchError {
    /// Worth another attempt after a pause: rate limits, server errors,
    /// timeouts and broken connections, truncated or garbled bodies.
    pub fn is_retriable(&self) -> bool {
        match self {
            FetchError::RateLimited { .. }
            | FetchError::Server { .. }
            | FetchError::Transport(_)
            | FetchError::Malformed(_) => true,
            FetchError::Kafka(e) => e.is_retriable(),
            FetchError::Client { .. } | FetchError::Config(_) | FetchError::Wire(_) => false,
        }
    }

    /// The server's own wait hint (`Retry-After`), if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}
