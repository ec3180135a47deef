//! The consumer loop every processor runs in.
//!
//! For each input record, in partition order: check its log position (fail
//! loudly if the broker dropped records we still need), drop it if its event
//! id was seen, decode it (undecodable ⇒ dead letter), call the pure
//! [`Processor`] core (retriable error ⇒ back off and call again; poison ⇒
//! dead letter), and send the outputs. The input's offset is stored only
//! after every record it caused is acknowledged by the broker, and stored
//! offsets are committed in the background and once more on shutdown. A
//! crash at any point therefore re-delivers inputs (never skips them), and
//! the deterministic output ids let consumers drop the repeats.
//!
//! With [`ExactlyOnce`] (brokers with transactions), outputs and input
//! offsets are instead committed together in Kafka transactions of up to
//! `max_inputs` inputs or `max_interval` (see [`crate::transaction`]):
//! `read_committed` readers see each output once. An aborted transaction
//! stops the run with [`KafkaError::TransactionAborted`] (retriable): the
//! core's state includes the aborted inputs, so the caller rebuilds the core
//! and runs again from the committed offsets.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autotrain_schemas::{decode, ErrorKind, Payload, WireError};
use autotrain_topics::{catalogue, CleanupPolicy};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::dedupe::{fingerprint, Dedupe, Seen};
use crate::error::{KafkaError, ProcessError};
use crate::event_id::EventId;
use crate::producer::{Pending, Producer};
use crate::reader::event_id_of;
use crate::record::{dead_letter, Incoming, OutRecord, Outputs, Source};
use crate::settings::ClientSettings;
use crate::transaction::Transactions;

const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// Acknowledged inputs between two offset stores (also stored whenever
/// nothing is in flight).
const STORE_EVERY: usize = 1_000;
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(45);
/// Inputs quiet this long: the core is asked for the progress it holds
/// back ([`Processor::flush`]).
const IDLE_FLUSH: Duration = Duration::from_millis(100);
/// How long a runner that failed still waits for its outputs' delivery
/// reports before it returns (they may never come: the brokers are gone).
const FAILED_DRAIN: Duration = Duration::from_secs(5);

/// What a processor reads. Every payload type is one; a processor reading
/// several topics of different types implements it for an enum.
pub trait Inbound: Sized + Send + 'static {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError>;
}

impl<T: Payload> Inbound for T {
    fn decode(_topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        decode::<T>(bytes)
    }
}

/// A pure processing core: no I/O, deterministic in its inputs.
pub trait Processor: Send {
    type Input: Inbound;
    /// Stable name: part of every output's event id and of dead letters.
    fn name(&self) -> &str;
    fn process(
        &mut self,
        input: &Incoming<Self::Input>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError>;
    /// True if the core's state is a function of the inputs it processed
    /// (the validator's last bars, checksums and held bars): the runner then
    /// replays each input partition up to the committed offset through the
    /// core before consuming, and catches up whenever a partition resumes
    /// past what this core has seen. Outputs of replayed records are
    /// discarded: they were acknowledged before the offset was committed.
    fn rebuilds_from_inputs(&self) -> bool {
        false
    }
    /// Input topics whose progress records [`Processor::wait`] may name;
    /// the runner restores their progress up to the committed offsets at
    /// start, and replays them first when it rebuilds.
    fn control_topics(&self) -> &'static [&'static str] {
        &[]
    }
    /// Event-time alignment: `Some(w)` holds `input`, and what follows it
    /// in its partition, until every `(topic, key)` of `w.on` has progress
    /// at or after `w.until` (records with an event time at or before it
    /// can no longer arrive there). Asked again whenever progress arrives.
    fn wait(&self, _input: &Self::Input) -> Option<Wait> {
        None
    }
    /// A progress record arrived on an input (after the runner noted it
    /// for [`Processor::wait`]); its outputs are published like any other.
    fn progress(
        &mut self,
        _topic: &str,
        _key: &str,
        _through: i64,
        _out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        Ok(())
    }
    /// Progress records this core can vouch for now that it has not
    /// published yet, asked for when its inputs have been quiet for a
    /// moment (the end of a replay, a lull in a live feed): a reader
    /// waiting on the last bars is not left waiting for a periodic record
    /// that only the next bar would bring. Progress only: what a core
    /// decides must not depend on when it is asked.
    fn flush(&mut self) -> Vec<OutRecord> {
        Vec::new()
    }
}

/// What an input waits for (see [`Processor::wait`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// The input's event time.
    pub until: i64,
    /// `(catalogue topic, record key)` whose progress must reach `until`.
    pub on: Vec<(&'static str, String)>,
    /// Further `(catalogue topic, record key, event time)` conditions with
    /// a time of their own (the controller waits for outcomes a lap late
    /// and for forecasts of the bar itself).
    pub also: Vec<(&'static str, String, i64)>,
    /// Progress records this core can vouch for while it waits (its outputs
    /// before `until` are complete), published when the input is held: a
    /// writer it waits on may itself wait on them (a cycle such as drift ⇄
    /// trainer), so each hold moves the cycle on by a lap.
    pub announce: Vec<OutRecord>,
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub group_id: String,
    /// Catalogue topic names to consume.
    pub topics: Vec<String>,
    /// Input records whose outputs may await acknowledgement at once.
    pub max_in_flight: usize,
    /// Event ids remembered per input partition (see [`Dedupe`]).
    pub dedupe_window: usize,
    /// Calls of the core for one record before a retriable error is fatal.
    pub retry_attempts: usize,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
    /// Offsets start at 0 and the broker never deletes by retention (the
    /// embedded broker): a consumer with no committed offset must then see
    /// offset 0, and a later first offset means records were dropped.
    pub strict_log_start: bool,
    /// A group with no committed offset whose input partition no longer
    /// starts at offset 0 (retention or a bounded broker deleted records
    /// nobody in the group read) fails with [`KafkaError::DataLoss`] unless
    /// this is set: then it starts at the log start, accepting the loss
    /// (a new consumer of a topic kept for days, on purpose).
    pub accept_log_start: bool,
    /// An output larger than this (key + value, bytes) would be refused by
    /// the broker (`message.max.bytes`): the input that caused it is
    /// dead-lettered instead, and the stream goes on.
    pub max_record_bytes: usize,
    /// The runner gives up ([`KafkaError::Unreachable`]) once the brokers
    /// have not answered for this long (librdkafka keeps reconnecting
    /// meanwhile; the outage is logged once, see [`crate::link`]).
    pub unreachable_limit: Duration,
    /// Static group membership (`group.instance.id`): a restarted instance
    /// with the same id takes its partitions back at once instead of
    /// waiting for the broker to time the crashed one's session out. Must
    /// be unique per live instance of the group.
    pub group_instance_id: Option<String>,
    /// `Some`: exactly-once delivery in Kafka transactions; `None`:
    /// at-least-once with event-id dedupe (brokers without transactions).
    pub exactly_once: Option<ExactlyOnce>,
}

/// Settings of exactly-once delivery.
#[derive(Debug, Clone)]
pub struct ExactlyOnce {
    /// Unique per runner instance and stable across its restarts (a
    /// restart then aborts what the crashed instance left open at once).
    pub transactional_id: String,
    /// Inputs per transaction at most …
    pub max_inputs: usize,
    /// … and how long a transaction stays open at most.
    pub max_interval: Duration,
    /// The broker aborts a transaction open longer than this (and so
    /// bounds how long a vanished instance holds back `read_committed`
    /// readers).
    pub transaction_timeout: Duration,
}

impl ExactlyOnce {
    pub fn new(transactional_id: impl Into<String>) -> Self {
        ExactlyOnce {
            transactional_id: transactional_id.into(),
            max_inputs: 10_000,
            max_interval: Duration::from_millis(100),
            transaction_timeout: Duration::from_secs(10),
        }
    }
}

impl RunnerConfig {
    pub fn new(group_id: impl Into<String>, topics: &[&str]) -> Self {
        RunnerConfig {
            group_id: group_id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            max_in_flight: 50_000,
            dedupe_window: 100_000,
            retry_attempts: 5,
            retry_min_delay: Duration::from_millis(50),
            retry_max_delay: Duration::from_secs(5),
            strict_log_start: false,
            accept_log_start: false,
            max_record_bytes: 1_000_000,
            unreachable_limit: Duration::from_secs(300),
            group_instance_id: None,
            exactly_once: None,
        }
    }
}

/// Counters a runner updates as it goes (readable while it runs).
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub processed: AtomicU64,
    pub duplicates: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Records published (progress records not counted).
    pub outputs: AtomicU64,
    pub retries: AtomicU64,
    pub acknowledged: AtomicU64,
    pub offsets_stored: AtomicU64,
    pub offsets_rejected: AtomicU64,
    pub replayed: AtomicU64,
    /// Partition assignments the consumer received (0 until the group
    /// has been joined).
    pub assignments: AtomicU64,
    /// Partition revocations (the runner re-checks its positions after one).
    pub revocations: AtomicU64,
    /// Transactions committed (exactly-once).
    pub transactions: AtomicU64,
    /// Inputs held back until their event time was complete on every
    /// input they depend on.
    pub held: AtomicU64,
    /// Progress records received.
    pub progress: AtomicU64,
    /// Records handled per input topic (catalogue name; progress records
    /// not counted): how far a stage has read each input, for callers
    /// pacing a producer by it (records held for alignment are not yet
    /// handled).
    pub handled: HandledByTopic,
    /// Time to process one input.
    pub processing: crate::metrics::ProcessingTime,
    /// Where the runner's time goes, summed (`autotrain bench pipeline`).
    pub phases: Phases,
}

/// Nanoseconds a runner spent in each phase of handling its inputs,
/// summed over them. Consuming (fetch, the wait for input) is what is left
/// of a stage's wall time.
#[derive(Debug, Default)]
pub struct Phases {
    /// Avro decoding of inputs.
    pub decode_ns: AtomicU64,
    /// The core's `process`, encoding excluded.
    pub core_ns: AtomicU64,
    /// Avro encoding of outputs.
    pub encode_ns: AtomicU64,
    /// Handing outputs to the producer (librdkafka's queue).
    pub enqueue_ns: AtomicU64,
    /// From enqueue to the broker's acknowledgement, summed over inputs
    /// (a latency: acknowledgements overlap with the work above).
    pub ack_ns: AtomicU64,
    /// Inputs whose outputs were acknowledged.
    pub acked: AtomicU64,
    /// Exactly-once: committing transactions.
    pub commit_ns: AtomicU64,
}

impl Phases {
    fn add(slot: &AtomicU64, d: Duration) {
        slot.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Records handled per input topic; see [`Counters::handled`].
#[derive(Debug, Default)]
pub struct HandledByTopic(std::sync::Mutex<BTreeMap<String, u64>>);

impl HandledByTopic {
    fn bump(&self, logical: &str) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(logical) {
            Some(n) => *n += 1,
            None => {
                counts.insert(logical.to_string(), 1);
            }
        }
    }

    /// Records of `logical` handled so far.
    pub fn get(&self, logical: &str) -> u64 {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(logical).copied().unwrap_or(0)
    }
}

/// A snapshot of [`Counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunStats {
    pub received: u64,
    pub processed: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub outputs: u64,
    pub retries: u64,
    /// Inputs whose outputs were all acknowledged by the broker.
    pub acknowledged: u64,
    /// Offset stores (one per partition per batch of acknowledged inputs).
    pub offsets_stored: u64,
    /// Offsets the client refused to store (partition revoked meanwhile).
    pub offsets_rejected: u64,
    /// Earlier inputs replayed through the core to rebuild its state.
    pub replayed: u64,
    /// Transactions committed (exactly-once; 0 at-least-once).
    pub transactions: u64,
    /// Inputs held back for event-time alignment.
    pub held: u64,
    /// Progress records received.
    pub progress: u64,
}

impl Counters {
    pub fn snapshot(&self) -> RunStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RunStats {
            received: g(&self.received),
            processed: g(&self.processed),
            duplicates: g(&self.duplicates),
            dead_lettered: g(&self.dead_lettered),
            outputs: g(&self.outputs),
            retries: g(&self.retries),
            acknowledged: g(&self.acknowledged),
            offsets_stored: g(&self.offsets_stored),
            offsets_rejected: g(&self.offsets_rejected),
            replayed: g(&self.replayed),
            transactions: g(&self.transactions),
            held: g(&self.held),
            progress: g(&self.progress),
        }
    }
}

/// Publishes the progress a waiting core vouches for (in the open
/// transaction, exactly-once).
async fn announce(
    txn: Option<&Arc<Transactions>>,
    producer: Option<&Producer>,
    records: &[OutRecord],
) -> Result<(), KafkaError> {
    match (txn, producer) {
        (Some(txn), _) => {
            for record in records {
                txn.begin()?;
                txn.producer().enqueue(record).await?;
            }
        }
        (None, Some(p)) => {
            p.send_all(records).await?;
        }
        (None, None) => unreachable!("a runner has a producer or a transaction"),
    }
    Ok(())
}

/// True once every `(topic, key)` a wait names has progress at or after
/// its event time.
fn is_over(frontier: &HashMap<(String, String), i64>, wait: &Wait) -> bool {
    let reached = |topic: &str, key: &str, until: i64| {
        frontier
            .get(&(topic.to_string(), key.to_string()))
            .is_some_and(|t| *t >= until)
    };
    wait.on
        .iter()
        .all(|(topic, key)| reached(topic, key, wait.until))
        && wait
            .also
            .iter()
            .all(|(topic, key, until)| reached(topic, key, *until))
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Logs partition assignments and revocations of the runner's consumer;
/// exactly-once, commits the open transaction before partitions go.
#[derive(Debug)]
pub struct RebalanceLog {
    group: String,
    counters: Arc<Counters>,
    txn: Option<Arc<Transactions>>,
    link: crate::link::LinkContext,
}

impl rdkafka::ClientContext for RebalanceLog {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.link.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.link.error(error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for RebalanceLog {
    fn pre_rebalance(&self, c: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        let (rdkafka::consumer::Rebalance::Revoke(_), Some(txn)) = (rebalance, &self.txn) else {
            return;
        };
        bump(&self.counters.revocations);
        let Some(cgm) = c.group_metadata() else {
            txn.fail(KafkaError::TransactionAborted(
                "no group metadata at revocation".into(),
            ));
            return;
        };
        match txn.commit(&cgm) {
            Ok(done) => {
                if done.inputs > 0 {
                    bump(&self.counters.transactions);
                    self.counters
                        .acknowledged
                        .fetch_add(done.inputs as u64, Ordering::Relaxed);
                }
                tracing::info!(group = %self.group, inputs = done.inputs, "transaction committed before revocation");
            }
            Err(e) => txn.fail(e),
        }
    }

    fn post_rebalance(
        &self,
        _c: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        let parts = |tpl: &TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                .collect::<Vec<_>>()
        };
        match rebalance {
            Rebalance::Assign(tpl) => {
                bump(&self.counters.assignments);
                tracing::info!(group = %self.group, partitions = ?parts(tpl), "assigned")
            }
            Rebalance::Revoke(tpl) => {
                if self.txn.is_none() {
                    bump(&self.counters.revocations);
                }
                tracing::info!(group = %self.group, partitions = ?parts(tpl), "revoked")
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance error")
            }
        }
    }
}

type Consumer_ = StreamConsumer<RebalanceLog>;

type Ack = Pin<Box<dyn Future<Output = Result<(String, i32, i64), KafkaError>> + Send>>;

/// An input record copied out of the consumer's buffer.
struct Raw {
    logical: String,
    physical: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    timestamp: Option<i64>,
    event_id: Option<EventId>,
    progress: Option<i64>,
}

/// Runs `processor` until `shutdown` resolves; returns the core (with its
/// state) and the counters. `counters` may be shared to watch progress.
pub async fn run<P: Processor>(
    settings: &ClientSettings,
    config: &RunnerConfig,
    processor: P,
    counters: Arc<Counters>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(P, RunStats), KafkaError> {
    let txn = match &config.exactly_once {
        Some(eo) => {
            let (s, eo) = (settings.clone(), eo.clone());
            Some(Arc::new(
                tokio::task::spawn_blocking(move || {
                    Transactions::new(&s, &eo.transactional_id, eo.transaction_timeout)
                })
                .await
                .map_err(|e| KafkaError::Admin(format!("init transactions task: {e}")))??,
            ))
        }
        None => None,
    };
    // Counters may outlive one run (a supervisor's restarts share them).
    let revocations = counters.revocations.load(Ordering::Relaxed);
    let mut state = Loop {
        settings,
        config,
        processor,
        counters,
        producer: match txn {
            Some(_) => None,
            None => Some(Producer::new(settings)?),
        },
        txn: txn.clone(),
        dedupe: Dedupe::new(config.dedupe_window),
        positions: HashMap::new(),
        acked: HashMap::new(),
        acked_since_store: 0,
        seen_up_to: HashMap::new(),
        revocations_seen: revocations,
        frontier: HashMap::new(),
        held: BTreeMap::new(),
        held_revocations: revocations,
    };
    let mut consumer_config = settings.consumer_config(&config.group_id);
    if let Some(id) = &config.group_instance_id {
        consumer_config.set("group.instance.id", id);
    }
    if txn.is_some() {
        consumer_config
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
    }
    let consumer: Consumer_ = consumer_config.create_with_context(RebalanceLog {
        group: config.group_id.clone(),
        counters: state.counters.clone(),
        txn,
        link: settings.context(),
    })?;
    let physical: Vec<String> = config.topics.iter().map(|t| settings.physical(t)).collect();
    consumer.subscribe(&physical.iter().map(String::as_str).collect::<Vec<_>>())?;
    tracing::info!(processor = state.processor.name(), group = %config.group_id, topics = ?physical, "runner started");
    if state.processor.rebuilds_from_inputs() {
        state.rebuild(&consumer, &physical).await?;
    }
    state.restore_frontier(&consumer).await?;

    let mut inflight: FuturesOrdered<Ack> = FuturesOrdered::new();
    let mut result = state.consume(&consumer, &mut inflight, shutdown).await;
    if result.is_ok() {
        // Exactly-once: what was processed is committed on the way out.
        result = state.commit(&consumer).await;
    }
    if result.is_err() {
        // A failed runner commits nothing more: not the rebalance
        // callback as the consumer closes (which would block this thread
        // on a coordinator that may not answer), not a retry in flight.
        if let Some(txn) = &state.txn {
            txn.abandon();
        }
    }

    // Whatever happened, finish what was sent and store what was
    // acknowledged. After a failure (the brokers gone past the limit) the
    // wait is bounded: what is not confirmed by then keeps its input
    // offset unstored, and the next run reads it again.
    let drain = async {
        while let Some(done) = inflight.next().await {
            let (topic, partition, offset) = done?;
            bump(&state.counters.acknowledged);
            state.acked.insert((topic, partition), offset);
        }
        Ok::<(), KafkaError>(())
    };
    let drained = if result.is_ok() {
        drain.await
    } else {
        tokio::time::timeout(FAILED_DRAIN, drain)
            .await
            .unwrap_or(Ok(()))
    };
    if state.txn.is_none() && result.is_ok() {
        state.store_acked(&consumer);
        final_commit(&consumer);
    }
    close_consumer(consumer, result.is_ok());
    result?;
    drained?;
    let stats = state.counters.snapshot();
    tracing::info!(processor = state.processor.name(), ?stats, "runner stopped");
    Ok((state.processor, stats))
}

/// Closes a consumer off the async threads. librdkafka's close waits for
/// the group coordinator (the final commit, the revocation callback), and
/// after a failure (the brokers gone) that wait has no end: it would hold
/// a runtime thread, and the process's exit, for ever. A clean stop waits
/// up to 10 s for the close, a failed runner 1 s; then the closing thread
/// is left to end with the process.
pub(crate) fn close_consumer<T: Send + 'static>(consumer: T, clean: bool) {
    let patience = if clean {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(1)
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let closing = std::thread::Builder::new()
        .name("consumer-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = tx.send(());
        });
    if closing.is_ok() && rx.recv_timeout(patience).is_err() {
        tracing::debug!(?patience, "consumer still closing; not waiting for it");
    }
}

/// Commits the stored offsets synchronously on the way out; a failure only
/// means the next run re-reads from the last commit.
pub(crate) fn final_commit<C: rdkafka::consumer::ConsumerContext>(consumer: &impl Consumer<C>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
        Err(e) => {
            tracing::warn!(error = %e, "final commit failed; the next run re-reads from the last commit")
        }
    }
}

struct Loop<'a, P> {
    settings: &'a ClientSettings,
    config: &'a RunnerConfig,
    processor: P,
    counters: Arc<Counters>,
    /// At-least-once: the producer outputs are acknowledged by.
    producer: Option<Producer>,
    /// Exactly-once: the transactional producer and open transaction.
    txn: Option<Arc<Transactions>>,
    dedupe: Dedupe,
    /// Next offset expected per (physical topic, partition).
    positions: HashMap<(String, i32), i64>,
    /// Newest acknowledged, not yet stored offset per partition.
    acked: HashMap<(String, i32), i64>,
    acked_since_store: usize,
    /// For cores that rebuild from inputs: next offset the core has seen per
    /// (physical topic, partition).
    seen_up_to: HashMap<(String, i32), i64>,
    /// [`Counters::revocations`] when positions were last trusted.
    revocations_seen: u64,
    /// Newest progress per (catalogue topic, key) read so far.
    frontier: HashMap<(String, String), i64>,
    /// Per (physical topic, partition): an input waiting for progress
    /// (with what it waits for) and the records behind it; the partition
    /// is paused meanwhile.
    held: BTreeMap<(String, i32), Held>,
    /// [`Counters::revocations`] when the held records were last valid.
    held_revocations: u64,
}

struct Held {
    wait: Wait,
    records: std::collections::VecDeque<Raw>,
}

impl<P: Processor> Loop<'_, P> {
    async fn consume(
        &mut self,
        consumer: &Consumer_,
        inflight: &mut FuturesOrdered<Ack>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), KafkaError> {
        tokio::pin!(shutdown);
        let mut link_check = tokio::time::interval(Duration::from_secs(1));
        link_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle = tokio::time::interval(IDLE_FLUSH);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_record = Instant::now();
        loop {
            // An open transaction is committed within `max_interval`, also
            // one holding only progress announced while an input waits.
            let txn_deadline = self.txn.as_ref().and_then(|t| match t.pending() {
                (_, Some(age)) => Some(
                    self.config
                        .exactly_once
                        .as_ref()
                        .map_or(Duration::ZERO, |eo| eo.max_interval)
                        .saturating_sub(age),
                ),
                _ => None,
            });
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    let (topic, partition, offset) = done?;
                    bump(&self.counters.acknowledged);
                    self.acked.insert((topic, partition), offset);
                    if inflight.is_empty() || self.acked_since_store >= STORE_EVERY {
                        self.store_acked(consumer);
                    } else {
                        self.acked_since_store += 1;
                    }
                }
                _ = tokio::time::sleep(txn_deadline.unwrap_or_default()), if txn_deadline.is_some() => {
                    self.commit(consumer).await?;
                }
                _ = link_check.tick() => self.check_link()?,
                _ = idle.tick() => {
                    if last_record.elapsed() >= IDLE_FLUSH {
                        let records = self.processor.flush();
                        if !records.is_empty() {
                            announce(self.txn.as_ref(), self.producer.as_ref(), &records).await?;
                        }
                    }
                }
                msg = consumer.recv(), if inflight.len() < self.config.max_in_flight => {
                    last_record = Instant::now();
                    if let Some(e) = self.txn.as_ref().and_then(|t| t.take_failure()) {
                        return Err(e);
                    }
                    let raw = match msg {
                        Ok(m) => self.copy(&m),
                        Err(rdkafka::error::KafkaError::MessageConsumptionFatal(code)) => {
                            return Err(rdkafka::error::KafkaError::MessageConsumptionFatal(code).into());
                        }
                        Err(e) if crate::link::is_transport(e.rdkafka_error_code()) => {
                            self.settings.context().transport_failed(&e.to_string());
                            self.check_link()?;
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "consumer error; continuing");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let revocations = self.counters.revocations.load(Ordering::Relaxed);
                    if revocations != self.held_revocations {
                        // Held records were not processed: the partitions'
                        // new owners (maybe this runner) read them again
                        // from the committed offsets.
                        self.held_revocations = revocations;
                        self.held.clear();
                    }
                    if let Some(h) = self.held.get_mut(&(raw.physical.clone(), raw.partition)) {
                        h.records.push_back(raw);
                        continue;
                    }
                    match self.must_wait(&raw) {
                        Some(wait) => self.hold(consumer, raw, wait).await?,
                        None => {
                            let progress = raw.progress.is_some();
                            self.dispatch(consumer, raw, inflight).await?;
                            if progress {
                                self.release(consumer, inflight).await?;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Fails once the brokers have not answered for the configured limit.
    fn check_link(&self) -> Result<(), KafkaError> {
        match self.settings.link.outage() {
            Some(o) if o.lasted >= self.config.unreachable_limit => Err(KafkaError::Unreachable {
                since_ms: o.since_ms,
                limit_s: self.config.unreachable_limit.as_secs(),
                reason: o.reason,
            }),
            _ => Ok(()),
        }
    }

    /// Processes one record and tracks its acknowledgement (at-least-once)
    /// or its place in the open transaction (exactly-once).
    async fn dispatch(
        &mut self,
        consumer: &Consumer_,
        raw: Raw,
        inflight: &mut FuturesOrdered<Ack>,
    ) -> Result<(), KafkaError> {
        let (physical, partition, offset) = (raw.physical.clone(), raw.partition, raw.offset);
        let started = Instant::now();
        let ack = self.handle(consumer, raw).await?;
        self.counters
            .processing
            .0
            .observe(started.elapsed().as_secs_f64());
        match &self.txn {
            None => inflight.push_back(ack),
            Some(txn) => {
                txn.consumed(&physical, partition, offset);
                let full = self
                    .config
                    .exactly_once
                    .as_ref()
                    .is_some_and(|eo| txn.pending().0 >= eo.max_inputs);
                if full {
                    self.commit(consumer).await?;
                }
            }
        }
        Ok(())
    }

    /// What `raw` waits for, if its event time is not yet complete on
    /// every input it depends on.
    fn must_wait(&self, raw: &Raw) -> Option<Wait> {
        if raw.progress.is_some() || self.processor.control_topics().is_empty() {
            return None;
        }
        let value = P::Input::decode(&raw.logical, raw.payload.as_deref()?).ok()?;
        let wait = self.processor.wait(&value)?;
        (!is_over(&self.frontier, &wait)).then_some(wait)
    }

    /// Holds `raw` (and pauses its partition) until its wait is over.
    async fn hold(&mut self, consumer: &Consumer_, raw: Raw, wait: Wait) -> Result<(), KafkaError> {
        bump(&self.counters.held);
        tracing::debug!(topic = %raw.logical, partition = raw.partition, offset = raw.offset, until = wait.until, on = ?wait.on, "held for event-time alignment");
        announce(self.txn.as_ref(), self.producer.as_ref(), &wait.announce).await?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&raw.physical, raw.partition);
        consumer.pause(&tpl)?;
        self.held.insert(
            (raw.physical.clone(), raw.partition),
            Held {
                wait,
                records: std::collections::VecDeque::from([raw]),
            },
        );
        Ok(())
    }

    /// Processes held records whose wait is over, in partition order, and
    /// resumes the partitions that have nothing held any more.
    async fn release(
        &mut self,
        consumer: &Consumer_,
        inflight: &mut FuturesOrdered<Ack>,
    ) -> Result<(), KafkaError> {
        loop {
            let mut progressed = false;
            let keys: Vec<(String, i32)> = self.held.keys().cloned().collect();
            for key in keys {
                while let Some(h) = self.held.get_mut(&key) {
                    if !is_over(&self.frontier, &h.wait) {
                        break;
                    }
                    let Some(head) = h.records.pop_front() else {
                        break;
                    };
                    progressed |= head.progress.is_some();
                    self.dispatch(consumer, head, inflight).await?;
                    // What follows it, until a record that must wait.
                    loop {
                        let Some(raw) = self.held.get_mut(&key).and_then(|h| h.records.pop_front())
                        else {
                            self.held.remove(&key);
                            let mut tpl = TopicPartitionList::new();
                            tpl.add_partition(&key.0, key.1);
                            consumer.resume(&tpl)?;
                            break;
                        };
                        if let Some(wait) = self.must_wait(&raw) {
                            bump(&self.counters.held);
                            announce(self.txn.as_ref(), self.producer.as_ref(), &wait.announce)
                                .await?;
                            if let Some(h) = self.held.get_mut(&key) {
                                h.wait = wait;
                                h.records.push_front(raw);
                            }
                            break;
                        }
                        progressed |= raw.progress.is_some();
                        self.dispatch(consumer, raw, inflight).await?;
                    }
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Reads the progress records of the control topics up to the group's
    /// committed offsets (what the group has already consumed).
    async fn restore_frontier(&mut self, consumer: &Consumer_) -> Result<(), KafkaError> {
        for logical in self.processor.control_topics() {
            let physical = self.settings.physical(logical);
            let mut tpl = TopicPartitionList::new();
            for p in crate::reader::partitions_of(consumer, &physical, BROKER_TIMEOUT)? {
                tpl.add_partition(&physical, p);
            }
            let committed = consumer.committed_offsets(tpl, BROKER_TIMEOUT)?;
            let until: BTreeMap<i32, i64> = committed
                .elements()
                .iter()
                .map(|e| {
                    (
                        e.partition(),
                        match e.offset() {
                            Offset::Offset(o) => o,
                            _ => 0,
                        },
                    )
                })
                .collect();
            drop(committed);
            let (settings, topic) = (self.settings.clone(), logical.to_string());
            let progress = tokio::task::spawn_blocking(move || {
                crate::reader::read_progress(&settings, &topic, Some(&until), WARM_UP_TIMEOUT)
            })
            .await
            .map_err(|e| KafkaError::Admin(format!("progress restore task: {e}")))??;
            for (key, t) in progress {
                self.frontier.insert((logical.to_string(), key), t);
            }
        }
        Ok(())
    }

    /// Exactly-once: commits the open transaction (on a blocking thread).
    async fn commit(&mut self, consumer: &Consumer_) -> Result<(), KafkaError> {
        let Some(txn) = self.txn.clone() else {
            return Ok(());
        };
        if let Some(e) = txn.take_failure() {
            return Err(e);
        }
        if txn.pending().1.is_none() {
            return Ok(());
        }
        let cgm = consumer.group_metadata().ok_or_else(|| {
            KafkaError::TransactionAborted("consumer has no group metadata".into())
        })?;
        let started = Instant::now();
        // librdkafka's send_offsets_to_transaction can wait forever for its
        // coordinator after a broker restart: past a bound, this producer
        // is given up (the caller starts a new one, which fences it).
        let bound = self
            .config
            .exactly_once
            .as_ref()
            .map_or(BROKER_TIMEOUT, |eo| eo.transaction_timeout)
            * 6;
        let committing = txn.clone();
        let commit = tokio::time::timeout(
            bound,
            tokio::task::spawn_blocking(move || committing.commit(&cgm)),
        );
        tokio::pin!(commit);
        // A commit waiting on an unreachable coordinator must not outlive
        // the outage limit.
        let waited = loop {
            tokio::select! {
                r = &mut commit => break r,
                () = tokio::time::sleep(Duration::from_secs(1)) => self.check_link()?,
            }
        };
        let done = match waited {
            Ok(joined) => joined.map_err(|e| KafkaError::Admin(format!("commit task: {e}")))??,
            Err(_) => {
                txn.abandon();
                return Err(KafkaError::Fenced(format!(
                    "the transaction commit did not return within {bound:?}; giving this transactional producer up"
                )));
            }
        };
        tracing::debug!(
            inputs = done.inputs,
            partitions = done.partitions,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "transaction committed"
        );
        bump(&self.counters.transactions);
        Phases::add(&self.counters.phases.commit_ns, started.elapsed());
        self.counters
            .acknowledged
            .fetch_add(done.inputs as u64, Ordering::Relaxed);
        self.counters
            .offsets_stored
            .fetch_add(done.partitions as u64, Ordering::Relaxed);
        Ok(())
    }

    fn copy(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Raw {
        let event_id = event_id_of(m);
        let physical = m.topic().to_string();
        Raw {
            logical: self
                .settings
                .logical(&physical)
                .unwrap_or(&physical)
                .to_string(),
            physical,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            timestamp: m.timestamp().to_millis(),
            event_id,
            progress: crate::reader::progress_of(m),
        }
    }

    /// Stores the newest acknowledged offset of each partition.
    fn store_acked(&mut self, consumer: &Consumer_) {
        self.acked_since_store = 0;
        for ((topic, partition), offset) in std::mem::take(&mut self.acked) {
            self.store(consumer, &topic, partition, offset);
        }
    }

    fn store(&self, consumer: &Consumer_, topic: &str, partition: i32, offset: i64) {
        match consumer.store_offset(topic, partition, offset) {
            Ok(()) => bump(&self.counters.offsets_stored),
            // The partition was revoked meanwhile; its new owner re-reads from
            // the last commit and drops the repeats by event id.
            Err(e) => {
                bump(&self.counters.offsets_rejected);
                tracing::debug!(topic, partition, offset, error = %e, "offset not stored");
            }
        }
    }

    async fn handle(&mut self, consumer: &Consumer_, raw: Raw) -> Result<Ack, KafkaError> {
        bump(&self.counters.received);
        if raw.progress.is_none() {
            self.counters.handled.bump(&raw.logical);
        }
        if let Some(txn) = &self.txn {
            txn.begin()?;
        }
        self.check_position(consumer, &raw).await?;
        let id = raw
            .event_id
            .unwrap_or_else(|| EventId::for_position(&raw.logical, raw.partition, raw.offset));
        let done: (String, i32, i64) = (raw.physical.clone(), raw.partition, raw.offset);
        let content = fingerprint(raw.key.as_deref(), raw.payload.as_deref());
        let seen = self.dedupe.check(&raw.physical, raw.partition, id, content);
        if seen == Seen::Repeat {
            bump(&self.counters.duplicates);
            return Ok(Box::pin(async move { Ok(done) }));
        }
        let limit = self.config.max_record_bytes;
        let too_large = |records: &[OutRecord]| {
            records
                .iter()
                .find(|r| r.key.len() + r.payload.len() > limit)
                .map(|r| (r.topic.clone(), r.key.len() + r.payload.len()))
        };
        let outputs = if seen == Seen::Conflict {
            // Another record came with this id: neither is dropped as the
            // other's repeat (ids from outside producers are not trusted).
            bump(&self.counters.dead_lettered);
            let reason = format!(
                "event id {id} was already used by a different record in this partition (an id must name one record)"
            );
            let own = EventId::for_content(
                &raw.logical,
                raw.key.as_deref().unwrap_or_default(),
                raw.payload.as_deref().unwrap_or_default(),
            );
            vec![self.dead_letter(&raw, own, ErrorKind::Invalid, reason)?]
        } else {
            match self.outputs_for(&raw, id).await? {
                Ok(records) => match too_large(&records) {
                    None => {
                        bump(&self.counters.processed);
                        records
                    }
                    Some((topic, bytes)) => {
                        bump(&self.counters.dead_lettered);
                        let reason = format!(
                        "its output to {topic} would be {bytes} bytes, over the {limit}-byte record limit (the broker would refuse it)"
                    );
                        vec![self.dead_letter(&raw, id, ErrorKind::Invalid, reason)?]
                    }
                },
                Err((kind, reason)) => {
                    bump(&self.counters.dead_lettered);
                    vec![self.dead_letter(&raw, id, kind, reason)?]
                }
            }
        };
        if seen == Seen::New {
            self.dedupe
                .insert(&raw.physical, raw.partition, id, content);
        }
        if self.processor.rebuilds_from_inputs() {
            self.seen_up_to
                .insert((raw.physical.clone(), raw.partition), raw.offset + 1);
        }
        let producer = match (&self.txn, &self.producer) {
            (Some(txn), _) => txn.producer(),
            (None, Some(p)) => p,
            (None, None) => unreachable!("a runner has a producer or a transaction"),
        };
        let mut pending: Vec<Pending> = Vec::with_capacity(outputs.len());
        let enqueuing = Instant::now();
        for record in &outputs {
            let sent = match producer.enqueue(record).await {
                Err(KafkaError::Client(e))
                    if self.txn.is_some()
                        && e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) =>
                {
                    // The broker fenced this producer's epoch (a transaction
                    // it timed out, e.g. across a broker restart).
                    return Err(KafkaError::Fenced(format!(
                        "transactional producer failed fatally: {e}"
                    )));
                }
                other => other?,
            };
            // Exactly-once: the commit reports delivery failures.
            if self.txn.is_none() {
                pending.push(sent);
            }
            if record.progress.is_none() {
                bump(&self.counters.outputs);
            }
        }
        Phases::add(&self.counters.phases.enqueue_ns, enqueuing.elapsed());
        let enqueued = Instant::now();
        let counters = self.counters.clone();
        Ok(Box::pin(async move {
            for p in pending {
                p.confirm().await?;
            }
            Phases::add(&counters.phases.ack_ns, enqueued.elapsed());
            bump(&counters.phases.acked);
            Ok(done)
        }))
    }

    /// Decodes and processes one record. The inner error is poison (kind,
    /// reason) for the dead-letter topic; the outer one stops the runner.
    #[allow(clippy::type_complexity)]
    async fn outputs_for(
        &mut self,
        raw: &Raw,
        id: EventId,
    ) -> Result<Result<Vec<OutRecord>, (ErrorKind, String)>, KafkaError> {
        if let Some(through) = raw.progress {
            bump(&self.counters.progress);
            let key = String::from_utf8_lossy(raw.key.as_deref().unwrap_or_default()).into_owned();
            let slot = self
                .frontier
                .entry((raw.logical.clone(), key.clone()))
                .or_insert(through);
            *slot = (*slot).max(through);
            let mut out = Outputs::new(self.processor.name(), id);
            return Ok(
                match self
                    .processor
                    .progress(&raw.logical, &key, through, &mut out)
                {
                    Ok(()) => Ok(out.into_records()),
                    Err(e) => Err(match e {
                        ProcessError::Poison { kind, reason } => (kind, reason),
                        ProcessError::Retriable(reason) => (ErrorKind::Processing, reason),
                    }),
                },
            );
        }
        let Some(bytes) = raw.payload.as_deref() else {
            return Ok(Err((
                ErrorKind::Malformed,
                "record has no value (tombstone)".into(),
            )));
        };
        let decoding = Instant::now();
        let value = match P::Input::decode(&raw.logical, bytes) {
            Ok(v) => v,
            Err(e) => return Ok(Err((e.kind().into(), e.to_string()))),
        };
        Phases::add(&self.counters.phases.decode_ns, decoding.elapsed());
        let input = Incoming {
            topic: raw.logical.clone(),
            partition: raw.partition,
            offset: raw.offset,
            key: raw.key.clone(),
            timestamp: raw.timestamp,
            event_id: id,
            value,
        };
        let mut delays = ExponentialBuilder::new()
            .with_min_delay(self.config.retry_min_delay)
            .with_max_delay(self.config.retry_max_delay)
            .with_max_times(self.config.retry_attempts.saturating_sub(1))
            .with_jitter()
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut out = Outputs::new(self.processor.name(), id);
            let processing = Instant::now();
            let processed = self.processor.process(&input, &mut out);
            let (total, encoding) = (processing.elapsed(), out.encoding());
            Phases::add(&self.counters.phases.encode_ns, encoding);
            Phases::add(
                &self.counters.phases.core_ns,
                total.saturating_sub(encoding),
            );
            match processed {
                Ok(()) => return Ok(Ok(out.into_records())),
                Err(ProcessError::Poison { kind, reason }) => return Ok(Err((kind, reason))),
                Err(ProcessError::Retriable(reason)) => match delays.next() {
                    Some(delay) => {
                        bump(&self.counters.retries);
                        tracing::warn!(processor = self.processor.name(), attempts, ?delay, %reason, "retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => {
                        return Err(KafkaError::RetriesExhausted {
                            processor: self.processor.name().to_string(),
                            topic: raw.logical.clone(),
                            partition: raw.partition,
                            offset: raw.offset,
                            attempts,
                            reason,
                        })
                    }
                },
            }
        }
    }

    fn dead_letter(
        &self,
        raw: &Raw,
        id: EventId,
        kind: ErrorKind,
        reason: String,
    ) -> Result<OutRecord, KafkaError> {
        tracing::warn!(topic = %raw.logical, partition = raw.partition, offset = raw.offset, ?kind, %reason, "dead-lettered");
        let source = Source {
            topic: &raw.logical,
            partition: raw.partition,
            offset: raw.offset,
            key: raw.key.as_deref(),
            payload: raw.payload.as_deref(),
            timestamp: raw.timestamp,
            event_id: id,
        };
        Ok(dead_letter(self.processor.name(), &source, kind, reason)?)
    }

    /// Verifies no needed record was dropped by the broker, and after any
    /// change of position (start, rebalance) re-reads the dedupe window
    /// before it so repeats of records processed earlier are recognised.
    async fn check_position(&mut self, consumer: &Consumer_, raw: &Raw) -> Result<(), KafkaError> {
        // After a revocation a partition may come back having been consumed
        // by another member meanwhile: no position is trusted.
        let revocations = self.counters.revocations.load(Ordering::Relaxed);
        if revocations != self.revocations_seen {
            self.revocations_seen = revocations;
            self.positions.clear();
        }
        let key = (raw.physical.clone(), raw.partition);
        let expected = self.positions.insert(key.clone(), raw.offset + 1);
        if expected == Some(raw.offset) {
            return Ok(());
        }
        let compacted = catalogue()
            .get(&raw.logical)
            .is_some_and(|s| s.cleanup_policy == CleanupPolicy::Compact);
        if let Some(e) = expected.filter(|e| raw.offset > *e) {
            // A step forward in one fetch sequence: transaction markers and
            // aborted records (read_committed skips them), compaction, or
            // retention deleting records before we read them. One offset is
            // a single control record; more are checked against the log start.
            if !compacted && !self.config.strict_log_start && raw.offset - e > 1 {
                self.log_still_holds(consumer, raw, e)?;
            }
            if !self.config.strict_log_start {
                if self.processor.rebuilds_from_inputs() && self.seen_up_to.get(&key) == Some(&e) {
                    self.seen_up_to.insert(key, raw.offset);
                }
                return Ok(());
            }
        }
        tracing::debug!(topic = %raw.physical, partition = raw.partition, offset = raw.offset, ?expected, "position changed");
        if !compacted {
            let baseline = match expected {
                Some(e) if raw.offset > e => Some(e),
                Some(_) => None,
                // No committed offset: a consumer starts at offset 0; a
                // later log start means records the group never read are
                // gone. Only a group told to accept that may start there,
                // and never on an event log (kept forever) or the embedded
                // broker (never deletes by retention).
                None => self
                    .committed(consumer, raw)?
                    .or((!self.config.accept_log_start
                        || self.config.strict_log_start
                        || catalogue().get(&raw.logical).is_some_and(|s| s.event_log))
                    .then_some(0)),
            };
            if let Some(needed) = baseline.filter(|b| raw.offset > *b) {
                self.log_still_holds(consumer, raw, needed)?;
            }
        }
        if self.processor.rebuilds_from_inputs() {
            let from = match self.seen_up_to.get(&(raw.physical.clone(), raw.partition)) {
                Some(o) => *o,
                None => {
                    consumer
                        .fetch_watermarks(&raw.physical, raw.partition, BROKER_TIMEOUT)?
                        .0
                }
            };
            self.replay(&raw.physical, raw.partition, from, raw.offset)
                .await?;
        }
        if raw.offset > 0 {
            self.warm_dedupe(raw).await?;
        }
        Ok(())
    }

    /// Fails with [`KafkaError::DataLoss`] if the broker's log of `raw`'s
    /// partition now starts after `needed`.
    fn log_still_holds(
        &self,
        consumer: &Consumer_,
        raw: &Raw,
        needed: i64,
    ) -> Result<(), KafkaError> {
        let (low, _) = consumer.fetch_watermarks(&raw.physical, raw.partition, BROKER_TIMEOUT)?;
        if low <= needed {
            return Ok(());
        }
        Err(KafkaError::DataLoss {
            topic: raw.physical.clone(),
            partition: raw.partition,
            needed,
            log_start: low,
            hint: if self.config.strict_log_start {
                " (the embedded broker keeps only the newest ~100,000 records / 5 MiB per partition: use more partitions, consume while producing, or an external broker)"
            } else {
                " (retention, or a bounded broker, deleted them before this group read them; a new group that may start at the log start sets [runner] accept_log_start = true)"
            },
        })
    }

    /// Replays `[log start, committed)` of every partition of the inputs.
    async fn rebuild(
        &mut self,
        consumer: &Consumer_,
        physical: &[String],
    ) -> Result<(), KafkaError> {
        let started = Instant::now();
        // Control topics first: a core applies their records by event time
        // as its data passes it, so the data replayed after them meets
        // them where it met them live.
        let controls: Vec<String> = self
            .processor
            .control_topics()
            .iter()
            .map(|t| self.settings.physical(t))
            .collect();
        let mut physical = physical.to_vec();
        physical.sort_by_key(|t| !controls.contains(t));
        let mut tpl = TopicPartitionList::new();
        for topic in &physical {
            for p in crate::reader::partitions_of(consumer, topic, BROKER_TIMEOUT)? {
                tpl.add_partition(topic, p);
            }
        }
        let committed = consumer.committed_offsets(tpl, BROKER_TIMEOUT)?;
        let ranges: Vec<(String, i32, i64)> = committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.topic().to_string(), e.partition(), o)),
                _ => None,
            })
            .collect();
        drop(committed);
        for (topic, partition, end) in ranges {
            let (low, _) = consumer.fetch_watermarks(&topic, partition, BROKER_TIMEOUT)?;
            self.replay(&topic, partition, low, end).await?;
        }
        tracing::info!(
            processor = self.processor.name(),
            replayed = self.counters.replayed.load(Ordering::Relaxed),
            ms = started.elapsed().as_millis() as u64,
            "state rebuilt from inputs"
        );
        Ok(())
    }

    /// Feeds `[start, end)` of one input partition to the core, discarding
    /// outputs, and remembers that the core has seen up to `end`.
    async fn replay(
        &mut self,
        physical: &str,
        partition: i32,
        start: i64,
        end: i64,
    ) -> Result<(), KafkaError> {
        const CHUNK: i64 = 100_000;
        let logical = self
            .settings
            .logical(physical)
            .unwrap_or(physical)
            .to_string();
        let mut from = start;
        while from < end {
            let to = end.min(from + CHUNK);
            let config = self.settings.reader_config();
            let topic = physical.to_string();
            let records = tokio::task::spawn_blocking(move || {
                crate::reader::read_range(&config, &topic, partition, from, to, WARM_UP_TIMEOUT)
            })
            .await
            .map_err(|e| KafkaError::Admin(format!("replay task: {e}")))??;
            let Some(last) = records.last().map(|r| r.offset) else {
                break;
            };
            for r in records.into_iter().filter(|r| r.progress.is_none()) {
                let id = r
                    .event_id
                    .unwrap_or_else(|| EventId::for_position(&logical, partition, r.offset));
                let content = fingerprint(r.key.as_deref(), r.payload.as_deref());
                if self.dedupe.insert(physical, partition, id, content) != Seen::New {
                    continue;
                }
                let Some(value) = r
                    .payload
                    .as_deref()
                    .and_then(|b| P::Input::decode(&logical, b).ok())
                else {
                    continue;
                };
                let input = Incoming {
                    topic: logical.clone(),
                    partition,
                    offset: r.offset,
                    key: r.key,
                    timestamp: r.timestamp,
                    event_id: id,
                    value,
                };
                let mut scratch = Outputs::new(self.processor.name(), id);
                if let Err(e) = self.processor.process(&input, &mut scratch) {
                    tracing::debug!(topic = %logical, partition, offset = r.offset, error = %e, "replayed record failed again");
                }
                bump(&self.counters.replayed);
            }
            from = last + 1;
        }
        self.seen_up_to
            .insert((physical.to_string(), partition), end.max(start));
        Ok(())
    }

    fn committed(&self, consumer: &Consumer_, raw: &Raw) -> Result<Option<i64>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&raw.physical, raw.partition);
        let committed = consumer.committed_offsets(tpl, BROKER_TIMEOUT)?;
        let offset = committed
            .find_partition(&raw.physical, raw.partition)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        drop(committed);
        Ok(offset)
    }

    async fn warm_dedupe(&mut self, raw: &Raw) -> Result<(), KafkaError> {
        let window = self.dedupe.window() as i64;
        let end = raw.offset;
        let start = (end - window).max(0);
        let config = self.settings.reader_config();
        let (physical, logical, partition) =
            (raw.physical.clone(), raw.logical.clone(), raw.partition);
        let started = Instant::now();
        let ids =
            tokio::task::spawn_blocking(move || -> Result<Vec<(EventId, u64)>, KafkaError> {
                let reader: BaseConsumer = config.create()?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&physical, partition, Offset::Offset(start))?;
                reader.assign(&tpl)?;
                drop(tpl);
                let mut ids = Vec::new();
                let deadline = Instant::now() + WARM_UP_TIMEOUT;
                while Instant::now() < deadline {
                    match reader.poll(Duration::from_millis(200)) {
                        Some(Ok(m)) => {
                            if m.offset() >= end {
                                break;
                            }
                            let id = event_id_of(&m).unwrap_or_else(|| {
                                EventId::for_position(&logical, partition, m.offset())
                            });
                            ids.push((id, fingerprint(m.key(), m.payload())));
                            if m.offset() + 1 >= end {
                                break;
                            }
                        }
                        Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                        Some(Err(e)) if crate::link::is_transport(e.rdkafka_error_code()) => {}
                        Some(Err(e)) => return Err(e.into()),
                        None => {}
                    }
                }
                Ok(ids)
            })
            .await
            .map_err(|e| KafkaError::Admin(format!("dedupe warm-up task: {e}")))??;
        tracing::debug!(topic = %raw.physical, partition, from = start, to = end, ids = ids.len(), ms = started.elapsed().as_millis() as u64, "dedupe window re-read");
        for (id, content) in ids {
            self.dedupe.insert(&raw.physical, partition, id, content);
        }
        Ok(())
    }
}
