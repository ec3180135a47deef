//! The trainer service (`autotrain run trainer`): I/O around the pure
//! [`Trainer`].
//!
//! - **Restore**: the state is rebuilt from the topics the trainer writes
//!   (`training.status`, `model.updates`, `training.claims`) plus the
//!   triggers they refer to; unfinished runs are queued again and their
//!   claims released.
//! - **Intake** ([`intake`]): triggers and commands through the ordinary
//!   runner, so their offsets are stored only after the events they caused
//!   are acknowledged.
//! - **Executor** (this file): starts runnable jobs on blocking threads
//!   ([`execute`]), publishes what they report, hands their outcomes to the
//!   state machine, raises periodic alerts. Stops on `shutdown`; a run cut
//!   short is re-run after restart (same inputs, same seed ⇒ same model).
//! - [`cache`]: `features` tailed into memory for the runs to read.
//! - [`store`]: reference sets, content-addressed on disk.

pub mod cache;
pub mod execute;
pub mod intake;
pub mod store;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autotrain_kafka::runner::Counters;
use autotrain_kafka::{
    read_topic, values, ClientSettings, KafkaError, OutRecord, Producer, RunStats, RunnerConfig,
};
use autotrain_schemas::{DataClaim, ModelVersion, TrainingState, TrainingStatus, TrainingTrigger};
use autotrain_topics::{
    FEATURE_BUILDS, MODEL_UPDATES, TRAINING_CLAIMS, TRAINING_COMMANDS, TRAINING_STATUS,
    TRAINING_TRIGGERS,
};
use tokio::sync::{mpsc, Notify};

use crate::core::{Event, Trainer, TrainerConfig};

/// The topics the trainer's intake consumes: triggers and ops' commands.
pub const INPUTS: &[&str] = &[TRAINING_TRIGGERS.name(), TRAINING_COMMANDS.name()];
use execute::{Context, Msg};
pub use intake::{Intake, TrainerInput};
pub use store::{ReferenceStore, StoreError};

const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the service did (also readable while it runs).
#[derive(Debug, Default)]
pub struct ServiceCounters {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub parked: AtomicU64,
    pub alerts: AtomicU64,
    pub models: AtomicU64,
    pub published: AtomicU64,
    /// Trainings queued, parked or running (after the last executor turn).
    pub pending: AtomicU64,
    /// The feature cache (`cache.cached`: records tailed so far).
    pub cache: Arc<cache::FeatureCache>,
    /// The intake's runner (triggers and commands in, events out).
    pub intake: Arc<Counters>,
}

#[derive(Debug)]
pub struct ServiceReport {
    pub intake: RunStats,
    pub restored_trainings: usize,
}

/// The runner settings of the intake: group `group`, reading triggers and
/// commands.
pub fn intake_config(group: &str) -> RunnerConfig {
    let mut c = RunnerConfig::new(group, &[TRAINING_TRIGGERS.name(), TRAINING_COMMANDS.name()]);
    c.max_in_flight = 1_000;
    c
}

fn record(e: &Event) -> Result<OutRecord, KafkaError> {
    Ok(match e {
        Event::Status(s) => OutRecord::from_content(TRAINING_STATUS, &s.training_id, s)?,
        Event::Model(m) => OutRecord::from_content(MODEL_UPDATES, &m.model_key, m.as_ref())?,
        Event::Claim(c) => OutRecord::from_content(TRAINING_CLAIMS, &c.model_key, c)?,
        Event::Build(b) => OutRecord::from_content(FEATURE_BUILDS, &b.build_id, b.as_ref())?,
        Event::Progress { model_key, through } => {
            OutRecord::progress(MODEL_UPDATES.name(), model_key, *through)
        }
    })
}

async fn publish(
    producer: &Producer,
    events: &[Event],
    counters: &ServiceCounters,
) -> Result<(), KafkaError> {
    let records = events.iter().map(record).collect::<Result<Vec<_>, _>>()?;
    producer.send_all(&records).await?;
    for e in events {
        counters.published.fetch_add(1, Ordering::Relaxed);
        let c = match e {
            Event::Status(s) => match s.state {
                TrainingState::Running if s.stage.is_none() => Some(&counters.started),
                TrainingState::Completed => Some(&counters.completed),
                TrainingState::Failed => Some(&counters.failed),
                TrainingState::Blocked | TrainingState::WaitingData => Some(&counters.parked),
                TrainingState::Alert => Some(&counters.alerts),
                _ => None,
            },
            Event::Model(m) if m.event == autotrain_schemas::RegistryEvent::Registered => {
                Some(&counters.models)
            }
            _ => None,
        };
        if let Some(c) = c {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Runs the trainer until `shutdown` resolves.
pub async fn run(
    settings: &ClientSettings,
    config: TrainerConfig,
    runner: RunnerConfig,
    clock: fn() -> i64,
    counters: Arc<ServiceCounters>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<ServiceReport, KafkaError> {
    let store = ReferenceStore::new(&config.store_dir);
    let tick = Duration::from_millis(config.recheck_ms.clamp(50, 1_000) as u64);
    let cache_features = config.cache_features;
    let retention = config.retention.clone();
    let mut core = Trainer::new(config);

    let s = settings.clone();
    let group = runner.group_id.clone();
    let (triggers, statuses, models, claims, promised, trigger_progress) =
        tokio::task::spawn_blocking(move || {
            Ok::<_, KafkaError>((
                read_topic::<TrainingTrigger>(&s, TRAINING_TRIGGERS.name(), READ_TIMEOUT)?,
                read_topic::<TrainingStatus>(&s, TRAINING_STATUS.name(), READ_TIMEOUT)?,
                read_topic::<ModelVersion>(&s, MODEL_UPDATES.name(), READ_TIMEOUT)?,
                read_topic::<DataClaim>(&s, TRAINING_CLAIMS.name(), READ_TIMEOUT)?,
                autotrain_kafka::reader::read_progress(
                    &s,
                    MODEL_UPDATES.name(),
                    None,
                    READ_TIMEOUT,
                )?,
                // What the intake already consumed (later progress records are
                // read again with the triggers they follow).
                autotrain_kafka::reader::read_progress(
                    &s,
                    TRAINING_TRIGGERS.name(),
                    Some(&autotrain_kafka::reader::committed(
                        &s,
                        &group,
                        TRAINING_TRIGGERS.name(),
                        READ_TIMEOUT,
                    )?),
                    READ_TIMEOUT,
                )?,
            ))
        })
        .await
        .map_err(|e| KafkaError::Admin(format!("restore task: {e}")))??;
    // Statuses and claims are keyed by training id / model key over
    // several partitions: order them by time (ties keep partition order).
    // A record of these topics that does not decode or fold stops the
    // restore with its position: a registry missing an event is wrong.
    let mut statuses = values(TRAINING_STATUS.name(), statuses)?;
    statuses.sort_by_key(|s| s.at);
    let mut claims = values(TRAINING_CLAIMS.name(), claims)?;
    claims.sort_by_key(|c| c.at);
    let mut models: Vec<(i32, i64, ModelVersion)> = models
        .into_iter()
        .map(|r| Ok((r.partition, r.offset, r.into_value(MODEL_UPDATES.name())?)))
        .collect::<Result<_, KafkaError>>()?;
    models.sort_by_key(|(_, _, m)| m.at);
    let known: std::collections::BTreeSet<String> =
        statuses.iter().map(|s| s.training_id.clone()).collect();
    // Triggers that do not decode were dead-lettered by the intake when
    // they arrived; they never became trainings.
    let triggers: Vec<TrainingTrigger> = triggers
        .into_iter()
        .filter_map(|r| r.value.ok())
        .filter(|t| known.contains(&crate::queue::training_id(t)))
        .collect();
    let restored_trainings = triggers.len();
    let positions: Vec<(i32, i64)> = models.iter().map(|(p, o, _)| (*p, *o)).collect();
    let settled = core
        .restore(
            triggers,
            statuses,
            models.into_iter().map(|(_, _, m)| m),
            claims,
            clock(),
        )
        .map_err(|(i, e)| KafkaError::Restore {
            topic: settings.physical(MODEL_UPDATES.name()),
            partition: positions[i].0,
            offset: positions[i].1,
            reason: e.to_string(),
        })?;

    for (key, through) in promised {
        core.restore_promised(&key, through);
    }
    for (key, through) in trigger_progress {
        core.trigger_progress(&key, through);
    }
    let producer = Producer::new(settings)?;
    publish(&producer, &settled, &counters).await?;

    let core = Arc::new(Mutex::new(core));
    let wake = Arc::new(Notify::new());
    let stop = tokio_util::sync::CancellationToken::new();
    let intake = Intake {
        core: core.clone(),
        wake: wake.clone(),
        store: store.clone(),
        clock,
    };
    let tail_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cache = if cache_features {
        let (s, c, stop_flag) = (settings.clone(), counters.cache.clone(), tail_stop.clone());
        std::thread::Builder::new()
            .name("features-tail".into())
            .spawn(move || {
                if let Err(e) = cache::tail(&s, &c, &stop_flag) {
                    tracing::error!(error = %e, "features tail stopped; runs read the broker");
                }
            })
            .map_err(|e| KafkaError::Admin(format!("features tail thread: {e}")))?;
        Some(counters.cache.clone())
    } else {
        None
    };
    let probe = settings.reader_config().create()?;
    let ctx = Arc::new(Context {
        settings: settings.clone(),
        probe,
        cache,
        core: core.clone(),
        store,
        clock,
    });

    let stop_intake = stop.clone();
    let intake_run = async {
        let result = autotrain_kafka::run(
            settings,
            &runner,
            intake,
            counters.intake.clone(),
            async move { stop_intake.cancelled().await },
        )
        .await;
        // The intake failing (e.g. the brokers unreachable past the limit)
        // stops the service, not just its input.
        if result.is_err() {
            stop.cancel();
        }
        result
    };
    let executor = async {
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        let mut next_sweep = std::time::Instant::now();
        loop {
            if std::time::Instant::now() >= next_sweep {
                next_sweep = std::time::Instant::now()
                    + Duration::from_secs(60 * u64::from(retention.sweep_minutes.max(1)));
                let needed = core
                    .lock()
                    .map_err(|_| KafkaError::Admin("trainer state poisoned".into()))?
                    .needed_references();
                let (store, retention, now) = (ctx.store.clone(), retention.clone(), clock());
                match tokio::task::spawn_blocking(move || store.sweep(&retention, &needed, now))
                    .await
                {
                    Ok(Ok(deleted)) if !deleted.is_empty() => {
                        tracing::info!(deleted = deleted.len(), hashes = ?deleted, "reference sets past retention deleted (none a registered version needs)");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "reference store sweep failed; trying again next sweep")
                    }
                    Err(e) => tracing::warn!(error = %e, "reference store sweep task failed"),
                }
            }
            let (plans, alerts) = {
                let mut c = core
                    .lock()
                    .map_err(|_| KafkaError::Admin("trainer state poisoned".into()))?;
                let runs = c.next_runs(clock());
                let q = c.queue.stats();
                counters
                    .pending
                    .store((q.queued + q.active) as u64, Ordering::Relaxed);
                let mut alerts = c.tick(clock());
                alerts.extend(c.progress_events());
                (runs, alerts)
            };
            // A publish waiting on unreachable brokers gives way to the stop
            // (unacknowledged events never happened: a restart derives them
            // again from the topics).
            tokio::select! {
                r = publish(&producer, &alerts, &counters) => r?,
                () = stop.cancelled() => break,
            }
            for plan in plans {
                let (ctx, tx) = (ctx.clone(), tx.clone());
                tokio::task::spawn_blocking(move || {
                    let outcome = execute::execute(&ctx, &plan, &tx);
                    let _ = tx.send(Msg::Finished(Box::new(plan), outcome));
                });
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(tick) => {}
                Some(msg) = rx.recv() => {
                    let events = match msg {
                        Msg::Publish(events) => events,
                        Msg::Finished(plan, outcome) => core
                            .lock()
                            .map_err(|_| KafkaError::Admin("trainer state poisoned".into()))?
                            .finish(&plan, outcome, clock()),
                    };
                    tokio::select! {
                        r = publish(&producer, &events, &counters) => r?,
                        () = stop.cancelled() => break,
                    }
                }
            }
        }
        Ok::<(), KafkaError>(())
    };
    // Ends on the caller's shutdown, or when the service stops by itself
    // (its intake failed).
    let watch = async {
        tokio::select! {
            () = shutdown => stop.cancel(),
            () = stop.cancelled() => {}
        }
    };
    let (intake_result, executor_result, ()) = tokio::join!(intake_run, executor, watch);
    tail_stop.store(true, Ordering::Relaxed);
    let (_, intake) = intake_result?;
    executor_result?;
    producer.flush(Duration::from_secs(10))?;
    Ok(ServiceReport {
        intake,
        restored_trainings,
    })
}
