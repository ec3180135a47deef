//! `/metrics` of one `autotrain run …` process: Prometheus text of its
//! runner's counters (records in, out, dead-lettered, …), the time it
//! takes to process one input, its group's lag per input topic (read from
//! the broker at scrape time) and whether the brokers answer.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::runner::Counters;
use crate::ClientSettings;

/// Time to process one input: decode, the core, and handing its outputs
/// to the producer (10 µs … ~5 s).
#[derive(Debug, Clone)]
pub struct ProcessingTime(pub Histogram);

impl Default for ProcessingTime {
    fn default() -> Self {
        ProcessingTime(Histogram::new(exponential_buckets(0.000_01, 2.5, 15)))
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    processor: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupTopic {
    group: String,
    topic: String,
}

/// What a process exposes about the runner it hosts.
#[derive(Debug, Clone)]
pub struct RunnerMetrics {
    pub processor: String,
    pub group: String,
    /// Catalogue names of the group's input topics.
    pub topics: Vec<String>,
    pub settings: ClientSettings,
    pub counters: std::sync::Arc<Counters>,
}

impl RunnerMetrics {
    /// The exposition text. Blocking: the lag is read from the broker
    /// (a topic it cannot read is counted in `metrics_broker_errors`).
    pub fn render(&self) -> String {
        let mut r = Registry::with_prefix("autotrain");
        let c = &self.counters;
        let records = Family::<Kind, Counter>::default();
        for (kind, v) in [
            ("received", &c.received),
            ("processed", &c.processed),
            ("outputs", &c.outputs),
            ("dead_lettered", &c.dead_lettered),
            ("duplicates", &c.duplicates),
            ("retries", &c.retries),
            ("acknowledged", &c.acknowledged),
            ("held", &c.held),
        ] {
            records
                .get_or_create(&Kind {
                    processor: self.processor.clone(),
                    kind: kind.into(),
                })
                .inc_by(v.load(Relaxed));
        }
        r.register(
            "processor_records",
            "Records of this processor by kind: received (in), outputs (out), dead_lettered (DLQ), …",
            records,
        );
        let transactions = Counter::<u64>::default();
        transactions.inc_by(c.transactions.load(Relaxed));
        r.register(
            "processor_transactions",
            "Kafka transactions committed (exactly-once)",
            transactions,
        );
        r.sub_registry_with_label(("processor".into(), self.processor.clone().into()))
            .register(
                "processing_seconds",
                "Time to process one input (decode, core, outputs handed to the producer)",
                c.processing.0.clone(),
            );

        let lag = Family::<GroupTopic, Gauge>::default();
        let errors = Counter::<u64>::default();
        let t = Duration::from_secs(5);
        for topic in &self.topics {
            let read = crate::reader::watermarks(&self.settings, topic, t).and_then(|w| {
                crate::reader::committed(&self.settings, &self.group, topic, t)
                    .map(|done| (w, done))
            });
            match read {
                Ok((w, done)) => {
                    let behind: i64 = w
                        .iter()
                        .map(|(p, lo, hi)| {
                            (hi - done.get(p).copied().unwrap_or(*lo).max(*lo)).max(0)
                        })
                        .sum();
                    lag.get_or_create(&GroupTopic {
                        group: self.group.clone(),
                        topic: topic.clone(),
                    })
                    .set(behind);
                }
                Err(_) => {
                    errors.inc();
                }
            }
        }
        r.register(
            "consumer_lag",
            "Records on an input topic the group has not committed yet",
            lag,
        );
        r.register(
            "metrics_broker_errors",
            "Broker reads that failed during this scrape",
            errors,
        );
        let reachable = Gauge::<i64>::default();
        reachable.set(i64::from(self.settings.link.outage().is_none()));
        r.register(
            "broker_reachable",
            "1 while the brokers answer, 0 during an outage",
            reachable,
        );
        let mut text = String::new();
        match prometheus_client::encoding::text::encode(&mut text, &r) {
            Ok(()) => text,
            Err(e) => format!("# encoding failed: {e}\n"),
        }
    }
}
