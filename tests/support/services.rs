//! Processors, the trainer service and the API running in the test's
//! process, each in its own consumer group, stopped on demand; and a small
//! HTTP client for the API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use autotrain_api::{ApiConfig, ApiState, Setup};
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run, ClientSettings, Processor, RunnerConfig};
use autotrain_params::{Controller, ParamsConfig};
use autotrain_trainer::core::TrainerConfig;
use autotrain_trainer::service::{self, intake_config, ServiceCounters};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::unique;

/// Something running in the background until [`Running::stop`].
#[derive(Debug)]
pub struct Running {
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.handle.await?
    }
}

fn when_told() -> (
    oneshot::Sender<()>,
    impl std::future::Future<Output = ()> + Send,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// A processor in consumer group `group` over `topics`.
pub fn start_stage<P: Processor + Send + 'static>(
    settings: &ClientSettings,
    group: &str,
    topics: &[&str],
    core: P,
) -> Running
where
    P::Input: Send,
{
    let (stop, stopped) = when_told();
    let settings = settings.clone();
    let mut rc = RunnerConfig::new(group, topics);
    rc.strict_log_start = true;
    let handle = tokio::spawn(async move {
        run(&settings, &rc, core, Arc::new(Counters::default()), stopped).await?;
        Ok(())
    });
    Running { stop, handle }
}

/// A trainer configuration for tests: small windows, quick re-checks, one
/// attempt, references under `store`.
pub fn trainer_config(store: &std::path::Path) -> TrainerConfig {
    TrainerConfig {
        max_attempts: 1,
        recheck_ms: 200,
        store_dir: store.display().to_string(),
        defaults: autotrain_trainer::spec::TrainSpec {
            train_window: 3_000,
            min_rows: 500,
            restarts: 2,
            max_iter: 60,
            ..Default::default()
        },
        ..TrainerConfig::default()
    }
}

/// The trainer service (its own group).
pub fn start_trainer(settings: &ClientSettings, config: TrainerConfig) -> Running {
    let (stop, stopped) = when_told();
    let settings = settings.clone();
    let mut rc = intake_config(&unique("trainer"));
    rc.strict_log_start = true;
    let handle = tokio::spawn(async move {
        service::run(
            &settings,
            config,
            rc,
            crate::now_ms,
            Arc::new(ServiceCounters::default()),
            stopped,
        )
        .await?;
        Ok(())
    });
    Running { stop, handle }
}

/// The API on a free local port, its parameter replica on the bundled
/// strategy schemas.
pub async fn start_api(
    settings: &ClientSettings,
    api: ApiConfig,
    trainer: TrainerConfig,
) -> Result<(ApiClient, Running)> {
    let schemas =
        autotrain_params::StrategySchema::load_dir(&crate::repo_root().join("strategy_schemas"))?;
    let state = ApiState::new(
        settings,
        Setup {
            api,
            trainer,
            groups: Vec::new(),
            processors: Vec::new(),
        },
        move || Controller::new(ParamsConfig::default(), schemas.clone()),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = when_told();
    let handle = tokio::spawn(async move {
        autotrain_api::serve(listener, state, stopped).await?;
        Ok(())
    });
    let client = ApiClient {
        base,
        http: reqwest::Client::new(),
    };
    // Ready once the views have read the topics.
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.call("GET", "/health", None, None).await?.0 != 200 {
        if Instant::now() > deadline {
            bail!("the API never became healthy");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((client, Running { stop, handle }))
}

/// Calls the API: (status, JSON body or the text as a JSON string).
#[derive(Debug, Clone)]
pub struct ApiClient {
    pub base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base` (`http://host:port`).
    pub fn new(base: impl Into<String>) -> Self {
        ApiClient {
            base: base.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        self.raw(method, path, token, body.map(|b| b.to_string()))
            .await
    }

    /// With a body sent as is (for malformed JSON).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
    ) -> Result<(u16, Value)> {
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes())?,
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Calls and checks the status; the body (the error names both).
    pub async fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let (got, answer) = self.call(method, path, token, body).await?;
        if got != status {
            bail!("{method} {path}: expected {status}, got {got}: {answer}");
        }
        Ok(answer)
    }

    /// Polls `GET path` until `done` holds for the body.
    pub async fn until(
        &self,
        path: &str,
        token: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.call("GET", path, Some(token), None).await?;
            if status == 200 && done(&body) {
                return Ok(body);
            }
            if Instant::now() > deadline {
                bail!("GET {path} never {what}: {status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}
