//! [`Trainer`]: the trainer's state machine, pure. It owns the queue, the
//! registry fold and the claims ledger, takes triggers, ops commands and
//! run results, and returns the events to publish (`training.status`,
//! `model.updates`, `training.claims`). The service
//! ([`crate::service`]) does the reading, fitting and publishing around it.
//!
//! State after a restart is rebuilt by [`Trainer::restore`] from the
//! topics the trainer itself wrote, so nothing but Kafka holds it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use autotrain_schemas::{
    ClaimState, CommandAction, DataClaim, FeatureBuild, FlagKind, Manifest, Metric, ModelVersion,
    OffsetRange, TrainingCommand, TrainingState, TrainingStatus, TrainingTrigger, TriggerReason,
};
use serde::{Deserialize, Serialize};

use crate::claims::{claim_id, Claims};
use crate::queue::{training_id, TrainingQueue};
use crate::registry::promotion::{decide, Decision, Guardrails};
use crate::registry::{Registry, RegistryError, PROD};
use crate::spec::{Mode, TrainSpec};

/// `[trainer]` in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerConfig {
    /// Runs at once (default: the machine's cores; each run's fit gets
    /// cores / capacity threads).
    pub capacity: usize,
    /// Attempts per training before it stays `failed`.
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt.
    pub retry_base_ms: i64,
    /// How often a blocked or waiting run is looked at again.
    pub recheck_ms: i64,
    /// A run longer than this raises a `stuck` alert.
    pub stuck_after_ms: i64,
    /// A fit still running this long after its run started gives up: the
    /// attempt fails with the reason and its slot is free again.
    pub run_timeout_ms: i64,
    /// Finished attempts per model key the failure rate is taken over.
    pub failure_window: usize,
    /// Failure rate (0..1) over that window that raises an alert.
    pub failure_rate_alert: f64,
    /// Versions a new one is compared with for the degrading alert.
    pub degrade_window: usize,
    /// Alert when the new version's reference log-likelihood per bar is
    /// below the mean of the previous ones by more than this.
    pub degrade_margin: f64,
    /// Unresolved flags of these kinds in a run's window block it until
    /// ops decide (gap: open; anomaly: pending).
    pub block_on: Vec<FlagKind>,
    /// Where reference sets are stored, content-addressed.
    pub store_dir: String,
    /// Tail `features` into memory and let runs read from there (see
    /// `service::cache`); off, every run reads its ranges from the broker.
    pub cache_features: bool,
    /// Hyper-parameters a trigger does not set.
    pub defaults: TrainSpec,
    pub guardrails: Guardrails,
    /// Event time between the bar that fired a run's trigger
    /// (`revealed_at`) and the bars its model applies to (its registration
    /// and promotion take effect from there plus this), whatever the
    /// wall-clock fit time; readers of `model.updates`
    /// may run this far ahead of the trainer before they wait for it.
    pub activation_delay_ms: i64,
    /// How long finished trainings and their logs are listed, and when
    /// reference sets no registered version needs are deleted
    /// (`[trainer.retention]`, seed 003's 90/30/7 days by default).
    pub retention: crate::retention::Retention,
    /// Promotion and rollback rules of the gbdt family
    /// (`[trainer.forecast_guardrails]`; the HMMs' are `guardrails`).
    pub forecast_guardrails: crate::forecast::ForecastGuardrails,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            capacity: crate::par::cores(),
            max_attempts: 3,
            retry_base_ms: 5_000,
            recheck_ms: 10_000,
            stuck_after_ms: 30 * 60_000,
            run_timeout_ms: 2 * 3_600_000,
            failure_window: 10,
            failure_rate_alert: 0.5,
            degrade_window: 3,
            degrade_margin: 0.05,
            block_on: vec![FlagKind::Gap, FlagKind::Anomaly],
            store_dir: "var/references".into(),
            cache_features: true,
            defaults: TrainSpec::default(),
            guardrails: Guardrails::default(),
            activation_delay_ms: 86_400_000,
            retention: crate::retention::Retention::default(),
            forecast_guardrails: crate::forecast::ForecastGuardrails::default(),
        }
    }
}

/// Something to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Status(TrainingStatus),
    Model(Box<ModelVersion>),
    Claim(DataClaim),
    /// The training set a registered version was fitted on.
    Build(Box<FeatureBuild>),
    /// Progress on `model.updates`: every event of `model_key` taking
    /// effect at or before `through` has been published.
    Progress {
        model_key: String,
        through: i64,
    },
}

/// A run the service should execute now.
#[derive(Debug, Clone)]
pub struct Plan {
    pub training_id: String,
    pub attempt: i32,
    pub trigger: TrainingTrigger,
    pub spec: TrainSpec,
    pub seed: u64,
    /// Rerun: the version whose manifest is repeated (inputs, spec, seed,
    /// reference set).
    pub rerun_of: Option<ModelVersion>,
    /// The split version's reference set, if cut already.
    pub reference_hash: Option<String>,
    /// The current `prod` version of the model key.
    pub champion: Option<ModelVersion>,
    /// hmm: the version a fit also starts from: the one the spec's
    /// `warm_from` names (a rerun), else the champion when the spec asks
    /// for a warm start. `None` with `warm_from` set: that version is not
    /// in the registry (the run fails and says so).
    pub warm: Option<ModelVersion>,
}

/// What a successful run hands back.
#[derive(Debug, Clone)]
pub struct Done {
    pub parameters: Vec<u8>,
    pub parameter_hash: String,
    pub metrics: Vec<Metric>,
    pub manifest: Manifest,
    /// The challenger's log-likelihood per reference bar (the degradation
    /// alert's measure; the guardrails read `metrics`).
    pub loglik_per_bar: f64,
    /// Unresolved critical flags in the training window (a guardrail).
    pub critical_flags: usize,
    /// The training set's manifest, published on `features.builds` with the
    /// version (the manifest's `feature_build` names it).
    pub build: Option<FeatureBuild>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Done(Box<Done>),
    /// Cannot run yet: `blocked` or `waiting_data`, with the reason.
    Parked(TrainingState, String),
    /// Can never run as asked (e.g. too little data as of its time): ends
    /// `failed` without retries, and without counting as a failure of the
    /// trainer in the failure-rate alert.
    Skipped(String),
    Failed(String),
}

#[derive(Debug)]
pub struct Trainer {
    pub config: TrainerConfig,
    pub queue: TrainingQueue,
    pub registry: Registry,
    pub claims: Claims,
    running_since: BTreeMap<String, i64>,
    stuck_alerted: BTreeSet<String>,
    outcomes: BTreeMap<String, VecDeque<bool>>,
    rate_alerted: BTreeSet<String>,
    /// Per model key: event time through which `training.triggers` is
    /// complete (its writers' progress records).
    trigger_progress: BTreeMap<String, i64>,
    /// Per model key: progress already published on `model.updates`
    /// (nothing may take effect at or before it any more).
    promised: BTreeMap<String, i64>,
}

fn metric(name: &str, value: f64) -> Metric {
    Metric {
        name: name.into(),
        value,
    }
}

fn alert(training_id: &str, model_key: &str, message: String, now: i64) -> Event {
    Event::Status(TrainingStatus {
        training_id: training_id.into(),
        model_key: model_key.into(),
        state: TrainingState::Alert,
        stage: None,
        progress: 0.0,
        message,
        metrics: Vec::new(),
        error: None,
        attempt: 0,
        model_version: None,
        at: now,
    })
}

impl Trainer {
    pub fn new(config: TrainerConfig) -> Self {
        Trainer {
            queue: TrainingQueue::new(config.capacity, config.max_attempts, config.retry_base_ms),
            config,
            registry: Registry::new(),
            claims: Claims::new(),
            running_since: BTreeMap::new(),
            stuck_alerted: BTreeSet::new(),
            outcomes: BTreeMap::new(),
            rate_alerted: BTreeSet::new(),
            trigger_progress: BTreeMap::new(),
            promised: BTreeMap::new(),
        }
    }

    /// Rebuilds the state from the trainer's topics: the registry from
    /// `model.updates`, the claims from `training.claims`, and each
    /// training known to `training.status` from its trigger and last
    /// state (unfinished runs are queued again). Returns the events that
    /// settle what the interrupted run left: claims held by unfinished
    /// runs are released (they will claim again). A registry event that
    /// does not fold is an error with its index in `models` (the trainer
    /// publishes only events its registry accepted, so the log is corrupt
    /// or was compacted).
    pub fn restore(
        &mut self,
        triggers: impl IntoIterator<Item = TrainingTrigger>,
        statuses: impl IntoIterator<Item = TrainingStatus>,
        models: impl IntoIterator<Item = ModelVersion>,
        claims: impl IntoIterator<Item = DataClaim>,
        now: i64,
    ) -> Result<Vec<Event>, (usize, RegistryError)> {
        for (i, m) in models.into_iter().enumerate() {
            self.registry.apply(&m).map_err(|e| (i, e))?;
        }
        for c in claims {
            self.claims.apply(&c);
        }
        let mut last: BTreeMap<String, (TrainingState, i32)> = BTreeMap::new();
        for s in statuses {
            if s.state == TrainingState::Alert {
                continue;
            }
            let e = last
                .entry(s.training_id.clone())
                .or_insert((s.state, s.attempt));
            // A failed attempt followed by its retry's `queued` stays queued.
            *e = (s.state, s.attempt.max(e.1));
        }
        for t in triggers {
            if let Some(&(state, attempt)) = last.get(&training_id(&t)) {
                self.queue.restore(t, state, attempt, now);
            }
        }
        let mut out = Vec::new();
        let held: Vec<DataClaim> = self
            .claims
            .held_by_any()
            .filter(|c| {
                self.queue
                    .job(&c.training_id)
                    .is_none_or(|j| !matches!(j.state, TrainingState::Completed))
            })
            .cloned()
            .collect();
        for c in held {
            out.push(self.settle_claim(&c, ClaimState::Released, "trainer restarted", now));
        }
        Ok(out)
    }

    fn settle_claim(&mut self, c: &DataClaim, state: ClaimState, reason: &str, now: i64) -> Event {
        let settled = DataClaim {
            state,
            reason: reason.into(),
            at: now,
            ..c.clone()
        };
        self.claims.apply(&settled);
        Event::Claim(settled)
    }

    fn release_held(&mut self, training_id: &str, reason: &str, now: i64) -> Vec<Event> {
        let held: Vec<DataClaim> = self.claims.held_by(training_id).cloned().collect();
        held.iter()
            .map(|c| self.settle_claim(c, ClaimState::Released, reason, now))
            .collect()
    }

    /// Progress of `training.triggers` for a model key: no trigger of the
    /// key with an event time at or before `through` will follow. What it
    /// allows on `model.updates` comes from [`Trainer::progress_events`].
    pub fn trigger_progress(&mut self, model_key: &str, through: i64) {
        let t = self
            .trigger_progress
            .entry(model_key.to_string())
            .or_insert(through);
        *t = (*t).max(through);
    }

    /// `model.updates` progress of every key that moved. Published by the
    /// same task, after the events it vouches for.
    pub fn progress_events(&mut self) -> Vec<Event> {
        let keys: Vec<String> = self.trigger_progress.keys().cloned().collect();
        keys.iter().flat_map(|k| self.updates_progress(k)).collect()
    }

    /// Progress published on `model.updates` before a restart.
    pub fn restore_promised(&mut self, model_key: &str, through: i64) {
        let p = self
            .promised
            .entry(model_key.to_string())
            .or_insert(through);
        *p = (*p).max(through);
    }

    /// The bar time at which the data fired a trigger: what the triggers'
    /// progress counts in (a scheduled instant is revealed by the first
    /// bar after it, so the writer can only vouch for it then).
    fn revealed(t: &TrainingTrigger) -> i64 {
        t.revealed_at.unwrap_or(t.created_at)
    }

    /// Triggers fired by the data (drift, schedules on the bars' time):
    /// their `created_at` is an event time. Ops' triggers (manual, rerun,
    /// backfill, retry) come at a wall-clock moment: their runs take effect
    /// where the trainer's progress stands when they complete.
    fn from_data(t: &TrainingTrigger) -> bool {
        matches!(t.reason, TriggerReason::Drift | TriggerReason::Schedule)
    }

    /// When a run's events take effect: the bar time that fired it plus
    /// the activation delay, and never at or before what was already
    /// promised (a trigger arriving late, e.g. from ops).
    fn effective_for(&self, model_key: &str, revealed: i64) -> i64 {
        let at = revealed.saturating_add(self.config.activation_delay_ms.max(1));
        self.effective_after(model_key)
            .map_or(at, |after| at.max(after))
    }

    /// The earliest event time a new event of `model_key` may take effect
    /// at: after what was promised, and not before the key's last event
    /// (readers apply a key's events in the order they were published).
    fn effective_after(&self, model_key: &str) -> Option<i64> {
        let promised = self.promised.get(model_key).map(|p| p.saturating_add(1));
        let last = self
            .registry
            .model(model_key)
            .and_then(|m| m.events.iter().filter_map(|e| e.effective_from).max());
        promised.max(last)
    }

    /// `model.updates` progress of `model_key` if it moved: complete
    /// through the triggers' progress plus the activation delay, and short
    /// of the first unresolved run's effect.
    fn updates_progress(&mut self, model_key: &str) -> Vec<Event> {
        let Some(&triggers) = self.trigger_progress.get(model_key) else {
            return Vec::new();
        };
        let delay = self.config.activation_delay_ms.max(1);
        let mut through = triggers.saturating_add(delay);
        // A run blocked by flags waits for people, not for data: it does
        // not hold the key's readers back, and its model takes effect
        // where the trainer's progress stands when it completes.
        if let Some(first) = self
            .queue
            .unresolved(model_key)
            .filter(|j| j.state != TrainingState::Blocked && Self::from_data(&j.trigger))
            .map(|j| Self::revealed(&j.trigger))
            .min()
        {
            through = through.min(first.saturating_add(delay).saturating_sub(1));
        }
        match self.promised.get(model_key) {
            Some(p) if *p >= through => Vec::new(),
            _ => {
                self.promised.insert(model_key.to_string(), through);
                vec![Event::Progress {
                    model_key: model_key.to_string(),
                    through,
                }]
            }
        }
    }

    /// A trigger from `training.triggers`. Known triggers change nothing;
    /// a trigger with bad hyper-parameters or nothing to rerun is queued
    /// and failed at once with the reason (no retries).
    pub fn submit(&mut self, trigger: TrainingTrigger, now: i64) -> Vec<Event> {
        let id = training_id(&trigger);
        let problem = self.check_trigger(&trigger).err();
        let Some(queued) = self.queue.submit(trigger, now) else {
            return Vec::new();
        };
        let mut out = vec![Event::Status(queued)];
        if let Some(why) = problem {
            if let Ok(s) = self.queue.reject(&id, &why, now) {
                out.push(Event::Status(s));
            }
        }
        out
    }

    fn check_trigger(&self, t: &TrainingTrigger) -> Result<(), String> {
        TrainSpec::with_params(&self.config.defaults, &t.hyperparams).map_err(|e| e.to_string())?;
        if t.reason == TriggerReason::Rerun {
            let of = t
                .rerun_of
                .as_deref()
                .ok_or("a rerun names the training it repeats")?;
            self.version_of_training(of)
                .ok_or_else(|| format!("{of} registered no model version to rerun"))?;
        }
        Ok(())
    }

    /// The version a training registered.
    pub fn version_of_training(&self, training_id: &str) -> Option<&ModelVersion> {
        self.registry.keys().find_map(|k| {
            self.registry
                .model(k)?
                .versions
                .values()
                .find(|v| v.training_id.as_deref() == Some(training_id))
        })
    }

    /// An ops command. `rescore` re-scores a version on its reference set
    /// (rollback); errors are the reason the command is refused.
    pub fn command(
        &mut self,
        c: &TrainingCommand,
        now: i64,
        rescore: &mut dyn FnMut(&ModelVersion) -> Result<Vec<Metric>, String>,
    ) -> Result<Vec<Event>, String> {
        let need_id = || {
            c.training_id
                .clone()
                .ok_or("the command names no training_id")
        };
        let need_key = || c.model_key.clone().ok_or("the command names no model_key");
        let by = vec![
            format!("by:{}", c.actor),
            format!("command:{}", c.command_id),
        ];
        match c.action {
            CommandAction::Cancel => {
                let id = need_id()?;
                let mut s = self.queue.cancel(&id, now).map_err(|e| e.to_string())?;
                s.message = format!("cancelled by {}{}", c.actor, reason_suffix(&c.reason));
                self.running_since.remove(&id);
                let mut out = vec![Event::Status(s)];
                out.extend(self.release_held(&id, "cancelled", now));
                Ok(out)
            }
            CommandAction::Retry => {
                let id = need_id()?;
                let mut s = self.queue.retry(&id, now).map_err(|e| e.to_string())?;
                s.message = format!("retry requested by {}{}", c.actor, reason_suffix(&c.reason));
                Ok(vec![Event::Status(s)])
            }
            CommandAction::Promote => {
                let key = need_key()?;
                let version = c.version.ok_or("promote names no version")?;
                let mut e = self
                    .registry
                    .promote(&key, version, PROD, now)
                    .map_err(|e| e.to_string())?;
                e.tags = by;
                e.effective_from = self.effective_after(&key);
                self.registry.apply(&e).map_err(|e| e.to_string())?;
                Ok(vec![Event::Model(Box::new(e))])
            }
            CommandAction::Rollback => {
                let key = need_key()?;
                let version = c.version.ok_or("rollback names no version")?;
                let mut e = self
                    .registry
                    .rollback(&key, version, now)
                    .map_err(|e| e.to_string())?;
                let target = self
                    .registry
                    .model(&key)
                    .and_then(|m| m.versions.get(&version))
                    .cloned()
                    .ok_or("no such version")?;
                let prod = self
                    .registry
                    .model(&key)
                    .and_then(|m| m.alias(PROD))
                    .map(|v| v.metrics.clone())
                    .unwrap_or_default();
                let mut tags = by;
                // A re-score that cannot run (the reference set is gone)
                // refuses like a failed one: only force with a reason
                // goes through, recorded as unverified.
                let rescored = rescore(&target);
                let verdict = rescored
                    .as_ref()
                    .map_err(|why| format!("cannot re-score: {why}"))
                    .and_then(|rescored| {
                        if crate::spec::Family::of(&target) == crate::spec::Family::Gbdt {
                            self.config
                                .forecast_guardrails
                                .rollback_check(&prod, rescored)
                        } else {
                            self.config.guardrails.rollback_check(&prod, rescored)
                        }
                    });
                match verdict {
                    Ok(_) => tags.push("rescore:passed".into()),
                    Err(why) if c.force && !c.reason.trim().is_empty() => {
                        tags.push(if rescored.is_ok() { "rescore:forced" } else { "rescore:unavailable" }.into());
                        tracing::warn!(%key, version, actor = %c.actor, reason = %c.reason, %why, "rollback forced");
                    }
                    Err(why) if c.force => {
                        return Err(format!("a forced rollback needs a reason ({why})"))
                    }
                    Err(why) => {
                        return Err(format!(
                            "rollback to v{version} not verified: {why}; send it with force and a reason to override"
                        ))
                    }
                }
                e.metrics = rescored.unwrap_or_default();
                e.tags = tags;
                e.effective_from = self.effective_after(&key);
                self.registry.apply(&e).map_err(|e| e.to_string())?;
                Ok(vec![Event::Model(Box::new(e))])
            }
        }
    }

    /// Jobs to execute now, with everything the run needs from the state.
    pub fn next_runs(&mut self, now: i64) -> Vec<Plan> {
        let mut plans = Vec::new();
        for id in self.queue.start_ready(now) {
            let Some(job) = self.queue.job(&id).cloned() else {
                continue;
            };
            let mut t = job.trigger;
            let rerun_of = t
                .rerun_of
                .as_deref()
                .filter(|_| t.reason == TriggerReason::Rerun)
                .and_then(|of| self.version_of_training(of))
                .cloned();
            // A rerun reads what the original read: its instruments and
            // contract come from the original trigger.
            if let Some(original) = t.rerun_of.as_deref().and_then(|of| self.queue.job(of)) {
                if rerun_of.is_some() {
                    t.instruments = original.trigger.instruments.clone();
                    t.feature_contract_version = original.trigger.feature_contract_version.clone();
                }
            }
            let spec = match rerun_of.as_ref().and_then(|v| v.manifest.as_ref()) {
                Some(m) => TrainSpec::with_params(&self.config.defaults, &m.hyperparams),
                None => TrainSpec::with_params(&self.config.defaults, &t.hyperparams),
            };
            let Ok(mut spec) = spec else {
                continue;
            };
            // A rerun starts from what its original started from, and
            // from no other version (a manifest without `warm_from`
            // predates warm starts or had no champion to start from).
            if rerun_of.is_some() && spec.warm_from.is_none() {
                spec.warm_start = false;
            }
            if spec.mode == Mode::Sliding && spec.as_of.is_none() {
                spec.as_of = Some(t.created_at);
            }
            let seed = rerun_of
                .as_ref()
                .and_then(|v| v.manifest.as_ref())
                .map_or(t.seed, |m| m.seed) as u64;
            let reference_hash = match rerun_of.as_ref().and_then(|v| v.manifest.as_ref()) {
                Some(m) => Some(m.reference_hash.clone()),
                None => self.reference_of(&t.model_key, &spec.split_version),
            };
            let champion = self
                .registry
                .model(&t.model_key)
                .and_then(|m| m.alias(PROD))
                .cloned();
            let warm = match &spec.warm_from {
                Some(hash) => self.registry.model(&t.model_key).and_then(|m| {
                    m.versions
                        .values()
                        .find(|v| &v.parameter_hash == hash)
                        .cloned()
                }),
                None if spec.warm_start => champion.clone(),
                None => None,
            };
            plans.push(Plan {
                training_id: id,
                attempt: job.attempt,
                trigger: t,
                spec,
                seed,
                rerun_of,
                reference_hash,
                champion,
                warm,
            });
        }
        plans
    }

    /// Every reference set a registered version's lineage names (what
    /// retention never deletes).
    pub fn needed_references(&self) -> std::collections::HashSet<String> {
        self.registry
            .keys()
            .filter_map(|k| self.registry.model(k))
            .flat_map(|m| m.versions.values())
            .filter_map(|v| v.manifest.as_ref().map(|m| m.reference_hash.clone()))
            .collect()
    }

    /// The reference set of a split version: the hash in the manifest of
    /// the first version registered with it.
    pub fn reference_of(&self, model_key: &str, split_version: &str) -> Option<String> {
        self.registry.model(model_key).and_then(|m| {
            m.versions.values().find_map(|v| {
                v.manifest
                    .as_ref()
                    .filter(|m| m.split_version == split_version)
                    .map(|m| m.reference_hash.clone())
            })
        })
    }

    /// Claims input ranges for a starting run. Strict mode takes only what
    /// no other strict run of the model key holds or consumed (so two runs
    /// never train the same record); sliding mode records `wanted` as is.
    /// Returns the claim event and the ranges the run may read.
    pub fn claim(
        &mut self,
        plan: &Plan,
        wanted: &[OffsetRange],
        now: i64,
    ) -> (Event, Vec<OffsetRange>) {
        let ranges: Vec<OffsetRange> = match plan.spec.mode {
            Mode::Strict => wanted
                .iter()
                .flat_map(|r| {
                    self.claims.free(
                        &plan.trigger.model_key,
                        &r.topic,
                        r.partition,
                        r.start,
                        r.end,
                    )
                })
                .collect(),
            Mode::Sliding => wanted.to_vec(),
        };
        let c = DataClaim {
            claim_id: claim_id(&plan.training_id, plan.attempt),
            training_id: plan.training_id.clone(),
            model_key: plan.trigger.model_key.clone(),
            attempt: plan.attempt,
            mode: plan.spec.mode.claim_mode(),
            state: ClaimState::Claimed,
            ranges: ranges.clone(),
            reason: String::new(),
            at: now,
        };
        self.claims.apply(&c);
        (Event::Claim(c), ranges)
    }

    /// The run's data is there: `running`.
    pub fn begin(&mut self, id: &str, now: i64) -> Vec<Event> {
        self.running_since.insert(id.to_string(), now);
        self.queue
            .running_status(id, now)
            .map(|s| vec![Event::Status(s)])
            .unwrap_or_default()
    }

    pub fn progress(&mut self, id: &str, stage: &str, fraction: f64, now: i64) -> Vec<Event> {
        self.queue
            .progress(id, stage, fraction, now)
            .map(|s| vec![Event::Status(s)])
            .unwrap_or_default()
    }

    /// A run ended. A job cancelled meanwhile ignores its result.
    pub fn finish(&mut self, plan: &Plan, outcome: Outcome, now: i64) -> Vec<Event> {
        let mut out = self.finish_run(plan, outcome, now);
        out.extend(self.updates_progress(&plan.trigger.model_key));
        out
    }

    fn finish_run(&mut self, plan: &Plan, outcome: Outcome, now: i64) -> Vec<Event> {
        let id = plan.training_id.as_str();
        let key = plan.trigger.model_key.clone();
        self.running_since.remove(id);
        self.stuck_alerted.remove(id);
        let still_running = self
            .queue
            .job(id)
            .is_some_and(|j| j.state == TrainingState::Running && j.attempt == plan.attempt);
        if !still_running {
            return self.release_held(id, "run no longer wanted", now);
        }
        match outcome {
            Outcome::Parked(state, why) => {
                let mut out = self.release_held(id, &why, now);
                if let Ok(Some(s)) =
                    self.queue
                        .park(id, state, why, now + self.config.recheck_ms, now)
                {
                    out.push(Event::Status(s));
                }
                out
            }
            Outcome::Skipped(why) => {
                let mut out = self.release_held(id, &why, now);
                if let Ok(s) = self.queue.reject(id, &why, now) {
                    out.push(Event::Status(s));
                }
                out
            }
            Outcome::Failed(error) => {
                let mut out = self.release_held(id, "attempt failed", now);
                if let Ok(events) = self.queue.fail(id, &error, now) {
                    out.extend(events.into_iter().map(Event::Status));
                }
                out.extend(self.record_outcome(&key, false, now));
                out
            }
            Outcome::Done(done) => self.complete(plan, *done, now),
        }
    }

    fn complete(&mut self, plan: &Plan, done: Done, now: i64) -> Vec<Event> {
        let id = plan.training_id.as_str();
        let key = plan.trigger.model_key.clone();
        let mut out = Vec::new();
        let previous: Vec<f64> = self
            .registry
            .model(&key)
            .map(|m| {
                m.versions
                    .keys()
                    .rev()
                    .take(self.config.degrade_window)
                    .filter_map(|v| m.metric(*v, "loglik_per_bar"))
                    .collect()
            })
            .unwrap_or_default();
        let mut registered = self.registry.register(
            &key,
            id,
            done.parameters,
            done.parameter_hash.clone(),
            done.metrics.clone(),
            done.manifest,
            now,
        );
        let mut tags = vec![format!("reason:{:?}", plan.trigger.reason).to_lowercase()];
        if let Some(d) = registered
            .manifest
            .as_ref()
            .and_then(|m| m.dataset_version.as_ref())
        {
            tags.push(format!("dataset:{d}"));
        }
        let mut metrics = done.metrics;
        if let Some(original) = &plan.rerun_of {
            let same = original.parameter_hash == done.parameter_hash;
            tags.push(format!(
                "rerun_of:{}",
                original.training_id.clone().unwrap_or_default()
            ));
            tags.push(format!("parameter_hash_matches:{same}"));
            metrics.push(metric(
                "rerun_parameter_hash_matches",
                f64::from(u8::from(same)),
            ));
        }
        registered.tags = tags;
        let effective = if Self::from_data(&plan.trigger) {
            Some(self.effective_for(&key, Self::revealed(&plan.trigger)))
        } else {
            self.effective_after(&key)
        };
        registered.effective_from = effective;
        let version = registered.version;
        if self.registry.apply(&registered).is_err() {
            return self.finish_run(
                plan,
                Outcome::Failed("registry refused the version".into()),
                now,
            );
        }
        if let Some(b) = done.build {
            out.push(Event::Build(Box::new(b)));
        }
        out.push(Event::Model(Box::new(registered)));
        let held: Vec<DataClaim> = self.claims.held_by(id).cloned().collect();
        for c in held {
            out.push(self.settle_claim(
                &c,
                ClaimState::Consumed,
                &format!("version {version}"),
                now,
            ));
        }
        let decision = match plan.spec.family {
            crate::spec::Family::Hmm => decide(
                &self.config.guardrails,
                &self
                    .config
                    .guardrails
                    .evidence(&metrics, done.critical_flags),
            ),
            crate::spec::Family::Gbdt => self
                .config
                .forecast_guardrails
                .decide(&metrics, done.critical_flags),
        };
        let promoted =
            plan.trigger.auto_promote && plan.rerun_of.is_none() && decision == Decision::Promote;
        let mut message = format!("version {version} registered in staging");
        if promoted {
            if let Ok(mut e) = self.registry.promote(&key, version, PROD, now) {
                e.tags = vec!["by:trainer".into(), "guardrails:passed".into()];
                e.effective_from = effective;
                if self.registry.apply(&e).is_ok() {
                    out.push(Event::Model(Box::new(e)));
                    message = format!("version {version} promoted to prod");
                }
            }
        } else if let Decision::Stay(why) = &decision {
            if plan.trigger.auto_promote && plan.rerun_of.is_none() {
                message = format!("version {version} stays in staging: {}", why.join("; "));
            }
        }
        metrics.push(metric("promoted", f64::from(u8::from(promoted))));
        if let Ok(s) = self.queue.complete(id, metrics, Some(version), now) {
            let mut s = s;
            s.message = message;
            out.push(Event::Status(s));
        }
        if previous.len() >= self.config.degrade_window && self.config.degrade_window > 0 {
            let mean = previous.iter().sum::<f64>() / previous.len() as f64;
            if done.loglik_per_bar < mean - self.config.degrade_margin {
                out.push(alert(
                    id,
                    &key,
                    format!(
                        "degrading: version {version} loglik_per_bar {:.4} below the mean {mean:.4} of the previous {} version(s)",
                        done.loglik_per_bar,
                        previous.len()
                    ),
                    now,
                ));
            }
        }
        out.extend(self.record_outcome(&key, true, now));
        out
    }

    fn record_outcome(&mut self, key: &str, ok: bool, now: i64) -> Vec<Event> {
        let window = self.config.failure_window.max(1);
        let h = self.outcomes.entry(key.to_string()).or_default();
        h.push_back(ok);
        while h.len() > window {
            h.pop_front();
        }
        let failures = h.iter().filter(|o| !**o).count();
        let rate = failures as f64 / h.len() as f64;
        if h.len() >= window.min(3) && rate >= self.config.failure_rate_alert {
            if self.rate_alerted.insert(key.to_string()) {
                return vec![alert(
                    &format!("alert/{key}"),
                    key,
                    format!(
                        "failure rate {:.0} % over the last {} attempt(s) of {key}",
                        rate * 100.0,
                        h.len()
                    ),
                    now,
                )];
            }
        } else {
            self.rate_alerted.remove(key);
        }
        Vec::new()
    }

    /// Periodic checks: runs going longer than `stuck_after_ms` (one
    /// alert per run).
    pub fn tick(&mut self, now: i64) -> Vec<Event> {
        let limit = self.config.stuck_after_ms;
        let stuck: Vec<(String, i64)> = self
            .running_since
            .iter()
            .filter(|(id, since)| now - **since > limit && !self.stuck_alerted.contains(*id))
            .map(|(id, since)| (id.clone(), *since))
            .collect();
        let mut out = Vec::new();
        for (id, since) in stuck {
            self.stuck_alerted.insert(id.clone());
            let key = self
                .queue
                .job(&id)
                .map(|j| j.trigger.model_key.clone())
                .unwrap_or_default();
            out.push(alert(
                &id,
                &key,
                format!(
                    "stuck: running for {} s (limit {} s)",
                    (now - since) / 1000,
                    limit / 1000
                ),
                now,
            ));
        }
        out
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::{Param, Priority, RegistryEvent};

    fn trigger(id: &str, params: &[(&str, &str)], auto_promote: bool) -> TrainingTrigger {
        TrainingTrigger {
            trigger_id: id.into(),
            model_key: "hmm/x".into(),
            tenant: None,
            reason: TriggerReason::Manual,
            instruments: vec!["x".into()],
            dataset_version: None,
            feature_contract_version: None,
            hyperparams: params
                .iter()
                .map(|(n, v)| Param {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            seed: 3,
            priority: Priority::Normal,
            auto_promote,
            evidence: None,
            rerun_of: None,
            created_at: 0,
            revealed_at: None,
        }
    }

    fn features(p: i32, start: i64, end: i64) -> OffsetRange {
        OffsetRange {
            topic: "features".into(),
            partition: p,
            start,
            end,
        }
    }

    fn done(plan: &Plan, loglik: f64, ranges: Vec<OffsetRange>) -> Outcome {
        Outcome::Done(Box::new(Done {
            parameters: vec![1],
            parameter_hash: format!("h{loglik}"),
            metrics: [
                Some(metric("loglik_per_bar", loglik)),
                plan.champion
                    .as_ref()
                    .map(|_| metric("champion_loglik_per_bar", loglik - 0.1)),
                Some(metric("trend_max_drawdown", 0.1)),
                Some(metric("trend_sharpe", 1.0)),
            ]
            .into_iter()
            .flatten()
            .collect(),
            manifest: Manifest {
                trigger_id: plan.trigger.trigger_id.clone(),
                code_version: "test".into(),
                feature_contract_version: "1".into(),
                inputs: ranges,
                split_version: plan.spec.split_version.clone(),
                reference_hash: "ref".into(),
                hyperparams: plan.spec.to_params(),
                seed: plan.seed as i64,
                dataset_version: None,
                code_commit: None,
                feature_contract_hash: None,
                feature_build: None,
            },
            loglik_per_bar: loglik,
            critical_flags: 0,
            build: None,
        }))
    }

    fn states(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Status(s) => format!("status:{:?}", s.state).to_lowercase(),
                Event::Model(m) => format!("model:{:?}:{}", m.event, m.version).to_lowercase(),
                Event::Claim(c) => format!("claim:{:?}", c.state).to_lowercase(),
                Event::Build(b) => format!("build:{}", b.build_id),
                Event::Progress { through, .. } => format!("progress:{through}"),
            })
            .collect()
    }

    #[test]
    fn strict_runs_never_share_offsets_and_failures_give_them_back() {
        let mut t = Trainer::new(TrainerConfig {
            capacity: 2,
            max_attempts: 1,
            ..TrainerConfig::default()
        });
        let strict = [("mode", "strict")];
        t.submit(trigger("a", &strict, false), 0);
        t.submit(trigger("b", &strict, false), 0);
        let plans = t.next_runs(0);
        assert_eq!(plans.len(), 1, "one run per model key at a time");
        let (_, ra) = t.claim(&plans[0], &[features(0, 0, 100)], 1);
        assert_eq!(ra, [features(0, 0, 100)]);
        t.begin(&plans[0].training_id, 1);
        let ev = t.finish(&plans[0], done(&plans[0], -1.0, ra), 2);
        assert_eq!(
            states(&ev),
            ["model:registered:1", "claim:consumed", "status:completed"]
        );
        // b only gets what a did not train on; it fails and gives it back.
        let b = t.next_runs(3).remove(0);
        let (_, rb) = t.claim(&b, &[features(0, 0, 150)], 3);
        assert_eq!(rb, [features(0, 100, 150)]);
        let ev = t.finish(&b, Outcome::Failed("boom".into()), 4);
        assert_eq!(states(&ev), ["claim:released", "status:failed"]);
        // The next strict run picks up b's released offsets, not a's.
        t.submit(trigger("c", &strict, false), 5);
        let c = t.next_runs(5).remove(0);
        let (_, rc) = t.claim(&c, &[features(0, 0, 200)], 5);
        assert_eq!(rc, [features(0, 100, 200)]);
        assert_eq!(c.spec.as_of, None, "strict runs read offsets, not a time");
    }

    #[test]
    fn sliding_runs_train_as_of_their_trigger() {
        let mut t = Trainer::new(TrainerConfig::default());
        let mut tr = trigger("d", &[], false);
        tr.created_at = 1_234;
        t.submit(tr, 0);
        let p = t.next_runs(0).remove(0);
        assert_eq!(p.spec.as_of, Some(1_234));
        assert!(p
            .spec
            .to_params()
            .iter()
            .any(|p| p.name == "as_of" && p.value == "1234"));
    }

    /// Drift announces `R − 1` when it holds the bar at `R` that reveals a
    /// scheduled instant `T < R`; whether the trainer reads that progress
    /// before or after the trigger depends on timing, the effect must not.
    #[test]
    fn a_scheduled_run_takes_effect_from_its_revealing_bar_in_either_order() {
        const T: i64 = 1_514_764_800_000;
        const R: i64 = T + 1_800_000;
        let effect = |progress_first: bool| {
            let mut t = Trainer::new(TrainerConfig::default());
            let mut tr = trigger("schedule:hmm/x:2018-01-01T00:00Z", &[], true);
            tr.reason = TriggerReason::Schedule;
            tr.created_at = T;
            tr.revealed_at = Some(R);
            if progress_first {
                t.trigger_progress("hmm/x", R - 1);
                t.progress_events();
            }
            t.submit(tr, 0);
            if !progress_first {
                t.trigger_progress("hmm/x", R - 1);
                t.progress_events();
            }
            let p = t.next_runs(0).remove(0);
            assert_eq!(p.spec.as_of, Some(T), "trains as of the instant");
            t.begin(&p.training_id, 0);
            let ev = t.finish(&p, done(&p, -1.0, vec![]), 1);
            ev.iter()
                .filter_map(|e| match e {
                    Event::Model(m) => Some((m.version, m.effective_from)),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let delay = TrainerConfig::default().activation_delay_ms;
        assert_eq!(effect(true), [(1, Some(R + delay)), (1, Some(R + delay))]);
        assert_eq!(effect(true), effect(false));
    }

    #[test]
    fn promotion_follows_guardrails_and_rollback_rescores() {
        let mut t = Trainer::new(TrainerConfig::default());
        t.submit(trigger("a", &[], true), 0);
        let p = t.next_runs(0).remove(0);
        assert!(p.champion.is_none() && p.reference_hash.is_none());
        t.begin(&p.training_id, 0);
        let ev = t.finish(&p, done(&p, -1.0, vec![]), 1);
        assert_eq!(
            states(&ev),
            [
                "model:registered:1",
                "model:aliasmoved:1",
                "status:completed"
            ]
        );
        // The second run sees the champion and the split's reference set.
        t.submit(trigger("b", &[], true), 2);
        let p = t.next_runs(2).remove(0);
        assert_eq!(p.champion.as_ref().map(|c| c.version), Some(1));
        assert_eq!(p.reference_hash.as_deref(), Some("ref"));
        t.begin(&p.training_id, 2);
        t.finish(&p, done(&p, -0.9, vec![]), 3);
        let m = t.registry.model("hmm/x").expect("model");
        assert_eq!(m.alias(PROD).map(|v| v.version), Some(2));

        let cmd = |action, version| TrainingCommand {
            command_id: "c1".into(),
            action,
            training_id: None,
            model_key: Some("hmm/x".into()),
            version: Some(version),
            tenant: None,
            actor: "ops".into(),
            reason: "test".into(),
            at: 4,
            force: false,
        };
        let mut rescored = Vec::new();
        // v1 re-scores -1.0 on prod's reference set, prod (v2) -0.9 there:
        // beyond the tolerance (0.05), refused unless forced with a reason.
        let refused = t
            .command(&cmd(CommandAction::Rollback, 1), 4, &mut |v| {
                rescored.push(v.version);
                Ok(vec![metric("rescored_loglik_per_bar", -1.0)])
            })
            .unwrap_err();
        assert!(refused.contains("not verified"), "{refused}");
        let mut forced = cmd(CommandAction::Rollback, 1);
        forced.force = true;
        forced.reason = String::new();
        let unexplained = t
            .command(&forced, 4, &mut |_| {
                Ok(vec![metric("rescored_loglik_per_bar", -1.0)])
            })
            .unwrap_err();
        assert!(unexplained.contains("needs a reason"), "{unexplained}");
        forced.reason = "v2 misbehaves live".into();
        let ev = t
            .command(&forced, 4, &mut |v| {
                rescored.push(v.version);
                Ok(vec![metric("rescored_loglik_per_bar", -1.0)])
            })
            .expect("rollback");
        assert_eq!(rescored, [1, 1]);
        let Event::Model(e) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (e.event, e.version, e.previous_version),
            (RegistryEvent::Rollback, 1, Some(2))
        );
        assert!(e.tags.contains(&"by:ops".to_string()));
        assert!(e.tags.contains(&"rescore:forced".to_string()));
        assert!(
            t.command(&cmd(CommandAction::Rollback, 2), 5, &mut |_| Ok(vec![]))
                .is_err(),
            "rolling forward is not a rollback"
        );
        t.command(&cmd(CommandAction::Promote, 2), 6, &mut |_| Ok(vec![]))
            .expect("promote");
        assert_eq!(
            t.registry
                .model("hmm/x")
                .and_then(|m| m.alias(PROD))
                .map(|v| v.version),
            Some(2)
        );
    }

    #[test]
    fn bad_requests_fail_at_once_and_restore_requeues_unfinished_runs() {
        let mut t = Trainer::new(TrainerConfig::default());
        let ev = t.submit(trigger("bad", &[("states", "many")], false), 0);
        assert_eq!(states(&ev), ["status:queued", "status:failed"]);
        let mut rerun = trigger("r", &[], false);
        rerun.reason = TriggerReason::Rerun;
        rerun.rerun_of = Some("tr-nothing".into());
        assert_eq!(
            states(&t.submit(rerun, 0)),
            ["status:queued", "status:failed"]
        );
        assert!(t.next_runs(0).is_empty());

        // A run cut short: its claim is released and it runs again.
        let mut first = Trainer::new(TrainerConfig::default());
        let mut statuses = Vec::new();
        let mut claims = Vec::new();
        for e in first.submit(trigger("s", &[("mode", "strict")], false), 0) {
            if let Event::Status(s) = e {
                statuses.push(s);
            }
        }
        let plan = first.next_runs(0).remove(0);
        if let (Event::Claim(c), _) = first.claim(&plan, &[features(0, 0, 10)], 1) {
            claims.push(c);
        }
        for e in first.begin(&plan.training_id, 1) {
            if let Event::Status(s) = e {
                statuses.push(s);
            }
        }
        let mut again = Trainer::new(TrainerConfig::default());
        let ev = again
            .restore(
                [trigger("s", &[("mode", "strict")], false)],
                statuses,
                [],
                claims,
                5,
            )
            .expect("restore");
        assert_eq!(states(&ev), ["claim:released"]);
        let plan = again.next_runs(5).remove(0);
        assert_eq!(plan.training_id, "tr-s");
        let (_, ranges) = again.claim(&plan, &[features(0, 0, 10)], 6);
        assert_eq!(ranges, [features(0, 0, 10)]);
    }

    #[test]
    fn stuck_runs_and_failure_rates_raise_alerts_once() {
        let mut t = Trainer::new(TrainerConfig {
            capacity: 1,
            max_attempts: 1,
            stuck_after_ms: 100,
            failure_window: 3,
            ..TrainerConfig::default()
        });
        t.submit(trigger("a", &[], false), 0);
        let p = t.next_runs(0).remove(0);
        t.begin(&p.training_id, 0);
        assert!(t.tick(50).is_empty());
        assert_eq!(states(&t.tick(101)), ["status:alert"]);
        assert!(t.tick(200).is_empty(), "one alert per run");
        let mut alerts = 0;
        for (i, id) in ["b", "c", "d"].iter().enumerate() {
            if i == 0 {
                t.finish(&p, Outcome::Failed("x".into()), 201);
            }
            t.submit(trigger(id, &[], false), 300);
            let p = t.next_runs(300).remove(0);
            let ev = t.finish(&p, Outcome::Failed("x".into()), 301);
            alerts += ev
                .iter()
                .filter(|e| matches!(e, Event::Status(s) if s.state == TrainingState::Alert))
                .count();
        }
        assert_eq!(
            alerts, 1,
            "failure-rate alert raised once while the rate stays high"
        );
    }
}
