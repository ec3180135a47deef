//! [`ParamsProcessor`]: `regimes` + `trade.outcomes` + `param.updates` +
//! `param.presets` ⇒ `param.updates`, and [`EngineProcessor`]: `features`
//! + `param.updates` ⇒ `trade.outcomes`.
//!
//! Aligned on event time (docs/determinism.md), the two close a cycle with
//! a lap of `[params] learn_lag_ms`: a decision at bar `t` learns from the
//! outcomes at or before `t − lag` (it waits for the engine's progress on
//! `trade.outcomes` through then, and applies them in a fixed order), and
//! the engine opens positions at bar `t` only once the controller's
//! progress on `param.updates` reaches `t`. The bar's context features come
//! inside the posterior; a strategy that declares `forecast:<target>`
//! context features also waits for the forecast processor's progress on
//! `forecasts` through `t` and reads the bar's forecast. Outputs are then a
//! function of the input logs.
//!
//! Restored on start by [`ParamsProcessor::restore`]: the registered
//! presets from `param.presets`, the updates in force from
//! `param.updates`, the policies by folding `trade.outcomes` up to the
//! group's committed offsets (outcomes carry their context, so the fold is
//! exact), as far as the decisions already made had learnt them. The
//! engine rebuilds by replaying its inputs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use autotrain_kafka::reader::committed;
use autotrain_kafka::{
    read_topic, values, ClientSettings, Inbound, Incoming, KafkaError, OutRecord, Outputs,
    ProcessError, Processor, Wait,
};
use autotrain_schemas::{
    decode, FeatureValue, FeatureVector, Forecast, ParamUpdate, PresetRegistration,
    RegimePosterior, TradeOutcome, UpdateReason, WireError,
};
use autotrain_topics::{
    FEATURES, FORECASTS, PARAM_PRESETS, PARAM_UPDATES, REGIMES, TRADE_OUTCOMES,
};
use rustc_hash::FxHashMap;

use crate::controller::{update_key, Controller};
use crate::schema::Preset;

#[derive(Debug, Clone)]
pub enum ParamsInput {
    Regime(RegimePosterior),
    Outcome(TradeOutcome),
    Update(Box<ParamUpdate>),
    Preset(PresetRegistration),
    Forecast(Forecast),
}

impl Inbound for ParamsInput {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        if topic == TRADE_OUTCOMES.name() {
            decode::<TradeOutcome>(bytes).map(ParamsInput::Outcome)
        } else if topic == PARAM_PRESETS.name() {
            decode::<PresetRegistration>(bytes).map(ParamsInput::Preset)
        } else if topic == FORECASTS.name() {
            decode::<Forecast>(bytes).map(ParamsInput::Forecast)
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
    TRADE_OUTCOMES.name(),
    PARAM_UPDATES.name(),
    PARAM_PRESETS.name(),
    FORECASTS.name(),
];

/// The topics the simulated engine consumes.
pub const ENGINE_INPUTS: &[&str] = &[FEATURES.name(), PARAM_UPDATES.name()];

const TRADE_OUTCOMES_NAME: &str = TRADE_OUTCOMES.name();
const PARAM_UPDATES_NAME: &str = PARAM_UPDATES.name();
const FORECASTS_NAME: &str = FORECASTS.name();

/// Per instrument: the newest bar time this core is complete through, and
/// the newest it has published progress for.
#[derive(Debug, Default)]
struct Vouched(FxHashMap<String, (i64, i64)>);

impl Vouched {
    /// Notes that `instrument` is complete through `t`; true when a
    /// periodic progress record is due (`every` past the last one).
    fn reach(&mut self, instrument: &str, t: i64, every: i64) -> bool {
        let (done, published) = self
            .0
            .entry(instrument.to_string())
            .or_insert((i64::MIN, i64::MIN));
        *done = (*done).max(t);
        if *done >= published.saturating_add(every.max(1)) {
            *published = *done;
            true
        } else {
            false
        }
    }

    fn through(&self, instrument: &str) -> Option<i64> {
        self.0.get(instrument).map(|(done, _)| *done)
    }

    /// The instruments complete past their last progress record, marked
    /// published.
    fn unpublished(&mut self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .0
            .iter_mut()
            .filter(|(_, (done, published))| published < done)
            .map(|(instrument, (done, published))| {
                *published = *done;
                (instrument.clone(), *done)
            })
            .collect();
        out.sort();
        out
    }
}

fn progress_records(
    topic: &str,
    strategies: &[String],
    instrument: &str,
    t: i64,
) -> Vec<OutRecord> {
    strategies
        .iter()
        .map(|s| OutRecord::progress(topic, &update_key(s, instrument), t))
        .collect()
}

#[derive(Debug)]
pub struct ParamsProcessor {
    pub controller: Controller,
    /// Decide on event time (see the module docs); off: in arrival order.
    aligned: bool,
    /// Aligned: outcomes waiting for their time, per instrument, in the
    /// order they are learnt: (bar time, strategy, trade id).
    outcomes: FxHashMap<String, BTreeMap<(i64, String, String), TradeOutcome>>,
    /// Aligned: ops' manual updates (a kill-switch reset) waiting for their
    /// bar, per instrument, by (bar time, config id).
    manual: FxHashMap<String, BTreeMap<(i64, String), ParamUpdate>>,
    /// Whether a strategy reads forecasts as context.
    uses_forecasts: bool,
    /// Forecasts of bars not decided yet, per instrument, by (bar time,
    /// target): the prediction.
    forecasts: FxHashMap<String, BTreeMap<(i64, String), f64>>,
    /// Bars decided (or passed without a posterior) per instrument.
    decided: Vouched,
    /// Regime posteriors decided on so far, readable from other tasks (the
    /// demo reports it).
    pub decisions_made: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Trade outcomes learnt from so far (same use).
    pub learned: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl ParamsProcessor {
    pub fn new(controller: Controller) -> Self {
        ParamsProcessor {
            uses_forecasts: controller.schemas().iter().any(|s| s.uses_forecasts()),
            controller,
            aligned: false,
            outcomes: FxHashMap::default(),
            manual: FxHashMap::default(),
            forecasts: FxHashMap::default(),
            decided: Vouched::default(),
            decisions_made: Default::default(),
            learned: Default::default(),
        }
    }

    /// Event-time alignment with the engine (module docs).
    pub fn aligned(mut self, on: bool) -> Self {
        self.aligned = on;
        self
    }

    fn strategies(&self) -> Vec<String> {
        self.controller
            .schemas()
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    fn lag(&self) -> i64 {
        self.controller.config().learn_lag_ms.max(1)
    }

    /// Learns, in their fixed order, the buffered outcomes of `instrument`
    /// at or before `through`; the kill-switch updates they trip take
    /// effect from bar `at`.
    fn learn_through(&mut self, instrument: &str, through: i64, at: i64) -> Vec<ParamUpdate> {
        let Some(queue) = self.outcomes.get_mut(instrument) else {
            return Vec::new();
        };
        let later = queue.split_off(&(through.saturating_add(1), String::new(), String::new()));
        let due = std::mem::replace(queue, later);
        let mut updates = Vec::new();
        for o in due.into_values() {
            self.learned
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.controller.on_outcome_at(&o, at) {
                Ok(u) => updates.extend(u),
                Err(reason) => {
                    self.controller.stats.outcomes_refused += 1;
                    tracing::warn!(trade = %o.trade_id, %reason, "outcome refused when learnt");
                }
            }
        }
        updates
    }

    /// Applies the manual updates of `instrument` due at or before bar `t`,
    /// each after the outcomes learnt by its own bar time, so where an ops
    /// action falls among the outcomes is a function of the logs.
    fn apply_manual_through(&mut self, instrument: &str, t: i64, at: i64) -> Vec<ParamUpdate> {
        let lag = self.lag();
        let mut updates = Vec::new();
        while let Some(u) = self
            .manual
            .get_mut(instrument)
            .and_then(|q| q.first_entry())
            .filter(|e| e.key().0 <= t)
            .map(|e| e.remove())
        {
            updates.extend(self.learn_through(instrument, u.at.saturating_sub(lag), at));
            self.controller.on_update(&u);
        }
        updates
    }

    /// Keeps a forecast for its bar's decision; one for a bar already
    /// decided (a revised bar's) is counted and logged.
    fn hold_forecast(&mut self, f: &Forecast) {
        if !self.uses_forecasts {
            return;
        }
        if self
            .decided
            .through(&f.instrument)
            .is_some_and(|t| f.ts <= t)
        {
            self.controller.stats.late_forecasts += 1;
            tracing::warn!(instrument = %f.instrument, ts = f.ts, model = %f.model_key,
                "forecast for a bar already decided: not used");
            return;
        }
        self.forecasts
            .entry(f.instrument.clone())
            .or_default()
            .insert((f.ts, f.target.clone()), f.prediction);
    }

    /// The newest forecast per target at or before bar `t` of
    /// `instrument`, as `forecast:<target>` values; older ones are dropped.
    fn take_forecasts(&mut self, instrument: &str, t: i64) -> Vec<FeatureValue> {
        let Some(queue) = self.forecasts.get_mut(instrument) else {
            return Vec::new();
        };
        let later = queue.split_off(&(t.saturating_add(1), String::new()));
        let due = std::mem::replace(queue, later);
        let newest: BTreeMap<String, f64> = due.into_iter().map(|((_, k), v)| (k, v)).collect();
        self.controller.stats.forecasts_used += newest.len() as u64;
        newest
            .into_iter()
            .map(|(target, v)| FeatureValue {
                name: format!("{}{target}", crate::schema::FORECAST_PREFIX),
                value: Some(v),
            })
            .collect()
    }

    fn hold_manual(&mut self, u: &ParamUpdate) {
        self.manual
            .entry(u.instrument.clone())
            .or_default()
            .insert((u.at, u.config_id.clone()), u.clone());
    }

    /// What a previous run left: the registered presets, the latest update
    /// per key (in force) and every outcome already processed, in offset
    /// order per partition; aligned, the outcomes the decisions made so
    /// far had learnt are learnt again (in their order) and the rest wait.
    pub fn restore(&mut self, state: ParamsState) {
        let ParamsState {
            presets,
            mut updates,
            outcomes,
            decided,
            forecasts,
        } = state;
        for p in &presets {
            // Refused registrations were dead-lettered the first time.
            let _ = register(&mut self.controller, p);
        }
        updates.sort_by_key(|u| u.at);
        if self.aligned {
            let every = self.controller.config().progress_every_ms;
            for (instrument, t) in &decided {
                self.decided.reach(instrument, *t, every);
            }
            for f in forecasts
                .iter()
                .filter(|f| decided.get(&f.instrument).is_none_or(|t| f.ts > *t))
            {
                self.hold_forecast(f);
            }
            for o in outcomes {
                if self.controller.check_outcome(&o).is_ok() {
                    self.outcomes
                        .entry(o.instrument.clone())
                        .or_default()
                        .insert((o.ts, o.strategy.clone(), o.trade_id.clone()), o);
                }
            }
            for u in updates.iter().filter(|u| u.reason == UpdateReason::Manual) {
                self.hold_manual(u);
            }
            let lag = self.lag();
            let mut instruments: Vec<(String, i64)> = decided.into_iter().collect();
            instruments.sort();
            for (instrument, t) in instruments {
                // Their kill-switch updates were published the first time.
                let _ = self.apply_manual_through(&instrument, t, t);
                let _ = self.learn_through(&instrument, t.saturating_sub(lag), t);
            }
        } else {
            for o in outcomes {
                // Refused outcomes were dead-lettered the first time.
                let _ = self.controller.on_outcome(&o);
            }
        }
        for u in &updates {
            // Aligned, an update of a decision past what the group had
            // committed is made again (the same) when its posterior is
            // read again: folding it now would count it twice.
            // Manual ones were queued above, for their bar.
            let ahead = self.aligned
                && (u.reason == UpdateReason::Manual
                    || self.decided.through(&u.instrument).is_none_or(|t| u.at > t));
            if !ahead {
                self.controller.on_update(u);
            }
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
    /// Per instrument: the newest posterior the group already decided on.
    pub decided: HashMap<String, i64>,
    /// Forecasts the group already consumed (below its committed offsets),
    /// for the bars still to decide.
    pub forecasts: Vec<Forecast>,
}

/// What [`ParamsProcessor::restore`] needs, read from the topics
/// (blocking): every registration on `param.presets`, every update on
/// `param.updates`, the outcomes group `group` already processed (below
/// its committed offsets) and the newest posterior it decided on per
/// instrument.
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
    let done = committed(settings, group, REGIMES.name(), timeout)?;
    let mut decided: HashMap<String, i64> = HashMap::new();
    for r in read_topic::<RegimePosterior>(settings, REGIMES.name(), timeout)? {
        if done.get(&r.partition).is_none_or(|c| r.offset >= *c) {
            continue;
        }
        if let Ok(p) = r.value {
            let t = decided.entry(p.instrument).or_insert(p.ts);
            *t = (*t).max(p.ts);
        }
    }
    // Forecasts are written by autotrain's forecast processor alone.
    let done = committed(settings, group, FORECASTS.name(), timeout)?;
    let forecasts = read_topic::<Forecast>(settings, FORECASTS.name(), timeout)?
        .into_iter()
        .filter(|r| done.get(&r.partition).is_some_and(|c| r.offset < *c))
        .map(|r| r.into_value(FORECASTS.name()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|f| decided.get(&f.instrument).is_none_or(|t| f.ts > *t))
        .collect();
    Ok(ParamsState {
        presets,
        updates,
        outcomes,
        decided,
        forecasts,
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
            ParamsInput::Regime(p) => {
                if self
                    .decided
                    .through(&p.instrument)
                    .is_some_and(|t| p.ts <= t)
                {
                    self.controller.stats.stale_posteriors += 1;
                    return Ok(());
                }
                let mut updates = if self.aligned {
                    let mut updates = self.apply_manual_through(&p.instrument, p.ts, p.ts);
                    let through = p.ts.saturating_sub(self.lag());
                    updates.extend(self.learn_through(&p.instrument, through, p.ts));
                    updates
                } else {
                    Vec::new()
                };
                let mut values = p.features.clone();
                values.extend(self.take_forecasts(&p.instrument, p.ts));
                if !values.is_empty() {
                    self.controller.on_features(&FeatureVector {
                        instrument: p.instrument.clone(),
                        timeframe: p.timeframe.clone(),
                        ts: p.ts,
                        contract_version: String::new(),
                        bar_revision: 0,
                        values,
                    });
                }
                self.decisions_made
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                updates.extend(self.controller.on_regime(p));
                // The updates before the progress that vouches for them.
                for u in updates {
                    out.send(PARAM_UPDATES, &update_key(&u.strategy, &u.instrument), &u)?;
                }
                let every = self.controller.config().progress_every_ms;
                if self.decided.reach(&p.instrument, p.ts, every) && self.aligned {
                    for s in self.strategies() {
                        out.progress(PARAM_UPDATES, &update_key(&s, &p.instrument), p.ts);
                    }
                }
                Vec::new()
            }
            ParamsInput::Outcome(o) => {
                if self.aligned {
                    self.controller
                        .check_outcome(o)
                        .map_err(ProcessError::invalid)?;
                    self.outcomes
                        .entry(o.instrument.clone())
                        .or_default()
                        .insert((o.ts, o.strategy.clone(), o.trade_id.clone()), o.clone());
                    Vec::new()
                } else {
                    self.learned
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.controller
                        .on_outcome(o)
                        .map_err(ProcessError::invalid)?
                }
            }
            ParamsInput::Update(u) => {
                // Its own updates come back on this topic; only ops'
                // manual ones change anything: aligned, from their bar on
                // (one for a bar already decided applies on arrival).
                if u.reason == UpdateReason::Manual {
                    let due = self.decided.through(&u.instrument).is_none_or(|t| u.at > t);
                    if self.aligned && due {
                        self.hold_manual(u);
                    } else {
                        if self.aligned {
                            self.controller.stats.late_manual_updates += 1;
                            tracing::warn!(
                                strategy = %u.strategy, instrument = %u.instrument, at = u.at,
                                "manual update for a bar already decided: applied on arrival"
                            );
                        }
                        self.controller.on_update(u);
                    }
                }
                Vec::new()
            }
            ParamsInput::Preset(p) => {
                register(&mut self.controller, p).map_err(ProcessError::invalid)?;
                Vec::new()
            }
            ParamsInput::Forecast(f) => {
                self.hold_forecast(f);
                Vec::new()
            }
        };
        for u in updates {
            out.send(PARAM_UPDATES, &update_key(&u.strategy, &u.instrument), &u)?;
        }
        Ok(())
    }

    fn control_topics(&self) -> &'static [&'static str] {
        match (self.aligned, self.uses_forecasts) {
            (true, true) => &[TRADE_OUTCOMES_NAME, FORECASTS_NAME],
            (true, false) => &[TRADE_OUTCOMES_NAME],
            (false, _) => &[],
        }
    }

    /// A posterior at `t` waits for the engine's outcomes through
    /// `t − lag` (and, with forecast context, for the forecasts through
    /// `t`); meanwhile the controller vouches for its updates before
    /// `t`, which is what lets the engine get there.
    fn wait(&self, input: &ParamsInput) -> Option<Wait> {
        let ParamsInput::Regime(p) = input else {
            return None;
        };
        if !self.aligned {
            return None;
        }
        let strategies = self.strategies();
        Some(Wait {
            until: p.ts.saturating_sub(self.lag()),
            on: strategies
                .iter()
                .map(|s| (TRADE_OUTCOMES_NAME, update_key(s, &p.instrument)))
                .collect(),
            also: if self.uses_forecasts {
                vec![(FORECASTS_NAME, p.instrument.clone(), p.ts)]
            } else {
                Vec::new()
            },
            announce: progress_records(
                PARAM_UPDATES_NAME,
                &strategies,
                &p.instrument,
                p.ts.saturating_sub(1),
            ),
        })
    }

    /// `regimes` progress: no posterior of the instrument at or before
    /// `through` will follow, so no update for those bars either.
    fn progress(
        &mut self,
        topic: &str,
        key: &str,
        through: i64,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        if !self.aligned || topic != REGIMES.name() {
            return Ok(());
        }
        let every = self.controller.config().progress_every_ms;
        if self.decided.reach(key, through, every) {
            for s in self.strategies() {
                out.progress(PARAM_UPDATES, &update_key(&s, key), through);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Vec<OutRecord> {
        if !self.aligned {
            return Vec::new();
        }
        let strategies = self.strategies();
        self.decided
            .unpublished()
            .into_iter()
            .flat_map(|(instrument, t)| {
                progress_records(PARAM_UPDATES_NAME, &strategies, &instrument, t)
            })
            .collect()
    }
}

/// The simulated engine as a processor: `features` + `param.updates` ⇒
/// `trade.outcomes`. Its state is a function of its inputs: it rebuilds
/// by replaying them (`param.updates` first).
#[derive(Debug)]
pub struct EngineProcessor {
    pub engine: crate::engine::Engine,
    /// A bar waits until the controller's updates are complete through it.
    aligned: bool,
    /// Event time between two progress records on `trade.outcomes` per
    /// strategy and instrument.
    progress_every_ms: i64,
    traded: Vouched,
}

impl EngineProcessor {
    pub fn new(engine: crate::engine::Engine) -> Self {
        EngineProcessor {
            engine,
            aligned: false,
            progress_every_ms: 4 * 3_600_000,
            traded: Vouched::default(),
        }
    }

    /// Event-time alignment with the controller (module docs).
    pub fn aligned(mut self, on: bool) -> Self {
        self.aligned = on;
        self
    }
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
                if self
                    .traded
                    .reach(&v.instrument, v.ts, self.progress_every_ms)
                    && self.aligned
                {
                    for s in self.engine.strategies() {
                        out.progress(TRADE_OUTCOMES, &update_key(&s, &v.instrument), v.ts);
                    }
                }
            }
        }
        Ok(())
    }

    fn rebuilds_from_inputs(&self) -> bool {
        true
    }

    fn control_topics(&self) -> &'static [&'static str] {
        if self.aligned {
            &[PARAM_UPDATES_NAME]
        } else {
            &[]
        }
    }

    /// A bar at `t` waits for the controller's updates through `t`;
    /// meanwhile the engine vouches for its outcomes before `t`.
    fn wait(&self, input: &EngineInput) -> Option<Wait> {
        let EngineInput::Features(v) = input else {
            return None;
        };
        if !self.aligned {
            return None;
        }
        let strategies = self.engine.strategies();
        Some(Wait {
            until: v.ts,
            on: strategies
                .iter()
                .map(|s| (PARAM_UPDATES_NAME, update_key(s, &v.instrument)))
                .collect(),
            also: Vec::new(),
            announce: progress_records(
                TRADE_OUTCOMES_NAME,
                &strategies,
                &v.instrument,
                v.ts.saturating_sub(1),
            ),
        })
    }

    fn flush(&mut self) -> Vec<OutRecord> {
        if !self.aligned {
            return Vec::new();
        }
        let strategies = self.engine.strategies();
        self.traded
            .unpublished()
            .into_iter()
            .flat_map(|(instrument, t)| {
                progress_records(TRADE_OUTCOMES_NAME, &strategies, &instrument, t)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::ParamsConfig;
    use crate::schema::StrategySchema;
    use autotrain_kafka::EventId;
    use autotrain_schemas::decode;

    const BAR: i64 = 1_800_000;
    const LAG: i64 = 4 * BAR;

    /// Trend following alone, aligned; `forecast` adds the forecast of the
    /// next bar's absolute return to its context.
    fn core_with(kill_switch_drawdown: f64, forecast: bool) -> ParamsProcessor {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../strategy_schemas");
        let mut schemas = StrategySchema::load_dir(&dir).expect("schemas");
        if forecast {
            for s in &mut schemas {
                s.context_features.push(crate::schema::ContextFeature {
                    name: "forecast:abs_return:1".into(),
                    center: 0.003,
                    scale: 0.003,
                });
            }
        }
        let config = ParamsConfig {
            strategies: vec!["trend_following".into()],
            kill_switch_drawdown,
            learn_lag_ms: LAG,
            ..ParamsConfig::default()
        };
        ParamsProcessor::new(Controller::new(config, schemas)).aligned(true)
    }

    fn core() -> ParamsProcessor {
        core_with(2.0, false)
    }

    fn posterior(ts: i64) -> RegimePosterior {
        RegimePosterior {
            instrument: "x:A".into(),
            timeframe: "30m".into(),
            ts,
            model_key: "hmm/x:A".into(),
            model_version: 1,
            probabilities: vec![0.6, 0.4],
            regime: 0,
            loglik: 0.0,
            features: Vec::new(),
        }
    }

    fn feed(core: &mut ParamsProcessor, topic: &str, value: ParamsInput) -> Vec<ParamUpdate> {
        let input = Incoming {
            topic: topic.to_string(),
            partition: 0,
            offset: 0,
            key: None,
            timestamp: None,
            event_id: EventId::derive(&[topic.as_bytes()]),
            value,
        };
        let mut out = Outputs::new("params", input.event_id);
        core.process(&input, &mut out).expect("processes");
        out.into_records()
            .into_iter()
            .filter(|r| r.progress.is_none())
            .map(|r| decode::<ParamUpdate>(&r.payload).expect("an update"))
            .collect()
    }

    /// One instrument's bars: a posterior per bar and, for every bar, a
    /// losing outcome of the update in force (the kill-switch trips early).
    struct Sim {
        core: ParamsProcessor,
        /// Bars from which a forecast precedes the posterior.
        forecasts_from: usize,
        /// Updates published, with the bar they were published on.
        published: Vec<(usize, ParamUpdate)>,
        outcomes: Vec<TradeOutcome>,
        in_force: Option<ParamUpdate>,
    }

    impl Sim {
        fn new(core: ParamsProcessor) -> Self {
            Sim {
                core,
                forecasts_from: usize::MAX,
                published: Vec::new(),
                outcomes: Vec::new(),
                in_force: None,
            }
        }

        /// Bars `bars`, `manual` read just before bar `read_at`.
        fn bars(&mut self, bars: std::ops::Range<usize>, manual: Option<(&ParamUpdate, usize)>) {
            for i in bars {
                if let Some((m, _)) = manual.filter(|(_, at)| *at == i) {
                    let u = ParamsInput::Update(Box::new(m.clone()));
                    let out = feed(&mut self.core, PARAM_UPDATES.name(), u);
                    self.published.extend(out.into_iter().map(|u| (i, u)));
                }
                let ts = i as i64 * BAR;
                if i >= self.forecasts_from {
                    let f = ParamsInput::Forecast(forecast(i));
                    assert!(feed(&mut self.core, FORECASTS.name(), f).is_empty());
                }
                let p = ParamsInput::Regime(posterior(ts));
                let updates = feed(&mut self.core, REGIMES.name(), p);
                if let Some(u) = updates.last() {
                    self.in_force = Some(u.clone());
                }
                self.published.extend(updates.into_iter().map(|u| (i, u)));
                if let Some(u) = &self.in_force {
                    let o = TradeOutcome {
                        trade_id: format!("t{i}"),
                        strategy: u.strategy.clone(),
                        instrument: u.instrument.clone(),
                        config_id: u.config_id.clone(),
                        preset_id: u.preset_id.clone(),
                        reward: -0.5,
                        context: u.context.clone(),
                        ts,
                        baseline_reward: None,
                        flat: false,
                    };
                    self.outcomes.push(o.clone());
                    let out = feed(
                        &mut self.core,
                        TRADE_OUTCOMES.name(),
                        ParamsInput::Outcome(o),
                    );
                    self.published.extend(out.into_iter().map(|u| (i, u)));
                }
            }
        }

        fn updates(&self) -> Vec<ParamUpdate> {
            self.published.iter().map(|(_, u)| u.clone()).collect()
        }
    }

    fn forecast(i: usize) -> Forecast {
        Forecast {
            instrument: "x:A".into(),
            timeframe: "30m".into(),
            ts: i as i64 * BAR,
            model_key: "gbdt/x:A".into(),
            model_version: 1,
            target: "abs_return:1".into(),
            prediction: 0.001 * (i % 7) as f64,
        }
    }

    fn forecast_core() -> ParamsProcessor {
        core_with(1e9, true)
    }

    /// Restored with the forecasts the group had consumed ahead of its
    /// posteriors, the controller decides the rest of the bars with the
    /// same forecasts in context as an uninterrupted one.
    #[test]
    fn a_restore_keeps_the_forecasts_of_bars_still_to_decide() {
        let mut whole = Sim::new(forecast_core());
        whole.forecasts_from = 20;
        whole.bars(0..200, None);
        assert!(
            whole
                .updates()
                .iter()
                .any(|u| u.context.last().is_some_and(|x| *x != 0.0)),
            "the forecast is in the context"
        );
        assert!(whole.core.uses_forecasts);
        let wait = whole
            .core
            .wait(&ParamsInput::Regime(posterior(300 * BAR)))
            .expect("waits");
        assert_eq!(
            wait.also,
            vec![(FORECASTS_NAME, "x:A".to_string(), 300 * BAR)]
        );
        assert!(whole.core.control_topics().contains(&FORECASTS_NAME));
        for k in [50, 120] {
            let mut first = Sim::new(forecast_core());
            first.forecasts_from = 20;
            first.bars(0..k, None);
            let mut restored = forecast_core();
            restored.restore(ParamsState {
                presets: Vec::new(),
                updates: first.updates(),
                outcomes: first.outcomes.clone(),
                decided: HashMap::from([("x:A".to_string(), (k as i64 - 1) * BAR)]),
                // Consumed before the stop: up to 30 bars ahead, and some
                // of bars already decided (left out by the restore).
                forecasts: (20..k + 30).map(forecast).collect(),
            });
            let mut second = Sim::new(restored);
            second.in_force = first.in_force.clone();
            second.forecasts_from = k + 30;
            second.bars(k..200, None);
            let want: Vec<&ParamUpdate> = whole
                .published
                .iter()
                .filter(|(i, _)| *i >= k)
                .map(|(_, u)| u)
                .collect();
            let got: Vec<&ParamUpdate> = second.published.iter().map(|(_, u)| u).collect();
            assert_eq!(want, got, "restored before bar {k}");
            assert_eq!(second.core.controller.stats.late_forecasts, 0);
        }
        // A forecast for a bar already decided is counted, not used.
        let late = ParamsInput::Forecast(forecast(10));
        assert!(feed(&mut whole.core, FORECASTS.name(), late).is_empty());
        assert_eq!(whole.core.controller.stats.late_forecasts, 1);
    }

    fn run(manual: Option<&ParamUpdate>, read_at: usize) -> (Vec<ParamUpdate>, ParamsProcessor) {
        let mut sim = Sim::new(core());
        sim.bars(0..200, manual.map(|m| (m, read_at)));
        (sim.updates(), sim.core)
    }

    fn reset() -> ParamUpdate {
        let (published, _) = run(None, 0);
        let mut manual = published
            .iter()
            .find(|u| u.reason == UpdateReason::KillSwitch)
            .expect("the kill-switch trips")
            .clone();
        assert!(manual.at < 120 * BAR, "{}", manual.at);
        manual.reason = UpdateReason::Manual;
        manual.config_id = "ops-reset".into();
        manual.at = 120 * BAR + 1;
        manual.actor = Some("api:ops".into());
        manual
    }

    /// Restored from what the topics hold after bar `k - 1` (a manual
    /// update read before bar 0 among them), the controller publishes
    /// after bar `k` what an uninterrupted one does.
    #[test]
    fn a_restore_puts_a_manual_reset_where_it_was() {
        let manual = reset();
        let mut whole = Sim::new(core());
        whole.bars(0..200, Some((&manual, 0)));
        for k in [110, 121, 160] {
            let mut first = Sim::new(core());
            first.bars(0..k, Some((&manual, 0)));
            let mut updates = first.updates();
            updates.push(manual.clone());
            let mut restored = core();
            restored.restore(ParamsState {
                presets: Vec::new(),
                updates,
                outcomes: first.outcomes.clone(),
                decided: HashMap::from([("x:A".to_string(), (k as i64 - 1) * BAR)]),
                forecasts: Vec::new(),
            });
            let mut second = Sim::new(restored);
            second.in_force = first.in_force.clone();
            second.bars(k..200, None);
            let want: Vec<&ParamUpdate> = whole
                .published
                .iter()
                .filter(|(i, _)| *i >= k)
                .map(|(_, u)| u)
                .collect();
            let got: Vec<&ParamUpdate> = second.published.iter().map(|(_, u)| u).collect();
            assert_eq!(want, got, "restored before bar {k}");
        }
    }

    #[test]
    fn a_manual_reset_takes_effect_at_its_bar_whenever_it_is_read() {
        let manual = reset();
        let (early, early_core) = run(Some(&manual), 0);
        let (mid, _) = run(Some(&manual), 100);
        assert_eq!(early, mid, "read early or mid-stream: the same decisions");
        // The reset let the controller trade again, and lose again: the
        // kill-switch trips a second time after bar 120.
        let trips: Vec<i64> = early
            .iter()
            .filter(|u| u.reason == UpdateReason::KillSwitch)
            .map(|u| u.at)
            .collect();
        assert_eq!(trips.len(), 2, "{trips:?}");
        assert!(trips[1] > manual.at, "{trips:?}");
        assert_eq!(early_core.controller.stats.late_manual_updates, 0);
        // Read after its bar was decided: applied on arrival, counted.
        let (_, late_core) = run(Some(&manual), 150);
        assert_eq!(late_core.controller.stats.late_manual_updates, 1);
    }
}
