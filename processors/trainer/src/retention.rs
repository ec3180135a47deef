//! Retention (seed 003): how long finished trainings stay listed, how long
//! their step-by-step logs are kept, and when a reference set on disk may
//! go. Pure decisions over timestamps; the API applies them to what it
//! serves and keeps in memory, the trainer service to its reference store.
//!
//! The topics are not touched: `training.status` and `model.updates` are
//! event logs (the catalogue refuses a retention on them), the audit trail
//! a replay proves decisions from. And nothing a registered version's
//! lineage needs ever goes: its registry event (manifest, metrics) lives
//! on `model.updates`, and its reference set is kept as long as the
//! version is registered, so a rollback can still be re-scored.

use std::collections::{BTreeMap, HashSet};

use autotrain_schemas::TrainingState;
use serde::{Deserialize, Serialize};

use crate::view::TrainingView;

const DAY_MS: i64 = 86_400_000;

/// `[trainer.retention]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Completed trainings stay listed this many days after they ended.
    pub completed_days: u32,
    /// Failed and cancelled trainings, days after they ended.
    pub failed_days: u32,
    /// A finished training's step-by-step events (its log) are cut to the
    /// first and the last this many days after it ended.
    pub logs_days: u32,
    /// A reference set no registered version names is deleted from the
    /// store this many days after it was written.
    pub references_days: u32,
    /// How often the trainer sweeps its reference store, minutes.
    pub sweep_minutes: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            completed_days: 90,
            failed_days: 30,
            logs_days: 7,
            references_days: 30,
            sweep_minutes: 60,
        }
    }
}

fn days(d: u32) -> i64 {
    i64::from(d) * DAY_MS
}

impl Retention {
    /// The days a finished training stays listed, by its final state.
    fn kept_for(&self, state: TrainingState) -> Option<u32> {
        match state {
            TrainingState::Completed => Some(self.completed_days),
            TrainingState::Failed | TrainingState::Cancelled => Some(self.failed_days),
            _ => None,
        }
    }

    /// Has this finished training outlived its retention at `now`? An
    /// unfinished one never has.
    pub fn expired(&self, view: &TrainingView, now: i64) -> bool {
        view.is_terminal()
            && self
                .kept_for(view.state)
                .is_some_and(|d| now - view.updated_at > days(d))
    }

    /// Cuts a finished training's events to its first and last once its
    /// logs are past retention; the number of events removed (also added
    /// to `view.pruned_events`).
    pub fn prune_log(&self, view: &mut TrainingView, now: i64) -> usize {
        if !view.is_terminal() || now - view.updated_at <= days(self.logs_days) {
            return 0;
        }
        let n = view.events.len();
        if n <= 2 {
            return 0;
        }
        let last = view.events.pop();
        view.events.truncate(1);
        view.events.extend(last);
        view.pruned_events += n - 2;
        n - 2
    }

    /// Sweeps the views: expired trainings removed, old logs cut. Returns
    /// (trainings removed, events removed).
    pub fn sweep(&self, views: &mut BTreeMap<String, TrainingView>, now: i64) -> (usize, usize) {
        let before = views.len();
        views.retain(|_, v| !self.expired(v, now));
        let events = views.values_mut().map(|v| self.prune_log(v, now)).sum();
        (before - views.len(), events)
    }

    /// Of the stored reference sets (`hash`, written at epoch ms), those
    /// that may be deleted at `now`: no registered version names them
    /// (`needed`) and they are older than `references_days`.
    pub fn unneeded_references<'a>(
        &self,
        stored: &'a [(String, i64)],
        needed: &HashSet<String>,
        now: i64,
    ) -> Vec<&'a str> {
        stored
            .iter()
            .filter(|(hash, written)| {
                !needed.contains(hash) && now - written > days(self.references_days)
            })
            .map(|(hash, _)| hash.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::TrainingStatus;

    fn status(id: &str, state: TrainingState, at: i64) -> TrainingStatus {
        TrainingStatus {
            training_id: id.into(),
            model_key: "k".into(),
            state,
            stage: None,
            progress: 0.0,
            message: String::new(),
            metrics: vec![],
            error: None,
            attempt: 1,
            model_version: None,
            at,
        }
    }

    fn views(now: i64) -> BTreeMap<String, TrainingView> {
        let mut statuses = Vec::new();
        for (id, end, ended_days_ago) in [
            ("done-old", TrainingState::Completed, 91),
            ("done-recent", TrainingState::Completed, 89),
            ("failed-old", TrainingState::Failed, 31),
            ("cancelled-recent", TrainingState::Cancelled, 29),
            ("running", TrainingState::Running, 400),
        ] {
            let ended = now - ended_days_ago * DAY_MS;
            statuses.push(status(id, TrainingState::Queued, ended - 3_000));
            statuses.push(status(id, TrainingState::Running, ended - 2_000));
            statuses.push(status(id, TrainingState::Running, ended - 1_000));
            statuses.push(status(id, end, ended));
        }
        crate::view::trainings(statuses)
    }

    #[test]
    fn finished_trainings_expire_by_their_end_state_and_logs_are_cut() {
        let now = 1_000 * DAY_MS;
        let r = Retention::default();
        let mut v = views(now);
        let (removed, events) = r.sweep(&mut v, now);
        assert_eq!(removed, 2);
        assert_eq!(
            v.keys().map(String::as_str).collect::<Vec<_>>(),
            ["cancelled-recent", "done-recent", "running"]
        );
        // Both finished ones are past the 7 days of logs: first and last kept.
        assert_eq!(events, 4);
        let done = &v["done-recent"];
        assert_eq!(done.events.len(), 2);
        assert_eq!(done.pruned_events, 2);
        assert_eq!(done.events[0].state, TrainingState::Queued);
        assert_eq!(done.events[1].state, TrainingState::Completed);
        assert_eq!(v["running"].events.len(), 4, "unfinished: untouched");
        // Sweeping again changes nothing.
        assert_eq!(r.sweep(&mut v, now), (0, 0));
    }

    #[test]
    fn reference_sets_a_version_needs_are_never_unneeded() {
        let now = 100 * DAY_MS;
        let r = Retention::default();
        let stored = vec![
            ("needed-old".to_string(), 0),
            ("orphan-old".to_string(), 0),
            ("orphan-new".to_string(), now - DAY_MS),
        ];
        let needed: HashSet<String> = ["needed-old".to_string()].into();
        assert_eq!(r.unneeded_references(&stored, &needed, now), ["orphan-old"]);
    }
}
