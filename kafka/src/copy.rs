//! Copies a topic's committed records to another topic, partition for
//! partition: key, value, headers (event ids, progress) and timestamp kept.
//! `autotrain replay` fills its sandbox with the recorded inputs this way,
//! so a processor re-run there sees the log it saw, progress records
//! included.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::error::KafkaError;
use crate::link::QuietContext;
use crate::reader::{partitions_of, position, query_watermarks};
use crate::settings::ClientSettings;

/// What a copy did, per partition: records copied, records the filter
/// left out, and the offset after the last copied record in the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    pub copied: u64,
    pub skipped: u64,
    /// Partition → records in the target after the copy (the target was
    /// empty: the next record written there gets this offset).
    pub ends: BTreeMap<i32, i64>,
}

#[derive(Default)]
struct Failures(Arc<AtomicU64>, Arc<std::sync::Mutex<Option<String>>>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            self.0.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut first) = self.1.lock() {
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// What to do with one record of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Copy,
    Skip,
    /// Copy it with this value instead (key, headers and timestamp kept).
    Replace(Vec<u8>),
}

/// Copies every committed record of `from` (on `source`) to the same
/// partition of `to` (on `target`, an empty topic with at least as many
/// partitions), as `decide` says for each. Blocking.
pub fn copy_topic(
    source: &ClientSettings,
    from: &str,
    target: &ClientSettings,
    to: &str,
    decide: &dyn Fn(&BorrowedMessage<'_>) -> Verdict,
    timeout: Duration,
) -> Result<Copied, KafkaError> {
    let reader: BaseConsumer<QuietContext> =
        source.reader_config().create_with_context(QuietContext)?;
    let failures = Failures::default();
    let (failed, first_error) = (failures.0.clone(), failures.1.clone());
    let producer: BaseProducer<Failures> =
        target.producer_config().create_with_context(failures)?;
    let mut out = Copied::default();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in partitions_of(&reader, from, timeout)? {
        let (low, high) = query_watermarks(&reader, from, p, timeout)?;
        out.ends.insert(p, 0);
        if high > low {
            tpl.add_partition_offset(from, p, Offset::Offset(low))?;
            ends.insert(p, high);
        }
    }
    if ends.is_empty() {
        return Ok(out);
    }
    reader.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            return Err(KafkaError::Admin(format!(
                "copying {from} to {to} timed out after {timeout:?} ({} copied; partitions left: {:?})",
                out.copied,
                ends.keys().collect::<Vec<_>>()
            )));
        }
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let p = m.partition();
                let Some(&end) = ends.get(&p) else {
                    continue;
                };
                if m.offset() < end {
                    let verdict = decide(&m);
                    let value = match &verdict {
                        Verdict::Skip => None,
                        Verdict::Copy => Some(m.payload()),
                        Verdict::Replace(v) => Some(Some(v.as_slice())),
                    };
                    if let Some(value) = value {
                        send(&producer, to, &m, value)?;
                        out.copied += 1;
                        *out.ends.entry(p).or_default() += 1;
                    } else {
                        out.skipped += 1;
                    }
                }
                if m.offset() + 1 >= end {
                    ends.remove(&p);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            // librdkafka reconnects by itself; the deadline bounds the wait.
            Some(Err(e)) if crate::link::is_transport(e.rdkafka_error_code()) => {}
            Some(Err(e)) => return Err(e.into()),
            None => {
                // Markers and aborted records end a partition without a
                // message: its position says so.
                ends.retain(|p, end| position(&reader, from, *p).is_none_or(|at| at < *end));
            }
        }
    }
    producer.flush(timeout)?;
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = first_error.lock().ok().and_then(|f| f.clone());
        return Err(KafkaError::Admin(format!(
            "copying {from} to {to}: {failed} record(s) not delivered (first: {})",
            first.unwrap_or_default()
        )));
    }
    Ok(out)
}

fn send(
    producer: &BaseProducer<Failures>,
    to: &str,
    m: &BorrowedMessage<'_>,
    value: Option<&[u8]>,
) -> Result<(), KafkaError> {
    let headers = m.headers().map(|h| h.detach());
    loop {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(to).partition(m.partition());
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(t) = m.timestamp().to_millis() {
            record = record.timestamp(t);
        }
        if let Some(h) = &headers {
            record = record.headers(h.clone());
        }
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                _,
            )) => {
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}
