//! Where the broker is: an external Kafka-protocol cluster, or the embedded
//! one started in-process when none is configured.
//!
//! The embedded broker is librdkafka's mock cluster: a real Kafka-protocol
//! server on a loopback port (kcat and other clients can connect while it
//! runs), in memory, and bounded — it keeps roughly the newest 5 MiB or
//! 100,000 records per partition and drops older ones without telling
//! anyone. The runner detects such a drop and fails loudly instead of
//! skipping data (see `runner`).

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::error::KafkaError;
use crate::settings::ClientSettings;

pub enum Broker {
    Embedded {
        cluster: MockCluster<'static, DefaultProducerContext>,
        bootstrap: String,
    },
    External {
        bootstrap: String,
    },
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broker::Embedded { bootstrap, .. } => write!(f, "Embedded({bootstrap})"),
            Broker::External { bootstrap } => write!(f, "External({bootstrap})"),
        }
    }
}

impl Broker {
    /// `Some(addr)`: use that cluster. `None`: start the embedded broker.
    pub fn connect_or_embed(brokers: Option<&str>) -> Result<Self, KafkaError> {
        match brokers {
            Some(b) if !b.trim().is_empty() => Ok(Broker::External {
                bootstrap: b.trim().to_string(),
            }),
            _ => Self::embedded(),
        }
    }

    /// Starts the in-process broker (one node, in memory, bounded).
    pub fn embedded() -> Result<Self, KafkaError> {
        let cluster = MockCluster::new(1).map_err(|e| KafkaError::Embedded(e.to_string()))?;
        let bootstrap = cluster.bootstrap_servers();
        Ok(Broker::Embedded { cluster, bootstrap })
    }

    pub fn bootstrap(&self) -> &str {
        match self {
            Broker::Embedded { bootstrap, .. } | Broker::External { bootstrap } => bootstrap,
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Broker::Embedded { .. })
    }

    /// Client settings for this broker with the given topic prefix.
    ///
    /// The embedded broker answers a fetch only after `fetch.wait.max.ms`
    /// when no data was waiting at request time (no long-poll wake-up), so a
    /// consumer that has caught up idles 500 ms per round by default; being
    /// in-process, short polls cost nothing there.
    pub fn settings(&self, topic_prefix: &str) -> ClientSettings {
        let mut settings = ClientSettings::new(self.bootstrap()).with_prefix(topic_prefix);
        if self.is_embedded() {
            settings
                .properties
                .insert("fetch.wait.max.ms".into(), "10".into());
        }
        settings
    }

    /// Creates a topic on the embedded broker (its CreateTopics API is not
    /// implemented; this is its native equivalent). `None` when external.
    pub(crate) fn embedded_create(
        &self,
        name: &str,
        partitions: i32,
    ) -> Option<Result<(), KafkaError>> {
        match self {
            Broker::Embedded { cluster, .. } => Some(
                cluster
                    .create_topic(name, partitions, 1)
                    .map_err(|e| KafkaError::Embedded(format!("create {name}: {e}"))),
            ),
            Broker::External { .. } => None,
        }
    }
}
