//! [`Views`]: what the API reads, folded from topics as they grow (the
//! follower in [`crate::state`] feeds every record through
//! [`Views::apply`]). Pure: no I/O, tested with plain records.

use std::collections::BTreeMap;

use autotrain_features::window::{LiveWindow, WindowSpec};
use autotrain_features::Contract;
use autotrain_params::Controller;
use autotrain_schemas::{
    decode, Bar, DeadLetter, FeatureVector, ModelVersion, ParamUpdate, PresetRegistration,
    RegimePosterior, TradeOutcome, TrainingStatus, TrainingTrigger, ValidationFlag,
};
use autotrain_topics::{
    FEATURES, MARKET_BARS, MARKET_BARS_DLQ, MARKET_FLAGS, MODEL_UPDATES, PARAM_PRESETS,
    PARAM_UPDATES, REGIMES, TRADE_OUTCOMES, TRAINING_STATUS, TRAINING_TRIGGERS,
};
use autotrain_trainer::queue::training_id;
use autotrain_trainer::view::{apply_status, TrainingView};
use autotrain_trainer::{Registry, PROD};
use autotrain_validator::ReviewQueue;

/// The topics the views are folded from.
pub const FOLLOWED: &[&str] = &[
    MARKET_BARS.name(),
    TRAINING_TRIGGERS.name(),
    TRAINING_STATUS.name(),
    MODEL_UPDATES.name(),
    MARKET_FLAGS.name(),
    PARAM_PRESETS.name(),
    PARAM_UPDATES.name(),
    TRADE_OUTCOMES.name(),
    REGIMES.name(),
    FEATURES.name(),
    MARKET_BARS_DLQ.name(),
];

/// Parameter changes kept for the dashboard.
pub const PARAM_CHANGES_KEPT: usize = 500;

/// What the dashboard shows of the parameter controller beyond its state:
/// the newest changes, and trades and summed reward per (strategy, preset)
/// from `trade.outcomes`.
#[derive(Debug, Default, Clone)]
pub struct ParamLog {
    pub recent: std::collections::VecDeque<ParamUpdate>,
    pub by_preset: BTreeMap<(String, String), (u64, f64)>,
}

impl ParamLog {
    fn on_update(&mut self, u: ParamUpdate) {
        self.recent.push_back(u);
        while self.recent.len() > PARAM_CHANGES_KEPT {
            self.recent.pop_front();
        }
    }
}

/// Counts for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Tallies {
    /// Records folded per topic.
    pub records: BTreeMap<String, u64>,
    /// Records that did not decode or apply, per topic.
    pub refused: BTreeMap<String, u64>,
    /// Dead letters per (processor, error kind).
    pub dead_letters: BTreeMap<(String, String), u64>,
    /// `param.updates` per (strategy, reason).
    pub param_changes: BTreeMap<(String, String), u64>,
    /// Moves of `prod` per model key.
    pub promotions: BTreeMap<String, u64>,
    /// Finished trainings no longer listed under retention.
    pub expired_trainings: u64,
    pub outcomes: u64,
}

#[derive(Debug)]
pub struct Views {
    pub trainings: BTreeMap<String, TrainingView>,
    /// Triggers by the training id they start (a training is `submitted`
    /// until the trainer's first status).
    pub triggers: BTreeMap<String, TrainingTrigger>,
    /// Tenant of each model key: that of the first trigger naming it.
    pub model_tenants: BTreeMap<String, Option<String>>,
    pub registry: Registry,
    pub flags: ReviewQueue,
    /// A replica of the parameter controller: presets, updates in force,
    /// policies learnt from outcomes, latest features and regimes.
    pub params: Controller,
    /// Training-window statistics per instrument and feature, kept by a
    /// differential dataflow on its own thread.
    pub windows: LiveWindow,
    pub tallies: Tallies,
    /// Closes and regimes per instrument (the dashboard's charts).
    pub charts: crate::charts::Charts,
    /// Recent parameter changes and reward per preset (the dashboard).
    pub param_log: ParamLog,
    /// Every followed topic read up to where it was when following began.
    pub caught_up: bool,
}

impl Views {
    pub fn new(params: Controller, window_days: i64) -> Self {
        let names = Contract::bundled()
            .map(|c| c.names().iter().map(|n| n.to_string()).collect())
            .unwrap_or_default();
        Views {
            windows: LiveWindow::start(WindowSpec::days(window_days), names),
            trainings: BTreeMap::new(),
            triggers: BTreeMap::new(),
            model_tenants: BTreeMap::new(),
            registry: Registry::new(),
            flags: ReviewQueue::new(),
            params,
            tallies: Tallies::default(),
            charts: crate::charts::Charts::default(),
            param_log: ParamLog::default(),
            caught_up: false,
        }
    }

    /// Folds one record of a followed topic.
    /// Applies retention (`[trainer.retention]`) at `now`: finished
    /// trainings past it are no longer listed (their trigger goes too),
    /// old logs are cut to their first and last event. The registry is
    /// untouched. Returns (trainings removed, events removed).
    pub fn sweep(
        &mut self,
        retention: &autotrain_trainer::retention::Retention,
        now: i64,
    ) -> (usize, usize) {
        let expired: Vec<String> = self
            .trainings
            .iter()
            .filter(|(_, t)| retention.expired(t, now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.trainings.remove(id);
            self.triggers.remove(id);
        }
        let events = self
            .trainings
            .values_mut()
            .map(|t| retention.prune_log(t, now))
            .sum();
        self.tallies.expired_trainings += expired.len() as u64;
        (expired.len(), events)
    }

    pub fn apply(&mut self, topic: &str, payload: Option<&[u8]>) {
        *self.tallies.records.entry(topic.to_string()).or_default() += 1;
        let Some(bytes) = payload else {
            return;
        };
        let applied = match topic {
            t if t == TRAINING_TRIGGERS.name() => {
                decode::<TrainingTrigger>(bytes).map(|t| self.on_trigger(t))
            }
            t if t == TRAINING_STATUS.name() => {
                decode::<TrainingStatus>(bytes).map(|s| apply_status(&mut self.trainings, s))
            }
            t if t == MODEL_UPDATES.name() => decode::<ModelVersion>(bytes).map(|e| {
                if e.alias.as_deref() == Some(PROD) {
                    *self
                        .tallies
                        .promotions
                        .entry(e.model_key.clone())
                        .or_default() += 1;
                }
                if let Err(err) = self.registry.apply(&e) {
                    tracing::warn!(error = %err, "registry event refused");
                }
            }),
            t if t == MARKET_FLAGS.name() => {
                decode::<ValidationFlag>(bytes).map(|f| self.flags.apply(&f))
            }
            t if t == PARAM_PRESETS.name() => decode::<PresetRegistration>(bytes).map(|p| {
                // Already registered when the API published it.
                let _ = autotrain_params::processor::register(&mut self.params, &p);
            }),
            t if t == PARAM_UPDATES.name() => decode::<ParamUpdate>(bytes).map(|u| {
                *self
                    .tallies
                    .param_changes
                    .entry((u.strategy.clone(), symbol(&u.reason)))
                    .or_default() += 1;
                self.params.on_update(&u);
                self.param_log.on_update(u);
            }),
            t if t == TRADE_OUTCOMES.name() => decode::<TradeOutcome>(bytes).map(|o| {
                self.tallies.outcomes += 1;
                // The controller dead-letters what it refuses; the tally
                // counts what it learnt from.
                if self.params.on_outcome(&o).is_ok() {
                    let slot = self
                        .param_log
                        .by_preset
                        .entry((o.strategy.clone(), o.preset_id.clone()))
                        .or_default();
                    slot.0 += 1;
                    slot.1 += o.reward;
                }
            }),
            t if t == REGIMES.name() => decode::<RegimePosterior>(bytes).map(|p| {
                self.charts.on_regime(&p);
                self.params.observe_regime(&p);
            }),
            t if t == MARKET_BARS.name() => decode::<Bar>(bytes).map(|b| self.charts.on_bar(&b)),
            t if t == FEATURES.name() => decode::<FeatureVector>(bytes).map(|v| {
                self.windows.push_vector(&v);
                self.params.on_features(&v);
            }),
            t if t == MARKET_BARS_DLQ.name() => decode::<DeadLetter>(bytes).map(|d| {
                *self
                    .tallies
                    .dead_letters
                    .entry((d.processor, symbol(&d.error_kind)))
                    .or_default() += 1;
            }),
            _ => Ok(()),
        };
        if applied.is_err() {
            *self.tallies.refused.entry(topic.to_string()).or_default() += 1;
        }
    }

    /// A trigger (from the topic, or just published by the API).
    pub fn on_trigger(&mut self, t: TrainingTrigger) {
        self.model_tenants
            .entry(t.model_key.clone())
            .or_insert_with(|| t.tenant.clone());
        self.triggers.insert(training_id(&t), t);
    }

    /// The tenant of a training (from its trigger; a rerun's is the
    /// original's).
    pub fn training_tenant(&self, id: &str) -> Option<&str> {
        let t = self.triggers.get(id)?;
        match (&t.tenant, &t.rerun_of) {
            (None, Some(of)) if of != id => self.training_tenant(of),
            (tenant, _) => tenant.as_deref(),
        }
    }

    pub fn model_tenant(&self, key: &str) -> Option<&str> {
        self.model_tenants.get(key).and_then(|t| t.as_deref())
    }
}

/// An enum's schema symbol (`kill_switch`, `bad_magic`, …).
fn symbol(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_params::{ParamsConfig, StrategySchema};
    use autotrain_schemas::{encode, Priority, TrainingState, TriggerReason};

    fn views() -> Views {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../strategy_schemas");
        Views::new(
            Controller::new(
                ParamsConfig::default(),
                StrategySchema::load_dir(&dir).expect("schemas"),
            ),
            30,
        )
    }

    fn trigger(id: &str, tenant: Option<&str>) -> TrainingTrigger {
        TrainingTrigger {
            trigger_id: id.into(),
            model_key: "hmm/x:A".into(),
            tenant: tenant.map(str::to_string),
            reason: TriggerReason::Manual,
            instruments: vec![],
            dataset_version: None,
            feature_contract_version: None,
            hyperparams: vec![],
            seed: 1,
            priority: Priority::Normal,
            auto_promote: false,
            evidence: None,
            rerun_of: None,
            created_at: 1,
            revealed_at: None,
        }
    }

    #[test]
    fn records_fold_into_views_and_bad_ones_are_counted() {
        let mut v = views();
        let t = trigger("a", Some("desk-a"));
        v.apply(TRAINING_TRIGGERS.name(), Some(&encode(&t).expect("enc")));
        let id = training_id(&t);
        assert_eq!(v.training_tenant(&id), Some("desk-a"));
        assert_eq!(v.model_tenant("hmm/x:A"), Some("desk-a"));
        let status = TrainingStatus {
            training_id: id.clone(),
            model_key: "hmm/x:A".into(),
            state: TrainingState::Queued,
            stage: None,
            progress: 0.0,
            message: "queued".into(),
            metrics: vec![],
            error: None,
            attempt: 1,
            model_version: None,
            at: 2,
        };
        v.apply(TRAINING_STATUS.name(), Some(&encode(&status).expect("enc")));
        assert_eq!(v.trainings[&id].state, TrainingState::Queued);
        v.apply(TRAINING_STATUS.name(), Some(b"garbage"));
        v.apply(TRAINING_STATUS.name(), None);
        assert_eq!(v.tallies.refused[TRAINING_STATUS.name()], 1);
        assert_eq!(v.tallies.records[TRAINING_STATUS.name()], 3);
        // A rerun carries no tenant; it is the original's.
        let mut rerun = trigger("b", None);
        rerun.rerun_of = Some(id.clone());
        v.on_trigger(rerun.clone());
        assert_eq!(v.training_tenant(&training_id(&rerun)), Some("desk-a"));
    }

    #[test]
    fn retention_unlists_old_finished_trainings_and_cuts_old_logs() {
        const DAY: i64 = 86_400_000;
        let now = 1_000 * DAY;
        let mut v = views();
        for (name, end, days_ago) in [
            ("old", TrainingState::Completed, 100),
            ("recent", TrainingState::Completed, 10),
        ] {
            let t = trigger(name, None);
            v.apply(TRAINING_TRIGGERS.name(), Some(&encode(&t).expect("enc")));
            for (i, state) in [TrainingState::Queued, TrainingState::Running, end]
                .into_iter()
                .enumerate()
            {
                let s = TrainingStatus {
                    training_id: training_id(&t),
                    model_key: "hmm/x:A".into(),
                    state,
                    stage: None,
                    progress: 0.0,
                    message: String::new(),
                    metrics: vec![],
                    error: None,
                    attempt: 1,
                    model_version: None,
                    at: now - days_ago * DAY + i as i64,
                };
                v.apply(TRAINING_STATUS.name(), Some(&encode(&s).expect("enc")));
            }
        }
        let retention = autotrain_trainer::retention::Retention::default();
        assert_eq!(v.sweep(&retention, now), (1, 1));
        let old = training_id(&trigger("old", None));
        let recent = training_id(&trigger("recent", None));
        assert!(!v.trainings.contains_key(&old) && !v.triggers.contains_key(&old));
        assert_eq!(v.trainings[&recent].events.len(), 2);
        assert_eq!(v.trainings[&recent].pruned_events, 1);
        assert_eq!(v.tallies.expired_trainings, 1);
    }
}
