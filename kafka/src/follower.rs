//! [`follow`]: tails catalogue topics from their start and keeps going, with
//! no consumer group: the feed of live read views (the control-plane API's
//! trainings, registry, flags and parameter views). Blocking; run it on a
//! thread of its own and stop it with the flag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::error::KafkaError;
use crate::reader::partitions_of;
use crate::ClientSettings;

/// What [`follow`] hands its callback.
#[derive(Debug)]
pub enum Followed<'a> {
    /// A record: its catalogue topic, position, broker time and value bytes.
    Record {
        topic: &'a str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        payload: Option<&'a [u8]>,
    },
    /// Every partition has reached the end it had when following began
    /// (sent once): the view now reflects the topics as of the start.
    CaughtUp,
}

/// Reads every partition of `topics` (catalogue names) from the start, then
/// waits for new records, until `stop` is set. Fails if a topic does not
/// exist or the broker errs.
pub fn follow(
    settings: &ClientSettings,
    topics: &[&str],
    stop: &AtomicBool,
    mut on: impl FnMut(Followed<'_>),
) -> Result<(), KafkaError> {
    // No partition-EOF events (librdkafka logs each as an error); the
    // positions say when the starting ends are reached.
    let mut config = settings.reader_config();
    config.set("enable.partition.eof", "false");
    let consumer: BaseConsumer<crate::link::LinkContext> =
        config.create_with_context(settings.context())?;
    let timeout = Duration::from_secs(30);
    let mut tpl = TopicPartitionList::new();
    // Partitions not yet read up to the end they had at the start.
    let mut pending = HashMap::new();
    for logical in topics {
        let physical = settings.physical(logical);
        let partitions = partitions_of(&consumer, &physical, timeout)?;
        if partitions.is_empty() {
            return Err(KafkaError::Admin(format!(
                "topic {physical} does not exist"
            )));
        }
        for p in partitions {
            let (low, high) = crate::reader::query_watermarks(&consumer, &physical, p, timeout)?;
            if high > low {
                pending.insert((physical.clone(), p), high);
            }
            tpl.add_partition_offset(&physical, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    drop(tpl);
    let mut caught_up = false;
    let mut checked = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if !caught_up && (pending.is_empty() || checked.elapsed() > Duration::from_millis(50)) {
            checked = Instant::now();
            let positions = consumer.position()?;
            for e in positions.elements() {
                let key = (e.topic().to_string(), e.partition());
                if let (Offset::Offset(o), Some(high)) = (e.offset(), pending.get(&key)) {
                    if o >= *high {
                        pending.remove(&key);
                    }
                }
            }
            drop(positions);
            if pending.is_empty() {
                caught_up = true;
                on(Followed::CaughtUp);
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            // Progress records are not data.
            Some(Ok(m)) if crate::reader::progress_of(&m).is_some() => {}
            Some(Ok(m)) => {
                let logical = settings.logical(m.topic()).unwrap_or(m.topic());
                on(Followed::Record {
                    topic: logical,
                    partition: m.partition(),
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis(),
                    payload: m.payload(),
                });
            }
            // librdkafka reconnects by itself: the outage is the link's
            // (logged once; readers answer 503 meanwhile), not a reason to
            // read everything again.
            Some(Err(e)) if crate::link::is_transport(e.rdkafka_error_code()) => {
                consumer.context().transport_failed(&e.to_string());
                std::thread::sleep(Duration::from_millis(200));
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(())
}
