//! The scheduler's loop (I/O around `autotrain_drift::Schedules`): read
//! the last run of each schedule back from `training.triggers`, then every
//! tick publish the runs that are due.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use autotrain_drift::Schedules;
use autotrain_kafka::{read_topic, EventId, OutRecord, Producer};
use autotrain_schemas::{TrainingTrigger, TriggerReason};
use autotrain_topics::TRAINING_TRIGGERS;

use crate::config::SchedulerSettings;
use crate::context::Context;

/// Runs until `shutdown`; returns the number of triggers published.
pub async fn run(
    ctx: &Context,
    settings: &SchedulerSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<u64> {
    let now = || chrono::Utc::now().timestamp_millis();
    let mut schedules = Schedules::new(settings.schedule.clone(), now())?;
    let client = ctx.settings.clone();
    let earlier = tokio::task::spawn_blocking(move || {
        read_topic::<TrainingTrigger>(&client, TRAINING_TRIGGERS.name(), Duration::from_secs(30))
    })
    .await??;
    for t in earlier.into_iter().filter_map(|r| r.value.ok()) {
        if t.reason == TriggerReason::Schedule {
            schedules.restore(&t.model_key, t.created_at);
        }
    }
    let producer = Producer::new(&ctx.settings)?;
    let mut fired = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(settings.tick_seconds.max(0.05)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(fired),
            _ = tick.tick() => {}
        }
        for due in schedules.due(now()) {
            let Some(trigger) = schedules.trigger(&due) else {
                continue;
            };
            if due.missed > 0 {
                tracing::warn!(model_key = %due.model_key, missed = due.missed, "scheduled runs missed while down; catching up once");
            }
            let id = EventId::derive(&[b"trigger", trigger.trigger_id.as_bytes()]);
            let record = OutRecord::new(TRAINING_TRIGGERS, &trigger.model_key, &trigger, id)?;
            producer.enqueue(&record).await?.confirm().await?;
            tracing::info!(trigger = %trigger.trigger_id, "scheduled training triggered");
            fired += 1;
        }
    }
}
