//! The parsed `catalogue.toml`.

use std::sync::OnceLock;

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CatalogueError {
    #[error("catalogue does not parse: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("catalogue names topic {0:?} twice")]
    Duplicate(String),
    #[error("topic {topic:?} carries {value:?}, which is not a payload in schemas/")]
    UnknownPayload { topic: String, value: String },
    #[error("topic {topic:?} sends dead letters to {dlq:?}, which is not a DeadLetter topic in the catalogue")]
    BadDeadLetter { topic: String, dlq: String },
    #[error("topic {0:?} needs at least one partition")]
    NoPartitions(String),
    #[error("topic {0:?} is an event log (readers fold every record) but would lose records: it must be cleanup_policy = \"delete\" with retention_ms = -1")]
    LossyEventLog(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    Delete,
    Compact,
}

impl CleanupPolicy {
    /// The value of Kafka's `cleanup.policy` topic config.
    pub fn as_kafka(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        }
    }
}

/// One topic of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    /// What the record key holds (instrument, model_key, ...).
    pub key: String,
    /// Payload type name, as in `schemas/` (`Bar`, `ModelVersion`, ...).
    pub value: String,
    pub partitions: i32,
    pub cleanup_policy: CleanupPolicy,
    /// Milliseconds; -1 keeps records forever.
    pub retention_ms: i64,
    /// Readers rebuild state by folding every record (never compacted,
    /// kept forever).
    #[serde(default)]
    pub event_log: bool,
    /// Where processors reading this topic send records they cannot use.
    pub dead_letter: Option<String>,
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    #[serde(rename = "topic")]
    pub topics: Vec<TopicSpec>,
}

impl Catalogue {
    /// Parses and checks a catalogue text.
    pub fn parse(text: &str) -> Result<Self, CatalogueError> {
        let catalogue: Catalogue = toml::from_str(text)?;
        let payloads: Vec<&str> = autotrain_schemas::registry()
            .iter()
            .map(|s| s.name)
            .collect();
        let mut seen = std::collections::HashSet::new();
        for t in &catalogue.topics {
            if !seen.insert(t.name.as_str()) {
                return Err(CatalogueError::Duplicate(t.name.clone()));
            }
            if !payloads.contains(&t.value.as_str()) {
                return Err(CatalogueError::UnknownPayload {
                    topic: t.name.clone(),
                    value: t.value.clone(),
                });
            }
            if t.partitions < 1 {
                return Err(CatalogueError::NoPartitions(t.name.clone()));
            }
            if t.event_log && (t.cleanup_policy != CleanupPolicy::Delete || t.retention_ms != -1) {
                return Err(CatalogueError::LossyEventLog(t.name.clone()));
            }
        }
        for t in &catalogue.topics {
            if let Some(dlq) = &t.dead_letter {
                let ok = catalogue
                    .topics
                    .iter()
                    .any(|d| &d.name == dlq && d.value == "DeadLetter");
                if !ok {
                    return Err(CatalogueError::BadDeadLetter {
                        topic: t.name.clone(),
                        dlq: dlq.clone(),
                    });
                }
            }
        }
        Ok(catalogue)
    }

    pub fn get(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The dead-letter topic for records read from `name`.
    pub fn dead_letter_for(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|t| t.dead_letter.as_deref())
    }
}

/// The catalogue compiled into this build (`topics/catalogue.toml`).
pub fn catalogue() -> &'static Catalogue {
    static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        Catalogue::parse(include_str!("../catalogue.toml"))
            .unwrap_or_else(|e| panic!("topics/catalogue.toml: {e}"))
    })
}
