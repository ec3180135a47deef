//! Records as processors see them: [`Incoming`] (decoded input with its log
//! position and event id) and [`Outputs`] (what a core wants published,
//! already encoded, each with a deterministic event id).

use autotrain_schemas::{encode, ErrorKind, Payload};
use autotrain_topics::Topic;

use crate::error::ProcessError;
use crate::event_id::EventId;

/// Kafka header that carries a record's [`EventId`] (32 hex digits).
pub const EVENT_ID_HEADER: &str = "event_id";

/// Kafka header of a progress record: the event time (epoch millis, decimal)
/// through which its writer's records for the record's key are complete on
/// this topic ("nothing at or before t will follow"). A progress record has
/// an empty value; readers skip it, event-time aligned processors wait on it
/// (see [`crate::runner::Wait`]).
pub const PROGRESS_HEADER: &str = "autotrain_progress";

/// A decoded input record.
#[derive(Debug, Clone)]
pub struct Incoming<T> {
    /// Catalogue (logical) topic name.
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// Broker timestamp, epoch millis.
    pub timestamp: Option<i64>,
    pub event_id: EventId,
    pub value: T,
}

/// An encoded record ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Catalogue (logical) topic name.
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub event_id: EventId,
    /// `Some(t)`: a progress record (empty payload, [`PROGRESS_HEADER`]).
    pub progress: Option<i64>,
}

impl OutRecord {
    /// A progress record: on `topic`, the writer's records for `key` are
    /// complete through event time `through`.
    pub fn progress(topic: &str, key: &str, through: i64) -> Self {
        let mut content = key.as_bytes().to_vec();
        content.extend_from_slice(&through.to_be_bytes());
        OutRecord {
            topic: topic.to_string(),
            key: key.as_bytes().to_vec(),
            payload: Vec::new(),
            event_id: EventId::for_content(topic, PROGRESS_HEADER.as_bytes(), &content),
            progress: Some(through),
        }
    }

    /// A record whose id is given by the caller.
    pub fn new<T: Payload>(
        topic: Topic<T>,
        key: &str,
        value: &T,
        event_id: EventId,
    ) -> Result<Self, autotrain_schemas::WireError> {
        Ok(OutRecord {
            topic: topic.name().to_string(),
            key: key.as_bytes().to_vec(),
            payload: encode(value)?,
            event_id,
            progress: None,
        })
    }

    /// A record from outside content (files, exchanges): its id is a hash of
    /// topic, key and bytes, so publishing the same content twice is
    /// recognisable downstream.
    pub fn from_content<T: Payload>(
        topic: Topic<T>,
        key: &str,
        value: &T,
    ) -> Result<Self, autotrain_schemas::WireError> {
        let payload = encode(value)?;
        let event_id = EventId::for_content(topic.name(), key.as_bytes(), &payload);
        Ok(OutRecord {
            topic: topic.name().to_string(),
            key: key.as_bytes().to_vec(),
            payload,
            event_id,
            progress: None,
        })
    }
}

/// Where a processor core puts what one input record caused. Ids are derived
/// from the processor name, the input's id and the output's index, so
/// reprocessing the same input yields the same ids.
#[derive(Debug)]
pub struct Outputs {
    processor: String,
    source: EventId,
    records: Vec<OutRecord>,
    /// Time spent encoding outputs (the runner's phase profile).
    encoding: std::time::Duration,
}

impl Outputs {
    pub fn new(processor: &str, source: EventId) -> Self {
        Outputs {
            processor: processor.to_string(),
            source,
            records: Vec::new(),
            encoding: std::time::Duration::ZERO,
        }
    }

    pub fn send<T: Payload>(
        &mut self,
        topic: Topic<T>,
        key: &str,
        value: &T,
    ) -> Result<(), ProcessError> {
        let id = EventId::for_output(&self.processor, self.source, self.records.len());
        self.send_with_id(topic, key, value, id)
    }

    /// Sends with an id the core derives itself, for an output that more
    /// than one input can cause (a held bar released by a decision, or on
    /// replay): every path that publishes it yields the same id.
    pub fn send_with_id<T: Payload>(
        &mut self,
        topic: Topic<T>,
        key: &str,
        value: &T,
        id: EventId,
    ) -> Result<(), ProcessError> {
        let started = std::time::Instant::now();
        let record = OutRecord::new(topic, key, value, id).map_err(|e| ProcessError::Poison {
            kind: ErrorKind::Processing,
            reason: format!("output does not encode: {e}"),
        })?;
        self.encoding += started.elapsed();
        self.records.push(record);
        Ok(())
    }

    /// Time spent encoding the outputs so far.
    pub fn encoding(&self) -> std::time::Duration {
        self.encoding
    }

    /// Publishes progress: this processor's records on `topic` for `key`
    /// are complete through event time `through`.
    pub fn progress<T: Payload>(&mut self, topic: Topic<T>, key: &str, through: i64) {
        self.records
            .push(OutRecord::progress(topic.name(), key, through));
    }

    pub fn records(&self) -> &[OutRecord] {
        &self.records
    }

    pub fn into_records(self) -> Vec<OutRecord> {
        self.records
    }

    pub fn clear(&mut self) {
        self.records.clear();
    }
}

/// Where an unusable input came from (for its dead letter).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Catalogue (logical) topic name.
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub timestamp: Option<i64>,
    /// The input's event id.
    pub event_id: EventId,
}

/// The dead letter for an input `processor` could not use: the bytes, the
/// reason and the source position, on the catalogue's dead-letter topic for
/// that input, under an id derived from the input's.
/// Bytes of an oversized source key or payload a dead letter keeps.
pub const DEAD_LETTER_KEEP: usize = 64 * 1024;

pub fn dead_letter(
    processor: &str,
    source: &Source<'_>,
    kind: ErrorKind,
    reason: String,
) -> Result<OutRecord, autotrain_schemas::WireError> {
    let dlq: &'static str = autotrain_topics::catalogue()
        .dead_letter_for(source.topic)
        .unwrap_or("market.bars.dlq");
    // A dead letter must fit where the record that caused it did not: an
    // oversized source keeps its first bytes, and the reason says so.
    let cut = |b: &[u8]| b[..b.len().min(DEAD_LETTER_KEEP)].to_vec();
    let mut error = reason;
    for (what, bytes) in [("key", source.key), ("payload", source.payload)] {
        if let Some(b) = bytes.filter(|b| b.len() > DEAD_LETTER_KEEP) {
            error.push_str(&format!(
                " [source {what} of {} bytes cut to its first {DEAD_LETTER_KEEP}]",
                b.len()
            ));
        }
    }
    let letter = autotrain_schemas::DeadLetter {
        processor: processor.to_string(),
        source_topic: source.topic.to_string(),
        source_partition: source.partition,
        source_offset: source.offset,
        key: source.key.map(cut),
        payload: source.payload.map(cut),
        error_kind: kind,
        error,
        source_timestamp: source.timestamp,
    };
    let id = EventId::derive(&[
        b"dlq",
        processor.as_bytes(),
        &source.event_id.0.to_be_bytes(),
    ]);
    OutRecord::new(
        Topic::<autotrain_schemas::DeadLetter>::new(dlq),
        &String::from_utf8_lossy(&source.topic.as_bytes()[..source.topic.len().min(256)]),
        &letter,
        id,
    )
}
