//! Where the broker is: an external Kafka-protocol cluster, or the embedded
//! one started in-process when none is configured.
//!
//! The embedded broker is librdkafka's mock cluster: a real Kafka-protocol
//! server on a loopback port (kcat and other clients can connect while it
//! runs), in memory, and bounded — it keeps roughly the newest 5 MiB or
//! 100,000 records per partition and drops older ones without telling
//! anyone. The runner detects such a drop and fails loudly instead of
//! skipping data (see `runner`).
//!
//! Its group coordinator answers a new group's first join only after
//! `group.initial.rebalance.delay.ms`, 3 s by default (as Kafka's broker
//! default), so every processor's start waited 3 s. With one process
//! starting all its members at once there is nothing to wait for: the
//! embedded broker sets it to 0 (the `mock` module below).

use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::ClientConfig;

use crate::error::KafkaError;
use crate::settings::ClientSettings;

pub enum Broker {
    Embedded {
        /// The client whose mock cluster this is: the cluster lives as
        /// long as it does.
        host: BaseProducer,
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
        let embedded = |e: &dyn std::fmt::Display| KafkaError::Embedded(e.to_string());
        let host: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .map_err(|e| embedded(&e))?;
        let bootstrap = host
            .client()
            .mock_cluster()
            .ok_or_else(|| embedded(&"librdkafka started no mock cluster"))?
            .bootstrap_servers();
        if !mock::no_initial_rebalance_delay(host.client()) {
            return Err(embedded(&"the mock cluster has no handle"));
        }
        Ok(Broker::Embedded { host, bootstrap })
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
            Broker::Embedded { host, .. } => Some(
                host.client()
                    .mock_cluster()
                    .ok_or_else(|| KafkaError::Embedded("the mock cluster is gone".into()))
                    .and_then(|cluster| {
                        cluster
                            .create_topic(name, partitions, 1)
                            .map_err(|e| KafkaError::Embedded(format!("create {name}: {e}")))
                    }),
            ),
            Broker::External { .. } => None,
        }
    }
}

/// The workspace's only `unsafe`: librdkafka's mock cluster has a setting
/// the `rdkafka` crate does not wrap.
#[allow(unsafe_code)]
mod mock {
    use rdkafka::bindings;
    use rdkafka::client::{Client, ClientContext};

    /// Sets the mock cluster's `group.initial.rebalance.delay.ms` to 0;
    /// `false` if `client` hosts no mock cluster.
    pub(super) fn no_initial_rebalance_delay<C: ClientContext>(client: &Client<C>) -> bool {
        // SAFETY: `client.native_ptr()` is a live handle for the duration of
        // the call (`client` is borrowed); the cluster it returns is owned
        // by that handle, and the setter takes the cluster's own lock.
        unsafe {
            let cluster = bindings::rd_kafka_handle_mock_cluster(client.native_ptr());
            if cluster.is_null() {
                return false;
            }
            bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
        }
        true
    }
}
