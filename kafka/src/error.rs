//! Errors of the Kafka layer. Each knows whether it is retriable (back off
//! and try again) or not; [`ProcessError`] is what processor cores return.

use autotrain_schemas::ErrorKind;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KafkaError {
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error(
        "records lost on {topic}[{partition}]: the next offset needed is {needed} but the broker's log now starts at {log_start}{hint}"
    )]
    DataLoss {
        topic: String,
        partition: i32,
        needed: i64,
        log_start: i64,
        hint: &'static str,
    },
    #[error("delivery of output to {topic} failed: {reason}")]
    Delivery { topic: String, reason: String },
    #[error("processor {processor} still failing after {attempts} attempts on {topic}[{partition}]@{offset}: {reason}")]
    RetriesExhausted {
        processor: String,
        topic: String,
        partition: i32,
        offset: i64,
        attempts: usize,
        reason: String,
    },
    #[error("cannot encode output: {0}")]
    Encode(#[from] autotrain_schemas::WireError),
    #[error("embedded broker: {0}")]
    Embedded(String),
    #[error("admin: {0}")]
    Admin(String),
    /// A state rebuild met a record it cannot fold: the state would be
    /// wrong, so the processor does not start.
    #[error("cannot restore from {topic}[{partition}]@{offset}: {reason}")]
    Restore {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// A transaction was aborted (its outputs and input offsets discarded);
    /// the processor restarts from the committed offsets with its state
    /// rebuilt.
    #[error("transaction aborted: {0}")]
    TransactionAborted(String),
    /// No broker answered for the configured limit: the process stops (a
    /// supervisor restarts it) rather than wait silently for ever.
    #[error("broker unreachable since {} (epoch ms {since_ms}) for over {limit_s} s: {reason}", fmt_ms(*since_ms))]
    Unreachable {
        since_ms: i64,
        limit_s: u64,
        reason: String,
    },
    /// Another instance with the same transactional id took over, or the
    /// producer hit a fatal error: this instance must stop.
    #[error("producer fenced or fatal: {0}")]
    Fenced(String),
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}

impl KafkaError {
    /// This instance was replaced: its transactional producer fenced
    /// ([`KafkaError::Fenced`]), or its static group membership taken by a
    /// consumer with the same `group.instance.id` (another instance with
    /// the same name, or, after a broker restart, its own rejoin).
    pub fn is_fenced(&self) -> bool {
        match self {
            KafkaError::Fenced(_) => true,
            KafkaError::Client(e) => {
                e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::FencedInstanceId)
            }
            _ => false,
        }
    }

    /// Transport trouble is worth retrying; lost data and bugs are not.
    pub fn is_retriable(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        match self {
            KafkaError::Client(e) => matches!(
                e.rdkafka_error_code(),
                Some(
                    C::BrokerTransportFailure
                        | C::AllBrokersDown
                        | C::OperationTimedOut
                        | C::RequestTimedOut
                        | C::NetworkException
                        | C::QueueFull
                        | C::LeaderNotAvailable
                        | C::NotLeaderForPartition
                        | C::CoordinatorLoadInProgress
                        | C::CoordinatorNotAvailable
                        | C::NotCoordinator
                )
            ),
            KafkaError::Delivery { .. } | KafkaError::TransactionAborted(_) => true,
            _ => false,
        }
    }
}

/// What a processor core returns when it cannot use a record.
#[derive(Debug, Error)]
pub enum ProcessError {
    /// Might succeed later (a dependency is down): the runner backs off and
    /// calls the core again with the same record.
    #[error("retriable: {0}")]
    Retriable(String),
    /// Never will succeed (invalid content): the runner sends the record to
    /// the dead-letter topic with this reason and carries on.
    #[error("{kind:?}: {reason}")]
    Poison { kind: ErrorKind, reason: String },
}

impl ProcessError {
    pub fn invalid(reason: impl Into<String>) -> Self {
        ProcessError::Poison {
            kind: ErrorKind::Invalid,
            reason: reason.into(),
        }
    }

    pub fn is_retriable(&self) -> bool {
        matches!(self, ProcessError::Retriable(_))
    }
}

impl From<autotrain_schemas::WireError> for ProcessError {
    fn from(e: autotrain_schemas::WireError) -> Self {
        ProcessError::Poison {
            kind: e.kind().into(),
            reason: e.to_string(),
        }
    }
}
