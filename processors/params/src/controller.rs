//! [`Controller`]: the parameter controller's pure core. Per (strategy,
//! instrument) a bandit policy over the strategy's presets; each regime
//! posterior (one per bar) is a decision on the context
//! `[1, P(regime 0..R), scaled context features]`, published as a
//! `ParamUpdate` only when the chosen preset changes and the guardrails
//! allow it:
//! - **hysteresis**: the new preset's sampled score must beat the current
//!   one's by `hysteresis`;
//! - **daily limit**: at most `max_changes_per_day` changes per strategy and
//!   instrument per UTC day of event time;
//! - **kill-switch**: when the realised reward's drawdown from its peak
//!   exceeds `kill_switch_drawdown`, the safe preset is published and
//!   changes stop until ops publish a `manual` update for that key;
//! - **conservative** (`conservative = true`, the default): a preset other
//!   than the safe one is played only while the reward realised so far,
//!   less what the safe preset would have earned on the same bars (the
//!   engine scores it beside: `TradeOutcome.baseline_reward`), leaves a
//!   budget of `conservative_alpha` × |the safe preset's reward| that
//!   covers a pessimistic loss over the bars still at risk (those whose
//!   outcomes are not yet known, and the next one); otherwise the safe
//!   preset is played (published as `conservative` when it replaces
//!   another). Cumulative reward thus stays above (1 − α) × the safe
//!   preset's (for a positive one; baseline − α·|baseline| in general)
//!   but for a loss beyond the bound (the spirit of conservative bandits:
//!   Wu et al., ICML 2016; Kazerouni et al., NeurIPS 2017).
//!
//! Learning is a fold over `trade.outcomes` alone (each outcome carries the
//! preset and the decision's context, echoed by the engine), so replaying
//! that topic rebuilds every policy bit for bit. Randomness is seeded per
//! decision from (seed, strategy, instrument, bar time).

use std::collections::{BTreeMap, VecDeque};

use autotrain_schemas::{
    Effective, FeatureVector, ParamUpdate, ParamValue, RegimePosterior, TradeOutcome, UpdateReason,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::{argmax, Policy, PolicySpec, Scratch};
use crate::schema::{Preset, StrategySchema};

/// `[params]` in the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParamsConfig {
    /// Folder of strategy schemas (`*.yaml`).
    pub schemas_dir: String,
    /// Strategies to control (empty: every schema).
    pub strategies: Vec<String>,
    pub policy: PolicySpec,
    /// Regime probabilities in the context (padded with zeros, cut beyond).
    pub regimes: usize,
    pub hysteresis: f64,
    pub max_changes_per_day: u32,
    /// Realised reward drawdown (reward units) that trips the kill-switch.
    pub kill_switch_drawdown: f64,
    pub seed: u64,
    /// Event-time alignment: a decision at bar `t` learns from exactly the
    /// outcomes at or before `t − learn_lag_ms`, whatever order the topics
    /// arrive in. The lag is also how far the controller may run ahead of
    /// the engine before it waits for the engine's outcomes: one broker
    /// round trip per lap, so a lag of many bars keeps a replay fast.
    pub learn_lag_ms: i64,
    /// Event time between two progress records on `param.updates` per
    /// strategy and instrument (the engine waits for them; more are
    /// published whenever the inputs go quiet).
    pub progress_every_ms: i64,
    /// Play a preset other than the safe one only within the budget
    /// `conservative_alpha` leaves (see the module doc).
    pub conservative: bool,
    /// The share of the safe preset's cumulative reward the controller may
    /// give up exploring, at most (0 ≤ α < 1).
    pub conservative_alpha: f64,
    /// Standard deviations of the per-bar loss against the safe preset in
    /// the pessimistic bound over the bars at risk.
    pub conservative_z: f64,
}

impl Default for ParamsConfig {
    fn default() -> Self {
        ParamsConfig {
            schemas_dir: "strategy_schemas".into(),
            strategies: Vec::new(),
            policy: PolicySpec::default(),
            regimes: 4,
            hysteresis: 0.05,
            max_changes_per_day: 6,
            kill_switch_drawdown: 50.0,
            seed: 42,
            learn_lag_ms: DAY_MS,
            progress_every_ms: 4 * 3_600_000,
            conservative: true,
            conservative_alpha: 0.05,
            conservative_z: 3.0,
        }
    }
}

/// What happened to decisions and outcomes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamsStats {
    pub decisions: u64,
    /// `ParamUpdate`s published (initial, changes, kill-switches).
    pub published: u64,
    pub held_by_hysteresis: u64,
    pub held_by_daily_limit: u64,
    pub held_by_kill_switch: u64,
    pub kill_switches: u64,
    /// Decisions for another preset the conservative budget did not cover.
    pub held_by_budget: u64,
    /// Of those, the safe preset published in place of another.
    pub conservative_fallbacks: u64,
    pub outcomes: u64,
    /// Outcomes that passed the checks on arrival and were refused when
    /// their time came (a preset unknown by then); each is logged.
    pub outcomes_refused: u64,
    /// Posteriors for a bar the controller had already decided (a bar
    /// revised upstream): not decided again, so the engine never meets an
    /// update for a bar it has passed.
    pub stale_posteriors: u64,
    /// Aligned: ops' manual updates read after their bar was decided
    /// (applied on arrival).
    pub late_manual_updates: u64,
    /// Forecasts used as context of a decision (`forecast:<target>`).
    pub forecasts_used: u64,
    /// Forecasts for a bar already decided (a revised bar's): logged, not
    /// used.
    pub late_forecasts: u64,
}

/// Why [`Controller::resume`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("no strategy {0:?}")]
    NoStrategy(String),
    #[error("{strategy}/{instrument} is not held by the kill-switch")]
    NotHeld {
        strategy: String,
        instrument: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub policy: Policy,
    /// The preset in force and its config id.
    pub current: Option<(usize, String)>,
    day: i64,
    changes_today: u32,
    /// Realised reward so far, its peak, and whether the kill-switch holds.
    pub realised: f64,
    peak: f64,
    pub killed: bool,
    /// Presets registered at run time for this slot: arms after the
    /// schema's own.
    pub registered: Vec<Preset>,
    /// The conservative budget's evidence, folded from outcomes.
    pub budget: Budget,
    /// Bar time from which the preset in force is in force.
    since: i64,
}

/// What the conservative rule knows of a (strategy, instrument): a fold
/// over its outcomes (so a restore rebuilds it).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Budget {
    /// What the safe preset would have earned on the same bars.
    pub baseline: f64,
    /// Outcomes folded, and the newest bar they settle.
    pub outcomes: u64,
    pub known_through: Option<i64>,
    /// The shortest step between two outcomes' bars: one bar.
    pub bar_ms: Option<i64>,
    /// Per-bar loss against the safe preset (`baseline_reward − reward`)
    /// under other presets: count, mean and sum of squared deviations
    /// (Welford).
    gaps: u64,
    gap_mean: f64,
    gap_m2: f64,
    /// Mean square of the safe preset's per-bar reward: the scale of a
    /// bar's loss before any other preset has been seen.
    baseline_sq: f64,
}

impl Budget {
    fn fold(&mut self, o: &TradeOutcome, under_safe: bool) {
        let baseline = o.baseline_reward.unwrap_or(o.reward);
        self.baseline += baseline;
        self.outcomes += 1;
        self.baseline_sq += (baseline * baseline - self.baseline_sq) / self.outcomes as f64;
        if let Some(last) = self.known_through {
            let step = o.ts - last;
            if step > 0 {
                self.bar_ms = Some(self.bar_ms.map_or(step, |b| b.min(step)));
            }
        }
        self.known_through = Some(self.known_through.map_or(o.ts, |t| t.max(o.ts)));
        if !under_safe && o.baseline_reward.is_some() {
            let gap = baseline - o.reward;
            self.gaps += 1;
            let delta = gap - self.gap_mean;
            self.gap_mean += delta / self.gaps as f64;
            self.gap_m2 += delta * (gap - self.gap_mean);
        }
    }

    /// A pessimistic loss against the safe preset over `bars` bars: the
    /// mean loss per bar (when positive) plus `z` standard deviations of
    /// the sum, `z` widened to √(2 ln n) after n outcomes (a bound checked
    /// at every bar must hold at all of them). Before 10 losses under
    /// other presets are known, a bar's loss is taken as wide as two of
    /// the safe preset's rewards.
    fn risk(&self, bars: f64, z: f64) -> f64 {
        let z = z.max((2.0 * (self.outcomes.max(1) as f64).ln()).sqrt());
        let (mean, var) = if self.gaps >= 10 {
            (self.gap_mean.max(0.0), self.gap_m2 / (self.gaps - 1) as f64)
        } else {
            (0.0, 2.0 * self.baseline_sq)
        };
        bars * mean + z * (bars * var).sqrt()
    }
}

impl Slot {
    /// Whether the budget covers another preset at bar `t`: the bars at
    /// risk are those under another preset whose outcomes are not known
    /// yet, and this one.
    fn covered(&self, safe: usize, t: i64, alpha: f64, z: f64) -> bool {
        let b = &self.budget;
        let (Some(known), Some(bar)) = (b.known_through, b.bar_ms) else {
            return false;
        };
        let other = self.current.as_ref().is_some_and(|(arm, _)| *arm != safe);
        let from = if other { known.max(self.since) } else { t };
        let bars = 1.0 + ((t - from).max(0) / bar) as f64;
        let slack = self.realised - b.baseline + alpha * b.baseline.abs();
        slack >= b.risk(bars, z)
    }
}

/// An outcome's rewards are numbers.
fn check_rewards(o: &TradeOutcome) -> Result<(), String> {
    if !o.reward.is_finite() {
        return Err(format!("reward {} is not a number", o.reward));
    }
    if let Some(b) = o.baseline_reward.filter(|b| !b.is_finite()) {
        return Err(format!("baseline_reward {b} is not a number"));
    }
    Ok(())
}

/// What [`Controller::advise`] recommends for a context, without acting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    pub strategy: String,
    pub instrument: String,
    pub config_id: String,
    pub preset_id: String,
    pub params: BTreeMap<String, f64>,
    /// The decision's context `[1, P(regime…), scaled features…]`; an
    /// outcome posted for this config id learns on it.
    pub context: Vec<f64>,
    /// Each arm's sampled score, by preset id.
    pub scores: BTreeMap<String, f64>,
    /// The preset in force on `param.updates`, if any.
    pub in_force: Option<String>,
    pub kill_switch: bool,
}

#[derive(Debug)]
pub struct Controller {
    config: ParamsConfig,
    schemas: Vec<StrategySchema>,
    slots: BTreeMap<(String, String), Slot>,
    /// Context feature values per instrument as of each recent bar (the
    /// newest last): a decision for bar t reads the values of bar t, even
    /// when features of later bars have already arrived.
    features: FxHashMap<String, VecDeque<(i64, Values)>>,
    /// Latest regime probabilities per instrument.
    regimes: FxHashMap<String, Vec<f64>>,
    /// Newest bar time of a posterior seen per instrument.
    regime_ts: FxHashMap<String, i64>,
    /// Recent decisions: config id → (strategy, instrument, arm, context),
    /// for outcomes that do not echo the context.
    decisions: FxHashMap<String, (String, String, usize, Vec<f64>)>,
    order: VecDeque<String>,
    scratch: Scratch,
    pub stats: ParamsStats,
}

const DAY_MS: i64 = 86_400_000;
const REMEMBERED: usize = 100_000;
/// Bars of context feature values kept per instrument.
const FEATURE_HISTORY: usize = 4_096;

/// Context feature values by name.
type Values = FxHashMap<String, f64>;

/// The key of a strategy's updates for an instrument on `param.updates`.
pub fn update_key(strategy: &str, instrument: &str) -> String {
    format!("{strategy}/{instrument}")
}

fn config_id(strategy: &str, instrument: &str, ts: i64, preset: &str) -> String {
    let h = Sha256::digest(format!("{strategy}\u{0}{instrument}\u{0}{ts}\u{0}{preset}"));
    format!("cfg-{}", hex::encode(&h[..8]))
}

/// The schemas of the strategies `config` controls (`strategies`, or all):
/// what an engine trading on its updates waits for.
pub fn controlled(mut schemas: Vec<StrategySchema>, config: &ParamsConfig) -> Vec<StrategySchema> {
    if !config.strategies.is_empty() {
        schemas.retain(|s| config.strategies.contains(&s.name));
    }
    schemas
}

impl Controller {
    pub fn new(config: ParamsConfig, schemas: Vec<StrategySchema>) -> Self {
        let schemas = controlled(schemas, &config);
        Controller {
            config,
            schemas,
            slots: BTreeMap::new(),
            features: FxHashMap::default(),
            regimes: FxHashMap::default(),
            regime_ts: FxHashMap::default(),
            decisions: FxHashMap::default(),
            order: VecDeque::new(),
            scratch: Scratch::default(),
            stats: ParamsStats::default(),
        }
    }

    pub fn config(&self) -> &ParamsConfig {
        &self.config
    }

    pub fn schemas(&self) -> &[StrategySchema] {
        &self.schemas
    }

    pub fn slot(&self, strategy: &str, instrument: &str) -> Option<&Slot> {
        self.slots
            .get(&(strategy.to_string(), instrument.to_string()))
    }

    pub fn slots(&self) -> impl Iterator<Item = (&(String, String), &Slot)> {
        self.slots.iter()
    }

    fn schema_index(&self, strategy: &str) -> Option<usize> {
        self.schemas.iter().position(|s| s.name == strategy)
    }

    fn dim(&self, schema: usize) -> usize {
        1 + self.config.regimes + self.schemas[schema].context_features.len()
    }

    fn slot_mut(&mut self, schema: usize, instrument: &str) -> &mut Slot {
        let key = (self.schemas[schema].name.clone(), instrument.to_string());
        let (arms, d) = (self.schemas[schema].presets.len(), self.dim(schema));
        let spec = self.config.policy.clone();
        self.slots.entry(key).or_insert_with(|| Slot {
            policy: Policy::new(&spec, arms, d),
            current: None,
            day: i64::MIN,
            changes_today: 0,
            realised: 0.0,
            peak: 0.0,
            killed: false,
            registered: Vec::new(),
            budget: Budget::default(),
            since: i64::MIN,
        })
    }

    /// Preset `arm` of a strategy's slot for an instrument.
    fn preset(&self, schema: usize, instrument: &str, arm: usize) -> &Preset {
        let own = &self.schemas[schema].presets;
        match own.get(arm) {
            Some(p) => p,
            None => {
                &self
                    .slots
                    .get(&(self.schemas[schema].name.clone(), instrument.to_string()))
                    .expect("arms beyond the schema's are registered on the slot")
                    .registered[arm - own.len()]
            }
        }
    }

    /// The arm of preset `id` for (strategy, instrument).
    fn arm_of(&self, schema: usize, instrument: &str, id: &str) -> Option<usize> {
        let own = &self.schemas[schema].presets;
        own.iter().position(|p| p.id == id).or_else(|| {
            self.slots
                .get(&(self.schemas[schema].name.clone(), instrument.to_string()))?
                .registered
                .iter()
                .position(|p| p.id == id)
                .map(|i| own.len() + i)
        })
    }

    /// Every preset of (strategy, instrument): the schema's, then the
    /// registered ones.
    pub fn presets(&self, strategy: &str, instrument: &str) -> Option<Vec<&Preset>> {
        let schema = self.schema_index(strategy)?;
        let mut all: Vec<&Preset> = self.schemas[schema].presets.iter().collect();
        if let Some(slot) = self.slot(strategy, instrument) {
            all.extend(slot.registered.iter());
        }
        Some(all)
    }

    /// Checks a preset for registration on (strategy, instrument) without
    /// registering it: within the bounds, not safe, a new id.
    pub fn check_registration(
        &self,
        strategy: &str,
        instrument: &str,
        preset: &Preset,
    ) -> Result<(), String> {
        let i = self
            .schema_index(strategy)
            .ok_or_else(|| format!("unknown strategy {strategy:?}"))?;
        self.schemas[i].check_preset(preset)?;
        if preset.safe {
            return Err("a registered preset cannot replace the safe one".into());
        }
        if self.arm_of(i, instrument, &preset.id).is_some() {
            return Err(format!(
                "preset {:?} exists for {strategy} on {instrument}",
                preset.id
            ));
        }
        Ok(())
    }

    /// A preset registered at run time (`param.presets`) becomes a new arm
    /// of (strategy, instrument)'s policy, with the prior's belief.
    pub fn register_preset(
        &mut self,
        strategy: &str,
        instrument: &str,
        preset: Preset,
    ) -> Result<(), String> {
        self.check_registration(strategy, instrument, &preset)?;
        let i = self.schema_index(strategy).expect("checked");
        let slot = self.slot_mut(i, instrument);
        slot.registered.push(preset);
        slot.policy.add_arm();
        Ok(())
    }

    pub fn on_features(&mut self, v: &FeatureVector) {
        let wanted: Vec<&str> = self
            .schemas
            .iter()
            .flat_map(|s| s.context_features.iter().map(|f| f.name.as_str()))
            .collect();
        let history = self.features.entry(v.instrument.clone()).or_default();
        let mut now = history.back().map(|(_, m)| m.clone()).unwrap_or_default();
        for f in &v.values {
            if let Some(x) = f.value.filter(|x| x.is_finite()) {
                if wanted.contains(&f.name.as_str()) {
                    now.insert(f.name.clone(), x);
                }
            }
        }
        // Bars arrive in time order per instrument; a late correction of an
        // older bar only updates the values from then on.
        let at = history.partition_point(|(ts, _)| *ts <= v.ts);
        if at > 0 && history[at - 1].0 == v.ts {
            history[at - 1].1 = now;
        } else {
            history.insert(at, (v.ts, now));
        }
        while history.len() > FEATURE_HISTORY {
            history.pop_front();
        }
    }

    /// The context values of an instrument as of `ts` (None: the newest).
    fn features_at(&self, instrument: &str, ts: Option<i64>) -> Option<&Values> {
        let history = self.features.get(instrument)?;
        match ts {
            None => history.back().map(|(_, m)| m),
            Some(ts) => {
                let at = history.partition_point(|(t, _)| *t <= ts);
                history.get(at.checked_sub(1)?).map(|(_, m)| m)
            }
        }
    }

    /// The context of a strategy's decision for an instrument.
    pub fn context(&self, schema: usize, p: &RegimePosterior) -> Vec<f64> {
        let mut x = Vec::with_capacity(self.dim(schema));
        x.push(1.0);
        for r in 0..self.config.regimes {
            x.push(p.probabilities.get(r).copied().unwrap_or(0.0));
        }
        self.push_features(schema, &p.instrument, Some(p.ts), &BTreeMap::new(), &mut x);
        x
    }

    /// Appends the scaled context features: `given` values first, then the
    /// instrument's as of `ts` (None: the newest), else the feature's
    /// centre.
    fn push_features(
        &self,
        schema: usize,
        instrument: &str,
        ts: Option<i64>,
        given: &BTreeMap<String, f64>,
        x: &mut Vec<f64>,
    ) {
        let known = self.features_at(instrument, ts);
        for f in &self.schemas[schema].context_features {
            let v = given
                .get(&f.name)
                .or_else(|| known.and_then(|k| k.get(&f.name)))
                .copied()
                .unwrap_or(f.center);
            x.push(((v - f.center) / f.scale).clamp(-5.0, 5.0));
        }
    }

    /// The (strategy, instrument, context) of a recent decision.
    pub fn decision(&self, config_id: &str) -> Option<(&str, &str, &[f64])> {
        self.decisions
            .get(config_id)
            .map(|(s, i, _, x)| (s.as_str(), i.as_str(), x.as_slice()))
    }

    /// The context feature names of a strategy.
    pub fn context_features(&self, strategy: &str) -> Option<Vec<&str>> {
        let i = self.schema_index(strategy)?;
        Some(
            self.schemas[i]
                .context_features
                .iter()
                .map(|f| f.name.as_str())
                .collect(),
        )
    }

    /// The length of a strategy's decision context.
    pub fn context_len(&self, strategy: &str) -> Option<usize> {
        self.schema_index(strategy).map(|i| self.dim(i))
    }

    /// What the policy of (strategy, instrument) would choose now for the
    /// latest regime probabilities and the given feature values (others:
    /// the latest seen): a read, changing nothing. Sampling is seeded from
    /// (seed, strategy, instrument, context), so the same question gets the
    /// same answer until the policy learns.
    pub fn advise(
        &self,
        strategy: &str,
        instrument: &str,
        given: &BTreeMap<String, f64>,
    ) -> Result<Advice, String> {
        let schema = self
            .schema_index(strategy)
            .ok_or_else(|| format!("unknown strategy {strategy:?}"))?;
        if let Some(unknown) = given.keys().find(|k| {
            !self.schemas[schema]
                .context_features
                .iter()
                .any(|f| &f.name == *k)
        }) {
            return Err(format!(
                "{strategy} has no context feature {unknown:?} (it has {:?})",
                self.context_features(strategy).unwrap_or_default()
            ));
        }
        if let Some((k, v)) = given.iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("feature {k} = {v} is not a number"));
        }
        let mut x = Vec::with_capacity(self.dim(schema));
        x.push(1.0);
        let probs = self.regimes.get(instrument);
        for r in 0..self.config.regimes {
            x.push(probs.and_then(|p| p.get(r)).copied().unwrap_or(0.0));
        }
        self.push_features(schema, instrument, None, given, &mut x);
        let mut h = Sha256::new();
        h.update(format!(
            "{}\u{0}{strategy}\u{0}{instrument}",
            self.config.seed
        ));
        for v in &x {
            h.update(v.to_le_bytes());
        }
        let digest = h.finalize();
        let mut rng =
            ChaCha8Rng::seed_from_u64(u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8])));
        let slot = self.slot(strategy, instrument);
        let fresh;
        let policy = match slot {
            Some(s) => &s.policy,
            None => {
                fresh = Policy::new(
                    &self.config.policy,
                    self.schemas[schema].presets.len(),
                    self.dim(schema),
                );
                &fresh
            }
        };
        let scores = policy.scores(&x, &mut rng, &mut Scratch::default());
        let best = argmax(&scores);
        let preset = self.preset(schema, instrument, best);
        let arms = self.presets(strategy, instrument).unwrap_or_default();
        Ok(Advice {
            strategy: strategy.to_string(),
            instrument: instrument.to_string(),
            config_id: format!("adv-{}", hex::encode(&digest[8..16])),
            preset_id: preset.id.clone(),
            params: preset.values.clone(),
            context: x,
            scores: arms
                .iter()
                .zip(&scores)
                .map(|(p, s)| (p.id.clone(), *s))
                .collect(),
            in_force: slot
                .and_then(|s| s.current.as_ref())
                .map(|(arm, _)| self.preset(schema, instrument, *arm).id.clone()),
            kill_switch: slot.is_some_and(|s| s.killed),
        })
    }

    fn remember(&mut self, id: &str, strategy: &str, instrument: &str, arm: usize, x: &[f64]) {
        self.decisions.insert(
            id.to_string(),
            (
                strategy.to_string(),
                instrument.to_string(),
                arm,
                x.to_vec(),
            ),
        );
        self.order.push_back(id.to_string());
        while self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.decisions.remove(&old);
            }
        }
    }

    /// The update putting preset `arm` in force.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        schema: usize,
        instrument: &str,
        arm: usize,
        reason: UpdateReason,
        id: &str,
        x: &[f64],
        at: i64,
        model: Option<(&str, i32)>,
    ) -> ParamUpdate {
        let preset = self.preset(schema, instrument, arm);
        ParamUpdate {
            strategy: self.schemas[schema].name.clone(),
            instrument: instrument.to_string(),
            config_id: id.to_string(),
            preset_id: preset.id.clone(),
            params: preset
                .values
                .iter()
                .map(|(name, value)| ParamValue {
                    name: name.clone(),
                    value: *value,
                })
                .collect(),
            model_key: model.map(|(k, _)| k.to_string()),
            model_version: model.map(|(_, v)| v),
            reason,
            effective_for: Effective::NewPositions,
            context: x.to_vec(),
            at,
            actor: None,
            note: None,
        }
    }

    /// Notes an instrument's latest regime probabilities (the context of
    /// [`Controller::advise`]) without deciding.
    pub fn observe_regime(&mut self, p: &RegimePosterior) {
        let ts = self.regime_ts.entry(p.instrument.clone()).or_insert(p.ts);
        *ts = (*ts).max(p.ts);
        match self.regimes.get_mut(&p.instrument) {
            Some(probs) => probs.clone_from(&p.probabilities),
            None => {
                self.regimes
                    .insert(p.instrument.clone(), p.probabilities.clone());
            }
        }
    }

    /// One bar's regime posterior: a decision per strategy; the updates to
    /// publish.
    pub fn on_regime(&mut self, p: &RegimePosterior) -> Vec<ParamUpdate> {
        let mut out = Vec::new();
        self.observe_regime(p);
        for schema in 0..self.schemas.len() {
            self.stats.decisions += 1;
            let x = self.context(schema, p);
            let name = self.schemas[schema].name.clone();
            let seed = {
                let h = Sha256::digest(format!(
                    "{}\u{0}{name}\u{0}{}\u{0}{}",
                    self.config.seed, p.instrument, p.ts
                ));
                u64::from_le_bytes(h[..8].try_into().unwrap_or([0; 8]))
            };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (hysteresis, limit) = (self.config.hysteresis, self.config.max_changes_per_day);
            let (conservative, alpha, z) = (
                self.config.conservative,
                self.config.conservative_alpha,
                self.config.conservative_z,
            );
            let safe = self.schemas[schema].safe_preset();
            let mut scratch = std::mem::take(&mut self.scratch);
            let slot = self.slot_mut(schema, &p.instrument);
            let scores = slot.policy.scores(&x, &mut rng, &mut scratch);
            let best = argmax(&scores);
            let greedy = match &slot.policy {
                Policy::LinTs(l) => argmax(&l.means(&x)),
                _ => best,
            };
            let day = p.ts.div_euclid(DAY_MS);
            if slot.day != day {
                slot.day = day;
                slot.changes_today = 0;
            }
            // Another preset, chosen now or in force, must be covered.
            let covered = !conservative || slot.covered(safe, p.ts, alpha, z);
            let choice = if covered { best } else { safe };
            let decision = match &slot.current {
                _ if slot.killed => {
                    self.stats.held_by_kill_switch += 1;
                    None
                }
                None => Some(UpdateReason::Initial),
                Some((cur, _)) if *cur == choice => {
                    self.stats.held_by_budget += u64::from(!covered && best != safe);
                    None
                }
                // Back to safety at once, whatever the hysteresis or the
                // day's changes.
                Some(_) if !covered => {
                    self.stats.held_by_budget += 1;
                    self.stats.conservative_fallbacks += 1;
                    Some(UpdateReason::Conservative)
                }
                Some((cur, _)) if scores[best] - scores[*cur] < hysteresis => {
                    self.stats.held_by_hysteresis += 1;
                    None
                }
                Some(_) if slot.changes_today >= limit => {
                    self.stats.held_by_daily_limit += 1;
                    None
                }
                Some(_) if best == greedy => Some(UpdateReason::Exploitation),
                Some(_) => Some(UpdateReason::Exploration),
            };
            self.scratch = scratch;
            if let Some(reason) = decision {
                let id = config_id(
                    &name,
                    &p.instrument,
                    p.ts,
                    &self.preset(schema, &p.instrument, choice).id,
                );
                let slot = self.slot_mut(schema, &p.instrument);
                if matches!(
                    reason,
                    UpdateReason::Exploration | UpdateReason::Exploitation
                ) {
                    slot.changes_today += 1;
                }
                slot.current = Some((choice, id.clone()));
                slot.since = p.ts;
                self.remember(&id, &name, &p.instrument, choice, &x);
                out.push(self.update(
                    schema,
                    &p.instrument,
                    choice,
                    reason,
                    &id,
                    &x,
                    p.ts,
                    Some((&p.model_key, p.model_version)),
                ));
                self.stats.published += 1;
            }
        }
        out
    }

    /// A realised reward: the policy learns; the kill-switch may trip (then
    /// the safe preset is published).
    pub fn on_outcome(&mut self, o: &TradeOutcome) -> Result<Vec<ParamUpdate>, String> {
        self.on_outcome_at(o, o.ts)
    }

    /// The checks [`Controller::on_outcome`] makes, without learning.
    pub fn check_outcome(&self, o: &TradeOutcome) -> Result<(), String> {
        let schema = self
            .schema_index(&o.strategy)
            .ok_or_else(|| format!("unknown strategy {:?}", o.strategy))?;
        if self.arm_of(schema, &o.instrument, &o.preset_id).is_none() {
            return Err(format!(
                "{} on {}: unknown preset {:?}",
                o.strategy, o.instrument, o.preset_id
            ));
        }
        check_rewards(o)?;
        let d = self.dim(schema);
        if o.context.len() != d && !self.decisions.contains_key(&o.config_id) {
            return Err(format!(
                "outcome {}: context of {} value(s) (expected {d}) and config {} unknown",
                o.trade_id,
                o.context.len(),
                o.config_id
            ));
        }
        Ok(())
    }

    /// [`Controller::on_outcome`] learnt at bar `at` (a kill-switch it
    /// trips publishes the safe preset from `at`).
    pub fn on_outcome_at(&mut self, o: &TradeOutcome, at: i64) -> Result<Vec<ParamUpdate>, String> {
        let schema = self
            .schema_index(&o.strategy)
            .ok_or_else(|| format!("unknown strategy {:?}", o.strategy))?;
        let arm = self
            .arm_of(schema, &o.instrument, &o.preset_id)
            .ok_or_else(|| {
                format!(
                    "{} on {}: unknown preset {:?}",
                    o.strategy, o.instrument, o.preset_id
                )
            })?;
        check_rewards(o)?;
        let d = self.dim(schema);
        let context = if o.context.len() == d {
            o.context.clone()
        } else if let Some((_, _, _, x)) = self.decisions.get(&o.config_id) {
            x.clone()
        } else {
            return Err(format!(
                "outcome {}: context of {} value(s) (expected {d}) and config {} unknown",
                o.trade_id,
                o.context.len(),
                o.config_id
            ));
        };
        self.stats.outcomes += 1;
        let limit = self.config.kill_switch_drawdown;
        let safe = self.schemas[schema].safe_preset();
        let slot = self.slot_mut(schema, &o.instrument);
        if !o.flat {
            slot.policy.update(arm, &context, o.reward);
        }
        slot.budget.fold(o, arm == safe);
        slot.realised += o.reward;
        slot.peak = slot.peak.max(slot.realised);
        if slot.killed || slot.peak - slot.realised <= limit {
            return Ok(Vec::new());
        }
        slot.killed = true;
        self.stats.kill_switches += 1;
        let id = config_id(&o.strategy, &o.instrument, o.ts, "kill-switch");
        let slot = self.slot_mut(schema, &o.instrument);
        slot.current = Some((safe, id.clone()));
        slot.since = at;
        self.remember(&id, &o.strategy, &o.instrument, safe, &context);
        self.stats.published += 1;
        Ok(vec![self.update(
            schema,
            &o.instrument,
            safe,
            UpdateReason::KillSwitch,
            &id,
            &context,
            at,
            None,
        )])
    }

    /// Ops' reset of a tripped kill-switch: a `manual` update keeping the
    /// preset in force (the safe one) from the bar after the newest
    /// posterior seen for the instrument; the controller chooses again
    /// from there, its drawdown measured from the reward at that point.
    pub fn resume(
        &self,
        strategy: &str,
        instrument: &str,
        actor: &str,
        note: &str,
    ) -> Result<ParamUpdate, ResumeError> {
        let schema = self
            .schema_index(strategy)
            .ok_or_else(|| ResumeError::NoStrategy(strategy.to_string()))?;
        let slot = self
            .slot(strategy, instrument)
            .filter(|s| s.killed)
            .ok_or_else(|| ResumeError::NotHeld {
                strategy: strategy.to_string(),
                instrument: instrument.to_string(),
            })?;
        let arm = slot
            .current
            .as_ref()
            .map_or_else(|| self.schemas[schema].safe_preset(), |(arm, _)| *arm);
        let at = self
            .regime_ts
            .get(instrument)
            .map_or(0, |t| t.saturating_add(1));
        let id = config_id(strategy, instrument, at, "resume");
        let mut u = self.update(
            schema,
            instrument,
            arm,
            UpdateReason::Manual,
            &id,
            &[],
            at,
            None,
        );
        u.actor = Some(actor.to_string());
        u.note = Some(note.to_string());
        Ok(u)
    }

    /// An update on `param.updates`: ops' `manual` updates set the preset
    /// and reset the kill-switch; the controller's own (on restore) set
    /// what is in force, a `kill_switch` one marks the slot held.
    pub fn on_update(&mut self, u: &ParamUpdate) {
        let Some(schema) = self.schema_index(&u.strategy) else {
            return;
        };
        let Some(arm) = self.arm_of(schema, &u.instrument, &u.preset_id) else {
            return;
        };
        let d = self.dim(schema);
        if u.context.len() == d {
            self.remember(&u.config_id, &u.strategy, &u.instrument, arm, &u.context);
        }
        let slot = self.slot_mut(schema, &u.instrument);
        slot.current = Some((arm, u.config_id.clone()));
        slot.since = u.at;
        if matches!(
            u.reason,
            UpdateReason::Exploration | UpdateReason::Exploitation
        ) {
            // A change the controller made (folded on restore): it counts
            // against the daily limit of its bar's day.
            let day = u.at.div_euclid(DAY_MS);
            if slot.day != day {
                slot.day = day;
                slot.changes_today = 0;
            }
            slot.changes_today += 1;
        }
        match u.reason {
            UpdateReason::Manual => {
                slot.killed = false;
                slot.peak = slot.realised;
            }
            // A replica folding what was published (the API, the CLI)
            // knows the kill-switch holds without re-learning outcomes.
            UpdateReason::KillSwitch => slot.killed = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::FeatureValue;

    fn schemas() -> Vec<StrategySchema> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../strategy_schemas");
        StrategySchema::load_dir(&dir).expect("schemas")
    }

    fn posterior(ts: i64, calm: f64) -> RegimePosterior {
        RegimePosterior {
            instrument: "x:A".into(),
            timeframe: "30m".into(),
            ts,
            model_key: "hmm/x:A".into(),
            model_version: 1,
            probabilities: vec![calm, 1.0 - calm, 0.0],
            regime: i32::from(calm < 0.5),
            loglik: 0.0,
            features: Vec::new(),
        }
    }

    fn outcome(u: &ParamUpdate, reward: f64, ts: i64) -> TradeOutcome {
        TradeOutcome {
            trade_id: format!("t{ts}"),
            strategy: u.strategy.clone(),
            instrument: u.instrument.clone(),
            config_id: u.config_id.clone(),
            preset_id: u.preset_id.clone(),
            reward,
            context: u.context.clone(),
            ts,
            baseline_reward: None,
            flat: false,
        }
    }

    fn only(name: &str) -> ParamsConfig {
        ParamsConfig {
            strategies: vec![name.into()],
            ..ParamsConfig::default()
        }
    }

    #[test]
    fn decisions_publish_only_changes_and_the_daily_limit_holds() {
        let mut c = Controller::new(
            ParamsConfig {
                hysteresis: 0.0,
                max_changes_per_day: 2,
                conservative: false,
                ..only("momentum_breakout")
            },
            schemas(),
        );
        c.on_features(&FeatureVector {
            instrument: "x:A".into(),
            timeframe: "30m".into(),
            ts: 0,
            contract_version: "1".into(),
            bar_revision: 0,
            values: vec![FeatureValue {
                name: "rsi_14".into(),
                value: Some(70.0),
            }],
        });
        let first = c.on_regime(&posterior(0, 0.9));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].reason, UpdateReason::Initial);
        assert_eq!(first[0].context.len(), 1 + 4 + 3);
        assert!(
            (first[0].context[6] - 1.0).abs() < 1e-12,
            "rsi 70 scaled: {:?}",
            first[0].context
        );
        // With no evidence the choice wanders; the limit caps the changes
        // within one day of event time.
        let mut changes = 0;
        for t in 1..48 {
            changes += c.on_regime(&posterior(t * 1_800_000, 0.9)).len();
        }
        assert_eq!(changes, 2);
        assert!(c.stats.held_by_daily_limit > 0);
    }

    #[test]
    fn a_decision_reads_the_features_of_its_own_bar() {
        let mut c = Controller::new(only("momentum_breakout"), schemas());
        for (ts, rsi) in [(0, 30.0), (1_800_000, 70.0)] {
            c.on_features(&FeatureVector {
                instrument: "x:A".into(),
                timeframe: "30m".into(),
                ts,
                contract_version: "1".into(),
                bar_revision: 0,
                values: vec![FeatureValue {
                    name: "rsi_14".into(),
                    value: Some(rsi),
                }],
            });
        }
        // The posterior of bar 0 arrives after bar 1's features.
        let u = c.on_regime(&posterior(0, 0.9)).remove(0);
        assert!(
            (u.context[6] + 1.0).abs() < 1e-12,
            "rsi 30: {:?}",
            u.context
        );
        let a = c
            .advise("momentum_breakout", "x:A", &BTreeMap::new())
            .expect("advice");
        assert!(
            (a.context[6] - 1.0).abs() < 1e-12,
            "newest: {:?}",
            a.context
        );
    }

    fn cfg_kill() -> ParamsConfig {
        ParamsConfig {
            kill_switch_drawdown: 3.0,
            ..only("trend_following")
        }
    }

    #[test]
    fn learning_is_a_fold_over_outcomes_and_the_kill_switch_publishes_safe() {
        let cfg = cfg_kill();
        let mut c = Controller::new(cfg.clone(), schemas());
        let u = c.on_regime(&posterior(0, 0.2)).remove(0);
        let outcomes: Vec<TradeOutcome> = (0..5)
            .map(|i| outcome(&u, if i < 2 { 1.0 } else { -1.5 }, i))
            .collect();
        let mut published = Vec::new();
        for o in &outcomes {
            published.extend(c.on_outcome(o).expect("learns"));
        }
        // Peak 2.0, then 2 - 4.5 = -2.5: drawdown 4.5 > 3 trips once.
        assert_eq!(published.len(), 1);
        assert_eq!(published[0].reason, UpdateReason::KillSwitch);
        assert_eq!(published[0].preset_id, "safe");
        assert!(c.on_regime(&posterior(9_000_000, 0.2)).is_empty(), "frozen");
        // Another controller fed the same outcomes has the same policy.
        let mut again = Controller::new(cfg, schemas());
        for o in &outcomes {
            again.on_outcome(o).expect("learns");
        }
        assert_eq!(
            again.slot("trend_following", "x:A").map(|s| &s.policy),
            c.slot("trend_following", "x:A").map(|s| &s.policy)
        );
        // A replica folding only what was published knows it holds.
        let mut replica = Controller::new(cfg_kill(), schemas());
        replica.on_update(&u);
        assert!(matches!(
            replica.resume("trend_following", "x:A", "api:ops", "why"),
            Err(ResumeError::NotHeld { .. })
        ));
        replica.on_update(&published[0]);
        assert!(replica
            .slot("trend_following", "x:A")
            .is_some_and(|s| s.killed));
        assert!(matches!(
            c.resume("nope", "x:A", "api:ops", "why"),
            Err(ResumeError::NoStrategy(_))
        ));
        // Ops reset it: a manual update from the bar after the newest
        // posterior, with who and why, keeping the safe preset.
        let manual = c
            .resume("trend_following", "x:A", "api:ops", "drawdown reviewed")
            .expect("held");
        assert_eq!(
            (manual.reason, manual.at, manual.preset_id.as_str()),
            (UpdateReason::Manual, 9_000_001, "safe")
        );
        assert_eq!(
            (manual.actor.as_deref(), manual.note.as_deref()),
            (Some("api:ops"), Some("drawdown reviewed"))
        );
        c.on_update(&manual);
        assert!(!c.slot("trend_following", "x:A").is_some_and(|s| s.killed));
        // Nonsense is refused with the reason.
        let mut bad = outcomes[0].clone();
        bad.preset_id = "yolo".into();
        assert!(c.on_outcome(&bad).unwrap_err().contains("unknown preset"));
        bad.preset_id = "safe".into();
        bad.context = vec![1.0];
        bad.config_id = "cfg-unknown".into();
        assert!(c.on_outcome(&bad).unwrap_err().contains("context"));
    }

    #[test]
    fn presets_registered_at_run_time_are_checked_and_become_arms() {
        let mut c = Controller::new(only("market_making"), schemas());
        c.on_regime(&posterior(0, 0.5));
        c.on_regime(&RegimePosterior {
            instrument: "x:B".into(),
            ..posterior(0, 0.5)
        });
        let p = Preset {
            id: "mid".into(),
            safe: false,
            values: [("half_spread_bps", 15.0), ("size", 0.5), ("skew", 0.3)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        let mut wild = p.clone();
        wild.values.insert("size".into(), 5.0);
        assert!(c
            .register_preset("market_making", "x:A", wild)
            .unwrap_err()
            .contains("size"));
        c.register_preset("market_making", "x:A", p.clone())
            .expect("valid");
        assert!(c
            .register_preset("market_making", "x:A", p)
            .unwrap_err()
            .contains("exists"));
        let arms = |i: &str| match &c.slot("market_making", i).expect("slot").policy {
            Policy::LinTs(l) => l.arms.len(),
            other => panic!("{other:?}"),
        };
        // An arm of x:A's policy only.
        assert_eq!((arms("x:A"), arms("x:B")), (4, 3));
        // It learns from outcomes and can be advised.
        let u = &c.on_regime(&posterior(1_800_000, 0.5));
        let mut o = TradeOutcome {
            trade_id: "t".into(),
            strategy: "market_making".into(),
            instrument: "x:A".into(),
            config_id: "cfg-x".into(),
            preset_id: "mid".into(),
            reward: 5.0,
            context: vec![1.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0],
            ts: 1,
            baseline_reward: None,
            flat: false,
        };
        assert!(u.len() <= 1);
        c.on_outcome(&o).expect("mid is an arm of x:A");
        o.instrument = "x:B".into();
        assert!(c.on_outcome(&o).unwrap_err().contains("unknown preset"));
        let a = c
            .advise("market_making", "x:A", &BTreeMap::new())
            .expect("advice");
        assert_eq!(a.scores.len(), 4);
        assert_eq!(
            c.advise("market_making", "x:A", &BTreeMap::new()),
            Ok(a),
            "the same question gets the same answer"
        );
        assert!(c
            .advise("market_making", "x:A", &[("nope".to_string(), 1.0)].into())
            .unwrap_err()
            .contains("no context feature"));
    }

    /// A seeded environment for one strategy and instrument: each preset
    /// earns a normal reward per bar around its mean (the safe one beside
    /// it every bar, as the engine scores it); outcomes are known the next
    /// bar. Returns the controller's and the safe preset's cumulative
    /// rewards, and the lowest margin over (1 − α) × safe seen on the way.
    fn conservative_run(means: &[f64], bars: i64, seed: u64) -> (f64, f64, f64) {
        use rand::Rng;
        let schema: Vec<StrategySchema> = schemas()
            .into_iter()
            .filter(|s| s.name == "trend_following")
            .collect();
        assert_eq!(schema[0].presets.len(), means.len());
        let safe = schema[0].safe_preset();
        let cfg = ParamsConfig {
            max_changes_per_day: 1_000,
            ..ParamsConfig::default()
        };
        let alpha = cfg.conservative_alpha;
        let mut c = Controller::new(cfg, schema);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let noise = |rng: &mut ChaCha8Rng| -> f64 {
            // Sum of uniforms: close enough to normal, sd 1.
            (0..12).map(|_| rng.random::<f64>()).sum::<f64>() - 6.0
        };
        let (mut policy, mut baseline, mut worst) = (0.0, 0.0, f64::INFINITY);
        let mut in_force: Option<ParamUpdate> = None;
        for bar in 0..bars {
            let ts = bar * 1_800_000;
            if let Some(u) = in_force.clone() {
                let arm = c
                    .slot("trend_following", "x:A")
                    .and_then(|s| s.current.clone())
                    .map(|(a, _)| a)
                    .unwrap_or(safe);
                let common = noise(&mut rng);
                let reward = means[arm] + common + 0.5 * noise(&mut rng);
                let safe_reward = if arm == safe {
                    reward
                } else {
                    means[safe] + common + 0.5 * noise(&mut rng)
                };
                policy += reward;
                baseline += safe_reward;
                let mut o = outcome(&u, reward, ts);
                o.trade_id = format!("t{bar}");
                o.baseline_reward = Some(safe_reward);
                c.on_outcome(&o).expect("outcome");
                worst = worst.min(policy - (baseline - alpha * baseline.abs()));
            }
            let calm = rng.random::<f64>();
            for u in c.on_regime(&posterior(ts, calm)) {
                in_force = Some(u);
            }
        }
        (policy, baseline, worst)
    }

    #[test]
    fn the_conservative_controller_stays_within_alpha_of_the_safe_preset_and_gets_ahead_when_it_can(
    ) {
        // The safe preset is the best arm: the others lose per bar.
        for seed in [1, 2, 3] {
            let (policy, baseline, worst) =
                conservative_run(&[0.10, -0.05, 0.02, -0.20], 20_000, seed);
            assert!(baseline > 0.0, "{baseline}");
            assert!(
                worst >= 0.0,
                "seed {seed}: fell below (1 − α) × safe by {worst} (policy {policy}, safe {baseline})"
            );
        }
        // Another preset is better: the budget pays for finding it, and the
        // controller ends ahead.
        for seed in [1, 2, 3] {
            let (policy, baseline, worst) =
                conservative_run(&[0.10, -0.05, 0.40, -0.20], 20_000, seed);
            assert!(worst >= 0.0, "seed {seed}: below by {worst}");
            assert!(
                policy > 1.5 * baseline,
                "seed {seed}: policy {policy} not ahead of safe {baseline}"
            );
        }
    }
}
