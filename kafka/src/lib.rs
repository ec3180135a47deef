//! Kafka plumbing shared by every processor.
//!
//! # Layout
//! - [`broker`] — [`Broker`]: the embedded in-process broker (librdkafka's
//!   mock cluster) or an external cluster's bootstrap address.
//! - [`settings`] — [`ClientSettings`]: bootstrap, topic prefix, client
//!   properties; builds producer and consumer configs.
//! - [`admin`] — create, list, check and delete catalogue topics.
//! - [`copy`] — [`copy::copy_topic`]: a topic's records to another, partition
//!   for partition, headers and timestamps kept (replay sandboxes).
//! - [`event_id`] — [`EventId`]: the deterministic id every record carries.
//! - [`record`] — [`Incoming`] (a decoded input) and [`OutRecord`] (an
//!   encoded output) plus [`Outputs`], where a processor puts its results.
//! - [`producer`] — [`Producer`]: keyed sends with confirmed delivery.
//! - [`reader`] — reads a partition range or a whole topic back (state
//!   rebuild, views).
//! - [`follower`] — [`follow`]: tails topics from their start and keeps
//!   going (live read views).
//! - [`link`] — [`Link`]: whether the brokers answer; one outage logged
//!   once, read by the runner (bounded wait) and the API (`/health`, 503).
//! - [`metrics`] — [`metrics::RunnerMetrics`]: the `/metrics` text of a
//!   process hosting one runner (records, processing time, lag).
//! - [`dedupe`] — [`Dedupe`]: bounded per-partition memory of event ids.
//! - [`runner`] — [`run`]: the consumer loop. It decodes, drops duplicates,
//!   calls a pure [`Processor`], sends outputs, and stores an input offset
//!   only once everything that input caused is acknowledged.
//! - [`transaction`] — [`transaction::Transactions`]: exactly-once delivery,
//!   outputs and input offsets committed in one Kafka transaction.
//! - [`sink`] — [`run_sink`]: the loop of processors that write to an
//!   external store in batches; offsets stored after each flush.
//! - [`error`] — [`KafkaError`] and [`ProcessError`], each knowing whether it
//!   is retriable (back off) or poison (dead-letter it).

pub mod admin;
pub mod broker;
pub mod copy;
pub mod dedupe;
pub mod error;
pub mod event_id;
pub mod follower;
pub mod link;
pub mod metrics;
pub mod producer;
pub mod reader;
pub mod record;
pub mod runner;
pub mod settings;
pub mod sink;
pub mod transaction;

pub use admin::{
    check_topics, create_topics, delete_topics, list_topics, probe, Drift, TopicState,
};
pub use broker::Broker;
pub use dedupe::Dedupe;
pub use error::{KafkaError, ProcessError};
pub use event_id::EventId;
pub use follower::{follow, Followed};
pub use link::{Link, LinkContext, Outage};
pub use producer::{Delivered, Producer};
pub use reader::{read_topic, values, Record};
pub use record::{
    dead_letter, Incoming, OutRecord, Outputs, Source, EVENT_ID_HEADER, PROGRESS_HEADER,
};
pub use runner::{run, ExactlyOnce, Inbound, Processor, RunStats, RunnerConfig, Wait};
pub use settings::ClientSettings;
pub use sink::{run_sink, Sink, SinkConfig};
