//! How clients reach the broker: bootstrap address, the deployment's topic
//! prefix, and extra librdkafka properties.

use std::collections::BTreeMap;
use std::sync::Arc;

use rdkafka::ClientConfig;

use crate::link::{Link, LinkContext};

#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub bootstrap: String,
    /// Put in front of every catalogue topic name (`""` in production;
    /// tests use a unique one each so they never share topics).
    pub topic_prefix: String,
    /// Extra librdkafka properties for every client (security, tuning).
    pub properties: BTreeMap<String, String>,
    /// Whether the brokers answer, shared by every clone (see [`Link`]).
    pub link: Arc<Link>,
}

impl ClientSettings {
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ClientSettings {
            bootstrap: bootstrap.into(),
            topic_prefix: String::new(),
            properties: BTreeMap::new(),
            link: Arc::default(),
        }
    }

    /// The context of a long-lived client: reports outages to [`Self::link`].
    pub fn context(&self) -> LinkContext {
        LinkContext::new(self)
    }

    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// The name a catalogue topic has on the broker.
    pub fn physical(&self, logical: &str) -> String {
        format!("{}{}", self.topic_prefix, logical)
    }

    /// The catalogue name of a broker topic, if it carries this prefix.
    pub fn logical<'a>(&self, physical: &'a str) -> Option<&'a str> {
        physical.strip_prefix(self.topic_prefix.as_str())
    }

    /// The configured properties win over autotrain's defaults.
    fn with_overrides(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c.set("log_level", "3");
        if let Ok(debug) = std::env::var("AUTOTRAIN_RDKAFKA_DEBUG") {
            c.set("debug", debug).set("log_level", "7");
        }
        c
    }

    /// Producer tuned for confirmed, ordered delivery per partition.
    ///
    /// Idempotent: with several requests in flight, a batch that fails
    /// while the broker restarts is otherwise resent after the batches
    /// behind it, and the partition holds the records out of the order
    /// they were sent in (a bar stream's later bars before earlier ones),
    /// or twice. The broker's sequence numbers keep the order and drop the
    /// repeat.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", "300000")
            .set("max.in.flight.requests.per.connection", "5")
            .set("partitioner", "murmur2_random");
        self.with_overrides(c)
    }

    /// Consumer of a group that stores offsets only when told to and commits
    /// the stored ones in the background.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "500")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // An idle partition's fetch returns after this at most: a
            // processor waiting for another's progress record (event-time
            // alignment) sees it within a few milliseconds.
            .set("fetch.wait.max.ms", "10")
            // Also bounds how long a rebalance waits for members that vanished.
            .set("max.poll.interval.ms", "60000");
        self.with_overrides(c)
    }

    /// A consumer that reads assigned partitions and never commits (tail,
    /// dedupe warm-up, tests).
    pub fn reader_config(&self) -> ClientConfig {
        let mut c = self.base();
        static READERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = READERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.set(
            "group.id",
            format!("autotrain-reader-{}-{n}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
        self.with_overrides(c)
    }
}
