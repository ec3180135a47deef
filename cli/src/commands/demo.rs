//! `autotrain demo`, the main job: publish the bundled real bars (five
//! coins, 30-minute, 2017-10 … 2019-10) through the broker as fast as
//! possible and run the processors built so far over them, each in its own
//! consumer group: the validator (every raw bar ends as passed, flagged and
//! withheld, duplicate, or dead letter, and the summary accounts for each
//! one), the features processor (`market.bars` ⇒ `features`), the drift
//! processor (`features` ⇒ `training.triggers`, drift detections and
//! quarterly schedules on the bars' time), the trainer (every
//! trigger trained as of its event time, versions registered on
//! `model.updates`, promoted where the guardrails hold) and the regime
//! processor (`features` + `model.updates` ⇒ `regimes`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use autotrain_connector_file::{infer_instrument, BarReader};
use autotrain_features::Contract;
use autotrain_kafka::reader::group_caught_up;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{OutRecord, Producer};
use autotrain_schemas::Bar;
use autotrain_topics::{FEATURES, MARKET_BARS, MARKET_BARS_RAW, REGIMES, TRAINING_TRIGGERS};
use autotrain_trainer::service::ServiceCounters;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::Config;
use crate::context::{now_ms, shutdown_signal, Context};
use crate::topology::{Build, Stage};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder (or files) of bar CSVs to replay instead of the bundled data.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Leave the broker and the API up after the summary, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
    /// Where the API listens during the demo (default: `api.bind`; a free
    /// port if that one is taken). Without `[[api.tokens]]` in the config
    /// it runs in dev mode: no authentication, loopback only.
    #[arg(long)]
    pub api_bind: Option<String>,
    /// Write the digested topics' canonical lines to `DIR/<topic>.lines`
    /// (see `autotrain digest --lines`).
    #[arg(long, value_name = "DIR")]
    pub digest_lines: Option<PathBuf>,
    /// Replay at most this many bars per second (a live-like feed; the
    /// default is as fast as the stages keep up). The decisions are the
    /// same at any rate.
    #[arg(long, value_name = "BARS_PER_S", value_parser = positive_rate)]
    pub rate: Option<f64>,
}

fn positive_rate(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a positive number of bars per second")),
    }
}

/// The API as the demo serves it, stopped by [`DemoApi::stop`].
#[derive(Debug)]
pub struct DemoApi {
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// With `--keep-running`: the validator and the features processor
    /// going on after the run, and their stop.
    live: Option<(tokio::sync::watch::Sender<bool>, LiveStages)>,
}

type LiveStages = tokio::task::JoinHandle<Result<(), autotrain_kafka::KafkaError>>;

impl DemoApi {
    pub async fn stop(self) -> Result<()> {
        if let Some((stop, stages)) = self.live {
            let _ = stop.send(true);
            stages.await??;
        }
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }

    /// Until `until` (or a live stage fails): the API, and the validator
    /// and features going on.
    pub async fn live(&mut self, until: impl std::future::Future<Output = ()>) -> Result<()> {
        match &mut self.live {
            Some((_, stages)) => tokio::select! {
                () = until => Ok(()),
                r = stages => Err(anyhow::anyhow!("a live stage stopped: {:?}", r)),
            },
            None => {
                until.await;
                Ok(())
            }
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub bootstrap: String,
    /// The control-plane API served during the demo.
    pub api: String,
    pub files: usize,
    pub bars_in: u64,
    pub bad_rows: u64,
    /// Published on `market.bars` (corrections included).
    pub bars_passed: u64,
    /// Withheld with a flag (invalid OHLC, anomaly awaiting review).
    pub bars_flagged: u64,
    /// Identical re-sends, dropped (by event id or by checksum).
    pub duplicates: u64,
    pub dead_letters: u64,
    /// Flags raised, by kind (gaps and stale bars accompany passed bars).
    pub flags: BTreeMap<&'static str, u64>,
    pub gaps: usize,
    /// Feature rows published on `features` (contract version below).
    pub features_published: u64,
    pub feature_contract: String,
    /// Training triggers the drift processor published, and detections a
    /// cooldown suppressed.
    pub training_triggers: u64,
    pub drift_suppressed: u64,
    /// Scheduled triggers (quarterly per instrument unless
    /// `[[scheduler.schedule]]` says otherwise), fired on the bars' time.
    pub scheduled_triggers: u64,
    /// Training runs, and how they ended.
    pub trainings: u64,
    pub trainings_by_reason: BTreeMap<String, u64>,
    pub trainings_completed: u64,
    /// Ended without a model: too little data as of the trigger, or failed.
    pub trainings_without_model: u64,
    /// `prod` moves by the trainer's guardrails.
    pub promotions: u64,
    pub model_versions: u64,
    /// Per model key: versions and the one in `prod`.
    pub models: BTreeMap<String, (usize, Option<i32>)>,
    /// Unresolved flags do not block trainings in the demo (no one is
    /// there to decide them); they are still counted by the guardrails.
    pub flags_block_trainings: bool,
    /// Regime posteriors published (bars of an instrument before its first
    /// `prod` model have none; how many depends on when `prod` appeared).
    pub regimes_published: u64,
    /// Preset decisions the controller took (one per regime posterior and
    /// strategy) and the `ParamUpdate`s it published (initial presets,
    /// changes the guardrails let through, kill-switches).
    pub param_decisions: u64,
    pub param_changes: u64,
    pub kill_switches: u64,
    /// The simulated engine's one-bar positions and their summed reward
    /// (percent of notional, after 2 bp costs), against the same rules
    /// under each strategy's fixed safe preset.
    pub trades: u64,
    /// Outcomes the controller learnt from.
    pub param_outcomes: u64,
    /// Per strategy: (reward under the controller, under the safe preset).
    pub reward_by_strategy: BTreeMap<String, (f64, f64)>,
    /// Per `strategy/preset`: (positions taken under the controller, their
    /// summed reward).
    pub reward_by_preset: BTreeMap<String, (u64, f64)>,
    pub reward_policy: f64,
    pub reward_safe_preset: f64,
    /// Per instrument, then strategy: (reward under the controller, under
    /// the safe preset), a walk-forward per instrument.
    pub reward_by_instrument: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
    /// The conservative controller's α (`None`: not conservative), the
    /// decisions for another preset its budget did not cover, and the
    /// safe preset published in place of another for that.
    pub conservative_alpha: Option<f64>,
    pub held_by_budget: u64,
    pub conservative_fallbacks: u64,
    /// Summed over trainings: reading data, and fitting + evaluating.
    pub training_load_seconds: f64,
    pub training_fit_seconds: f64,
    /// Content digests of the output topics (see `autotrain digest`):
    /// equal across runs over the same bars where `complete` (on the
    /// embedded broker, which drops a long topic's oldest records, only
    /// the short ones are).
    pub digests: BTreeMap<String, super::digest::TopicDigest>,
    pub seconds: f64,
    pub bars_per_second: f64,
}

/// The stages the demo runs through the runner, in the order of its
/// consumer groups (the trainer runs as its service).
const STAGES: [Stage; 6] = [
    Stage::Validator,
    Stage::Features,
    Stage::Drift,
    Stage::Regime,
    Stage::Params,
    Stage::Engine,
];

pub(crate) fn bundled_data() -> PathBuf {
    let here = PathBuf::from("data");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

pub async fn run_demo(config: &Config, args: &Args, ctx: &Context) -> Result<(Summary, DemoApi)> {
    let inputs = if args.data.is_empty() {
        vec![bundled_data()]
    } else {
        args.data.clone()
    };
    let mut files = super::produce::expand(&inputs)?;
    files.retain(|f| {
        infer_instrument(f).is_some_and(|id| id.timeframe == "30m") || !args.data.is_empty()
    });
    ensure!(!files.is_empty(), "no bar files to replay in {inputs:?}");

    let pid = std::process::id();
    let groups = STAGES.map(|s| format!("autotrain-demo-{s}-{pid}"));
    let stages: [Arc<Counters>; 6] = Default::default();
    let trainer_group = format!("autotrain-demo-trainer-{pid}");
    let trainer_counters = Arc::new(ServiceCounters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = {
        let mut api = config.api.clone();
        if let Some(bind) = &args.api_bind {
            api.bind = bind.clone();
        }
        api.dev_mode |= api.tokens.is_empty();
        let addr = api.check()?;
        let names = STAGES.map(Stage::name);
        let inputs = STAGES
            .iter()
            .chain(&[Stage::Trainer])
            .map(|s| s.wiring().inputs);
        let group_names = groups.iter().chain(std::iter::once(&trainer_group));
        let state = super::serve::state(
            ctx,
            config,
            api,
            group_names
                .zip(inputs)
                .map(|(g, t)| (g.clone(), t.iter().map(|t| t.to_string()).collect()))
                .collect(),
            names
                .iter()
                .zip(&stages)
                .map(|(n, c)| (n.to_string(), c.clone()))
                .collect(),
        )?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (local, server) = super::serve::start(state, addr, true, async move {
            let _ = rx.await;
        })
        .await?;
        if !args.json {
            eprintln!("API on http://{local} (/openapi.json describes it)");
        }
        DemoApi {
            url: format!("http://{local}"),
            stop: tx,
            server,
            live: None,
        }
    };
    let instruments = files
        .iter()
        .filter_map(|f| infer_instrument(f).map(|id| id.key()))
        .collect();
    let build = Build::demo(config, &instruments)?;
    let feature_contract = Contract::bundled()?.version;
    let rcs = [
        ctx.runner_config(config, &groups[0], Stage::Validator.wiring().inputs),
        ctx.runner_config(config, &groups[1], Stage::Features.wiring().inputs),
        ctx.runner_config(config, &groups[2], Stage::Drift.wiring().inputs),
    ];
    let live_rcs = [rcs[0].clone(), rcs[1].clone()];
    let validating = spawn_stage(
        ctx.settings.clone(),
        rcs[0].clone(),
        build.validator(),
        stages[0].clone(),
        stop(stop_rx.clone()),
    );
    let featuring = spawn_stage(
        ctx.settings.clone(),
        rcs[1].clone(),
        build.features()?,
        stages[1].clone(),
        stop(stop_rx.clone()),
    );
    let drifting = spawn_stage(
        ctx.settings.clone(),
        rcs[2].clone(),
        build.drift()?,
        stages[2].clone(),
        stop(stop_rx.clone()),
    );
    let regime_rc = ctx.runner_config(config, &groups[3], Stage::Regime.wiring().inputs);
    let regiming = spawn_stage(
        ctx.settings.clone(),
        regime_rc.clone(),
        build.regime(),
        stages[3].clone(),
        stop(stop_rx.clone()),
    );
    let params_rc = ctx.runner_config(config, &groups[4], Stage::Params.wiring().inputs);
    let controller = build.params();
    let (decided, learned) = (
        controller.decisions_made.clone(),
        controller.learned.clone(),
    );
    let controlling = spawn_stage(
        ctx.settings.clone(),
        params_rc.clone(),
        controller,
        stages[4].clone(),
        stop(stop_rx.clone()),
    );
    let engine_rc = ctx.runner_config(config, &groups[5], Stage::Engine.wiring().inputs);
    let trading = spawn_stage(
        ctx.settings.clone(),
        engine_rc.clone(),
        build.engine(),
        stages[5].clone(),
        stop(stop_rx.clone()),
    );
    // References go to a scratch folder.
    let mut trainer_config = build.trainer.clone();
    trainer_config.store_dir = std::env::temp_dir()
        .join(format!("autotrain-demo-{pid}"))
        .display()
        .to_string();
    let store_dir = trainer_config.store_dir.clone();
    let training = {
        let settings = ctx.settings.clone();
        let rc = ctx.runner_config(config, &trainer_group, Stage::Trainer.wiring().inputs);
        let (counters, stop) = (trainer_counters.clone(), stop(stop_rx.clone()));
        let task = tokio::spawn(async move {
            autotrain_trainer::service::run(&settings, trainer_config, rc, now_ms, counters, stop)
                .await
        });
        async move {
            task.await
                .map_err(|e| autotrain_kafka::KafkaError::Admin(format!("trainer task: {e}")))?
        }
    };
    // Every stage reads from offset 0, and the embedded broker drops old
    // records once a partition is full: start replaying only when every
    // consumer group has its partitions.
    let joined = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while stages
            .iter()
            .any(|c| c.assignments.load(Ordering::Relaxed) == 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let started = Instant::now();
    let publisher = publish_with_backpressure(
        ctx,
        &files,
        stages.clone(),
        trainer_counters.clone(),
        (!config.runner.align_event_time).then_some([decided, learned]),
        args.rate,
        !args.json,
    );
    // A stage that stops with an error stops the demo (the others drain
    // and the error is reported) instead of leaving the replay waiting.
    let failed = |stage: &'static str| {
        let tx = stop_tx.clone();
        move |e: &autotrain_kafka::KafkaError| {
            tracing::error!(stage, error = %e, "stage stopped");
            let _ = tx.send(true);
        }
    };
    let validating = async { validating.await.inspect_err(failed("validator")) };
    let featuring = async { featuring.await.inspect_err(failed("features")) };
    let drifting = async { drifting.await.inspect_err(failed("drift")) };
    let regiming = async { regiming.await.inspect_err(failed("regime")) };
    let training = async { training.await.inspect_err(failed("trainer")) };
    let controlling = async { controlling.await.inspect_err(failed("params")) };
    let trading = async { trading.await.inspect_err(failed("engine")) };
    let mut stopped = stop_rx.clone();
    let (validated, featured, drifted, regimed, trained, controlled, traded, published) = tokio::join!(
        validating,
        featuring,
        drifting,
        regiming,
        training,
        controlling,
        trading,
        async {
            let published = tokio::select! {
                p = async { joined.await; publisher.await } => p,
                _ = stopped.wait_for(|s| *s) => Err(anyhow::anyhow!("a stage stopped; see the error above")),
            };
            if published.is_ok() {
                tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    "published every bar"
                );
                wait_caught_up(ctx, &groups, &trainer_group, &trainer_counters).await;
                tracing::info!(
                    seconds = started.elapsed().as_secs_f64(),
                    "every stage drained"
                );
            }
            let _ = stop_tx.send(true);
            published
        }
    );
    let _ = std::fs::remove_dir_all(&store_dir);
    let mut api = api;
    if args.keep_running {
        // The validator and the features processor go on in their groups
        // (their state rebuilt from what they consumed), so a review
        // decision made in the API or the dashboard takes effect: a bar
        // approved there is released to market.bars and gets its
        // features. The model stages stop with the run.
        let (live_tx, live_rx) = tokio::sync::watch::channel(false);
        let (settings, rcs, counters) = (ctx.settings.clone(), live_rcs, stages.clone());
        let (validator, features) = (build.validator(), build.features()?);
        let stages = tokio::spawn(async move {
            futures::future::try_join(
                spawn_stage(
                    settings.clone(),
                    rcs[0].clone(),
                    validator,
                    counters[0].clone(),
                    stop(live_rx.clone()),
                ),
                spawn_stage(
                    settings,
                    rcs[1].clone(),
                    features,
                    counters[1].clone(),
                    stop(live_rx),
                ),
            )
            .await
            .map(|_| ())
        });
        api.live = Some((live_tx, stages));
    }
    let (bars_in, bad_rows) = published?;
    let (validator, stats) = validated?;
    let (features, _) = featured?;
    let (drift, _) = drifted?;
    let (regime, _) = regimed?;
    trained?;
    let (params, _) = controlled?;
    let (engine, _) = traded?;
    // The outputs are final: digest them while the summary is read back
    // (both wait on the broker far more than they compute).
    let digesting = {
        let s = ctx.settings.clone();
        let lines = args.digest_lines.clone();
        tokio::task::spawn_blocking(move || {
            super::digest::digests(&s, super::digest::OUTPUTS, lines.as_deref())
        })
    };
    let reading_triggers = {
        let s = ctx.settings.clone();
        tokio::task::spawn_blocking(move || {
            autotrain_kafka::read_topic::<autotrain_schemas::TrainingTrigger>(
                &s,
                TRAINING_TRIGGERS.name(),
                Duration::from_secs(30),
            )
        })
    };
    let (views, registry, triggers) = tokio::try_join!(
        super::trainings::load(&ctx.settings),
        super::models::load(&ctx.settings),
        async { Ok(reading_triggers.await??) },
    )?;
    let mut trainings_by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for t in triggers.into_iter().filter_map(|r| r.value.ok()) {
        if views.contains_key(&autotrain_trainer::queue::training_id(&t)) {
            *trainings_by_reason
                .entry(format!("{:?}", t.reason).to_lowercase())
                .or_default() += 1;
        }
    }
    let completed = views
        .values()
        .filter(|v| v.state == autotrain_schemas::TrainingState::Completed)
        .count() as u64;
    let mut models = BTreeMap::new();
    let (mut promotions, mut model_versions) = (0u64, 0u64);
    for key in registry.keys() {
        if let Some(m) = registry.model(key) {
            model_versions += m.versions.len() as u64;
            promotions += m
                .events
                .iter()
                .filter(|e| {
                    e.event == autotrain_schemas::RegistryEvent::AliasMoved
                        && e.alias.as_deref() == Some(autotrain_trainer::PROD)
                })
                .count() as u64;
            models.insert(
                key.to_string(),
                (
                    m.versions.len(),
                    m.aliases.get(autotrain_trainer::PROD).copied(),
                ),
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(seconds, "summary read back");
    let digests = digesting.await??;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "outputs digested"
    );
    let v = &validator.summary;
    let checksum_duplicates = v.flags.get("duplicate").copied().unwrap_or(0);
    Ok((
        Summary {
            bootstrap: ctx.broker.bootstrap().to_string(),
            api: api.url.clone(),
            files: files.len(),
            bars_in,
            bad_rows,
            bars_passed: v.passed,
            bars_flagged: v.bars - v.passed - checksum_duplicates,
            duplicates: stats.duplicates + checksum_duplicates,
            dead_letters: stats.dead_lettered + bad_rows,
            flags: v.flags.clone(),
            gaps: v.gaps.len(),
            features_published: features.published,
            feature_contract,
            training_triggers: drift.triggers,
            drift_suppressed: drift.suppressed,
            scheduled_triggers: drift.scheduled(),
            trainings: views.len() as u64,
            trainings_by_reason,
            trainings_completed: completed,
            trainings_without_model: views.len() as u64 - completed,
            promotions,
            model_versions,
            models,
            flags_block_trainings: false,
            regimes_published: regime.stats.published,
            param_decisions: params.controller.stats.decisions,
            param_changes: params.controller.stats.published,
            kill_switches: params.controller.stats.kill_switches,
            trades: engine.engine.stats().trades,
            param_outcomes: params.controller.stats.outcomes,
            reward_by_strategy: engine.engine.stats().by_strategy.clone(),
            reward_by_preset: engine.engine.stats().by_preset.clone(),
            reward_policy: engine.engine.stats().reward_policy,
            reward_safe_preset: engine.engine.stats().reward_safe_preset,
            reward_by_instrument: engine.engine.stats().by_instrument,
            conservative_alpha: config
                .params
                .conservative
                .then_some(config.params.conservative_alpha),
            held_by_budget: params.controller.stats.held_by_budget,
            conservative_fallbacks: params.controller.stats.conservative_fallbacks,
            training_load_seconds: views
                .values()
                .filter_map(|v| v.metric("load_seconds"))
                .sum(),
            training_fit_seconds: views
                .values()
                .filter_map(|v| v.metric("train_seconds"))
                .sum(),
            digests,
            seconds,
            bars_per_second: bars_in as f64 / seconds,
        },
        api,
    ))
}

/// The demo's scheduled trainings, run on the bars' time by the drift
/// processor: `[[scheduler.schedule]]` from the config if any, else one
/// per replayed instrument on the first day of each quarter, 00:00 UTC
/// (auto-promoted).
/// Waits until every stage's group has committed its inputs to their end
/// and the trainer has nothing queued or running (the pipeline has
/// drained).
async fn wait_caught_up(
    ctx: &Context,
    groups: &[String; 6],
    trainer_group: &str,
    trainer: &ServiceCounters,
) {
    let inputs: Vec<(&str, &[&str])> = groups
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(trainer_group))
        .zip(STAGES.iter().chain(&[Stage::Trainer]))
        .map(|(g, s)| (g, s.wiring().inputs))
        .collect();
    let mut quiet = 0;
    loop {
        let mut all = true;
        for &(group, topics) in &inputs {
            let (settings, group) = (ctx.settings.clone(), group.to_string());
            let topics: Vec<&'static str> = topics.to_vec();
            let done = tokio::task::spawn_blocking(move || {
                group_caught_up(&settings, &group, &topics, Duration::from_secs(10))
            })
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
            all &= done;
        }
        all &= trainer.pending.load(Ordering::Relaxed) == 0;
        // Twice in a row: a trigger consumed just now may not have reached
        // the queue yet.
        quiet = if all { quiet + 1 } else { 0 };
        if quiet >= 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs a processor on its own task, so the runtime's threads run the
/// stages in parallel (joined on one task they would take turns on one
/// thread, and one stage's blocking broker call would stall them all).
async fn spawn_stage<P: autotrain_kafka::Processor + Send + 'static>(
    settings: autotrain_kafka::ClientSettings,
    rc: autotrain_kafka::RunnerConfig,
    processor: P,
    counters: Arc<Counters>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(P, autotrain_kafka::runner::RunStats), autotrain_kafka::KafkaError> {
    tokio::spawn(
        async move { autotrain_kafka::run(&settings, &rc, processor, counters, stop).await },
    )
    .await
    .map_err(|e| autotrain_kafka::KafkaError::Admin(format!("stage task: {e}")))?
}

/// Publishes the files, never letting a stage fall more than `LAG` records
/// behind the one before it: the embedded broker keeps only the newest
/// ~5 MiB per partition, so an unbounded head start would lose data (and
/// the runner would stop with a data-loss error).
/// An instrument and one row of its file.
type Row = (String, Result<Bar, autotrain_connector_file::RowError>);

async fn publish_with_backpressure(
    ctx: &Context,
    files: &[PathBuf],
    stages: [Arc<Counters>; 6],
    trainer: Arc<ServiceCounters>,
    decisions: Option<[Arc<std::sync::atomic::AtomicU64>; 2]>,
    rate: Option<f64>,
    progress: bool,
) -> Result<(u64, u64)> {
    const LAG: u64 = 10_000;
    // Without event-time alignment (`decisions` is then given) the engine
    // trades each bar as soon as its features exist, while the controller
    // decides for it two stages later (regime, params) and learns from the
    // engine's outcomes: keep both paths within a few bars per instrument,
    // or the engine would trade on decisions made for bars long gone.
    // Aligned, each waits for the other's progress instead.
    const DECISION_LAG: u64 = 100;
    let producer = Producer::new(&ctx.settings)?;
    let mut rows: Vec<Row> = Vec::new();
    for path in files {
        let id = infer_instrument(path).with_context(|| {
            format!(
                "{}: name is not <exchange>_<SYMBOL>_<timeframe>.csv",
                path.display()
            )
        })?;
        rows.extend(BarReader::open(path, id.clone())?.map(|r| (id.key(), r)));
    }
    // As a live feed would: the instruments interleaved in time, each
    // file's rows in their own order (merged on the running maximum of
    // their times; ties by instrument).
    let mut newest: HashMap<String, i64> = HashMap::new();
    let mut keyed: Vec<(i64, usize, Row)> = rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let t = newest.entry(row.0.clone()).or_insert(i64::MIN);
            if let Ok(b) = &row.1 {
                *t = (*t).max(b.ts);
            }
            (*t, i, row)
        })
        .collect();
    keyed.sort_by(|a, b| (a.0, &(a.2).0, a.1).cmp(&(b.0, &(b.2).0, b.1)));
    let rows: Vec<_> = keyed.into_iter().map(|(_, _, row)| row).collect();
    let bar = if progress {
        ProgressBar::new(rows.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("replaying bars [{bar:40}] {pos}/{len} {elapsed} ({per_sec})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut bars_in, mut bad) = (0u64, 0u64);
    let mut pending = Vec::new();
    // Milliseconds the replay waited, by the first reason it had.
    let mut paced: BTreeMap<&str, u64> = BTreeMap::new();
    let replay_started = Instant::now();
    for (key, row) in rows {
        match row {
            Ok(b) => {
                bars_in += 1;
                pending.push(
                    producer
                        .enqueue(&OutRecord::from_content(MARKET_BARS_RAW, &key, &b)?)
                        .await?,
                );
            }
            Err(e) => {
                bad += 1;
                tracing::warn!(%key, line = e.line, reason = %e.reason, "unreadable row");
            }
        }
        if bars_in % 50 == 0 {
            bar.set_position(bars_in + bad);
            if let Some(rate) = rate {
                let due = replay_started + Duration::from_secs_f64(bars_in as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let mut waited = Instant::now();
            loop {
                let [v, f, d, r, p, e] = [
                    &stages[0], &stages[1], &stages[2], &stages[3], &stages[4], &stages[5],
                ]
                .map(|c| c.snapshot());
                let cached = trainer.cache.cached.load(Ordering::Relaxed);
                // Per input topic, data records only: a stage waiting for
                // event time reads progress records (and its own control
                // topic) meanwhile, and its held records are not read yet.
                let read = |stage: usize, topic: &str| stages[stage].handled.get(topic);
                let aligned = decisions.is_none();
                let reasons = [
                    (
                        "validator",
                        bars_in.saturating_sub(read(0, MARKET_BARS_RAW.name())) > LAG,
                    ),
                    (
                        "features",
                        v.outputs.saturating_sub(read(1, MARKET_BARS.name())) > LAG,
                    ),
                    (
                        "drift",
                        f.outputs.saturating_sub(read(2, FEATURES.name())) > LAG,
                    ),
                    (
                        "regime",
                        f.outputs.saturating_sub(read(3, FEATURES.name())) > LAG,
                    ),
                    (
                        "params",
                        r.outputs.saturating_sub(read(4, REGIMES.name())) > LAG,
                    ),
                    (
                        "engine",
                        f.outputs.saturating_sub(read(5, FEATURES.name())) > LAG,
                    ),
                    ("trainer cache", f.outputs.saturating_sub(cached) > LAG),
                    // Unaligned, nothing makes a stage wait for another:
                    // replay no faster than the trainer keeps up with the
                    // triggers, so models exist while the bars they are
                    // for go by (as they would live), and keep the regime,
                    // the controller and the engine within a few bars.
                    // Aligned, each waits for what it depends on, and
                    // only the broker's bound above paces the replay.
                    (
                        "trainer queue",
                        !aligned && trainer.pending.load(Ordering::Relaxed) > 1,
                    ),
                    (
                        "regime decisions",
                        !aligned
                            && f.outputs.saturating_sub(read(3, FEATURES.name())) > DECISION_LAG,
                    ),
                    (
                        "controller decisions",
                        decisions.as_ref().is_some_and(|[decided, learned]| {
                            r.outputs.saturating_sub(decided.load(Ordering::Relaxed)) > DECISION_LAG
                                || e.outputs.saturating_sub(learned.load(Ordering::Relaxed))
                                    > DECISION_LAG
                        }),
                    ),
                ];
                let Some((why, _)) = reasons.iter().find(|(_, behind)| *behind) else {
                    break;
                };
                *paced.entry(why).or_default() += 5;
                if waited.elapsed() > Duration::from_secs(15) {
                    tracing::info!(
                        validator = ?v, features = ?f, drift = ?d, regime = ?r, params = ?p,
                        engine = ?e, cached, trainer_pending = trainer.pending.load(Ordering::Relaxed),
                        "replay paced by a slower stage"
                    );
                    waited = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    for p in pending {
        p.confirm().await?;
    }
    bar.finish_and_clear();
    tracing::info!(waited_ms = ?paced, "replay paced by");
    Ok((bars_in, bad))
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let ctx = Context::connect(config).await?;
    if !ctx.broker.is_embedded() {
        ctx.create_topics(config).await?;
    }
    let (summary, mut api) = run_demo(config, &args, &ctx).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("broker            {}", summary.bootstrap);
        println!("API               {}", summary.api);
        println!("files             {}", summary.files);
        println!("bars in           {}", summary.bars_in);
        println!("  passed          {}", summary.bars_passed);
        println!("  flagged, held   {}", summary.bars_flagged);
        println!("  duplicates      {}", summary.duplicates);
        println!(
            "  dead letters    {}",
            summary.dead_letters - summary.bad_rows
        );
        println!("unreadable rows   {}", summary.bad_rows);
        let flags: Vec<String> = summary
            .flags
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("flags             {}", flags.join(", "));
        println!(
            "features          {} rows (contract {})",
            summary.features_published, summary.feature_contract
        );
        println!(
            "training triggers {} from drift ({} detections within a cooldown), {} on schedule",
            summary.training_triggers, summary.drift_suppressed, summary.scheduled_triggers
        );
        let reasons: Vec<String> = summary
            .trainings_by_reason
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!(
            "trainings         {} ({}): {} with a model, {} without (too little data as of the trigger, or failed)",
            summary.trainings,
            reasons.join(", "),
            summary.trainings_completed,
            summary.trainings_without_model
        );
        println!(
            "model versions    {} over {} model keys; {} promotion(s) to prod by the guardrails",
            summary.model_versions,
            summary.models.len(),
            summary.promotions
        );
        for (key, (versions, prod)) in &summary.models {
            println!(
                "  {key:<30} {versions} version(s), prod {}",
                prod.map_or("-".into(), |v| format!("v{v}"))
            );
        }
        println!(
            "  time in runs    {:.1} s reading data, {:.1} s fitting and evaluating",
            summary.training_load_seconds, summary.training_fit_seconds
        );
        println!(
            "regimes           {} posteriors under prod models",
            summary.regimes_published
        );
        println!(
            "params            {} decisions, {} updates published ({} kill-switches)",
            summary.param_decisions, summary.param_changes, summary.kill_switches
        );
        println!(
            "engine            {} one-bar trades; summed per-trade return {:.1} % of notional under the controller vs {:.1} % under the safe presets (after 2 bp costs, not compounded)",
            summary.trades, summary.reward_policy, summary.reward_safe_preset
        );
        if let Some(alpha) = summary.conservative_alpha {
            println!(
                "  conservative, α = {alpha}: {} decisions for another preset held by the budget, {} fallbacks to safe",
                summary.held_by_budget, summary.conservative_fallbacks
            );
        }
        let floor = |safe: f64| safe - summary.conservative_alpha.unwrap_or(0.0) * safe.abs();
        for (strategy, (policy, safe)) in &summary.reward_by_strategy {
            let mark = if *policy >= floor(*safe) {
                "within (1 − α) of safe or ahead"
            } else {
                "BELOW (1 − α) × safe"
            };
            println!("  {strategy:<20} {policy:>9.1} % vs {safe:>9.1} % safe  {mark}");
            for (preset, (n, r)) in &summary.reward_by_preset {
                if let Some(id) = preset.strip_prefix(&format!("{strategy}/")) {
                    println!("    {id:<18} {n:>7} positions {r:>9.1} %");
                }
            }
        }
        println!("walk-forward per instrument (controller vs safe preset, %)");
        for (instrument, strategies) in &summary.reward_by_instrument {
            let cells: Vec<String> = strategies
                .iter()
                .map(|(s, (policy, safe))| format!("{s} {policy:.1} vs {safe:.1}"))
                .collect();
            println!("  {instrument:<20} {}", cells.join(", "));
        }
        println!(
            "time              {:.2} s ({:.0} bars/s end to end)",
            summary.seconds, summary.bars_per_second
        );
    }
    let accounted =
        summary.bars_passed + summary.bars_flagged + summary.duplicates + summary.dead_letters
            - summary.bad_rows;
    ensure!(
        accounted == summary.bars_in,
        "not every bar was accounted for: {} in, {accounted} accounted",
        summary.bars_in
    );
    if args.keep_running {
        eprintln!(
            "broker up at {}, API at {} (dashboard: {}/dashboard); the validator and features go on; Ctrl-C to stop",
            summary.bootstrap, summary.api, summary.api
        );
        api.live(shutdown_signal()).await?;
    }
    api.stop().await
}
