//! Read views over the trainer's topics for the CLI and the API: each
//! training's current state and history folded from `training.status`.

use std::collections::BTreeMap;

use autotrain_schemas::{Metric, TrainingState, TrainingStatus};
use serde::Serialize;

/// One training as it stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingView {
    pub training_id: String,
    pub model_key: String,
    pub state: TrainingState,
    pub stage: Option<String>,
    pub progress: f64,
    pub attempt: i32,
    pub message: String,
    pub error: Option<String>,
    pub model_version: Option<i32>,
    pub metrics: Vec<Metric>,
    pub created_at: i64,
    pub updated_at: i64,
    pub alerts: Vec<String>,
    /// Every event, in order (the first and the last only, once its logs
    /// are past retention).
    pub events: Vec<TrainingStatus>,
    /// Events removed under retention (`[trainer.retention] logs_days`).
    pub pruned_events: usize,
}

impl TrainingView {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.state,
            TrainingState::Completed | TrainingState::Failed | TrainingState::Cancelled
        ) && !self
            .events
            .last()
            .is_some_and(|e| e.state == TrainingState::Queued)
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

/// Folds status events (in time order) into one view per training.
pub fn trainings(
    statuses: impl IntoIterator<Item = TrainingStatus>,
) -> BTreeMap<String, TrainingView> {
    let mut out: BTreeMap<String, TrainingView> = BTreeMap::new();
    for s in statuses {
        apply_status(&mut out, s);
    }
    out
}

/// Folds the next status event into the views (live views apply them as
/// they arrive).
pub fn apply_status(views: &mut BTreeMap<String, TrainingView>, s: TrainingStatus) {
    let v = views
        .entry(s.training_id.clone())
        .or_insert_with(|| TrainingView {
            training_id: s.training_id.clone(),
            model_key: s.model_key.clone(),
            state: s.state,
            stage: None,
            progress: 0.0,
            attempt: s.attempt,
            message: String::new(),
            error: None,
            model_version: None,
            metrics: Vec::new(),
            created_at: s.at,
            updated_at: s.at,
            alerts: Vec::new(),
            events: Vec::new(),
            pruned_events: 0,
        });
    v.updated_at = s.at;
    if s.state == TrainingState::Alert {
        v.alerts.push(s.message.clone());
    } else {
        v.state = s.state;
        v.stage = s.stage.clone();
        v.progress = s.progress;
        v.attempt = v.attempt.max(s.attempt);
        if !s.message.is_empty() {
            v.message = s.message.clone();
        }
        if s.error.is_some() {
            v.error = s.error.clone();
        }
        if s.model_version.is_some() {
            v.model_version = s.model_version;
        }
        if !s.metrics.is_empty() {
            v.metrics = s.metrics.clone();
        }
    }
    v.events.push(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(state: TrainingState, stage: Option<&str>, progress: f64, at: i64) -> TrainingStatus {
        TrainingStatus {
            training_id: "tr-1".into(),
            model_key: "k".into(),
            state,
            stage: stage.map(str::to_string),
            progress,
            message: format!("{state:?}"),
            metrics: vec![],
            error: None,
            attempt: 1,
            model_version: (state == TrainingState::Completed).then_some(3),
            at,
        }
    }

    #[test]
    fn the_latest_lifecycle_event_sets_the_state_alerts_do_not() {
        let v = trainings([
            s(TrainingState::Queued, None, 0.0, 1),
            s(TrainingState::Running, None, 0.0, 2),
            s(TrainingState::Running, Some("fit"), 0.5, 3),
            s(TrainingState::Alert, None, 0.0, 4),
        ]);
        let t = &v["tr-1"];
        assert_eq!(
            (t.state, t.stage.as_deref(), t.progress),
            (TrainingState::Running, Some("fit"), 0.5)
        );
        assert_eq!(t.alerts.len(), 1);
        assert!(!t.is_terminal());
        let v = trainings([
            s(TrainingState::Queued, None, 0.0, 1),
            s(TrainingState::Completed, None, 1.0, 9),
        ]);
        assert!(v["tr-1"].is_terminal());
        assert_eq!(v["tr-1"].model_version, Some(3));
        assert_eq!((v["tr-1"].created_at, v["tr-1"].updated_at), (1, 9));
    }
}
