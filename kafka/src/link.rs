//! [`Link`]: whether this process reaches its brokers. Every long-lived
//! client built from one [`ClientSettings`] reports through a
//! [`LinkContext`], so an outage is one state, logged once when it starts
//! and once when it ends, instead of every client logging every failed
//! reconnect (librdkafka retries on its own with backoff). While the link is
//! down a watcher probes the cluster with doubling waits (1 s … 30 s) and
//! marks it up again on the first answer. Readers of the state: the runner
//! (gives up after `[runner] unreachable_limit_s`), the API (`/health`, 503).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError as RdError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::settings::ClientSettings;

/// An outage in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// When it began, epoch milliseconds.
    pub since_ms: i64,
    /// How long it has lasted.
    pub lasted: Duration,
    /// The client's first report of it.
    pub reason: String,
}

#[derive(Debug, Default)]
struct State {
    down: Option<(Instant, i64, String)>,
    /// Reports swallowed during the current outage.
    swallowed: u64,
    watching: bool,
}

/// Reachability of the brokers, shared by clones of one [`ClientSettings`].
#[derive(Debug, Default)]
pub struct Link {
    state: Mutex<State>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Link {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The brokers do not answer: the first report of an outage is logged
    /// (WARN), the rest counted. Returns whether this report began it.
    pub fn down(&self, reason: &str) -> bool {
        let mut s = self.lock();
        if s.down.is_some() {
            s.swallowed += 1;
            return false;
        }
        s.down = Some((Instant::now(), now_ms(), reason.to_string()));
        s.swallowed = 0;
        tracing::warn!(%reason, "broker unreachable; clients retry with backoff (logged again when it answers)");
        true
    }

    /// The brokers answer again; logs the end of an outage (INFO).
    pub fn up(&self) {
        let mut s = self.lock();
        if let Some((at, _, _)) = s.down.take() {
            tracing::info!(
                after_s = at.elapsed().as_secs_f64(),
                reports = s.swallowed,
                "broker reachable again"
            );
        }
    }

    /// The outage in progress, if any.
    pub fn outage(&self) -> Option<Outage> {
        self.lock()
            .down
            .as_ref()
            .map(|(at, since_ms, reason)| Outage {
                since_ms: *since_ms,
                lasted: at.elapsed(),
                reason: reason.clone(),
            })
    }

    /// Starts the watcher thread that probes until the brokers answer,
    /// unless one runs already.
    fn watch(self: &Arc<Self>, settings: &ClientSettings) {
        {
            let mut s = self.lock();
            if s.watching || s.down.is_none() {
                return;
            }
            s.watching = true;
        }
        let (link, settings) = (self.clone(), settings.clone());
        let spawned = std::thread::Builder::new()
            .name("kafka-link".into())
            .spawn(move || {
                let mut wait = Duration::from_secs(1);
                loop {
                    std::thread::sleep(wait);
                    {
                        // Checked and given up under one lock: an outage
                        // that begins after this sees `watching` false.
                        let mut s = link.lock();
                        if s.down.is_none() {
                            s.watching = false;
                            return;
                        }
                    }
                    if crate::admin::probe(&settings, Duration::from_secs(2)).is_ok() {
                        link.up();
                        wait = Duration::from_secs(1);
                    } else {
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            });
        if spawned.is_err() {
            self.lock().watching = false;
        }
    }
}

/// Whether a client error means the brokers could not be reached.
pub fn is_transport(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
    )
}

fn message_is_transport(message: &str) -> bool {
    [
        "Connect to ",
        "Connection refused",
        "Disconnected",
        "brokers are down",
        "Broker transport failure",
        "Connection reset",
    ]
    .iter()
    .any(|p| message.contains(p))
}

/// The context of long-lived clients: transport failures go to the
/// [`Link`] (logged once per outage), everything else is logged as
/// librdkafka reports it.
#[derive(Debug, Clone)]
pub struct LinkContext {
    settings: ClientSettings,
}

impl LinkContext {
    pub fn new(settings: &ClientSettings) -> Self {
        LinkContext {
            settings: settings.clone(),
        }
    }

    pub fn link(&self) -> &Arc<Link> {
        &self.settings.link
    }

    /// A transport failure of any client of these settings.
    pub fn transport_failed(&self, reason: &str) {
        if self.settings.link.down(reason) {
            self.settings.link.watch(&self.settings);
        }
    }
}

impl ClientContext for LinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if message_is_transport(message) {
            // All brokers down is an outage; one connection failing among
            // several answering brokers is librdkafka's business (DEBUG).
            if message.contains("brokers are down") {
                self.transport_failed(message);
            } else if self.settings.link.outage().is_some() {
                self.settings.link.down(message);
            } else {
                tracing::debug!(target: "librdkafka", "{fac} {message}");
            }
            return;
        }
        // During an outage the consequences (session and request timeouts)
        // are part of it: counted, not logged.
        if (level as i32) > (RDKafkaLogLevel::Error as i32) && self.settings.link.outage().is_some()
        {
            self.settings.link.down(message);
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac} {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac} {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
        }
    }

    fn error(&self, error: RdError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => self.transport_failed(reason),
            code if is_transport(code) => {
                if self.settings.link.outage().is_some() {
                    self.settings.link.down(reason);
                } else {
                    tracing::debug!(target: "librdkafka", %error, "{reason}");
                }
            }
            // Reaching a partition's end is news for a reader, not an error.
            Some(RDKafkaErrorCode::PartitionEOF) => {
                tracing::debug!(target: "librdkafka", %error, "{reason}")
            }
            _ => tracing::error!(target: "librdkafka", %error, "{reason}"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LinkContext {}

/// The context of short-lived probes: everything at DEBUG (their caller
/// reports the result).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(target: "librdkafka", "{fac} {message}");
    }

    fn error(&self, error: RdError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, "{reason}");
    }
}

impl rdkafka::consumer::ConsumerContext for QuietContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_state_from_first_report_to_answer() {
        let link = Link::default();
        assert!(link.outage().is_none());
        assert!(link.down("all brokers down"));
        assert!(!link.down("connect failed"));
        assert!(!link.down("connect failed"));
        let o = link.outage().expect("down");
        assert_eq!(o.reason, "all brokers down");
        assert!(o.since_ms > 0);
        assert_eq!(link.lock().swallowed, 2);
        link.up();
        assert!(link.outage().is_none());
        assert!(link.down("again"));
        assert_eq!(link.outage().expect("down").reason, "again");
    }

    #[test]
    fn the_watcher_marks_the_link_up_when_a_broker_answers() {
        let broker = crate::Broker::embedded().expect("embedded broker");
        let settings = broker.settings("link.");
        let ctx = LinkContext::new(&settings);
        ctx.transport_failed("pretend");
        let deadline = Instant::now() + Duration::from_secs(20);
        while settings.link.outage().is_some() {
            assert!(Instant::now() < deadline, "never marked up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
