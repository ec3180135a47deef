//! Exactly-once delivery for the runner (Kafka transactions, KIP-98 and
//! KIP-447): one transactional producer per runner instance; the outputs of
//! a batch of inputs and the inputs' next offsets are committed in one
//! transaction, with the consumer's group metadata so that a zombie member
//! of an older generation is fenced and a new owner of a partition waits
//! for the pending offsets before it reads.
//!
//! librdkafka's transaction calls block. The runner calls [`Transactions::commit`]
//! on a blocking thread; the rebalance callback commits inline before
//! partitions are revoked (the callback is synchronous by contract, and the
//! runner is then parked in `recv`, so the open transaction holds exactly
//! the inputs it processed).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::producer::{FutureProducer, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::KafkaError;
use crate::producer::Producer;
use crate::settings::ClientSettings;

/// How a commit attempt ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// Inputs whose outputs and offsets the transaction carried.
    pub inputs: usize,
    /// Partitions whose offsets it committed.
    pub partitions: usize,
}

#[derive(Debug, Default)]
struct State {
    open: bool,
    began: Option<Instant>,
    inputs: usize,
    /// Next offset to consume per (physical topic, partition).
    offsets: BTreeMap<(String, i32), i64>,
    /// Set when a commit made outside the runner's loop (rebalance) failed.
    failed: Option<KafkaError>,
}

/// The transactional producer of one runner instance and the transaction
/// it has open.
pub struct Transactions {
    producer: Producer,
    id: String,
    timeout: Duration,
    state: Mutex<State>,
    link: std::sync::Arc<crate::link::Link>,
    /// Set when the runner gave this producer up (a commit that did not
    /// return in time, or the runner failed): no call of this instance
    /// commits or retries any more, so a zombie cannot keep working the
    /// coordinator, or block a thread, beside its successor.
    abandoned: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Transactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Transactions({})", self.id)
    }
}

/// Attempts of a commit that failed with a retriable error.
const COMMIT_ATTEMPTS: usize = 12;

impl Transactions {
    /// Creates the producer and initialises transactions (fencing an
    /// earlier instance with the same id). Blocking.
    pub fn new(
        settings: &ClientSettings,
        id: &str,
        transaction_timeout: Duration,
    ) -> Result<Self, KafkaError> {
        Ok(Transactions {
            producer: Producer::transactional(settings, id, transaction_timeout)?,
            id: id.to_string(),
            timeout: transaction_timeout,
            state: Mutex::new(State::default()),
            link: settings.link.clone(),
            abandoned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The producer outputs are sent with (inside the open transaction).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a transaction unless one is open (local, does not block).
    pub fn begin(&self) -> Result<(), KafkaError> {
        let mut s = self.state();
        if let Some(e) = s.failed.take() {
            return Err(e);
        }
        if !s.open {
            self.producer.client().begin_transaction().map_err(|e| {
                KafkaError::Fenced(format!("begin transaction of {}: {e}", self.id))
            })?;
            s.open = true;
            s.began = Some(Instant::now());
        }
        Ok(())
    }

    /// Records that an input's outputs were sent in the open transaction.
    pub fn consumed(&self, physical: &str, partition: i32, offset: i64) {
        let mut s = self.state();
        s.inputs += 1;
        s.offsets
            .insert((physical.to_string(), partition), offset + 1);
    }

    /// Inputs in the open transaction, and how long it has been open.
    pub fn pending(&self) -> (usize, Option<Duration>) {
        let s = self.state();
        (s.inputs, s.began.filter(|_| s.open).map(|b| b.elapsed()))
    }

    /// A failure of a commit made by the rebalance callback, if any.
    pub fn take_failure(&self) -> Option<KafkaError> {
        self.state().failed.take()
    }

    /// Gives this producer up: a commit in progress stops at its next
    /// retry, and later commits (the rebalance callback's, as the consumer
    /// closes) fail at once. The outputs of the open transaction are never
    /// committed; the coordinator aborts them when a successor initialises
    /// with the same id, or when the transaction times out.
    pub fn abandon(&self) {
        self.abandoned
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_abandoned(&self) -> Option<KafkaError> {
        self.abandoned
            .load(std::sync::atomic::Ordering::SeqCst)
            .then(|| KafkaError::Fenced(format!("transactional producer {} was given up", self.id)))
    }

    /// Remembers a failure for the runner's loop to return.
    pub fn fail(&self, e: KafkaError) {
        self.state().failed.get_or_insert(e);
    }

    /// Commits the open transaction with the inputs' offsets for the group
    /// `cgm` describes. An abortable error aborts it (outputs and offsets
    /// discarded) and returns [`KafkaError::TransactionAborted`]; a fatal one
    /// (fenced by a newer instance, or by the group) returns
    /// [`KafkaError::Fenced`]. Blocking.
    pub fn commit(&self, cgm: &ConsumerGroupMetadata) -> Result<Committed, KafkaError> {
        if let Some(e) = self.is_abandoned() {
            return Err(e);
        }
        let (tpl, inputs, partitions) = {
            let s = self.state();
            if !s.open {
                return Ok(Committed::default());
            }
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in &s.offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
            }
            (tpl, s.inputs, s.offsets.len())
        };
        let client: &FutureProducer<crate::link::LinkContext> = self.producer.client();
        // rust-rdkafka's commit flushes by polling in 100 ms steps, which
        // made every commit take 100 ms; the producer's own thread serves
        // the delivery reports, so wait for them in 1 ms steps first.
        let flushed_by = Instant::now() + self.timeout;
        while client.in_flight_count() > 0 && Instant::now() < flushed_by {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut attempt = 0;
        // A commit that timed out is still in progress: only the commit is
        // retried (librdkafka refuses a second send_offsets or an abort).
        let mut offsets_sent = partitions == 0;
        loop {
            attempt += 1;
            if attempt > 1 {
                if let Some(e) = self.is_abandoned() {
                    return Err(e);
                }
            }
            let result = if offsets_sent {
                Ok(())
            } else {
                client.send_offsets_to_transaction(&tpl, cgm, self.timeout)
            }
            .and_then(|()| {
                offsets_sent = true;
                client.commit_transaction(self.timeout)
            });
            let e = match result {
                Ok(()) => {
                    let mut s = self.state();
                    s.open = false;
                    s.began = None;
                    s.inputs = 0;
                    s.offsets.clear();
                    return Ok(Committed { inputs, partitions });
                }
                Err(e) => e,
            };
            let (fatal, retriable) = match &e {
                rdkafka::error::KafkaError::Transaction(t) => {
                    (t.is_fatal(), t.is_retriable() && !t.txn_requires_abort())
                }
                _ => (false, false),
            };
            if fatal {
                self.state().open = false;
                return Err(KafkaError::Fenced(format!(
                    "transactional id {}: {e} (another instance uses this id, or the producer failed fatally; give each instance its own `[runner] instance`)",
                    self.id
                )));
            }
            if retriable && attempt < COMMIT_ATTEMPTS {
                // During an outage the link has said it once already.
                if self.link.outage().is_some() {
                    tracing::debug!(id = %self.id, attempt, error = %e, "commit failed; retrying");
                } else {
                    tracing::warn!(id = %self.id, attempt, error = %e, "commit failed; retrying");
                }
                std::thread::sleep(Duration::from_millis(100 * attempt as u64));
                continue;
            }
            tracing::warn!(id = %self.id, inputs, error = %e, "aborting transaction");
            let aborted = client.abort_transaction(self.timeout);
            let mut s = self.state();
            s.open = false;
            s.began = None;
            s.inputs = 0;
            s.offsets.clear();
            return Err(match aborted {
                Ok(()) => {
                    KafkaError::TransactionAborted(format!("{inputs} input(s) of {}: {e}", self.id))
                }
                Err(a) => KafkaError::Fenced(format!("abort of {} failed after {e}: {a}", self.id)),
            });
        }
    }
}
