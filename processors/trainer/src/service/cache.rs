//! [`FeatureCache`]: the `features` topic tailed into memory by the trainer
//! service, so a run reads its offset ranges from memory instead of
//! fetching the topic again (runs follow each other on the same data), and
//! so records the embedded broker later drops (it keeps ~5 MiB per
//! partition) stay trainable. A range the cache does not cover is read
//! from the broker instead. The same tail folds `market.flags` into a
//! [`FlagBook`] that runs check their window against.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use autotrain_kafka::reader::{partitions_of, position, watermarks};
use autotrain_kafka::{ClientSettings, KafkaError};
use autotrain_schemas::{decode, FeatureVector, OffsetRange, ValidationFlag};
use autotrain_topics::{FEATURES, MARKET_FLAGS};

use crate::flags::FlagBook;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// A cached record: `None` if it did not decode.
pub type Cached = Option<Arc<FeatureVector>>;

#[derive(Debug, Default)]
struct Part {
    first: i64,
    next: i64,
    records: Vec<(i64, Cached)>,
}

#[derive(Debug, Default)]
struct Flags {
    book: FlagBook,
    /// Next offset per partition of `market.flags`.
    next: BTreeMap<i32, i64>,
}

#[derive(Default)]
pub struct FeatureCache {
    parts: Mutex<BTreeMap<i32, Part>>,
    flags: Mutex<Flags>,
    grown: Condvar,
    /// Records cached so far.
    pub cached: AtomicU64,
}

/// How much is cached, not what: the cache holds every feature row (a
/// derived Debug printed megabytes when the trainer stopped).
impl std::fmt::Debug for FeatureCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let partitions = self.parts.lock().map_or(0, |p| p.len());
        f.debug_struct("FeatureCache")
            .field("partitions", &partitions)
            .field(
                "cached",
                &self.cached.load(std::sync::atomic::Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl FeatureCache {
    /// The first cached offset of each partition.
    pub fn starts(&self) -> BTreeMap<i32, i64> {
        self.parts
            .lock()
            .map(|p| p.iter().map(|(k, v)| (*k, v.first)).collect())
            .unwrap_or_default()
    }

    fn push(&self, partition: i32, offset: i64, record: Cached) {
        if let Ok(mut parts) = self.parts.lock() {
            let part = parts.entry(partition).or_default();
            if offset >= part.next {
                part.records.push((offset, record));
                part.next = offset + 1;
                self.cached.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.grown.notify_all();
    }

    /// The tail's consumer stands at `next` in `partition`: offsets before
    /// it that came out as no message (transaction markers, aborted
    /// records) are covered too.
    fn advance(&self, partition: i32, next: i64) {
        if let Ok(mut parts) = self.parts.lock() {
            if let Some(part) = parts.get_mut(&partition) {
                if next > part.next {
                    part.next = next;
                    drop(parts);
                    self.grown.notify_all();
                }
            }
        }
    }

    /// As [`FeatureCache::advance`], for a `market.flags` partition.
    fn advance_flags(&self, partition: i32, next: i64) {
        if let Ok(mut f) = self.flags.lock() {
            let n = f.next.entry(partition).or_insert(next);
            if next > *n {
                *n = next;
                drop(f);
                self.grown.notify_all();
            }
        }
    }

    fn push_flag(&self, partition: i32, offset: i64, flag: Option<ValidationFlag>) {
        if let Ok(mut f) = self.flags.lock() {
            if let Some(flag) = flag {
                f.book.apply(flag);
            }
            f.next.insert(partition, offset + 1);
        }
        self.grown.notify_all();
    }

    /// The flags as of `ends` (next offset per `market.flags` partition,
    /// e.g. the end offsets when a run starts), waiting up to `wait` for
    /// the tail to get there.
    pub fn flags(&self, ends: &[(i32, i64)], wait: Duration) -> Option<FlagBook> {
        let deadline = Instant::now() + wait;
        let mut f = self.flags.lock().ok()?;
        loop {
            if ends
                .iter()
                .all(|(p, end)| *end <= 0 || f.next.get(p).is_some_and(|n| n >= end))
            {
                return Some(f.book.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            f = self.grown.wait_timeout(f, left).ok()?.0;
        }
    }

    /// The records of `ranges`, waiting up to `wait` for the tail to reach
    /// their ends. `None` if a range starts before the cache does, or the
    /// tail did not get there in time.
    pub fn read(&self, ranges: &[OffsetRange], wait: Duration) -> Option<Vec<Cached>> {
        let deadline = Instant::now() + wait;
        let mut parts = self.parts.lock().ok()?;
        loop {
            let covered = ranges.iter().all(|r| {
                parts
                    .get(&r.partition)
                    .is_some_and(|p| p.first <= r.start && p.next >= r.end)
                    || r.start >= r.end
            });
            if covered {
                break;
            }
            if ranges.iter().any(|r| {
                r.start < r.end && parts.get(&r.partition).is_some_and(|p| p.first > r.start)
            }) {
                return None;
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            parts = self.grown.wait_timeout(parts, left).ok()?.0;
        }
        let mut out = Vec::new();
        for r in ranges {
            let Some(p) = parts.get(&r.partition) else {
                continue;
            };
            let from = p.records.partition_point(|(o, _)| *o < r.start);
            out.extend(
                p.records[from..]
                    .iter()
                    .take_while(|(o, _)| *o < r.end)
                    .map(|(_, v)| v.clone()),
            );
        }
        Some(out)
    }
}

/// Tails every partition of `features` (and of `market.flags`) from its
/// current start into `cache` until `stop` is set (blocking: run on its
/// own thread).
pub fn tail(
    settings: &ClientSettings,
    cache: &FeatureCache,
    stop: &AtomicBool,
) -> Result<(), KafkaError> {
    let physical = settings.physical(FEATURES.name());
    let flags_topic = settings.physical(MARKET_FLAGS.name());
    let consumer: BaseConsumer<autotrain_kafka::LinkContext> = settings
        .reader_config()
        .set("enable.partition.eof", "false")
        .create_with_context(settings.context())?;
    let timeout = Duration::from_secs(30);
    if partitions_of(&consumer, &physical, timeout)?.is_empty() {
        return Err(KafkaError::Admin(format!(
            "topic {physical} does not exist"
        )));
    }
    let mut tpl = TopicPartitionList::new();
    if let Ok(mut parts) = cache.parts.lock() {
        for (p, low, _) in watermarks(settings, FEATURES.name(), timeout)? {
            parts.insert(
                p,
                Part {
                    first: low,
                    next: low,
                    records: Vec::new(),
                },
            );
            tpl.add_partition_offset(&physical, p, Offset::Offset(low))?;
        }
    }
    for (p, low, _) in watermarks(settings, MARKET_FLAGS.name(), timeout)? {
        tpl.add_partition_offset(&flags_topic, p, Offset::Offset(low))?;
    }
    consumer.assign(&tpl)?;
    let feature_parts: Vec<i32> = tpl
        .elements_for_topic(&physical)
        .iter()
        .map(|e| e.partition())
        .collect();
    let flag_parts: Vec<i32> = tpl
        .elements_for_topic(&flags_topic)
        .iter()
        .map(|e| e.partition())
        .collect();
    let mut positions_at = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(100));
        let idle = polled.is_none();
        match polled {
            Some(Ok(m)) if m.topic() == flags_topic => {
                let flag = m.payload().and_then(|b| decode::<ValidationFlag>(b).ok());
                cache.push_flag(m.partition(), m.offset(), flag);
            }
            Some(Ok(m)) => {
                let record = m
                    .payload()
                    .and_then(|b| decode::<FeatureVector>(b).ok())
                    .map(Arc::new);
                cache.push(m.partition(), m.offset(), record);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) if autotrain_kafka::link::is_transport(e.rdkafka_error_code()) => {
                consumer.context().transport_failed(&e.to_string());
                std::thread::sleep(Duration::from_millis(200));
            }
            Some(Err(e)) => tracing::warn!(error = %e, "features tail"),
        }
        // Under exactly-once the high watermark ends past a commit marker
        // that never comes out as a message: the consumer's position says
        // the tail got there (checked when idle, and at least every 100 ms;
        // after the record just polled is cached, which it counts).
        if idle || positions_at.elapsed() >= Duration::from_millis(100) {
            positions_at = Instant::now();
            for &p in &feature_parts {
                if let Some(next) = position(&consumer, &physical, p) {
                    cache.advance(p, next);
                }
            }
            for &p in &flag_parts {
                if let Some(next) = position(&consumer, &flags_topic, p) {
                    cache.advance_flags(p, next);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(ts: i64) -> Cached {
        Some(Arc::new(FeatureVector {
            instrument: "a".into(),
            timeframe: "30m".into(),
            ts,
            contract_version: "1".into(),
            bar_revision: 0,
            values: vec![],
        }))
    }

    fn range(p: i32, start: i64, end: i64) -> OffsetRange {
        OffsetRange {
            topic: "features".into(),
            partition: p,
            start,
            end,
        }
    }

    /// Partition 0 cached from the start of `offsets`, holding them.
    fn filled(cache: &FeatureCache, offsets: std::ops::Range<i64>) {
        if let Ok(mut parts) = cache.parts.lock() {
            parts.insert(
                0,
                Part {
                    first: offsets.start,
                    next: offsets.start,
                    records: vec![],
                },
            );
        }
        for o in offsets {
            cache.push(0, o, vector(o));
        }
    }

    #[test]
    fn its_debug_says_how_much_not_what() {
        let cache = FeatureCache::default();
        filled(&cache, 0..10_000);
        let text = format!("{cache:?}");
        assert!(text.starts_with("FeatureCache { partitions: 1,"), "{text}");
        assert!(text.len() < 80, "{text}");
    }

    #[test]
    fn reads_covered_ranges_waits_for_the_tail_and_refuses_what_it_never_saw() {
        let cache = Arc::new(FeatureCache::default());
        filled(&cache, 5..10);
        let got = cache
            .read(&[range(0, 6, 8)], Duration::ZERO)
            .expect("covered");
        assert_eq!(
            got.iter().flatten().map(|v| v.ts).collect::<Vec<_>>(),
            [6, 7]
        );
        assert!(
            cache.read(&[range(0, 2, 8)], Duration::ZERO).is_none(),
            "before the cache"
        );
        assert!(
            cache
                .read(&[range(0, 6, 12)], Duration::from_millis(10))
                .is_none(),
            "not yet"
        );
        let c = cache.clone();
        let later = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            c.push(0, 10, None);
            c.push(0, 11, vector(11));
        });
        let got = cache
            .read(&[range(0, 9, 12)], Duration::from_secs(5))
            .expect("waited");
        assert_eq!(got.len(), 3);
        assert!(got[1].is_none(), "an undecodable record is kept as a hole");
        later.join().expect("thread");
    }
}
