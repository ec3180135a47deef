//! [`ParamsProcessor`]: `regimes` + `features` + `trade.outcomes` +
//! `param.updates` + `param.presets` ⇒ `param.updates`. Restored on start
//! by [`ParamsProcessor::restore`]: the registered presets from
//! `param.presets`, the updates in force from `param.updates`, the policies
//! by folding `trade.outcomes` up to the group's committed offsets
//! (outcomes carry their context, so the fold is exact).

use std::time::Duration;

use autotrain_kafka::reader::committed;
use autotrain_kafka::{
    read_topic, values, ClientSettings, Inbound, Incoming, KafkaError, Outputs, ProcessError,
    Processor,
};
use autotrain_schemas::{
    decode, FeatureVector, ParamUpdate, PresetRegistration, RegimePosterior, TradeOutcome,
    UpdateReason, WireError,
};
use autotrain_topics::{FEATURES, PARAM_PRESETS, PARAM_UPDATES, REGIMES, TRADE_OUTCOMES};

use crate::controller::{update_key, Controller};
use crate::schema::Preset;

#[derive(Debug, Clone)]
pub enum ParamsInput {
    Regime(RegimePosterior),
    Features(FeatureVector),
    Outcome(TradeOutcome),
    Update(Box<ParamUpdate>),
    Preset(PresetRegistration),
}

impl Inbound for ParamsInput {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        if topic == FEATURES.name() {
            decode::<FeatureVector>(bytes).map(ParamsInput::Features)
        } else if topic == TRADE_OUTCOMES.name() {
            decode::<TradeOutcome>(bytes).map(ParamsInput::Outcome)
        } else if topic == PARAM_PRESETS.name() {
            decode::<PresetRegistration>(bytes).map(ParamsInput::Preset)
        } else if topic == PARAM_UPDATES.name() {
            decode::<ParamUpdate>(bytes).map(|u| ParamsInput::Update(Box::new(u)))
        } else {
            decode::<RegimePosterior>(bytes).map(ParamsInput::Regime)
        }
    }
}

/// The topics the parameter controller consumes.
pub const INPUTS: &[&str] = &[
    REGIMES.name(),
    FEATURES.name(),
    TRADE_OUTCOMES.name(),
    PARAM_UPDATES.name(),
    PARAM_PRESETS.name(),
];

#[derive(Debug)]
pub struct ParamsProcessor {
    pub controller: Controller,
    /// Regime posteriors decided on so far, readable from other tasks (the
    /// demo paces its replay by it so the engine trades on decisions made
    /// for the bars it trades, as it would live).
    pub decided: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Trade outcomes learnt from so far (same use).
    pub learned: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ParamsProcessor {
    pub fn new(controller: Controller) -> Self {
        ParamsProcessor {
            controller,
            decided: Default::default(),
            learned: Default::default(),
        }
    }

    /// What a previous run left: the registered presets, the latest update
    /// per key (in force) and every outcome already processed, in offset
    /// order per partition.
    pub fn restore(&mut self, state: ParamsState) {
        let ParamsState {
            presets,
            mut updates,
            outcomes,
        } = state;
        for p in &presets {
            // Refused registrations were dead-lettered the first time.
            let _ = register(&mut self.controller, p);
        }
        updates.sort_by_key(|u| u.at);
        for o in outcomes {
            // Refused outcomes were dead-lettered the first time.
            let _ = self.controller.on_outcome(&o);
        }
        for u in &updates {
            self.controller.on_update(u);
        }
    }
}

/// A registration as a preset of the controller's.
pub fn register(c: &mut Controller, p: &PresetRegistration) -> Result<(), String> {
    c.register_preset(&p.strategy, &p.instrument, preset_of(p))
}

/// The controller's preset for a registration.
pub fn preset_of(p: &PresetRegistration) -> Preset {
    Preset {
        id: p.preset_id.clone(),
        safe: false,
        values: p.params.iter().map(|v| (v.name.clone(), v.value)).collect(),
    }
}

/// The controller's state as the topics hold it.
#[derive(Debug, Default)]
pub struct ParamsState {
    pub presets: Vec<PresetRegistration>,
    pub updates: Vec<ParamUpdate>,
    pub outcomes: Vec<TradeOutcome>,
}

/// What [`ParamsProcessor::restore`] needs, read from the topics
/// (blocking): every registration on `param.presets`, every update on
/// `param.updates`, and the outcomes group `group` already processed
/// (below its committed offsets).
pub fn load_state(
    settings: &ClientSettings,
    group: &str,
    timeout: Duration,
) -> Result<ParamsState, KafkaError> {
    // Presets and updates are written by autotrain alone: one that does
    // not decode stops the restore with its position.
    let presets = values(
        PARAM_PRESETS.name(),
        read_topic::<PresetRegistration>(settings, PARAM_PRESETS.name(), timeout)?,
    )?;
    let updates = values(
        PARAM_UPDATES.name(),
        read_topic::<ParamUpdate>(settings, PARAM_UPDATES.name(), timeout)?,
    )?;
    // Outcomes come from engines; one that does not decode was dead-lettered
    // by the controller's runner when it arrived.
    let done = committed(settings, group, TRADE_OUTCOMES.name(), timeout)?;
    let outcomes = read_topic::<TradeOutcome>(settings, TRADE_OUTCOMES.name(), timeout)?
        .into_iter()
        .filter(|r| done.get(&r.partition).is_some_and(|c| r.offset < *c))
        .filter_map(|r| r.value.ok())
        .collect();
    Ok(ParamsState {
        presets,
        updates,
        outcomes,
    })
}

impl Processor for ParamsProcessor {
    type Input = ParamsInput;

    fn name(&self) -> &str {
        "params"
    }

    fn process(
        &mut self,
        input: &Incoming<ParamsInput>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        let updates = match &input.value {
            ParamsInput::Features(v) => {
                self.controller.on_features(v);
                Vec::new()
            }
            ParamsInput::Regime(p) => {
                self.decided
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.controller.on_regime(p)
            }
            ParamsInput::Outcome(o) => {
                self.learned
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.controller
                    .on_outcome(o)
                    .map_err(ProcessError::invalid)?
            }
            ParamsInput::Update(u) => {
                // Its own updates come back on this topic; only ops'
                // manual ones change anything.
                if u.reason == UpdateReason::Manual {
                    self.controller.on_update(u);
                }
                Vec::new()
            }
            ParamsInput::Preset(p) => {
                register(&mut self.controller, p).map_err(ProcessError::invalid)?;
                Vec::new()
            }
        };
        for u in updates {
            out.send(PARAM_UPDATES, &update_key(&u.strategy, &u.instrument), &u)?;
        }
        Ok(())
    }
}

/// The simulated engine as a processor: `features` + `param.updates` ⇒
/// `trade.outcomes`.
#[derive(Debug)]
pub struct EngineProcessor {
    pub engine: crate::engine::Engine,
}

#[derive(Debug, Clone)]
pub enum EngineInput {
    Features(FeatureVector),
    Update(Box<ParamUpdate>),
}

impl Inbound for EngineInput {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        if topic == PARAM_UPDATES.name() {
            decode::<ParamUpdate>(bytes).map(|u| EngineInput::Update(Box::new(u)))
        } else {
            decode::<FeatureVector>(bytes).map(EngineInput::Features)
        }
    }
}

impl Processor for EngineProcessor {
    type Input = EngineInput;

    fn name(&self) -> &str {
        "engine"
    }

    fn process(
        &mut self,
        input: &Incoming<EngineInput>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        match &input.value {
            EngineInput::Update(u) => self.engine.on_update(u),
            EngineInput::Features(v) => {
                for o in self.engine.on_bar(v) {
                    out.send(TRADE_OUTCOMES, &update_key(&o.strategy, &o.instrument), &o)?;
                }
            }
        }
        Ok(())
    }
}
