//! `/metrics`: Prometheus (OpenMetrics) text. Request counts and latency
//! are recorded as requests pass; everything else is read at scrape time
//! from where it lives: consumer lag and topic sizes from the broker,
//! trainings, promotions, parameter changes and dead letters from the
//! views, in-process runner counters when processors share the process.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use autotrain_schemas::TrainingState;

use crate::state::ApiState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Request counters and latency histograms, shared by the middleware.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupTopic {
    group: String,
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessorKind {
    processor: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model_key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StrategyReason {
    strategy: String,
    reason: String,
}

/// Broker facts for the scrape (blocking reads).
#[derive(Debug, Default)]
struct BrokerFacts {
    /// (group, topic) → (committed records, lag).
    groups: Vec<(String, String, i64, i64)>,
    /// topic → records held.
    topics: Vec<(String, i64)>,
    errors: u64,
}

fn broker_facts(state: &ApiState) -> BrokerFacts {
    use autotrain_kafka::reader::{committed, watermarks};
    let t = Duration::from_secs(5);
    let mut f = BrokerFacts::default();
    let mut marks = std::collections::BTreeMap::new();
    for spec in &autotrain_topics::catalogue().topics {
        match watermarks(&state.settings, &spec.name, t) {
            Ok(w) => {
                f.topics
                    .push((spec.name.clone(), w.iter().map(|(_, lo, hi)| hi - lo).sum()));
                marks.insert(spec.name.clone(), w);
            }
            Err(_) => f.errors += 1,
        }
    }
    for (group, topics) in &state.groups {
        for topic in topics {
            let (Some(w), Ok(done)) = (
                marks.get(topic),
                committed(&state.settings, group, topic, t),
            ) else {
                f.errors += 1;
                continue;
            };
            let (mut position, mut lag) = (0, 0);
            for (p, lo, hi) in w {
                let at = done.get(p).copied().unwrap_or(*lo).max(*lo);
                // Commits read after the watermarks may be ahead of them.
                position += at.min(*hi) - lo;
                lag += (hi - at).max(0);
            }
            f.groups.push((group.clone(), topic.clone(), position, lag));
        }
    }
    f
}

/// The exposition text of every metric.
pub async fn render(state: &ApiState) -> String {
    let s = state.clone();
    let facts = tokio::task::spawn_blocking(move || broker_facts(&s))
        .await
        .unwrap_or_default();
    let mut r = Registry::with_prefix("autotrain");

    let lag = Family::<GroupTopic, Gauge>::default();
    let position = Family::<GroupTopic, Gauge>::default();
    for (group, topic, pos, l) in &facts.groups {
        let k = GroupTopic {
            group: group.clone(),
            topic: topic.clone(),
        };
        lag.get_or_create(&k).set(*l);
        position.get_or_create(&k).set(*pos);
    }
    r.register(
        "consumer_lag",
        "Records on a topic a consumer group has not committed yet",
        lag,
    );
    r.register(
        "consumer_committed",
        "Records a consumer group has committed on a topic (records in)",
        position,
    );
    let held = Family::<TopicLabel, Gauge>::default();
    for (topic, n) in &facts.topics {
        held.get_or_create(&TopicLabel {
            topic: topic.clone(),
        })
        .set(*n);
    }
    r.register(
        "topic_records",
        "Records a topic holds (records out of the processor writing it)",
        held,
    );
    let errors = Counter::<u64>::default();
    errors.inc_by(facts.errors);
    r.register(
        "metrics_broker_errors",
        "Broker reads that failed during this scrape",
        errors,
    );

    let runner = Family::<ProcessorKind, Counter>::default();
    for (name, c) in &state.processors {
        use std::sync::atomic::Ordering::Relaxed;
        for (kind, v) in [
            ("received", &c.received),
            ("processed", &c.processed),
            ("outputs", &c.outputs),
            ("dead_lettered", &c.dead_lettered),
            ("duplicates", &c.duplicates),
            ("retries", &c.retries),
        ] {
            runner
                .get_or_create(&ProcessorKind {
                    processor: name.clone(),
                    kind: kind.into(),
                })
                .inc_by(v.load(Relaxed));
        }
    }
    r.register(
        "processor_records",
        "Records of processors running in this process, by kind",
        runner,
    );

    {
        let v = state.views();
        let dead = Family::<ProcessorKind, Counter>::default();
        for ((processor, kind), n) in &v.tallies.dead_letters {
            dead.get_or_create(&ProcessorKind {
                processor: processor.clone(),
                kind: kind.clone(),
            })
            .inc_by(*n);
        }
        r.register(
            "dead_letters",
            "Records processors dead-lettered, by processor and error kind",
            dead,
        );
        let by_state = Family::<StateLabel, Gauge>::default();
        let durations = latency_like_duration();
        for t in v.trainings.values() {
            by_state
                .get_or_create(&StateLabel {
                    state: format!("{:?}", t.state).to_lowercase(),
                })
                .inc();
            if t.state == TrainingState::Completed {
                let start = t
                    .events
                    .iter()
                    .find(|e| e.state == TrainingState::Running)
                    .map_or(t.created_at, |e| e.at);
                durations.observe((t.updated_at - start).max(0) as f64 / 1000.0);
            }
        }
        let submitted = v
            .triggers
            .keys()
            .filter(|id| !v.trainings.contains_key(*id))
            .count();
        by_state
            .get_or_create(&StateLabel {
                state: "submitted".into(),
            })
            .set(submitted as i64);
        r.register("trainings", "Trainings by state", by_state);
        r.register(
            "training_duration_seconds",
            "Wall time of completed trainings, first run to completion",
            durations,
        );
        let promotions = Family::<ModelLabel, Counter>::default();
        for (key, n) in &v.tallies.promotions {
            promotions
                .get_or_create(&ModelLabel {
                    model_key: key.clone(),
                })
                .inc_by(*n);
        }
        r.register("promotions", "Moves of the prod alias", promotions);
        let changes = Family::<StrategyReason, Counter>::default();
        for ((strategy, reason), n) in &v.tallies.param_changes {
            changes
                .get_or_create(&StrategyReason {
                    strategy: strategy.clone(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
        r.register(
            "param_changes",
            "Parameter updates published, by strategy and reason",
            changes,
        );
        let outcomes = Counter::<u64>::default();
        outcomes.inc_by(v.tallies.outcomes);
        r.register("trade_outcomes", "Trade outcomes posted", outcomes);
        let folded = Family::<TopicLabel, Counter>::default();
        for (topic, n) in &v.tallies.records {
            folded
                .get_or_create(&TopicLabel {
                    topic: topic.clone(),
                })
                .inc_by(*n);
        }
        r.register(
            "view_records",
            "Records the API's views folded, by topic",
            folded,
        );
        let refused = Family::<TopicLabel, Counter>::default();
        for (topic, n) in &v.tallies.refused {
            refused
                .get_or_create(&TopicLabel {
                    topic: topic.clone(),
                })
                .inc_by(*n);
        }
        r.register(
            "view_refused",
            "Records the views could not decode, by topic",
            refused,
        );
        let caught_up = Gauge::<i64>::default();
        caught_up.set(i64::from(v.caught_up));
        r.register(
            "views_caught_up",
            "1 once the views have read every followed topic",
            caught_up,
        );
    }
    r.register(
        "api_requests",
        "HTTP requests by method, route and status",
        state.metrics.requests.clone(),
    );
    r.register(
        "api_request_duration_seconds",
        "HTTP request latency by route",
        state.metrics.latency.clone(),
    );
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &r) {
        tracing::warn!(error = %e, "encoding metrics");
    }
    out
}

fn latency_like_duration() -> Histogram {
    // 0.1 s … ~27 min.
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}
