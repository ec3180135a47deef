//! `autotrain run PROCESSOR`: one processor as a long-running service in its
//! consumer group, until Ctrl-C / SIGTERM (then it drains and commits).

use std::sync::Arc;

use anyhow::Result;
use autotrain_connector_questdb::QuestDbSink;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run_sink, Processor, RunStats, SinkConfig};
use autotrain_validator::Calendar;

use crate::config::Config;
use crate::context::{shutdown_signal, Context};
use crate::topology::{Build, Stage};

#[derive(Debug, clap::Subcommand)]
pub enum RunCommand {
    /// `market.bars.raw` + ops decisions ⇒ `market.bars`, `market.flags`.
    /// State (last bars, checksums, held bars) is rebuilt on start by
    /// replaying what the group already processed.
    Validator(ValidatorArgs),
    /// `market.bars`, `market.flags`, `features`, `regimes` ⇒ QuestDB over
    /// ILP/HTTP, batched; offsets stored after each accepted flush. The
    /// tables (`connectors/questdb/tables.sql`, with upsert keys) are
    /// created at start unless `--no-create-tables`.
    Questdb(QuestdbArgs),
    /// `training.status` ⇒ a webhook: each completed, failed or cancelled
    /// training and each trainer alert, POSTed in batches with retries;
    /// offsets stored after the receiver's 2xx (at least once, stable ids).
    Notify(NotifyArgs),
    /// `model.updates` + `training.status` ⇒ MLflow (`[mlflow]`): each
    /// registered version a finished run (params, metrics, lineage tags,
    /// the model's files) and a registered model version; each failed or
    /// cancelled training a failed or killed run; `prod`/`staging` moves
    /// and rollbacks ⇒ MLflow aliases. Idempotent; MLflow down ⇒ retried
    /// with backoff, then caught up.
    Mlflow(MlflowArgs),
    /// `market.bars` ⇒ `features` under the bundled feature contract;
    /// engines rebuilt on start by replaying what the group processed.
    Features(FeaturesArgs),
    /// `features` + `model.updates` ⇒ `training.triggers`: drift detectors
    /// per instrument and feature, PSI against the prod model's reference
    /// and log-likelihood decay under it (`[drift]` in the config),
    /// cooldown per model key.
    Drift(GroupArgs),
    /// `features` + `model.updates` ⇒ `regimes`: the regime posterior of
    /// every bar under the model key's `prod` version, switching when
    /// `prod` moves; restored on start from `model.updates` and `regimes`.
    Regime(RegimeArgs),
    /// `features` + `model.updates` ⇒ `forecasts`: each bar predicted by
    /// its model key's `prod` forecast (gbdt) version, switching when `prod`
    /// moves; the registry restored from `model.updates` on start.
    Forecast(ForecastArgs),
    /// Cron schedules (`[[scheduler.schedule]]`) ⇒ `training.triggers`
    /// on the wall clock; missed runs caught up once; the last run of each
    /// schedule is read back from `training.triggers` on start. With
    /// `[scheduler] clock = "event"` the schedules run on the bars' time
    /// inside `run drift` instead.
    Scheduler,
    /// `training.triggers` + `training.commands` ⇒ `training.status`,
    /// `model.updates`, `training.claims`: the training queue, data
    /// claims, HMM fits, evaluation, promotion and rollback (`[trainer]`).
    /// Restored on start from the topics it writes.
    Trainer(TrainerArgs),
    /// `regimes` + `features` + `trade.outcomes` + `param.updates` ⇒
    /// `param.updates`: bandit policies over each strategy's presets
    /// (`strategy_schemas/`, `[params]`), restored from `param.updates` and
    /// the outcomes already learnt from.
    Params(ParamsArgs),
    /// A simulated trading engine: `features` + `param.updates` ⇒
    /// `trade.outcomes` (one-bar positions under the parameters in force).
    Engine(EngineArgs),
}

#[derive(Debug, clap::Args)]
pub struct ParamsArgs {
    #[arg(long, default_value = "autotrain-params")]
    pub group: String,
}

#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    #[arg(long, default_value = "autotrain-engine")]
    pub group: String,
    /// Cost per unit of position, basis points.
    #[arg(long, default_value_t = 2.0)]
    pub cost_bps: f64,
}

#[derive(Debug, clap::Args)]
pub struct TrainerArgs {
    #[arg(long, default_value = "autotrain-trainer")]
    pub group: String,
}

#[derive(Debug, clap::Args)]
pub struct RegimeArgs {
    #[arg(long, default_value = "autotrain-regime")]
    pub group: String,
    /// Model key per instrument (`{instrument}` is replaced).
    #[arg(long, default_value = "hmm/{instrument}")]
    pub model_key: String,
}

#[derive(Debug, clap::Args)]
pub struct ForecastArgs {
    #[arg(long, default_value = "autotrain-forecast")]
    pub group: String,
    /// Model key per instrument (`{instrument}` is replaced).
    #[arg(long, default_value = crate::topology::FORECAST_MODEL_KEY)]
    pub model_key: String,
}

#[derive(Debug, clap::Args)]
pub struct GroupArgs {
    #[arg(long, default_value = "autotrain-drift")]
    pub group: String,
}

#[derive(Debug, clap::Args)]
pub struct FeaturesArgs {
    #[arg(long, default_value = "autotrain-features")]
    pub group: String,
}

#[derive(Debug, clap::Args)]
pub struct NotifyArgs {
    /// The receiver: `https://hooks.example/autotrain`.
    #[arg(long, env = "AUTOTRAIN_WEBHOOK_URL")]
    pub webhook: String,
    #[arg(long, default_value = "autotrain-notify")]
    pub group: String,
    /// POST when this many notifications are pending …
    #[arg(long, default_value_t = 100)]
    pub max_rows: usize,
    /// … or the oldest is this many milliseconds old.
    #[arg(long, default_value_t = 1_000)]
    pub max_age_ms: u64,
}

#[derive(Debug, clap::Args)]
pub struct MlflowArgs {
    /// MLflow's tracking server (overrides `[mlflow] tracking_uri`).
    #[arg(long, env = "MLFLOW_TRACKING_URI")]
    pub tracking_uri: Option<String>,
    /// Consumer group (overrides `[mlflow] group`).
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct QuestdbArgs {
    /// questdb-rs configuration: `http::addr=host:9000;` (add
    /// `username=…;password=…;` or `token=…;`, `https::` for TLS).
    #[arg(long, env = "AUTOTRAIN_QUESTDB")]
    pub questdb: String,
    #[arg(long, default_value = "autotrain-questdb-sink")]
    pub group: String,
    /// Flush when this many rows are pending …
    #[arg(long, default_value_t = 10_000)]
    pub max_rows: usize,
    /// … or the oldest is this many milliseconds old.
    #[arg(long, default_value_t = 1_000)]
    pub max_age_ms: u64,
    /// Do not run `connectors/questdb/tables.sql` (through QuestDB's
    /// `/exec`) at start: the tables exist, or this principal may not
    /// create them.
    #[arg(long)]
    pub no_create_tables: bool,
}

#[derive(Debug, clap::Args)]
pub struct ValidatorArgs {
    /// Consumer group (instances of one group share the partitions).
    #[arg(long, default_value = "autotrain-validator")]
    pub group: String,
    /// `INSTRUMENT=CALENDAR` (`oanda:EURUSD=fx`), added to the config's
    /// `[validator.calendars]`.
    #[arg(long = "calendar", value_parser = parse_calendar)]
    pub calendars: Vec<(String, Calendar)>,
}

fn parse_calendar(text: &str) -> Result<(String, Calendar), String> {
    let (instrument, name) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected INSTRUMENT=CALENDAR"))?;
    let calendar = Calendar::parse(name)
        .ok_or_else(|| format!("{name:?}: calendars are 24x7, fx, us-equity"))?;
    Ok((instrument.to_string(), calendar))
}

pub async fn run(config: &Config, cmd: RunCommand) -> Result<()> {
    let ctx = Context::connect(config).await?;
    match cmd {
        RunCommand::Validator(args) => {
            let mut build = Build::deployment(config)?;
            build.calendars.extend(args.calendars);
            let (core, stats) = serve(&ctx, config, Stage::Validator, &args.group, || {
                std::future::ready(Ok(build.validator()))
            })
            .await?;
            eprintln!(
                "validator stopped: {}",
                serde_json::json!({ "runner": stats, "validated": core.summary, "held": core.held().len() })
            );
        }
        RunCommand::Features(args) => {
            let build = Build::deployment(config)?;
            let (core, stats) = serve(&ctx, config, Stage::Features, &args.group, || {
                std::future::ready(build.features())
            })
            .await?;
            eprintln!(
                "features stopped: {}",
                serde_json::json!({ "runner": stats, "rows_published": core.published })
            );
        }
        RunCommand::Drift(args) => {
            let build = Build::deployment(config)?;
            let (core, stats) = serve(&ctx, config, Stage::Drift, &args.group, || {
                std::future::ready(build.drift())
            })
            .await?;
            eprintln!(
                "drift stopped: {}",
                serde_json::json!({ "runner": stats, "triggers": core.triggers, "suppressed": core.suppressed, "scheduled": core.scheduled() })
            );
        }
        RunCommand::Regime(args) => {
            let mut build = Build::deployment(config)?;
            build.regime_model_key = args.model_key.clone();
            let restore = || build.regime_restored(&ctx.settings);
            let (core, stats) = serve(&ctx, config, Stage::Regime, &args.group, restore).await?;
            eprintln!("regime stopped: {stats:?} {:?}", core.stats);
        }
        RunCommand::Forecast(args) => {
            let mut build = Build::deployment(config)?;
            build.forecast_model_key = args.model_key.clone();
            let restore = || build.forecast_restored(&ctx.settings);
            let (core, stats) = serve(&ctx, config, Stage::Forecast, &args.group, restore).await?;
            eprintln!("forecast stopped: {stats:?} {:?}", core.stats);
        }
        RunCommand::Trainer(args) => {
            let build = Build::deployment(config)?;
            let mut rc = ctx.runner_config(config, &args.group, Stage::Trainer.wiring().inputs);
            // The trainer's effects are published by its executor, outside
            // the intake's loop, and it restores from what it published
            // (training ids make repeats idempotent): at-least-once intake.
            rc.exactly_once = None;
            let counters = Arc::new(autotrain_trainer::service::ServiceCounters::default());
            serve_metrics(&ctx, config, "trainer", &rc, counters.intake.clone()).await?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop_tx.send(true);
            });
            // The service restores from its topics: transport trouble or a
            // fenced membership after a broker restart restarts it, within
            // the outage limit.
            let mut troubled = Troubled::default();
            let report = loop {
                let mut stop = stop_rx.clone();
                let started = std::time::Instant::now();
                let outcome = autotrain_trainer::service::run(
                    &ctx.settings,
                    build.trainer.clone(),
                    rc.clone(),
                    crate::context::now_ms,
                    counters.clone(),
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                )
                .await;
                if started.elapsed() > std::time::Duration::from_secs(60)
                    && ctx.settings.link.outage().is_none()
                {
                    troubled = Troubled::default();
                }
                match outcome {
                    // Fenced too: after a broker restart its static
                    // membership can be fenced by its own rejoin.
                    Err(e) if (e.is_retriable() || e.is_fenced()) && !*stop_rx.borrow() => {
                        outage_within(&ctx, rc.unreachable_limit)?;
                        let e = anyhow::Error::from(e);
                        let wait = troubled.next(&e, rc.unreachable_limit)?;
                        tracing::warn!(error = %e, ?wait, "broker trouble: the trainer restores and starts again");
                        eprintln!("trainer: {e}; restoring and starting again in {wait:?}");
                        tokio::time::sleep(wait).await;
                    }
                    other => break other?,
                }
            };
            eprintln!("trainer stopped: {report:?} {counters:?}");
        }
        RunCommand::Params(args) => {
            let build = Build::deployment(config)?;
            let restore = || build.params_restored(&ctx.settings, &args.group);
            let (core, stats) = serve(&ctx, config, Stage::Params, &args.group, restore).await?;
            eprintln!("params stopped: {stats:?} {:?}", core.controller.stats);
        }
        RunCommand::Engine(args) => {
            let mut build = Build::deployment(config)?;
            build.cost_bps = args.cost_bps;
            let (core, stats) = serve(&ctx, config, Stage::Engine, &args.group, || {
                std::future::ready(Ok(build.engine()))
            })
            .await?;
            eprintln!("engine stopped: {stats:?} {:?}", core.engine.stats());
        }
        RunCommand::Scheduler => {
            anyhow::ensure!(
                config.scheduler.clock == crate::config::Clock::Wall,
                "[scheduler] clock = \"event\": the schedules run on the bars' time inside `autotrain run drift`"
            );
            let fired = super::scheduler::run(&ctx, &config.scheduler, shutdown_signal()).await?;
            eprintln!("scheduler stopped after {fired} trigger(s)");
        }
        RunCommand::Notify(args) => {
            let sink = autotrain_connector_webhook::WebhookSink::new(&args.webhook)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let limits = (args.max_rows, args.max_age_ms);
            let inputs = autotrain_connector_webhook::INPUTS;
            let (sink, stats) = serve_sink(&ctx, &args.group, inputs, limits, sink).await?;
            eprintln!("webhook sink stopped: {stats:?} {:?}", sink.stats);
        }
        RunCommand::Mlflow(args) => {
            let mut mlflow = config.mlflow.clone();
            if let Some(uri) = args.tracking_uri {
                mlflow.tracking_uri = Some(uri);
            }
            if let Some(group) = args.group {
                mlflow.group = group;
            }
            let (mirror, stats) = serve_mlflow(&ctx, &mlflow, shutdown_signal()).await?;
            eprintln!("mlflow mirror stopped: {stats:?} {:?}", mirror.stats);
        }
        RunCommand::Questdb(args) => {
            if !args.no_create_tables {
                let n = autotrain_connector_questdb::create_tables(
                    &args.questdb,
                    std::time::Duration::from_secs(60),
                )
                .await?;
                tracing::info!(statements = n, "QuestDB tables ready");
            }
            let sink = QuestDbSink::new(&args.questdb).map_err(|e| anyhow::anyhow!("{e}"))?;
            let limits = (args.max_rows, args.max_age_ms);
            let inputs = autotrain_connector_questdb::INPUTS;
            let (sink, stats) = serve_sink(&ctx, &args.group, inputs, limits, sink).await?;
            eprintln!("questdb sink stopped: {stats:?} {sink:?}");
        }
    }
    Ok(())
}

/// Runs the core `make` builds in group `group` over `topics` until Ctrl-C
/// / SIGTERM. Exactly-once, an aborted transaction discards the outputs and
/// offsets of inputs the core has already folded into its state: the core
/// is then built afresh (restoring from the topics) and runs again from the
/// committed offsets.
async fn serve<P, F, Fut>(
    ctx: &Context,
    config: &Config,
    stage: Stage,
    group: &str,
    mut make: F,
) -> Result<(P, RunStats)>
where
    P: Processor,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<P>>,
{
    let processor = stage.name();
    let rc = ctx.runner_config(config, group, stage.wiring().inputs);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let counters = Arc::new(Counters::default());
    serve_metrics(ctx, config, processor, &rc, counters.clone()).await?;
    let (mut restarts, mut fenced) = (0u32, 0u32);
    let mut troubled = Troubled::default();
    loop {
        outage_within(ctx, rc.unreachable_limit)?;
        // A core restores from the topics: while the brokers are out (and
        // within the limit) that is retried, not a reason to exit.
        let core = match make().await {
            Ok(core) => core,
            Err(e) if ctx.settings.link.outage().is_some() => {
                tracing::debug!(group, error = %e, "cannot restore while the broker is unreachable; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
            Err(e) if transient(&e) => {
                let wait = troubled.next(&e, rc.unreachable_limit)?;
                tracing::warn!(group, error = %e, ?wait, "cannot restore yet (the broker answers but times out); retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let started = std::time::Instant::now();
        let outcome =
            autotrain_kafka::run(&ctx.settings, &rc, core, counters.clone(), stopped).await;
        if started.elapsed() > std::time::Duration::from_secs(60)
            && ctx.settings.link.outage().is_none()
        {
            troubled = Troubled::default();
        }
        match outcome {
            Err(e @ autotrain_kafka::KafkaError::TransactionAborted(_))
                if restarts < config.runner.retry_attempts as u32 =>
            {
                if started.elapsed() > std::time::Duration::from_secs(60) {
                    restarts = 0;
                }
                restarts += 1;
                tracing::warn!(group, restarts, error = %e, "transaction aborted: rebuilding the core and resuming from the committed offsets");
                eprintln!("{group}: {e}; rebuilding and resuming from the committed offsets");
                tokio::time::sleep(std::time::Duration::from_millis(200 * restarts as u64)).await;
            }
            // A producer fenced by the broker (it timed the transaction out,
            // e.g. while it restarted) comes back with a new epoch; one
            // fenced by another live instance with the same id would fence
            // it back, so this happens a bounded number of times per process.
            // Right after a broker restart its transaction coordinator may
            // fence a few producers in a row: the wait doubles (1 s … 16 s),
            // and a producer that then ran a minute counts as recovered.
            Err(e)
                if e.is_fenced()
                    && (fenced < config.runner.retry_attempts as u32
                        || started.elapsed() > std::time::Duration::from_secs(60)) =>
            {
                if started.elapsed() > std::time::Duration::from_secs(60) {
                    fenced = 0;
                }
                fenced += 1;
                let wait = std::time::Duration::from_secs(1 << (fenced - 1).min(4));
                eprintln!(
                    "{group}: {e}; starting again (new consumer and producer) in {wait:?} ({fenced} of at most {} in a row; does another instance use `[runner] instance = {:?}`?)",
                    config.runner.retry_attempts, config.runner.instance
                );
                tokio::time::sleep(wait).await;
            }
            // Transport trouble right after a broker restart (metadata or
            // coordinator requests timing out while the link is up): the
            // core is rebuilt and resumes, for at most the outage limit.
            Err(e) if e.is_retriable() => {
                let e = anyhow::Error::from(e);
                let wait = troubled.next(&e, rc.unreachable_limit)?;
                tracing::warn!(group, error = %e, ?wait, "broker trouble: rebuilding the core and resuming from the committed offsets");
                eprintln!("{group}: {e}; rebuilding and resuming in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            other => return Ok(other?),
        }
    }
}

/// Runs a sink to an external store in `group` over `inputs` until Ctrl-C
/// / SIGTERM; it flushes every `limits.0` rows or `limits.1` milliseconds.
async fn serve_sink<S: autotrain_kafka::Sink>(
    ctx: &Context,
    group: &str,
    inputs: &[&str],
    limits: (usize, u64),
    sink: S,
) -> Result<(S, autotrain_kafka::RunStats)> {
    let mut sc = SinkConfig::new(group, inputs);
    sc.max_rows = limits.0.max(1);
    sc.max_age = std::time::Duration::from_millis(limits.1);
    let counters = Arc::new(Counters::default());
    Ok(run_sink(&ctx.settings, &sc, sink, counters, shutdown_signal()).await?)
}

/// Runs the MLflow mirror of `mlflow` until `shutdown`.
pub async fn serve_mlflow(
    ctx: &Context,
    mlflow: &autotrain_connector_mlflow::MlflowConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(autotrain_connector_mlflow::MlflowMirror, RunStats)> {
    use autotrain_connector_mlflow::{MlflowClient, MlflowMirror, INPUTS};
    let Some(uri) = &mlflow.tracking_uri else {
        anyhow::bail!("no MLflow to mirror to: set [mlflow] tracking_uri (or --tracking-uri, MLFLOW_TRACKING_URI)");
    };
    let client = MlflowClient::new(uri, std::time::Duration::from_secs(mlflow.timeout_s.max(1)))?;
    let mut sc = SinkConfig::new(&mlflow.group, INPUTS);
    sc.max_rows = 100;
    sc.max_age = std::time::Duration::from_millis(500);
    sc.retry_attempts = if mlflow.retry_attempts == 0 {
        usize::MAX
    } else {
        mlflow.retry_attempts
    };
    tracing::info!(tracking_uri = %uri, group = %mlflow.group, "mirroring the registry to MLflow");
    let counters = Arc::new(Counters::default());
    let mirror = MlflowMirror::new(client, &mlflow.name_prefix);
    Ok(run_sink(&ctx.settings, &sc, mirror, counters, shutdown).await?)
}

/// With `[runner] metrics_bind`, serves `GET /metrics` of this process's
/// runner (see [`autotrain_kafka::metrics`]) until the process ends.
async fn serve_metrics(
    ctx: &Context,
    config: &Config,
    processor: &str,
    rc: &autotrain_kafka::RunnerConfig,
    counters: Arc<Counters>,
) -> Result<()> {
    use anyhow::Context as _;
    let Some(bind) = &config.runner.metrics_bind else {
        return Ok(());
    };
    let metrics = autotrain_kafka::metrics::RunnerMetrics {
        processor: processor.to_string(),
        group: rc.group_id.clone(),
        topics: rc.topics.clone(),
        settings: ctx.settings.clone(),
        counters,
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                let text = tokio::task::spawn_blocking(move || metrics.render())
                    .await
                    .unwrap_or_else(|e| format!("# metrics task failed: {e}\n"));
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("[runner] metrics_bind = {bind:?}"))?;
    tracing::info!(processor, address = %listener.local_addr()?, "serving /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "/metrics server stopped");
        }
    });
    Ok(())
}

/// Fails with [`Unreachable`](autotrain_kafka::KafkaError::Unreachable)
/// once the brokers have been out for the limit. Checked between a
/// supervised runner's attempts: one attempt can itself outlast the limit
/// (a metadata request times out after a minute), so the count of failed
/// attempts alone never says the outage is over the limit.
fn outage_within(ctx: &Context, limit: std::time::Duration) -> Result<()> {
    match ctx.settings.link.outage() {
        Some(o) if o.lasted >= limit => Err(autotrain_kafka::KafkaError::Unreachable {
            since_ms: o.since_ms,
            limit_s: limit.as_secs(),
            reason: o.reason,
        }
        .into()),
        _ => Ok(()),
    }
}

/// Whether an error out of a core's restore is transport trouble worth
/// retrying (a [`KafkaError`](autotrain_kafka::KafkaError) that says so).
fn transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<autotrain_kafka::KafkaError>()
            .is_some_and(autotrain_kafka::KafkaError::is_retriable)
    })
}

/// Consecutive transient failures of one supervised runner: the waits
/// double from 250 ms to 8 s, and past the outage limit the process stops
/// (a supervisor restarts it) rather than loop for ever, with the same
/// error as any outage: the brokers did not serve it for that long.
#[derive(Default)]
struct Troubled {
    /// When the failures began: monotonic, and epoch ms for the message.
    since: Option<(std::time::Instant, i64)>,
    times: u32,
}

impl Troubled {
    fn next(
        &mut self,
        e: &anyhow::Error,
        limit: std::time::Duration,
    ) -> Result<std::time::Duration> {
        let (since, since_ms) = *self
            .since
            .get_or_insert_with(|| (std::time::Instant::now(), crate::context::now_ms()));
        if since.elapsed() >= limit {
            return Err(autotrain_kafka::KafkaError::Unreachable {
                since_ms,
                limit_s: limit.as_secs(),
                reason: format!("{} attempts failed: {e:#}", self.times + 1),
            }
            .into());
        }
        self.times += 1;
        Ok(std::time::Duration::from_millis(
            250 << (self.times - 1).min(5),
        ))
    }
}
