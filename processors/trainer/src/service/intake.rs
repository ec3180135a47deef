//! [`Intake`]: the trainer's consumer core. Triggers and ops commands
//! arrive through the ordinary runner (offsets stored only after the
//! status and registry events they caused are acknowledged); each goes
//! into the shared [`Trainer`] state, and the executor is woken to start
//! whatever became runnable. A command that cannot apply (cancelling a
//! finished run, rolling forward) is dead-lettered with the reason.

use std::sync::{Arc, Mutex};

use autotrain_kafka::{Inbound, Incoming, Outputs, ProcessError, Processor};
use autotrain_schemas::{
    decode, Metric, ModelVersion, TrainingCommand, TrainingTrigger, WireError,
};
use autotrain_topics::{
    FEATURE_BUILDS, MODEL_UPDATES, TRAINING_CLAIMS, TRAINING_COMMANDS, TRAINING_STATUS,
    TRAINING_TRIGGERS,
};
use tokio::sync::Notify;

use super::store::ReferenceStore;
use crate::artifact::TrainedModel;
use crate::core::{Event, Trainer};
use crate::evaluate::evaluate;
use crate::registry::PROD;

#[derive(Debug, Clone)]
pub enum TrainerInput {
    Trigger(Box<TrainingTrigger>),
    Command(TrainingCommand),
}

impl Inbound for TrainerInput {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        if topic == TRAINING_COMMANDS.name() {
            decode::<TrainingCommand>(bytes).map(TrainerInput::Command)
        } else {
            decode::<TrainingTrigger>(bytes).map(|t| TrainerInput::Trigger(Box::new(t)))
        }
    }
}

#[derive(Debug)]
pub struct Intake {
    pub core: Arc<Mutex<Trainer>>,
    pub wake: Arc<Notify>,
    pub store: ReferenceStore,
    pub clock: fn() -> i64,
}

/// Sends events where they belong.
pub fn emit(events: &[Event], out: &mut Outputs) -> Result<(), ProcessError> {
    for e in events {
        match e {
            Event::Status(s) => out.send(TRAINING_STATUS, &s.training_id, s)?,
            Event::Model(m) => out.send(MODEL_UPDATES, &m.model_key, m.as_ref())?,
            Event::Claim(c) => out.send(TRAINING_CLAIMS, &c.model_key, c)?,
            Event::Build(b) => out.send(FEATURE_BUILDS, &b.build_id, b.as_ref())?,
            Event::Progress { model_key, through } => {
                out.progress(MODEL_UPDATES, model_key, *through)
            }
        }
    }
    Ok(())
}

/// Re-scores `target` on the reference set prod was judged on (or its
/// own, if there is no prod manifest).
pub fn rescore(
    store: &ReferenceStore,
    prod: Option<&ModelVersion>,
    target: &ModelVersion,
    cost_bps: f64,
) -> Result<Vec<Metric>, String> {
    let hash = prod
        .and_then(|p| p.manifest.as_ref())
        .or(target.manifest.as_ref())
        .map(|m| m.reference_hash.clone())
        .ok_or("no manifest names a reference set")?;
    let reference = store.load(&hash).map_err(|e| e.to_string())?;
    if crate::spec::Family::of(target) == crate::spec::Family::Gbdt {
        let model = target
            .parameters
            .as_deref()
            .ok_or("the version has no inline parameters")
            .and_then(|b| {
                crate::forecast::ForecastModel::from_json(b)
                    .map_err(|_| "its parameters do not load")
            })?;
        let scores =
            crate::pipeline::score_forecast(&model, &reference).map_err(|e| e.to_string())?;
        let mut metrics = crate::pipeline::forecast_metrics(&scores, "rescored_");
        metrics.push(Metric {
            name: "rescored_on_reference".into(),
            value: 1.0,
        });
        return Ok(metrics);
    }
    let model = target
        .parameters
        .as_deref()
        .ok_or("the version has no inline parameters")
        .and_then(|b| TrainedModel::from_bytes(b).map_err(|_| "its parameters do not load"))?;
    let e = evaluate(&model, &reference, cost_bps).map_err(|e| e.to_string())?;
    let mut metrics = e.metrics("rescored_");
    metrics.push(Metric {
        name: "rescored_on_reference".into(),
        value: 1.0,
    });
    Ok(metrics)
}

impl Processor for Intake {
    type Input = TrainerInput;

    fn name(&self) -> &str {
        "trainer"
    }

    fn process(
        &mut self,
        input: &Incoming<TrainerInput>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let now = (self.clock)();
        let events = {
            let mut core = self
                .core
                .lock()
                .map_err(|_| ProcessError::Retriable("trainer state poisoned".into()))?;
            match &input.value {
                TrainerInput::Trigger(t) => core.submit(t.as_ref().clone(), now),
                TrainerInput::Command(c) => {
                    let store = self.store.clone();
                    let cost = core.config.defaults.cost_bps;
                    let prod = c
                        .model_key
                        .as_deref()
                        .and_then(|k| core.registry.model(k))
                        .and_then(|m| m.alias(PROD))
                        .cloned();
                    core.command(c, now, &mut |target| {
                        rescore(&store, prod.as_ref(), target, cost)
                    })
                    .map_err(|why| {
                        ProcessError::invalid(format!(
                            "command {} ({:?}) refused: {why}",
                            c.command_id, c.action
                        ))
                    })?
                }
            }
        };
        emit(&events, out)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Drift (and the event-time scheduler) vouch for `training.triggers`
    /// as they pass bars: `model.updates` may then advance.
    fn progress(
        &mut self,
        topic: &str,
        key: &str,
        through: i64,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        if topic != TRAINING_TRIGGERS.name() {
            return Ok(());
        }
        let _ = out;
        self.core
            .lock()
            .map_err(|_| ProcessError::Retriable("trainer state poisoned".into()))?
            .trigger_progress(key, through);
        // The executor publishes what it allows on `model.updates`, after
        // the events of the runs it has finished (one ordered writer).
        self.wake.notify_one();
        Ok(())
    }
}
