//! [`ApiState`]: what every handler shares — the configuration, the live
//! [`Views`], a producer for commands, and the request metrics — plus the
//! follower thread that keeps the views current.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use autotrain_kafka::runner::Counters;
use autotrain_kafka::{follow, ClientSettings, Followed, KafkaError, OutRecord, Producer};
use autotrain_params::Controller;
use autotrain_schemas::Payload;
use autotrain_topics::Topic;
use autotrain_trainer::core::TrainerConfig;

use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::metrics::RequestMetrics;
use crate::views::{Views, FOLLOWED};

/// A decision the API advised, kept so an outcome posted with its
/// `config_id` learns on the advised context.
#[derive(Debug, Clone)]
pub struct Advised {
    pub strategy: String,
    pub instrument: String,
    pub preset_id: String,
    pub context: Vec<f64>,
}

const ADVICE_KEPT: usize = 100_000;

#[derive(Debug)]
pub struct Inner {
    pub config: ApiConfig,
    pub settings: ClientSettings,
    pub trainer: TrainerConfig,
    views: RwLock<Views>,
    /// Builds a fresh controller replica when the follower restarts.
    fresh_params: Factory,
    pub producer: Producer,
    /// Consumer groups whose lag `/metrics` reports, with their topics.
    pub groups: Vec<(String, Vec<String>)>,
    /// Runner counters of processors running in this process (the demo).
    pub processors: Vec<(String, Arc<Counters>)>,
    pub metrics: RequestMetrics,
    advice: Mutex<(BTreeMap<String, Advised>, VecDeque<String>)>,
    pub follower_error: Mutex<Option<String>>,
    pub started: Instant,
    seq: AtomicU64,
    /// Records folded into the views so far (the dashboard's live updates
    /// wait on it).
    pub changes: tokio::sync::watch::Sender<u64>,
}

/// Shared by every handler (cheap to clone).
#[derive(Debug, Clone)]
pub struct ApiState(pub Arc<Inner>);

impl std::ops::Deref for ApiState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

struct Factory(Box<dyn Fn() -> Controller + Send + Sync>);

impl std::fmt::Debug for Factory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<controller factory>")
    }
}

/// What [`ApiState::new`] needs beyond the broker settings.
#[derive(Debug)]
pub struct Setup {
    pub api: ApiConfig,
    pub trainer: TrainerConfig,
    pub groups: Vec<(String, Vec<String>)>,
    pub processors: Vec<(String, Arc<Counters>)>,
}

/// A request waits for its event's acknowledgement: send at once rather
/// than linger for a batch, and give up after `publish_timeout_ms` (unless
/// the `[kafka]` properties say otherwise).
fn request_settings(settings: &ClientSettings, api: &ApiConfig) -> ClientSettings {
    let mut s = settings.clone();
    s.properties
        .entry("linger.ms".into())
        .or_insert_with(|| "0".into());
    s.properties
        .entry("message.timeout.ms".into())
        .or_insert_with(|| api.publish_timeout_ms.max(1).to_string());
    s
}

/// Why the API cannot answer from its views now, if it cannot.
#[derive(Debug, Clone, PartialEq)]
pub enum Unready {
    /// No broker has answered since `since_ms` (epoch ms).
    BrokerUnreachable {
        since_ms: i64,
        for_s: f64,
        reason: String,
    },
    /// The views have not yet read every followed topic (starting, or
    /// starting over after the follower failed).
    Loading { error: Option<String> },
}

impl Unready {
    pub fn message(&self) -> String {
        match self {
            Unready::BrokerUnreachable {
                since_ms,
                for_s,
                reason,
            } => format!(
                "broker unreachable since {} ({for_s:.0} s): {reason}; the views may be stale, so nothing is answered from them",
                chrono::DateTime::from_timestamp_millis(*since_ms)
                    .map_or_else(|| since_ms.to_string(), |t| t.to_rfc3339())
            ),
            Unready::Loading { error: None } => {
                "the views are still reading the topics; retry shortly".into()
            }
            Unready::Loading { error: Some(e) } => {
                format!("the views are reading the topics again after: {e}")
            }
        }
    }
}

impl ApiState {
    pub fn new(
        settings: &ClientSettings,
        setup: Setup,
        params: impl Fn() -> Controller + Send + Sync + 'static,
    ) -> Result<Self, KafkaError> {
        let window_days = setup.api.feature_window_days;
        let producer = Producer::new(&request_settings(settings, &setup.api))?;
        Ok(ApiState(Arc::new(Inner {
            config: setup.api,
            settings: settings.clone(),
            trainer: setup.trainer,
            views: RwLock::new(Views::new(params(), window_days)),
            fresh_params: Factory(Box::new(params)),
            producer,
            groups: setup.groups,
            processors: setup.processors,
            metrics: RequestMetrics::default(),
            advice: Mutex::new((BTreeMap::new(), VecDeque::new())),
            follower_error: Mutex::new(None),
            started: Instant::now(),
            seq: AtomicU64::new(0),
            changes: tokio::sync::watch::Sender::new(0),
        })))
    }

    /// `None` when reads reflect the topics: the views caught up and the
    /// brokers answer.
    pub fn unready(&self) -> Option<Unready> {
        if let Some(o) = self.settings.link.outage() {
            return Some(Unready::BrokerUnreachable {
                since_ms: o.since_ms,
                for_s: o.lasted.as_secs_f64(),
                reason: o.reason,
            });
        }
        if self.views().caught_up {
            return None;
        }
        Some(Unready::Loading {
            error: self
                .follower_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        })
    }

    pub fn views(&self) -> RwLockReadGuard<'_, Views> {
        self.views.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn views_mut(&self) -> RwLockWriteGuard<'_, Views> {
        self.views.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh id for an event the API creates (`{prefix}-{ms}-{n}`).
    pub fn next_id(&self, prefix: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!(
            "{prefix}-{}-{}-{n}",
            chrono::Utc::now().timestamp_millis(),
            std::process::id()
        )
    }

    /// Publishes an event and waits for the broker's acknowledgement.
    pub async fn publish<T: Payload>(
        &self,
        topic: Topic<T>,
        key: &str,
        value: &T,
    ) -> Result<(), ApiError> {
        let record = OutRecord::from_content(topic, key, value)
            .map_err(|e| ApiError::Unprocessable(format!("cannot encode the event: {e}")))?;
        self.producer.send(&record).await?;
        Ok(())
    }

    pub fn remember_advice(&self, config_id: &str, a: Advised) {
        let mut guard = self.advice.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        if map.insert(config_id.to_string(), a).is_none() {
            order.push_back(config_id.to_string());
        }
        while order.len() > ADVICE_KEPT {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }

    pub fn advised(&self, config_id: &str) -> Option<Advised> {
        let guard = self.advice.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.get(config_id).cloned()
    }

    /// Keeps the views current until `stop`: follows every topic in
    /// [`FOLLOWED`]; after a broker error it starts over on fresh views
    /// (reported by `/health` meanwhile). Blocking: run on its own thread.
    pub fn follow_until(&self, stop: &AtomicBool) {
        let mut first = true;
        while !stop.load(Ordering::Relaxed) {
            if !first {
                *self.views_mut() =
                    Views::new((self.fresh_params.0)(), self.config.feature_window_days);
            }
            first = false;
            // Retention is applied once caught up and then every minute.
            let mut swept = std::time::Instant::now();
            let sweep = |views: &mut crate::views::Views| {
                let (trainings, events) = views.sweep(
                    &self.trainer.retention,
                    chrono::Utc::now().timestamp_millis(),
                );
                if trainings + events > 0 {
                    tracing::info!(
                        trainings,
                        events,
                        "retention: finished trainings and old log events no longer served"
                    );
                }
            };
            let result = follow(&self.settings, FOLLOWED, stop, |f| match f {
                Followed::Record { topic, payload, .. } => {
                    let mut views = self.views_mut();
                    views.apply(topic, payload);
                    if views.caught_up && swept.elapsed() > Duration::from_secs(60) {
                        sweep(&mut views);
                        swept = std::time::Instant::now();
                    }
                    drop(views);
                    self.changes.send_modify(|n| *n += 1);
                }
                Followed::CaughtUp => {
                    let mut views = self.views_mut();
                    if !views.caught_up {
                        sweep(&mut views);
                        swept = std::time::Instant::now();
                    }
                    drop(views);
                    self.views_mut().caught_up = true;
                    *self
                        .follower_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = None;
                }
            });
            if let Err(e) = result {
                tracing::warn!(error = %e, "the API's views stopped following; starting over");
                *self
                    .follower_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}
