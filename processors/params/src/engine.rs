//! [`Engine`]: a simulated trading engine, for the demo, tests and
//! benchmarks. It keeps the latest `ParamUpdate` per strategy and
//! instrument (for new positions), opens a one-bar position on every bar
//! from the strategy's rule, its parameters and the bar's features, and
//! when the next bar closes posts the realised reward (percent of notional,
//! after costs) on `trade.outcomes` with the update's `config_id`, preset
//! and context. Beside it, the same rule under each strategy's fixed safe
//! preset is scored (`baseline_reward` in each outcome; a bar where only
//! the safe preset held a position is reported as a `flat` outcome), so
//! the controller's reward can be compared with never changing anything.
//!
//! Rules (features of the bar the position opens on; `lr` of the next):
//! - `momentum_breakout`: z = ret_mean_20 / (ret_std_20 / √20); side of z
//!   when |z| > entry_z, times `size`;
//! - `trend_following`: long `size` when ema_12 is above ema_26 by more
//!   than `band` (relative), short when below and `allow_short`;
//! - `market_making`: earns up to the half-spread of the move, loses half
//!   of the move beyond the full spread (inventory caught by a trend),
//!   leaning `skew` against the recent drift.

use std::collections::BTreeMap;

use autotrain_schemas::{FeatureVector, ParamUpdate, TradeOutcome};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::schema::StrategySchema;

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct EngineStats {
    pub trades: u64,
    /// Per strategy: (reward under the controller, under the safe preset).
    pub by_strategy: BTreeMap<String, (f64, f64)>,
    /// The same per instrument, then strategy: a walk-forward per
    /// instrument (every decision made on earlier bars only).
    pub by_instrument: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
    /// Per `strategy/preset`: (positions taken, their summed reward).
    pub by_preset: BTreeMap<String, (u64, f64)>,
    /// Summed reward of the positions taken under the controller's presets.
    pub reward_policy: f64,
    /// The same, had every strategy kept its safe preset.
    pub reward_safe_preset: f64,
    pub updates_applied: u64,
}

#[derive(Debug, Clone)]
struct Open {
    ts: i64,
    /// Sign of the 20-bar drift when the position opened.
    drift: f64,
    position: f64,
    safe_position: f64,
    kind: Kind,
    params: Params,
    safe_params: Params,
    update: ParamUpdate,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Momentum,
    Trend,
    MarketMaking,
    Other,
}

type Params = FxHashMap<String, f64>;

#[derive(Debug)]
pub struct Engine {
    schemas: Vec<StrategySchema>,
    cost_bps: f64,
    current: FxHashMap<(String, String), ParamUpdate>,
    /// Updates decided on bars this engine has not reached yet (they apply
    /// from their bar on: the replay runs faster than real time).
    pending: FxHashMap<(String, String), std::collections::VecDeque<ParamUpdate>>,
    open: FxHashMap<(String, String), Open>,
    last_ts: FxHashMap<String, i64>,
    /// Sums per (strategy, instrument), each added in its bars' order;
    /// [`Engine::stats`] adds them up in key order, so the totals do not
    /// depend on how the instruments' bars interleaved.
    ledger: BTreeMap<(String, String), Ledger>,
    updates_applied: u64,
}

#[derive(Debug, Default)]
struct Ledger {
    trades: u64,
    policy: f64,
    safe: f64,
    by_preset: BTreeMap<String, (u64, f64)>,
}

fn feature(v: &FeatureVector, name: &str) -> Option<f64> {
    v.values
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| f.value)
        .filter(|x| x.is_finite())
}

fn kind(strategy: &str) -> Kind {
    match strategy {
        "momentum_breakout" => Kind::Momentum,
        "trend_following" => Kind::Trend,
        "market_making" => Kind::MarketMaking,
        _ => Kind::Other,
    }
}

/// The position a rule takes on bar `v`.
fn position(kind: Kind, p: &Params, v: &FeatureVector) -> f64 {
    let get = |n: &str| p.get(n).copied().unwrap_or(0.0);
    match kind {
        Kind::Momentum => {
            let (Some(m), Some(s)) = (feature(v, "ret_mean_20"), feature(v, "ret_std_20")) else {
                return 0.0;
            };
            if s <= 0.0 {
                return 0.0;
            }
            let z = m / (s / 20f64.sqrt());
            if z.abs() > get("entry_z") {
                z.signum() * get("size")
            } else {
                0.0
            }
        }
        Kind::Trend => {
            let (Some(fast), Some(slow)) = (feature(v, "ema_12"), feature(v, "ema_26")) else {
                return 0.0;
            };
            if slow <= 0.0 {
                return 0.0;
            }
            let diff = (fast - slow) / slow;
            if diff > get("band") {
                get("size")
            } else if diff < -get("band") && get("allow_short") >= 0.5 {
                -get("size")
            } else {
                0.0
            }
        }
        // Market making always quotes; the size is its exposure.
        Kind::MarketMaking => get("size"),
        Kind::Other => 0.0,
    }
}

/// Reward in percent of notional over the next bar's log return `r`.
fn reward(kind: Kind, p: &Params, drift: f64, pos: f64, r: f64, cost_bps: f64) -> f64 {
    let gross = match kind {
        Kind::MarketMaking => {
            let hs = p.get("half_spread_bps").copied().unwrap_or(0.0) / 10_000.0;
            let lean = -p.get("skew").copied().unwrap_or(0.0) * drift;
            pos * (r.abs().min(hs) - 0.5 * (r.abs() - 2.0 * hs).max(0.0) + lean * r)
        }
        _ => pos * r,
    };
    100.0 * (gross - pos.abs() * cost_bps / 10_000.0)
}

fn params_of(u: &ParamUpdate) -> Params {
    u.params.iter().map(|p| (p.name.clone(), p.value)).collect()
}

impl Engine {
    pub fn new(schemas: Vec<StrategySchema>, cost_bps: f64) -> Self {
        Engine {
            schemas,
            cost_bps,
            current: FxHashMap::default(),
            pending: FxHashMap::default(),
            open: FxHashMap::default(),
            last_ts: FxHashMap::default(),
            ledger: BTreeMap::new(),
            updates_applied: 0,
        }
    }

    /// Trades and rewards so far, summed in (strategy, instrument) order.
    pub fn stats(&self) -> EngineStats {
        let mut s = EngineStats {
            updates_applied: self.updates_applied,
            ..EngineStats::default()
        };
        for ((strategy, instrument), l) in &self.ledger {
            s.by_instrument
                .entry(instrument.clone())
                .or_default()
                .insert(strategy.clone(), (l.policy, l.safe));
            s.trades += l.trades;
            s.reward_policy += l.policy;
            s.reward_safe_preset += l.safe;
            let per = s.by_strategy.entry(strategy.clone()).or_default();
            per.0 += l.policy;
            per.1 += l.safe;
            for (preset, (n, r)) in &l.by_preset {
                let p = s
                    .by_preset
                    .entry(format!("{strategy}/{preset}"))
                    .or_default();
                p.0 += n;
                p.1 += r;
            }
        }
        s
    }

    /// The strategies it trades.
    pub fn strategies(&self) -> Vec<String> {
        self.schemas.iter().map(|s| s.name.clone()).collect()
    }

    /// New parameters, for positions opened on bars from the update's
    /// time on.
    pub fn on_update(&mut self, u: &ParamUpdate) {
        self.updates_applied += 1;
        let key = (u.strategy.clone(), u.instrument.clone());
        let reached = self.last_ts.get(&u.instrument).is_some_and(|t| u.at <= *t);
        if reached {
            self.current.insert(key, u.clone());
        } else {
            let q = self.pending.entry(key).or_default();
            let at = q.partition_point(|p| p.at <= u.at);
            q.insert(at, u.clone());
        }
    }

    fn safe_params(&self, strategy: &str) -> Params {
        self.schemas
            .iter()
            .find(|s| s.name == strategy)
            .map(|s| {
                s.presets[s.safe_preset()]
                    .values
                    .iter()
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A bar closed: settle the positions opened on the previous bar, open
    /// new ones. Returns the outcomes of positions that were not flat.
    pub fn on_bar(&mut self, v: &FeatureVector) -> Vec<TradeOutcome> {
        if self.last_ts.get(&v.instrument).is_some_and(|t| v.ts <= *t) {
            return Vec::new();
        }
        self.last_ts.insert(v.instrument.clone(), v.ts);
        let r = feature(v, "lr").unwrap_or(0.0);
        let mut out = Vec::new();
        let keys: Vec<(String, String)> = self
            .open
            .keys()
            .filter(|(_, i)| *i == v.instrument)
            .cloned()
            .collect();
        for key in keys {
            let Some(o) = self.open.remove(&key) else {
                continue;
            };
            let policy = reward(o.kind, &o.params, o.drift, o.position, r, self.cost_bps);
            let safe = reward(
                o.kind,
                &o.safe_params,
                o.drift,
                o.safe_position,
                r,
                self.cost_bps,
            );
            let l = self.ledger.entry(key.clone()).or_default();
            l.safe += safe;
            let flat = o.position == 0.0;
            if !flat {
                l.trades += 1;
                l.policy += policy;
                let p = l
                    .by_preset
                    .entry(o.update.preset_id.to_string())
                    .or_default();
                p.0 += 1;
                p.1 += policy;
            }
            // A flat position is reported too when the safe preset held
            // one: the controller's conservative budget counts what it
            // would have earned.
            if !flat || o.safe_position != 0.0 {
                out.push(TradeOutcome {
                    trade_id: format!("{}/{}/{}", key.0, key.1, o.ts),
                    strategy: key.0.clone(),
                    instrument: key.1.clone(),
                    config_id: o.update.config_id.clone(),
                    preset_id: o.update.preset_id.clone(),
                    reward: if flat { 0.0 } else { policy },
                    context: o.update.context.clone(),
                    ts: v.ts,
                    baseline_reward: Some(safe),
                    flat,
                });
            }
        }
        let strategies: Vec<String> = self.schemas.iter().map(|s| s.name.clone()).collect();
        for strategy in strategies {
            let key = (strategy.clone(), v.instrument.clone());
            if let Some(q) = self.pending.get_mut(&key) {
                while q.front().is_some_and(|u| u.at <= v.ts) {
                    if let Some(u) = q.pop_front() {
                        self.current.insert(key.clone(), u);
                    }
                }
            }
            let Some(update) = self.current.get(&key).cloned() else {
                continue;
            };
            let k = kind(&strategy);
            let params = params_of(&update);
            let safe_params = self.safe_params(&strategy);
            self.open.insert(
                key,
                Open {
                    ts: v.ts,
                    drift: feature(v, "ret_mean_20").map_or(0.0, f64::signum),
                    position: position(k, &params, v),
                    safe_position: position(k, &safe_params, v),
                    kind: k,
                    params,
                    safe_params,
                    update,
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::{Effective, FeatureValue, ParamValue, UpdateReason};

    fn bar(ts: i64, lr: f64, fast: f64) -> FeatureVector {
        FeatureVector {
            instrument: "x:A".into(),
            timeframe: "30m".into(),
            ts,
            contract_version: "1".into(),
            bar_revision: 0,
            values: [("lr", lr), ("ema_12", fast), ("ema_26", 100.0)]
                .iter()
                .map(|(n, v)| FeatureValue {
                    name: n.to_string(),
                    value: Some(*v),
                })
                .collect(),
        }
    }

    fn update(instrument: &str) -> ParamUpdate {
        ParamUpdate {
            strategy: "trend_following".into(),
            instrument: instrument.into(),
            config_id: "cfg-1".into(),
            preset_id: "both_sides".into(),
            params: [("band", 0.002), ("size", 0.6), ("allow_short", 1.0)]
                .iter()
                .map(|(n, v)| ParamValue {
                    name: n.to_string(),
                    value: *v,
                })
                .collect(),
            model_key: None,
            model_version: None,
            reason: UpdateReason::Initial,
            effective_for: Effective::NewPositions,
            context: vec![1.0, 0.5],
            at: 0,
            actor: None,
            note: None,
        }
    }

    #[test]
    fn positions_settle_on_the_next_bar_with_costs_and_the_safe_preset_beside() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../strategy_schemas");
        let schemas = StrategySchema::load_dir(&dir).expect("schemas");
        let mut e = Engine::new(schemas, 2.0);
        e.on_update(&update("x:A"));
        assert!(e.on_bar(&bar(0, 0.0, 101.0)).is_empty(), "nothing open yet");
        // Long 0.6 (ema_12 1 % above), next bar +1 %: 0.6 % minus 2 bp × 0.6.
        let out = e.on_bar(&bar(1, 0.01, 99.0));
        assert_eq!(out.len(), 1);
        assert!(
            (out[0].reward - (0.6 - 0.012)).abs() < 1e-9,
            "{}",
            out[0].reward
        );
        assert_eq!(
            (out[0].config_id.as_str(), out[0].context.len()),
            ("cfg-1", 2)
        );
        // The safe preset (band 1 %, long only, 0.2) stayed flat on a 1 % gap.
        assert_eq!(e.stats().reward_safe_preset, 0.0);
        // Short 0.6 now (1 % below, shorts allowed); a correction is ignored.
        assert!(e.on_bar(&bar(1, 0.5, 99.0)).is_empty());
        let out = e.on_bar(&bar(2, -0.01, 99.0));
        assert!((out[0].reward - (0.6 - 0.012)).abs() < 1e-9);
        assert_eq!(e.stats().trades, 2);
    }

    /// Totals are a function of each instrument's bars, not of how the
    /// instruments interleaved: float addition is not associative.
    #[test]
    fn totals_do_not_depend_on_how_instruments_interleave() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../strategy_schemas");
        let schemas = StrategySchema::load_dir(&dir).expect("schemas");
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % 2_001) as f64 / 1_000.0 - 1.0
        };
        let instruments = ["x:A", "x:B", "x:C"];
        let bars: Vec<Vec<FeatureVector>> = instruments
            .iter()
            .map(|i| {
                (0..300)
                    .map(|t| {
                        let mut b = bar(t, next() * 0.03, 100.0 + next() * 3.0);
                        b.instrument = i.to_string();
                        b
                    })
                    .collect()
            })
            .collect();
        let by_instrument = {
            let mut e = Engine::new(schemas.clone(), 2.0);
            instruments.iter().for_each(|i| e.on_update(&update(i)));
            bars.iter().flatten().for_each(|b| drop(e.on_bar(b)));
            e.stats()
        };
        let by_time = {
            let mut e = Engine::new(schemas, 2.0);
            instruments.iter().for_each(|i| e.on_update(&update(i)));
            for t in (0..300).rev() {
                for i in [2, 0, 1] {
                    drop(e.on_bar(&bars[i][299 - t]));
                }
            }
            e.stats()
        };
        assert!(by_time.trades > 100, "{by_time:?}");
        assert_eq!(by_time, by_instrument);
        assert_eq!(
            by_time.reward_policy.to_bits(),
            by_instrument.reward_policy.to_bits()
        );
    }
}
