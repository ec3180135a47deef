//! Records as processors see them: [`Incoming`] (decoded input with its log
//! position and event id) and [`Outputs`] (what a core wants published,
//! already encoded, each with a deterministic event id).

use autotrain_schemas::{encode, ErrorKind, Payload};
use autotrain_topics::Topic;

use crate::error::ProcessError;
use crate::event_id::EventId;

/// Kafka header that carries a record's [`EventId`] (32 hex digits).
pub const EVENT_ID_HEADER: &str = "event_id";

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
}

impl OutRecord {
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
}

impl Outputs {
    pub fn new(processor: &str, source: EventId) -> Self {
        Outputs {
            processor: processor.to_string(),
            source,
            records: Vec::new(),
        }
    }

    pub fn send<T: Payload>(
        &mut self,
        topic: Topic<T>,
        key: &str,
        value: &T,
    ) -> Result<(), ProcessError> {
        let id = EventId::for_output(&self.processor, self.source, self.records.len());
        let record = OutRecord::new(topic, key, value, id).map_err(|e| ProcessError::Poison {
            kind: ErrorKind::Processing,
            reason: format!("output does not encode: {e}"),
        })?;
        self.records.push(record);
        Ok(())
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
        let record = OutRecord::new(topic, key, value, id).map_err(|e| ProcessError::Poison {
            kind: ErrorKind::Processing,
            reason: format!("output does not encode: {e}"),
        })?;
        self.records.push(record);
        Ok(())
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
