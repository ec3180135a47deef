//! The consumer loop of sinks: processors whose output is an external
//! store (QuestDB) rather than topics.
//!
//! Records are decoded (undecodable ⇒ dead letter, acknowledged before the
//! loop moves on) and added to the [`Sink`]'s batch; the batch is flushed
//! when it holds `max_rows` rows or is `max_age` old, and on shutdown.
//! Offsets are stored only after the flush that contains their rows
//! succeeded, so a crash re-delivers at most the unflushed batch, which the
//! store absorbs through its upsert keys. Failing flushes are retried with
//! exponential backoff and jitter; a flush still failing after
//! `retry_attempts` stops the loop with the error (nothing is skipped).
//! A shutdown during the retries stops at once: the batch's offsets are
//! not stored, so its records are read again on restart.
//!
//! Progress records (event-time alignment, on e.g. `regimes` and
//! `model.updates`) are not data: passed over and acknowledged with the
//! batch they arrive in.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autotrain_schemas::ErrorKind;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::{FusedFuture, FutureExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;

use crate::error::{KafkaError, ProcessError};
use crate::event_id::EventId;
use crate::producer::Producer;
use crate::reader::event_id_of;
use crate::record::{dead_letter, Incoming, Source};
use crate::runner::{Counters, Inbound, RunStats};
use crate::settings::ClientSettings;

/// A batching writer to an external store.
pub trait Sink: Send {
    type Input: Inbound;
    fn name(&self) -> &str;
    /// Adds one record to the pending batch. Poison ⇒ dead letter.
    fn add(&mut self, input: &Incoming<Self::Input>) -> Result<(), ProcessError>;
    /// Rows waiting for the next flush.
    fn pending(&self) -> usize;
    /// Writes the pending batch. On error the batch is kept for the retry.
    fn flush(&mut self) -> Result<(), ProcessError>;
}

#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub group_id: String,
    pub topics: Vec<String>,
    /// Flush when this many rows are pending …
    pub max_rows: usize,
    /// … or the oldest pending row is this old.
    pub max_age: Duration,
    pub retry_attempts: usize,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
}

impl SinkConfig {
    pub fn new(group_id: impl Into<String>, topics: &[&str]) -> Self {
        SinkConfig {
            group_id: group_id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            max_rows: 10_000,
            max_age: Duration::from_secs(1),
            retry_attempts: 8,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(30),
        }
    }
}

fn bump(a: &std::sync::atomic::AtomicU64) {
    a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `sink` until `shutdown`; flushes what is pending before returning.
/// `counters.outputs` counts rows flushed, `acknowledged` inputs whose
/// rows were flushed (or that were dead-lettered).
pub async fn run_sink<S: Sink>(
    settings: &ClientSettings,
    config: &SinkConfig,
    mut sink: S,
    counters: Arc<Counters>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(S, RunStats), KafkaError> {
    let consumer: StreamConsumer<crate::link::LinkContext> = settings
        .consumer_config(&config.group_id)
        .create_with_context(settings.context())?;
    let physical: Vec<String> = config.topics.iter().map(|t| settings.physical(t)).collect();
    consumer.subscribe(&physical.iter().map(String::as_str).collect::<Vec<_>>())?;
    let producer = Producer::new(settings)?;
    tracing::info!(sink = sink.name(), group = %config.group_id, topics = ?physical, "sink started");

    // Newest offset per partition whose rows are in the pending batch.
    let mut batch: HashMap<(String, i32), i64> = HashMap::new();
    let mut batch_inputs = 0u64;
    let mut oldest: Option<Instant> = None;
    let mut tick = tokio::time::interval(config.max_age.max(Duration::from_millis(10)) / 2);
    let shutdown = shutdown.fuse();
    tokio::pin!(shutdown);
    let result: Result<(), KafkaError> = async {
        loop {
            if shutdown.is_terminated() {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                _ = tick.tick() => {
                    if oldest.is_some_and(|t| t.elapsed() >= config.max_age) {
                        flush(&mut sink, config, &consumer, &mut batch, &mut batch_inputs, &counters, &mut shutdown).await?;
                        oldest = None;
                    }
                }
                msg = consumer.recv() => {
                    let m = match msg {
                        Ok(m) => m,
                        Err(rdkafka::error::KafkaError::MessageConsumptionFatal(code)) => {
                            return Err(rdkafka::error::KafkaError::MessageConsumptionFatal(code).into());
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "consumer error; continuing");
                            continue;
                        }
                    };
                    bump(&counters.received);
                    let topic = m.topic().to_string();
                    if crate::reader::progress_of(&m).is_some() {
                        batch.insert((topic, m.partition()), m.offset());
                        batch_inputs += 1;
                        continue;
                    }
                    let logical = settings.logical(&topic).unwrap_or(&topic).to_string();
                    let (partition, offset) = (m.partition(), m.offset());
                    let id = event_id_of(&m).unwrap_or_else(|| EventId::for_position(&logical, partition, offset));
                    let decoded = match m.payload() {
                        Some(bytes) => S::Input::decode(&logical, bytes).map_err(|e| (e.kind().into(), e.to_string())),
                        None => Err((ErrorKind::Malformed, "record has no value (tombstone)".to_string())),
                    };
                    let added = decoded.and_then(|value| {
                        let input = Incoming {
                            topic: logical.clone(),
                            partition,
                            offset,
                            key: m.key().map(<[u8]>::to_vec),
                            timestamp: m.timestamp().to_millis(),
                            event_id: id,
                            value,
                        };
                        sink.add(&input).map_err(|e| match e {
                            ProcessError::Poison { kind, reason } => (kind, reason),
                            ProcessError::Retriable(reason) => (ErrorKind::Processing, reason),
                        })
                    });
                    match added {
                        Ok(()) => {
                            bump(&counters.processed);
                            oldest.get_or_insert_with(Instant::now);
                        }
                        Err((kind, reason)) => {
                            bump(&counters.dead_lettered);
                            tracing::warn!(sink = sink.name(), topic = %logical, partition, offset, %reason, "dead-lettered");
                            let source = Source {
                                topic: &logical,
                                partition,
                                offset,
                                key: m.key(),
                                payload: m.payload(),
                                timestamp: m.timestamp().to_millis(),
                                event_id: id,
                            };
                            let record = dead_letter(sink.name(), &source, kind, reason)?;
                            producer.enqueue(&record).await?.confirm().await?;
                        }
                    }
                    batch.insert((topic, partition), offset);
                    batch_inputs += 1;
                    if sink.pending() >= config.max_rows {
                        flush(&mut sink, config, &consumer, &mut batch, &mut batch_inputs, &counters, &mut shutdown).await?;
                        oldest = None;
                    }
                }
            }
        }
    }
    .await;
    let flushed = flush(
        &mut sink,
        config,
        &consumer,
        &mut batch,
        &mut batch_inputs,
        &counters,
        &mut shutdown,
    )
    .await;
    if result.is_ok() {
        crate::runner::final_commit(&consumer);
    }
    crate::runner::close_consumer(consumer, result.is_ok() && flushed.is_ok());
    result?;
    flushed?;
    Ok((sink, counters.snapshot()))
}

/// Writes the pending batch, then stores its offsets. Once `shutdown` has
/// fired, a failing flush is not retried (nor waited for): its offsets
/// stay unstored.
#[allow(clippy::too_many_arguments)]
async fn flush<S: Sink>(
    sink: &mut S,
    config: &SinkConfig,
    consumer: &StreamConsumer<crate::link::LinkContext>,
    batch: &mut HashMap<(String, i32), i64>,
    batch_inputs: &mut u64,
    counters: &Counters,
    shutdown: &mut std::pin::Pin<&mut impl FusedFuture<Output = ()>>,
) -> Result<(), KafkaError> {
    let rows = sink.pending();
    if rows > 0 {
        let retries = if shutdown.is_terminated() {
            0
        } else {
            config.retry_attempts.saturating_sub(1)
        };
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(config.retry_min_delay)
            .with_max_delay(config.retry_max_delay)
            .with_max_times(retries)
            .with_jitter()
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match tokio::task::block_in_place(|| sink.flush()) {
                Ok(()) => break,
                Err(e) => match (e.is_retriable(), delays.next()) {
                    (true, Some(delay)) => {
                        bump(&counters.retries);
                        tracing::warn!(sink = sink.name(), attempts, ?delay, error = %e, "flush failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.as_mut() => {
                                tracing::warn!(sink = sink.name(), rows, "stopped while the flush failed: its records are read again on restart");
                                return Ok(());
                            }
                        }
                    }
                    (true, None) if shutdown.is_terminated() => {
                        tracing::warn!(sink = sink.name(), rows, error = %e, "stopping with a failed flush: its records are read again on restart");
                        return Ok(());
                    }
                    _ => {
                        return Err(KafkaError::RetriesExhausted {
                            processor: sink.name().to_string(),
                            topic: config.topics.join(","),
                            partition: -1,
                            offset: -1,
                            attempts,
                            reason: e.to_string(),
                        })
                    }
                },
            }
        }
        counters
            .outputs
            .fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
    }
    for ((topic, partition), offset) in batch.drain() {
        match consumer.store_offset(&topic, partition, offset) {
            Ok(()) => bump(&counters.offsets_stored),
            Err(e) => {
                bump(&counters.offsets_rejected);
                tracing::debug!(topic, partition, offset, error = %e, "offset not stored");
            }
        }
    }
    counters.acknowledged.fetch_add(
        std::mem::take(batch_inputs),
        std::sync::atomic::Ordering::Relaxed,
    );
    Ok(())
}
