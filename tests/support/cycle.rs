//! The params ⇄ engine cycle's fixture: 2,000 real bars, a posterior per
//! bar from bar 300 on (its regime read off the bar's volatility, the bar's
//! features inside it), and the records the cycle publishes. Used by
//! `tests/cycle.rs` (runners in-process) and the kill -9 test of
//! `autotrain run params|engine` (`cli/tests/kafka.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use autotrain_features::{dataflow, Contract};
use autotrain_kafka::{read_topic, ClientSettings, OutRecord, Producer};
use autotrain_params::schema::ContextFeature;
use autotrain_params::{ParamsConfig, StrategySchema};
use autotrain_schemas::{
    Effective, FeatureVector, Forecast, ParamUpdate, RegimePosterior, TradeOutcome, UpdateReason,
};
use autotrain_topics::{FEATURES, FORECASTS, REGIMES};

use crate::{bars, publish, repo_root};

pub const INSTRUMENT: &str = "bitfinex:BTCUSD";
/// Bars before the first posterior (no model yet: `regimes` progress only).
pub const BEFORE_MODEL: usize = 300;
/// The controller's learning lag in these tests: two days of 30-minute
/// bars, ~20 laps over the scenario.
pub const LEARN_LAG_MS: i64 = 2 * 86_400_000;

pub fn schemas() -> Result<Vec<StrategySchema>> {
    Ok(StrategySchema::load_dir(
        &repo_root().join("strategy_schemas"),
    )?)
}

/// The bundled strategies, each also reading the bar's forecast of the
/// next bar's absolute return as context.
pub fn forecast_schemas() -> Result<Vec<StrategySchema>> {
    let mut schemas = schemas()?;
    for s in &mut schemas {
        s.context_features.push(ContextFeature {
            name: format!("forecast:{FORECAST_TARGET}"),
            center: 0.004,
            scale: 0.004,
        });
    }
    Ok(schemas)
}

/// The target of the scenario's forecasts.
pub const FORECAST_TARGET: &str = "abs_return:1";
/// Bars before the first forecast (no forecast model yet: progress only).
pub const BEFORE_FORECASTS: usize = 700;

pub fn config() -> ParamsConfig {
    ParamsConfig {
        learn_lag_ms: LEARN_LAG_MS,
        ..ParamsConfig::default()
    }
}

#[derive(Debug)]
pub struct Scenario {
    pub vectors: Vec<FeatureVector>,
    pub posteriors: Vec<RegimePosterior>,
}

pub fn scenario() -> Result<Scenario> {
    let contract = Contract::bundled()?;
    let vectors = dataflow::run(&contract, &bars("bitfinex_BTCUSD_30m.csv", 2_000), 1, true)
        .map_err(anyhow::Error::msg)?
        .rows;
    let posteriors = vectors[BEFORE_MODEL..]
        .iter()
        .map(|v| {
            let rvol = v
                .values
                .iter()
                .find(|f| f.name == "rvol_20")
                .and_then(|f| f.value)
                .unwrap_or(0.5);
            let calm = (1.0 - rvol).clamp(0.05, 0.95);
            RegimePosterior {
                instrument: v.instrument.clone(),
                timeframe: v.timeframe.clone(),
                ts: v.ts,
                model_key: format!("hmm/{INSTRUMENT}"),
                model_version: 1,
                probabilities: vec![calm, 1.0 - calm],
                regime: i32::from(calm < 0.5),
                loglik: -1.0,
                features: v.values.clone(),
            }
        })
        .collect();
    Ok(Scenario {
        vectors,
        posteriors,
    })
}

impl Scenario {
    /// The last bar before the first posterior.
    pub fn last_without_model(&self) -> i64 {
        self.vectors[BEFORE_MODEL - 1].ts
    }

    /// Everything the cycle reads, in the order a live pipeline writes it:
    /// `regimes` progress for the bars without a model, the posteriors,
    /// the features.
    pub async fn publish_all(&self, settings: &ClientSettings) -> Result<()> {
        regimes_progress(settings, self.last_without_model()).await?;
        publish(settings, REGIMES, INSTRUMENT, &self.posteriors).await?;
        publish(settings, FEATURES, INSTRUMENT, &self.vectors).await
    }
}

impl Scenario {
    /// A forecast per bar from bar [`BEFORE_FORECASTS`] on, as a forecast
    /// processor under a `prod` model would publish: here the next bar's
    /// absolute log return, shrunk (a forecast that knows something).
    pub fn forecasts(&self) -> Vec<Forecast> {
        self.vectors
            .windows(2)
            .skip(BEFORE_FORECASTS)
            .map(|w| {
                let next = w[1]
                    .values
                    .iter()
                    .find(|f| f.name == "lr")
                    .and_then(|f| f.value)
                    .unwrap_or(0.0);
                Forecast {
                    instrument: w[0].instrument.clone(),
                    timeframe: w[0].timeframe.clone(),
                    ts: w[0].ts,
                    model_key: format!("gbdt/{INSTRUMENT}"),
                    model_version: 1,
                    target: FORECAST_TARGET.into(),
                    prediction: 0.7 * next.abs(),
                }
            })
            .collect()
    }

    /// The forecasts, then the forecast processor's progress through the
    /// last bar.
    pub async fn publish_forecasts(&self, settings: &ClientSettings) -> Result<()> {
        publish(settings, FORECASTS, INSTRUMENT, &self.forecasts()).await?;
        let last = self.vectors.last().map_or(0, |v| v.ts);
        Producer::new(settings)?
            .send(&OutRecord::progress(FORECASTS.name(), INSTRUMENT, last))
            .await?;
        Ok(())
    }
}

/// What the regime processor publishes for bars without a model.
pub async fn regimes_progress(settings: &ClientSettings, through: i64) -> Result<()> {
    Producer::new(settings)?
        .send(&OutRecord::progress(REGIMES.name(), INSTRUMENT, through))
        .await?;
    Ok(())
}

/// Every distinct record on `param.updates` and `trade.outcomes`, decoded
/// and sorted (a repeat after a restart is the same record again).
pub fn outputs(settings: &ClientSettings) -> Result<(Vec<String>, Vec<String>)> {
    let t = Duration::from_secs(30);
    let updates: BTreeSet<String> = read_topic::<ParamUpdate>(settings, "param.updates", t)?
        .into_iter()
        .map(|r| Ok(format!("{:?}", r.value?)))
        .collect::<Result<_>>()?;
    let outcomes: BTreeSet<String> = read_topic::<TradeOutcome>(settings, "trade.outcomes", t)?
        .into_iter()
        .map(|r| Ok(format!("{:?}", r.value?)))
        .collect::<Result<_>>()?;
    Ok((
        updates.into_iter().collect(),
        outcomes.into_iter().collect(),
    ))
}

/// Equal record sets, or a panic naming how many and the first records
/// only one side has.
pub fn same(want: &[String], got: &[String], what: &str) {
    if want != got {
        let missing: Vec<&String> = want.iter().filter(|r| !got.contains(r)).collect();
        let extra: Vec<&String> = got.iter().filter(|r| !want.contains(r)).collect();
        panic!(
            "{what}: {} vs {} records; {} missing, first {:#?}; {} extra, first {:#?}",
            want.len(),
            got.len(),
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first()
        );
    }
}

/// What the controller publishes when a kill-switch trips, as ops find it
/// on `param.updates` (the safe preset, from bar 1,000).
pub fn kill_switch_tripped(strategy: &str, instrument: &str) -> ParamUpdate {
    ParamUpdate {
        strategy: strategy.into(),
        instrument: instrument.into(),
        config_id: "cfg-tripped".into(),
        preset_id: "safe".into(),
        params: Vec::new(),
        model_key: None,
        model_version: None,
        reason: UpdateReason::KillSwitch,
        effective_for: Effective::NewPositions,
        context: Vec::new(),
        at: 1_000,
        actor: None,
        note: None,
    }
}
