//! [`QuestDbSink`]: batches rows and flushes them over ILP/HTTP.

use autotrain_kafka::{Inbound, Incoming, ProcessError, Sink};
use autotrain_schemas::{decode, Bar, FeatureVector, RegimePosterior, ValidationFlag, WireError};
use autotrain_topics::{FEATURES, MARKET_BARS, MARKET_FLAGS, REGIMES};
use questdb::ingress::{Buffer, ProtocolVersion, Sender};

use crate::rows::{write_bar, write_features, write_flag, write_regime};

/// The topics the sink reads, one table each.
pub const INPUTS: &[&str] = &[
    MARKET_BARS.name(),
    MARKET_FLAGS.name(),
    FEATURES.name(),
    REGIMES.name(),
];

/// What the sink reads: bars (`market.bars`), flags (`market.flags`),
/// feature vectors (`features`) and regime posteriors (`regimes`).
#[derive(Debug, Clone)]
pub enum SinkInput {
    Bar(Bar),
    Flag(ValidationFlag),
    Features(FeatureVector),
    Regime(RegimePosterior),
}

impl Inbound for SinkInput {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        if topic == MARKET_FLAGS.name() {
            decode::<ValidationFlag>(bytes).map(SinkInput::Flag)
        } else if topic == FEATURES.name() {
            decode::<FeatureVector>(bytes).map(SinkInput::Features)
        } else if topic == REGIMES.name() {
            decode::<RegimePosterior>(bytes).map(SinkInput::Regime)
        } else {
            decode::<Bar>(bytes).map(SinkInput::Bar)
        }
    }
}

/// Counts of a sink's work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkStats {
    pub bars: u64,
    pub flags: u64,
    pub features: u64,
    pub regimes: u64,
    pub flushes: u64,
    pub failed_flushes: u64,
}

/// Rows wait in an ILP buffer (protocol version 1, text) until the runner
/// flushes; the connection is opened on the first flush and re-opened
/// after a failure. A failed flush keeps the buffer for the retry.
pub struct QuestDbSink {
    conf: String,
    sender: Option<Sender>,
    buffer: Buffer,
    pub stats: SinkStats,
}

impl std::fmt::Debug for QuestDbSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuestDbSink")
            .field("pending", &self.buffer.row_count())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl QuestDbSink {
    /// `conf` is a questdb-rs configuration string,
    /// `http::addr=host:9000;` (`https::…;username=…;password=…;` etc.).
    /// `protocol_version=1` is added unless given, so rows travel as text.
    pub fn new(conf: &str) -> Result<Self, ProcessError> {
        let mut conf = conf.trim().to_string();
        if !conf.ends_with(';') {
            conf.push(';');
        }
        if !conf.contains("protocol_version=") {
            conf.push_str("protocol_version=1;");
        }
        if !conf.starts_with("http::") && !conf.starts_with("https::") {
            return Err(ProcessError::invalid(format!(
                "QuestDB configuration {conf:?}: use ILP over HTTP (`http::addr=host:9000;`)"
            )));
        }
        Ok(QuestDbSink {
            conf,
            sender: None,
            buffer: Buffer::new(ProtocolVersion::V1),
            stats: SinkStats::default(),
        })
    }

    fn retriable(e: questdb::Error) -> ProcessError {
        ProcessError::Retriable(format!("questdb: {e}"))
    }
}

impl Sink for QuestDbSink {
    type Input = SinkInput;

    fn name(&self) -> &str {
        "questdb-sink"
    }

    fn add(&mut self, input: &Incoming<SinkInput>) -> Result<(), ProcessError> {
        let marker = self.buffer.len();
        self.buffer
            .set_marker()
            .map_err(|e| ProcessError::invalid(e.to_string()))?;
        let written = match &input.value {
            SinkInput::Bar(b) => write_bar(&mut self.buffer, b).map(|_| self.stats.bars += 1),
            SinkInput::Flag(f) => write_flag(&mut self.buffer, f).map(|_| self.stats.flags += 1),
            SinkInput::Features(v) => {
                write_features(&mut self.buffer, v).map(|_| self.stats.features += 1)
            }
            SinkInput::Regime(p) => {
                write_regime(&mut self.buffer, p).map(|_| self.stats.regimes += 1)
            }
        };
        match written {
            Ok(()) => {
                self.buffer.clear_marker();
                Ok(())
            }
            Err(e) => {
                // Drop the half-written row; the record is dead-lettered.
                let _ = self.buffer.rewind_to_marker();
                debug_assert_eq!(self.buffer.len(), marker);
                Err(ProcessError::invalid(format!(
                    "not writable as an ILP row: {e}"
                )))
            }
        }
    }

    fn pending(&self) -> usize {
        self.buffer.row_count()
    }

    fn flush(&mut self) -> Result<(), ProcessError> {
        if self.sender.is_none() {
            self.sender = Some(Sender::from_conf(&self.conf).map_err(Self::retriable)?);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(ProcessError::Retriable("no QuestDB connection".into()));
        };
        match sender.flush(&mut self.buffer) {
            Ok(()) => {
                self.stats.flushes += 1;
                Ok(())
            }
            Err(e) => {
                self.stats.failed_flushes += 1;
                self.sender = None;
                Err(Self::retriable(e))
            }
        }
    }
}
