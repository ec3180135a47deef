//! One run's I/O, on a blocking thread: claim the input offsets, read the
//! feature records in them, check the window's flags, load the reference
//! set and champion, train ([`crate::pipeline`]), store a newly cut
//! reference set, and hand back the [`Outcome`] with the manifest. Events
//! along the way (claim, `running`, progress) go to the executor through
//! `tx`, in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use autotrain_kafka::reader::{read_range, watermarks_with};
use autotrain_kafka::{read_topic, ClientSettings, KafkaError};
use rdkafka::consumer::BaseConsumer;

use autotrain_schemas::{
    decode, BuildKind, FeatureBuild, FeatureVector, InputRange, Manifest, Metric, OffsetRange,
    TrainingState, TriggerReason, ValidationFlag,
};
use autotrain_topics::{FEATURES, MARKET_FLAGS};
use tokio::sync::mpsc::UnboundedSender;

use super::cache::{Cached, FeatureCache};
use super::store::ReferenceStore;
use crate::artifact::TrainedModel;
use crate::core::{Done, Event, Outcome, Plan, Trainer};
use crate::dataset::Table;
use crate::flags::FlagBook;
use crate::forecast::ForecastModel;
use crate::pipeline::{forecast_metrics, train, train_forecast, Budget, Previous, TrainError};
use crate::spec::{Family, Mode, TrainSpec};

const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// What a run sends the executor while it goes.
#[derive(Debug)]
pub enum Msg {
    Publish(Vec<Event>),
    Finished(Box<Plan>, Outcome),
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

pub struct Context {
    pub settings: ClientSettings,
    /// A long-lived client for end offsets.
    pub probe: BaseConsumer,
    pub cache: Option<Arc<FeatureCache>>,
    pub core: Arc<Mutex<Trainer>>,
    pub store: ReferenceStore,
    pub clock: fn() -> i64,
}

/// Loading is reported outside the queue's `running` state (the run may
/// still park); only the executor's log sees it.
fn progress_load(_ctx: &Context, _tx: &UnboundedSender<Msg>, id: &str, p: f64) {
    tracing::debug!(training = id, progress = p, "loading features");
}

fn send(tx: &UnboundedSender<Msg>, events: Vec<Event>) {
    if !events.is_empty() {
        let _ = tx.send(Msg::Publish(events));
    }
}

/// Runs `plan` to its outcome: every problem is an outcome with the
/// reason, a panic in the run included (a failed attempt that frees its
/// slot, never a run stuck `running`).
pub fn execute(ctx: &Context, plan: &Plan, tx: &UnboundedSender<Msg>) -> Outcome {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(ctx, plan, tx))) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Outcome::Failed(e),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            tracing::error!(training = %plan.training_id, panic = %why, "training run panicked");
            Outcome::Failed(format!("the run panicked: {why}"))
        }
    }
}

fn kafka(e: KafkaError) -> String {
    format!("kafka: {e}")
}

fn lock(ctx: &Context) -> Result<std::sync::MutexGuard<'_, Trainer>, String> {
    ctx.core
        .lock()
        .map_err(|_| "trainer state poisoned".to_string())
}

fn run(ctx: &Context, plan: &Plan, tx: &UnboundedSender<Msg>) -> Result<Outcome, String> {
    let id = plan.training_id.as_str();
    let started = std::time::Instant::now();
    let progress = |stage: &str, p: f64| {
        if let Ok(mut core) = ctx.core.lock() {
            send(tx, core.progress(id, stage, p, (ctx.clock)()));
        }
    };

    // 1. Which offsets: a rerun reads its manifest's ranges again; a run
    //    claims (strict: only what no other run of the key took) from the
    //    start of what is readable to the current end.
    let ranges: Vec<OffsetRange> = match plan.rerun_of.as_ref().and_then(|v| v.manifest.as_ref()) {
        Some(m) => m.inputs.clone(),
        None => {
            let cached = ctx.cache.as_ref().map(|c| c.starts()).unwrap_or_default();
            let wanted: Vec<OffsetRange> =
                watermarks_with(&ctx.probe, &ctx.settings, FEATURES.name(), IO_TIMEOUT)
                    .map_err(kafka)?
                    .into_iter()
                    .map(|(partition, low, high)| OffsetRange {
                        topic: FEATURES.name().into(),
                        partition,
                        start: cached.get(&partition).map_or(low, |c| (*c).min(low)),
                        end: high,
                    })
                    .collect();
            let (event, ranges) = lock(ctx)?.claim(plan, &wanted, (ctx.clock)());
            send(tx, vec![event]);
            ranges
        }
    };

    let claimed = started.elapsed();
    // 2. Read them (from the cache when it covers them).
    progress_load(ctx, tx, id, 0.0);
    let records: Vec<Cached> = match ctx.cache.as_ref().and_then(|c| c.read(&ranges, IO_TIMEOUT)) {
        Some(r) => r,
        None => {
            let reader = ctx.settings.reader_config();
            let mut out = Vec::new();
            for r in &ranges {
                let physical = ctx.settings.physical(&r.topic);
                for rec in read_range(&reader, &physical, r.partition, r.start, r.end, IO_TIMEOUT)
                    .map_err(kafka)?
                {
                    out.push(
                        rec.payload
                            .as_deref()
                            .and_then(|b| decode::<FeatureVector>(b).ok())
                            .map(Arc::new),
                    );
                }
            }
            out
        }
    };
    progress_load(ctx, tx, id, 1.0);
    let read = started.elapsed();
    let undecodable = records.iter().filter(|r| r.is_none()).count();
    let wanted_contract = plan.trigger.feature_contract_version.as_ref();
    let usable: Vec<&FeatureVector> = records
        .iter()
        .flatten()
        .map(|v| v.as_ref())
        .filter(|v| wanted_contract.is_none_or(|c| *c == v.contract_version))
        .collect();
    let other_contract = records.len() - undecodable - usable.len();
    let contract = usable
        .last()
        .map(|v| v.contract_version.clone())
        .or_else(|| plan.trigger.feature_contract_version.clone())
        .unwrap_or_default();
    let window = (plan.spec.mode == Mode::Sliding).then_some(plan.spec.train_window);
    let (table, stats) = Table::build(
        usable.iter().copied(),
        &plan.trigger.instruments,
        plan.spec.as_of,
        window,
    );
    drop(records);
    // A scheduled run trains on the complete data as of its instant: until
    // a feature row past it exists, bars up to it may still be on their way.
    if plan.trigger.reason == TriggerReason::Schedule
        && stats.after_as_of == 0
        && plan.spec.as_of.is_some()
    {
        return Ok(Outcome::Parked(
            TrainingState::WaitingData,
            format!(
                "features have not reached the scheduled instant {} yet",
                plan.spec.as_of.unwrap_or_default()
            ),
        ));
    }
    if table.is_empty() {
        return Ok(Outcome::Parked(
            TrainingState::WaitingData,
            format!(
                "no feature rows for {} in {} offset range(s)",
                if plan.trigger.instruments.is_empty() {
                    "any instrument".to_string()
                } else {
                    plan.trigger.instruments.join(",")
                },
                ranges.len()
            ),
        ));
    }

    let contract_hash = autotrain_features::Contract::released_hash(&contract);
    let build = feature_build(
        plan,
        &table,
        &ranges,
        &contract,
        contract_hash.as_deref(),
        ctx,
    );

    let built = started.elapsed();
    // 3. Flags in the window (a rerun repeats a decision already taken).
    let spans = table.spans();
    let mut critical = 0;
    if plan.rerun_of.is_none() {
        let ends: Vec<(i32, i64)> =
            watermarks_with(&ctx.probe, &ctx.settings, MARKET_FLAGS.name(), IO_TIMEOUT)
                .map_err(kafka)?
                .into_iter()
                .map(|(p, _, high)| (p, high))
                .collect();
        let cached = ctx.cache.as_ref().and_then(|c| c.flags(&ends, IO_TIMEOUT));
        let book = match cached {
            Some(book) => book,
            None => {
                let mut book = FlagBook::new();
                for r in
                    read_topic::<ValidationFlag>(&ctx.settings, MARKET_FLAGS.name(), IO_TIMEOUT)
                        .map_err(kafka)?
                {
                    if let Ok(f) = r.value {
                        book.apply(f);
                    }
                }
                book
            }
        };
        let kinds = lock(ctx)?.config.block_on.clone();
        let blocking = book.blocking(&spans, &kinds);
        if !blocking.is_empty() {
            let ids: Vec<&str> = blocking
                .iter()
                .take(5)
                .map(|f| f.flag_id.as_str())
                .collect();
            return Ok(Outcome::Parked(
                TrainingState::Blocked,
                format!(
                    "{} unresolved flag(s) in the window ({}{}); approve, reject or override them",
                    blocking.len(),
                    ids.join(", "),
                    if blocking.len() > ids.len() {
                        ", …"
                    } else {
                        ""
                    }
                ),
            ));
        }
        critical = book.critical(&spans);
    }

    // 4. The split version's reference set and the champion.
    let reference = match &plan.reference_hash {
        Some(h) => Some(ctx.store.load(h).map_err(|e| e.to_string())?),
        None => None,
    };
    let gbdt = plan.spec.family == Family::Gbdt;

    // 5. Train.
    let load_seconds = started.elapsed().as_secs_f64();
    let (timeout, running) = {
        let core = lock(ctx)?;
        (
            core.config.run_timeout_ms.max(0) as u64,
            core.queue.running().count().max(1),
        )
    };
    // Runs share the cores: each fit gets its share of the runs running
    // now, all of them when it runs alone (the model is the same whatever
    // the share).
    let budget = Budget {
        threads: (crate::par::cores() / running).max(1),
        deadline: started.checked_add(Duration::from_millis(timeout)),
    };
    let mut begun = false;
    let mut on_progress = |stage: &str, p: f64| {
        if !begun && stage == "fit" {
            begun = true;
            if let Ok(mut core) = ctx.core.lock() {
                send(tx, core.begin(id, (ctx.clock)()));
            }
        }
        progress(stage, p);
    };
    let champion_bytes = plan.champion.as_ref().and_then(|v| v.parameters.as_deref());
    let trained = if gbdt {
        let champion = champion_bytes.and_then(|b| ForecastModel::from_json(b).ok());
        train_forecast(
            &plan.spec,
            plan.seed,
            &table,
            reference,
            champion.as_ref(),
            budget,
            &mut on_progress,
            &|| {
                // Cancelled (or superseded) while searching: the remaining
                // trials are not run.
                ctx.core.lock().map_or(true, |c| {
                    !c.queue.job(id).is_some_and(|j| {
                        j.state == TrainingState::Running && j.attempt == plan.attempt
                    })
                })
            },
        )
        .map(|t| Fitted::Forecast(Box::new(t)))
    } else {
        let champion = champion_bytes.and_then(|b| TrainedModel::from_bytes(b).ok());
        let warm = match (&plan.spec.warm_from, &plan.warm) {
            (Some(hash), None) => {
                return Err(format!(
                    "the manifest's warm start, the version with parameter hash {hash}, is not in the registry of {}",
                    plan.trigger.model_key
                ))
            }
            (_, Some(v)) => v
                .parameters
                .as_deref()
                .and_then(|b| TrainedModel::from_bytes(b).ok()),
            (None, None) => None,
        };
        train(
            &plan.spec,
            plan.seed,
            &table,
            reference,
            Previous {
                champion: champion.as_ref(),
                warm: warm.as_ref(),
            },
            budget,
            &mut on_progress,
        )
        .map(|t| Fitted::Hmm(Box::new(t)))
    };
    let train_seconds = started.elapsed().as_secs_f64() - load_seconds;
    tracing::debug!(
        training = id,
        claim_ms = claimed.as_secs_f64() * 1e3,
        read_ms = (read - claimed).as_secs_f64() * 1e3,
        table_ms = (built - read).as_secs_f64() * 1e3,
        flags_ms = load_seconds * 1e3 - built.as_secs_f64() * 1e3,
        train_ms = train_seconds * 1e3,
        rows = table.len(),
        "run timed"
    );
    let trained = match trained {
        Ok(t) => t,
        // Data past the as-of time exists: no more will come for it.
        Err(TrainError::NotEnoughData { rows, min }) if stats.after_as_of > 0 => {
            return Ok(Outcome::Skipped(format!(
                "{rows} usable training row(s) as of {}, {min} needed",
                plan.spec.as_of.unwrap_or_default()
            )))
        }
        Err(TrainError::NotEnoughData { rows, min }) => {
            return Ok(Outcome::Parked(
                TrainingState::WaitingData,
                format!("{rows} usable training row(s), {min} needed"),
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    let (reference, new_reference) = match &trained {
        Fitted::Hmm(t) => (&t.reference, t.new_reference),
        Fitted::Forecast(t) => (&t.reference, t.new_reference),
    };
    if new_reference {
        ctx.store.save(reference).map_err(|e| e.to_string())?;
    }

    // 6. The manifest and metrics.
    let m = |name: &str, value: f64| Metric {
        name: name.into(),
        value,
    };
    let (mut metrics, parameters, parameter_hash, loglik_per_bar, reference_hash) = match &trained {
        Fitted::Hmm(t) => {
            let mut metrics = t.evaluation.metrics("");
            if let Some(c) = &t.champion {
                metrics.extend(c.metrics("champion_"));
            }
            metrics.extend([
                m("train_rows", t.train_rows as f64),
                m("excluded_rows", t.excluded_rows as f64),
                m("fit_loglik", t.fit.loglik),
                m("fit_iters", t.fit.iters as f64),
                m("fit_converged", f64::from(u8::from(t.fit.converged))),
            ]);
            if let Some(w) = &t.fit.warm {
                metrics.extend([
                    m("fit_warm_loglik", w.loglik),
                    m("fit_warm_iters", w.iters as f64),
                    m("fit_warm_chosen", f64::from(u8::from(w.chosen))),
                ]);
            }
            (
                metrics,
                t.model.to_bytes(),
                t.model.hmm.param_hash(),
                t.evaluation.loglik_per_bar,
                t.reference_hash.clone(),
            )
        }
        Fitted::Forecast(t) => {
            let mut metrics = forecast_metrics(&t.scores, "");
            if let Some(c) = &t.champion {
                metrics.extend(forecast_metrics(c, "champion_"));
            }
            metrics.extend([
                m("train_rows", t.train_rows as f64),
                m("excluded_rows", t.excluded_rows as f64),
                m("trees", t.model.trees.len() as f64),
                m("nodes", t.model.nodes() as f64),
            ]);
            if !t.trials.is_empty() {
                let metric = plan.spec.search_metric.as_str();
                metrics.push(m("search_trials", t.trials.len() as f64));
                for (i, (spec, scores)) in t.trials.iter().enumerate() {
                    let p = |name: &str, v: f64| m(&format!("trial_{i:03}_{name}"), v);
                    metrics.extend([
                        p(metric, scores.get(metric).unwrap_or(f64::NAN)),
                        p("learning_rate", spec.learning_rate),
                        p("max_depth", spec.max_depth as f64),
                        p("min_leaf_weight", spec.min_leaf_weight),
                        p("subsample", spec.subsample),
                        p("l2", spec.l2),
                    ]);
                }
                if let Some(i) = t.trials.iter().position(|(s, _)| *s == t.spec) {
                    metrics.push(m("search_best_trial", i as f64));
                }
            }
            (
                metrics,
                t.model.to_json(),
                t.model.param_hash(),
                f64::NAN,
                t.reference_hash.clone(),
            )
        }
    };
    metrics.extend([
        m("records_read", stats.records as f64),
        m("records_superseded", stats.superseded as f64),
        m("records_other_instruments", stats.other_instruments as f64),
        m("records_outside_window", stats.outside_window as f64),
        m("records_undecodable", undecodable as f64),
        m("records_other_contract", other_contract as f64),
        m("critical_flags", critical as f64),
        m("load_seconds", load_seconds),
        m("train_seconds", train_seconds),
    ]);
    let manifest = Manifest {
        trigger_id: plan.trigger.trigger_id.clone(),
        code_version: format!("autotrain-trainer {}", env!("CARGO_PKG_VERSION")),
        feature_contract_version: contract,
        inputs: ranges,
        split_version: plan.spec.split_version.clone(),
        reference_hash,
        hyperparams: match &trained {
            // A search's winner: what a rerun fits again.
            Fitted::Forecast(t) => t.spec.to_params(),
            // A fit that also started from a version names it.
            Fitted::Hmm(t) => TrainSpec {
                warm_from: plan
                    .warm
                    .as_ref()
                    .filter(|_| t.fit.warm.is_some())
                    .map(|v| v.parameter_hash.clone()),
                ..plan.spec.clone()
            }
            .to_params(),
        },
        seed: plan.seed as i64,
        dataset_version: plan.trigger.dataset_version.clone().or_else(|| {
            plan.rerun_of
                .as_ref()
                .and_then(|o| o.manifest.as_ref())
                .and_then(|m| m.dataset_version.clone())
        }),
        code_commit: Some(env!("AUTOTRAIN_GIT_COMMIT"))
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        feature_contract_hash: contract_hash,
        feature_build: Some(build.build_id.clone()),
    };
    Ok(Outcome::Done(Box::new(Done {
        parameters,
        parameter_hash,
        metrics,
        manifest,
        loglik_per_bar,
        critical_flags: critical,
        build: Some(build),
    })))
}

/// The training set's `FeatureBuild`: the contract, the offset ranges read,
/// the query (instruments, as-of, window) and the table's content hash,
/// which with the query identifies the build.
fn feature_build(
    plan: &Plan,
    table: &Table,
    ranges: &[OffsetRange],
    contract: &str,
    contract_hash: Option<&str>,
    ctx: &Context,
) -> FeatureBuild {
    let instruments = if plan.trigger.instruments.is_empty() {
        "*".to_string()
    } else {
        plan.trigger.instruments.join(",")
    };
    let window = match plan.spec.mode {
        Mode::Sliding => format!("sliding {} bars", plan.spec.train_window),
        _ => "expanding".to_string(),
    };
    autotrain_features::manifest::manifest(autotrain_features::manifest::BuildInput {
        kind: BuildKind::TrainingSet,
        source: format!(
            "trainer {}: {instruments} as of {}, {window}",
            plan.training_id,
            plan.spec
                .as_of
                .map_or_else(|| "the log end".to_string(), |t| t.to_string())
        ),
        inputs: ranges
            .iter()
            .map(|r| InputRange {
                topic: r.topic.clone(),
                partition: r.partition,
                first_offset: r.start,
                next_offset: r.end,
            })
            .collect(),
        as_of: plan.spec.as_of,
        rows: table.len() as i64,
        output_sha256: Some(table.fingerprint()),
        built_at: (ctx.clock)(),
        contract: autotrain_features::manifest::ContractId {
            version: contract.to_string(),
            hash: contract_hash.unwrap_or("unreleased").to_string(),
        },
    })
}

/// A run's fitted model, of either family.
enum Fitted {
    Hmm(Box<crate::pipeline::Trained>),
    Forecast(Box<crate::pipeline::TrainedForecast>),
}
