//! Reading topics back without a consumer group: a partition range (state
//! rebuild), or a whole topic up to its current end (views such as the
//! review queue of `autotrain flags`).
//!
//! For processors whose state is a function of the inputs they processed
//! (see [`Processor::rebuilds_from_inputs`](crate::Processor::rebuilds_from_inputs)),
//! the runner replays `[log start, committed offset)` of every input
//! partition through the core before consuming, discarding the outputs
//! (they were published and acknowledged before the offset was committed):
//! the state after a restart is the state before it, with no snapshot to
//! keep consistent with offsets.

use std::time::{Duration, Instant};

use autotrain_schemas::{decode, Payload, WireError};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::error::KafkaError;
use crate::event_id::EventId;
use crate::link::QuietContext;
use crate::record::{EVENT_ID_HEADER, PROGRESS_HEADER};

/// One record read back: its offset, key, value, timestamp and event id.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub timestamp: Option<i64>,
    pub event_id: Option<EventId>,
    /// `Some(t)`: a progress record, not data.
    pub progress: Option<i64>,
}

/// Reads `[start, end)` of one partition (stops early at the end of the
/// log). Blocking: call from `spawn_blocking`.
pub fn read_range(
    config: &ClientConfig,
    physical: &str,
    partition: i32,
    start: i64,
    end: i64,
    timeout: Duration,
) -> Result<Vec<Replayed>, KafkaError> {
    let mut out = Vec::new();
    if start >= end {
        return Ok(out);
    }
    let reader: BaseConsumer<QuietContext> = config.create_with_context(QuietContext)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(physical, partition, Offset::Offset(start))?;
    reader.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                // Past the range (markers and aborted records before `end`
                // are skipped without a message).
                if m.offset() >= end {
                    return Ok(out);
                }
                out.push(Replayed {
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    timestamp: m.timestamp().to_millis(),
                    event_id: event_id_of(&m),
                    progress: progress_of(&m),
                });
                if m.offset() + 1 >= end {
                    return Ok(out);
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(out),
            // librdkafka reconnects by itself; the deadline bounds the wait.
            Some(Err(e)) if crate::link::is_transport(e.rdkafka_error_code()) => {}
            Some(Err(e)) => return Err(e.into()),
            None => {
                // Aborted records and transaction markers are skipped
                // without a message: the position says the range is done.
                if position(&reader, physical, partition).is_some_and(|p| p >= end) {
                    return Ok(out);
                }
            }
        }
    }
    let (low, high) = reader
        .fetch_watermarks(physical, partition, Duration::from_secs(5))
        .unwrap_or((-1, -1));
    Err(KafkaError::Admin(format!(
        "reading {physical}[{partition}] {start}..{end} timed out after {timeout:?} at {} record(s) (position {:?}, log {low}..{high})",
        out.len(),
        position(&reader, physical, partition)
    )))
}

/// The consumer's position in one assigned partition, if it has one. On a
/// transactional topic it moves past commit markers and aborted records,
/// which never come out as messages: a reader that wants "everything up to
/// the high watermark" must ask it rather than count the messages it got.
pub fn position<C: ConsumerContext>(
    reader: &BaseConsumer<C>,
    physical: &str,
    partition: i32,
) -> Option<i64> {
    let tpl = reader.position().ok()?;
    match tpl.find_partition(physical, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// One record of a topic read to its end, decoded.
#[derive(Debug)]
pub struct Record<T> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub timestamp: Option<i64>,
    pub event_id: Option<EventId>,
    pub value: Result<T, WireError>,
}

impl<T> Record<T> {
    /// The value, or [`KafkaError::Restore`] naming where the record is.
    pub fn into_value(self, topic: &str) -> Result<T, KafkaError> {
        self.value.map_err(|e| KafkaError::Restore {
            topic: topic.to_string(),
            partition: self.partition,
            offset: self.offset,
            reason: e.to_string(),
        })
    }
}

/// Every value of records read back for a state rebuild; the first that
/// does not decode stops the rebuild with its position.
pub fn values<T>(topic: &str, records: Vec<Record<T>>) -> Result<Vec<T>, KafkaError> {
    records.into_iter().map(|r| r.into_value(topic)).collect()
}

/// `(low, high)` offsets of a partition; asks again for a moment while the
/// broker answers that it does not lead it yet (right after the topic was
/// created, or while leadership moves). Blocking.
pub fn query_watermarks<C: ConsumerContext>(
    client: &impl Consumer<C>,
    physical: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64), KafkaError> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let deadline = Instant::now() + timeout;
    loop {
        match client.fetch_watermarks(physical, partition, timeout) {
            Err(rdkafka::error::KafkaError::MetadataFetch(
                code @ (Code::NotLeaderForPartition
                | Code::LeaderNotAvailable
                | Code::UnknownTopicOrPartition),
            )) if Instant::now() < deadline => {
                tracing::debug!(
                    topic = physical,
                    partition,
                    ?code,
                    "no leader yet; asking again"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return Ok(other?),
        }
    }
}

/// The partition ids of a (physical) topic; empty if it does not exist.
pub fn partitions_of<C: ConsumerContext>(
    client: &impl Consumer<C>,
    physical: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    // Right after a topic is created, a broker may answer for a moment
    // that it leads none of its partitions: that passes.
    let deadline = Instant::now() + timeout;
    let metadata = loop {
        match client.fetch_metadata(Some(physical), timeout) {
            Err(rdkafka::error::KafkaError::MetadataFetch(code)) if Instant::now() < deadline => {
                tracing::debug!(topic = physical, ?code, "metadata not ready; asking again");
                std::thread::sleep(Duration::from_millis(100));
            }
            other => break other?,
        }
    };
    let partitions = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    drop(metadata);
    Ok(partitions)
}

/// Reads every partition of a catalogue topic from its start to its end as
/// of the call, decoding values as `T`; records come partition by
/// partition, in offset order within each; progress records are left out
/// (see [`read_progress`]). Blocking.
pub fn read_topic<T: Payload>(
    settings: &crate::ClientSettings,
    logical: &str,
    timeout: Duration,
) -> Result<Vec<Record<T>>, KafkaError> {
    let physical = settings.physical(logical);
    let probe: BaseConsumer<QuietContext> =
        settings.reader_config().create_with_context(QuietContext)?;
    let partitions = partitions_of(&probe, &physical, timeout)?;
    if partitions.is_empty() {
        return Err(KafkaError::Admin(format!(
            "topic {physical} does not exist"
        )));
    }
    let mut out = Vec::new();
    for partition in partitions {
        let (low, high) = query_watermarks(&probe, &physical, partition, timeout)?;
        let records = read_range(
            &settings.reader_config(),
            &physical,
            partition,
            low,
            high,
            timeout,
        )?;
        out.extend(
            records
                .into_iter()
                .filter(|r| r.progress.is_none())
                .map(|r| Record {
                    partition,
                    offset: r.offset,
                    key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                    timestamp: r.timestamp,
                    event_id: r.event_id,
                    value: match r.payload {
                        Some(bytes) => decode::<T>(&bytes),
                        None => Err(WireError::Truncated(
                            "record has no value (tombstone)".into(),
                        )),
                    },
                }),
        );
    }
    Ok(out)
}

/// `(partition, first offset, end offset)` of every partition of a
/// catalogue topic (blocking).
pub fn watermarks(
    settings: &crate::ClientSettings,
    logical: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let probe: BaseConsumer<QuietContext> =
        settings.reader_config().create_with_context(QuietContext)?;
    watermarks_with(&probe, settings, logical, timeout)
}

/// [`watermarks`] through a client the caller keeps (no connection set-up
/// per call).
pub fn watermarks_with<C: ConsumerContext>(
    probe: &BaseConsumer<C>,
    settings: &crate::ClientSettings,
    logical: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let physical = settings.physical(logical);
    let partitions = partitions_of(probe, &physical, timeout)?;
    partitions
        .into_iter()
        .map(|p| {
            let (low, high) = query_watermarks(probe, &physical, p, timeout)?;
            Ok((p, low, high))
        })
        .collect()
}

/// The first offset of every partition of a catalogue topic (blocking).
pub fn log_starts(
    settings: &crate::ClientSettings,
    logical: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64)>, KafkaError> {
    Ok(watermarks(settings, logical, timeout)?
        .into_iter()
        .map(|(p, low, _)| (p, low))
        .collect())
}

/// The event time a progress record (see [`PROGRESS_HEADER`]) vouches for;
/// `None` for an ordinary record.
pub fn progress_of(m: &impl Message) -> Option<i64> {
    m.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == PROGRESS_HEADER)
            .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
    })
}

pub(crate) fn event_id_of(m: &impl Message) -> Option<EventId> {
    m.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == EVENT_ID_HEADER)
            .and_then(|h| h.value.and_then(EventId::parse))
    })
}

/// The offsets consumer group `group` committed on a catalogue topic, per
/// partition (partitions without a commit are left out). Blocking.
pub fn committed(
    settings: &crate::ClientSettings,
    group: &str,
    logical: &str,
    timeout: Duration,
) -> Result<std::collections::BTreeMap<i32, i64>, KafkaError> {
    let probe: BaseConsumer<QuietContext> = settings
        .consumer_config(group)
        .create_with_context(QuietContext)?;
    let topic = settings.physical(logical);
    let mut tpl = TopicPartitionList::new();
    for p in partitions_of(&probe, &topic, timeout)? {
        tpl.add_partition(&topic, p);
    }
    let committed = probe.committed_offsets(tpl, timeout)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Has consumer group `group` committed every partition of the catalogue
/// `topics` up to its current end? (Blocking.)
pub fn group_caught_up(
    settings: &crate::ClientSettings,
    group: &str,
    topics: &[&str],
    timeout: Duration,
) -> Result<bool, KafkaError> {
    let probe: BaseConsumer<QuietContext> = settings
        .consumer_config(group)
        .create_with_context(QuietContext)?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for logical in topics {
        let topic = settings.physical(logical);
        for p in partitions_of(&probe, &topic, timeout)? {
            let (_, high) = query_watermarks(&probe, &topic, p, timeout)?;
            ends.insert((topic.clone(), p), high);
            tpl.add_partition(&topic, p);
        }
    }
    let committed = probe.committed_offsets(tpl, timeout)?;
    let mut short = Vec::new();
    for e in committed.elements() {
        let key = (e.topic().to_string(), e.partition());
        let end = ends.get(&key).copied().unwrap_or(0);
        match e.offset() {
            Offset::Offset(o) if o >= end => {}
            Offset::Offset(o) => short.push((key.0, key.1, o, end)),
            _ if end == 0 => {}
            _ => return Ok(false),
        }
    }
    drop(committed);
    if short.is_empty() {
        return Ok(true);
    }
    // Under exactly-once a partition ends with a commit marker the group
    // never consumes as a record: caught up if nothing readable is left.
    nothing_readable_between(settings, &short, timeout)
}

/// Whether `[from, to)` of each `(physical topic, partition, from, to)`
/// holds no record a `read_committed` reader gets (only transaction
/// markers and aborted records). Blocking.
pub fn nothing_readable_between(
    settings: &crate::ClientSettings,
    ranges: &[(String, i32, i64, i64)],
    timeout: Duration,
) -> Result<bool, KafkaError> {
    let reader: BaseConsumer<QuietContext> =
        settings.reader_config().create_with_context(QuietContext)?;
    let mut tpl = TopicPartitionList::new();
    for (topic, p, from, _) in ranges {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*from))?;
    }
    reader.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let to = ranges
                    .iter()
                    .find(|(t, p, _, _)| t == m.topic() && *p == m.partition())
                    .map_or(0, |r| r.3);
                if m.offset() < to {
                    return Ok(false);
                }
            }
            Some(Err(e))
                if !matches!(e, rdkafka::error::KafkaError::PartitionEOF(_))
                    && !crate::link::is_transport(e.rdkafka_error_code()) =>
            {
                return Err(e.into())
            }
            _ => {
                if ranges
                    .iter()
                    .all(|(t, p, _, to)| position(&reader, t, *p).is_some_and(|o| o >= *to))
                {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// The newest progress (see [`PROGRESS_HEADER`]) per record key on a
/// catalogue topic, reading each partition from its start to its end, or
/// with `until` up to `until[partition]` (exclusive; nothing of a
/// partition it leaves out), e.g. a group's committed offsets. Blocking.
pub fn read_progress(
    settings: &crate::ClientSettings,
    logical: &str,
    until: Option<&std::collections::BTreeMap<i32, i64>>,
    timeout: Duration,
) -> Result<std::collections::HashMap<String, i64>, KafkaError> {
    let physical = settings.physical(logical);
    let probe: BaseConsumer<QuietContext> =
        settings.reader_config().create_with_context(QuietContext)?;
    let mut out = std::collections::HashMap::new();
    for partition in partitions_of(&probe, &physical, timeout)? {
        let (low, high) = query_watermarks(&probe, &physical, partition, timeout)?;
        let end = match until {
            None => high,
            Some(u) => u.get(&partition).copied().unwrap_or(0).min(high),
        };
        for r in read_range(
            &settings.reader_config(),
            &physical,
            partition,
            low,
            end,
            timeout,
        )? {
            if let (Some(t), Some(key)) = (r.progress, r.key) {
                let key = String::from_utf8_lossy(&key).into_owned();
                let e = out.entry(key).or_insert(t);
                *e = (*e).max(t);
            }
        }
    }
    Ok(out)
}
