//! [`Fetcher`]: one page of bars over HTTP, within the rate limit and with
//! retries.
//!
//! Every request first takes a token from a token bucket (`governor`),
//! shared by all streams using the same fetcher (or the same limiter), so
//! backfilling many symbols stays inside an exchange's request budget.
//! Rate limits (429, honouring `Retry-After`), server errors, timeouts,
//! dropped connections and unreadable bodies are retried with exponential
//! backoff and jitter (`backon`); other 4xx answers are final.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autotrain_schemas::Bar;
use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;

use crate::endpoint::Endpoint;
use crate::error::FetchError;
use crate::stream::StreamId;

#[derive(Debug, Clone)]
pub struct FetcherConfig {
    /// Sustained request rate of the token bucket.
    pub requests_per_second: u32,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
    /// Whole-request timeout.
    pub timeout: Duration,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
    /// Retries of one page before the poller stops with the error.
    pub retry_times: usize,
}

impl Default for FetcherConfig {
    fn default() -> Self {
        FetcherConfig {
            requests_per_second: 5,
            burst: 5,
            timeout: Duration::from_secs(20),
            retry_min_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(60),
            retry_times: 8,
        }
    }
}

/// What the fetcher did, for reports and metrics.
#[derive(Debug, Default)]
pub struct FetchStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub server_errors: AtomicU64,
    pub transport_errors: AtomicU64,
    pub malformed: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FetchCounts {
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub server_errors: u64,
    pub transport_errors: u64,
    pub malformed: u64,
}

impl FetchStats {
    pub fn snapshot(&self) -> FetchCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FetchCounts {
            requests: g(&self.requests),
            retries: g(&self.retries),
            rate_limited: g(&self.rate_limited),
            server_errors: g(&self.server_errors),
            transport_errors: g(&self.transport_errors),
            malformed: g(&self.malformed),
        }
    }
}

pub struct Fetcher {
    http: reqwest::Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    config: FetcherConfig,
    pub stats: Arc<FetchStats>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("config", &self.config)
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl Fetcher {
    pub fn new(config: FetcherConfig) -> Result<Self, FetchError> {
        let rate = NonZeroU32::new(config.requests_per_second)
            .ok_or_else(|| FetchError::Config("requests_per_second must be > 0".into()))?;
        let burst = NonZeroU32::new(config.burst.max(1)).unwrap_or(rate);
        let limiter = Arc::new(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        ));
        Self::with_limiter(config, limiter)
    }

    /// A fetcher drawing from an existing token bucket (one budget shared
    /// by several fetchers).
    pub fn with_limiter(
        config: FetcherConfig,
        limiter: Arc<DefaultDirectRateLimiter>,
    ) -> Result<Self, FetchError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("autotrain/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Config(format!("http client: {e}")))?;
        Ok(Fetcher {
            http,
            limiter,
            config,
            stats: Arc::new(FetchStats::default()),
        })
    }

    pub fn limiter(&self) -> Arc<DefaultDirectRateLimiter> {
        self.limiter.clone()
    }

    async fn get_once(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        self.limiter.until_ready().await;
        bump(&self.stats.requests);
        let response = self.http.get(url).send().await.map_err(|e| {
            bump(&self.stats.transport_errors);
            FetchError::Transport(e.to_string())
        })?;
        let status = response.status();
        if status.as_u16() == 429 {
            bump(&self.stats.rate_limited);
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(FetchError::RateLimited { retry_after });
        }
        let body = response.bytes().await.map_err(|e| {
            bump(&self.stats.transport_errors);
            FetchError::Transport(format!("reading the body: {e}"))
        })?;
        let excerpt = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        if status.is_server_error() {
            bump(&self.stats.server_errors);
            return Err(FetchError::Server {
                status: status.as_u16(),
                body: excerpt(),
            });
        }
        if !status.is_success() {
            return Err(FetchError::Client {
                status: status.as_u16(),
                body: excerpt(),
            });
        }
        Ok(body.to_vec())
    }

    /// The bars of `[from_ms, to_ms)` as the endpoint returns them.
    pub async fn page(
        &self,
        endpoint: &Endpoint,
        stream: &StreamId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Bar>, FetchError> {
        let url = endpoint.url(stream, from_ms, to_ms);
        let source = endpoint.describe();
        let attempt = || async {
            let body = self.get_once(&url).await?;
            endpoint.parse(stream, &body, &source).inspect_err(|_| {
                bump(&self.stats.malformed);
            })
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.retry_min_delay)
            .with_max_delay(self.config.retry_max_delay)
            .with_max_times(self.config.retry_times)
            .with_jitter();
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(FetchError::is_retriable)
            .adjust(|e, delay| match (e.retry_after(), delay) {
                (Some(hint), Some(d)) => Some(hint.max(d)),
                (_, d) => d,
            })
            .notify(|e, delay| {
                bump(&self.stats.retries);
                tracing::warn!(%url, error = %e, ?delay, "retrying");
            })
            .await
    }
}
