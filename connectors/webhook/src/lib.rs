//! Sink connector: what ops want to hear about trainings, POSTed to a
//! webhook (seed 004's notifications). Reads `training.status`; a
//! completed, failed or cancelled training and every trainer alert
//! (stuck run, failure rate, degrading model) becomes one [`Notification`];
//! progress and intermediate states are read and passed over.
//!
//! Notifications go out in batches (`{"notifications": [...]}`) through
//! the sink loop (`autotrain_kafka::run_sink`): the input offsets are
//! stored only after the receiver answered 2xx, a failed POST is retried
//! with backoff, so delivery is at least once, and each notification's
//! `id` (the event id of the status record) lets a receiver drop repeats.
//! A 4xx other than 408 and 429 is the receiver refusing the payload:
//! the sink stops with that answer rather than drop notifications.

use std::time::Duration;

use autotrain_kafka::{Incoming, ProcessError, Sink};
use autotrain_schemas::{TrainingState, TrainingStatus};
use autotrain_topics::TRAINING_STATUS;
use serde::Serialize;

/// The topics the sink reads.
pub const INPUTS: &[&str] = &[TRAINING_STATUS.name()];

/// One message to the receiver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// Stable across redeliveries: the status record's event id.
    pub id: String,
    /// `training.completed`, `training.failed`, `training.cancelled` or
    /// `training.alert`.
    pub event: &'static str,
    pub training_id: String,
    pub model_key: String,
    pub model_version: Option<i32>,
    pub attempt: i32,
    pub message: String,
    pub error: Option<String>,
    /// Epoch ms of the status.
    pub at: i64,
}

/// The notification a status calls for, if any.
pub fn notification(status: &TrainingStatus, id: String) -> Option<Notification> {
    let event = match status.state {
        TrainingState::Completed => "training.completed",
        TrainingState::Failed => "training.failed",
        TrainingState::Cancelled => "training.cancelled",
        TrainingState::Alert => "training.alert",
        _ => return None,
    };
    Some(Notification {
        id,
        event,
        training_id: status.training_id.clone(),
        model_key: status.model_key.clone(),
        model_version: status.model_version,
        attempt: status.attempt,
        message: status.message.clone(),
        error: status.error.clone(),
        at: status.at,
    })
}

/// Counts of a webhook sink's work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WebhookStats {
    /// Status records read.
    pub statuses: u64,
    /// Notifications the receiver accepted.
    pub delivered: u64,
    pub posts: u64,
    pub failed_posts: u64,
}

#[derive(Debug)]
pub struct WebhookSink {
    url: String,
    client: reqwest::Client,
    pending: Vec<Notification>,
    pub stats: WebhookStats,
}

impl WebhookSink {
    pub fn new(url: &str) -> Result<Self, ProcessError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| ProcessError::invalid(format!("webhook URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ProcessError::invalid(format!(
                "webhook URL {url:?}: use http:// or https://"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ProcessError::invalid(format!("HTTP client: {e}")))?;
        Ok(WebhookSink {
            url: url.to_string(),
            client,
            pending: Vec::new(),
            stats: WebhookStats::default(),
        })
    }

    async fn post(&self) -> Result<(), ProcessError> {
        let response = self
            .client
            .post(&self.url)
            .json(&serde_json::json!({ "notifications": self.pending }))
            .send()
            .await
            .map_err(|e| ProcessError::Retriable(format!("webhook {}: {e}", self.url)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let reason = format!("webhook {} answered {status}: {body:.200}", self.url);
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(ProcessError::Retriable(reason))
        } else {
            Err(ProcessError::invalid(reason))
        }
    }
}

impl Sink for WebhookSink {
    type Input = TrainingStatus;

    fn name(&self) -> &str {
        "webhook-sink"
    }

    fn add(&mut self, input: &Incoming<TrainingStatus>) -> Result<(), ProcessError> {
        self.stats.statuses += 1;
        if let Some(n) = notification(&input.value, input.event_id.to_string()) {
            self.pending.push(n);
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Called by the sink loop inside `block_in_place`, on the runtime.
    fn flush(&mut self) -> Result<(), ProcessError> {
        self.stats.posts += 1;
        let sent = tokio::runtime::Handle::current().block_on(self.post());
        match sent {
            Ok(()) => {
                self.stats.delivered += self.pending.len() as u64;
                self.pending.clear();
                Ok(())
            }
            Err(e) => {
                self.stats.failed_posts += 1;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: TrainingState) -> TrainingStatus {
        TrainingStatus {
            training_id: "tr-1".into(),
            model_key: "hmm/x:ABC".into(),
            state,
            stage: None,
            progress: 1.0,
            message: "done".into(),
            metrics: vec![],
            error: None,
            attempt: 1,
            model_version: Some(3),
            at: 1_000,
        }
    }

    #[test]
    fn ends_and_alerts_notify_and_progress_does_not() {
        for (state, event) in [
            (TrainingState::Completed, Some("training.completed")),
            (TrainingState::Failed, Some("training.failed")),
            (TrainingState::Cancelled, Some("training.cancelled")),
            (TrainingState::Alert, Some("training.alert")),
            (TrainingState::Running, None),
            (TrainingState::Queued, None),
        ] {
            let n = notification(&status(state), "e1".into());
            assert_eq!(n.as_ref().map(|n| n.event), event, "{state:?}");
            if let Some(n) = n {
                assert_eq!((n.id.as_str(), n.model_version), ("e1", Some(3)));
            }
        }
        assert!(WebhookSink::new("ftp://x").is_err());
        assert!(WebhookSink::new("not a url").is_err());
    }
}
