//! [`FeaturesProcessor`]: `market.bars` ⇒ `features` through the runner.
//! One [`Engine`] per (instrument, timeframe); each bar publishes the rows
//! it changed. The engines are a function of the bars consumed, so the
//! runner rebuilds them by replay after a restart.

use std::sync::Arc;

use autotrain_kafka::{Incoming, Outputs, ProcessError, Processor};
use autotrain_schemas::{Bar, FeatureValue, FeatureVector};
use autotrain_topics::{FEATURES, MARKET_BARS};
use rustc_hash::FxHashMap;

use crate::contract::Contract;
use crate::engine::{Engine, Point, Row};

/// The topics the features processor consumes.
pub const INPUTS: &[&str] = &[MARKET_BARS.name()];

#[derive(Debug)]
pub struct FeaturesProcessor {
    contract: Arc<Contract>,
    engines: FxHashMap<(String, String), Engine>,
    rows: Vec<Row>,
    /// Rows published (in-order bars, late bars, corrections).
    pub published: u64,
}

impl FeaturesProcessor {
    pub fn new(contract: Contract) -> Self {
        FeaturesProcessor {
            contract: Arc::new(contract),
            engines: FxHashMap::default(),
            rows: Vec::new(),
            published: 0,
        }
    }

    pub fn contract(&self) -> &Contract {
        &self.contract
    }

    /// Feeds one bar; returns the feature vectors to publish.
    pub fn apply(&mut self, bar: &Bar) -> Vec<FeatureVector> {
        let instrument = bar.instrument();
        let engine = self
            .engines
            .entry((instrument.clone(), bar.timeframe.clone()))
            .or_insert_with(|| Engine::new(self.contract.clone()));
        self.rows.clear();
        engine.upsert(
            Point {
                ts: bar.ts,
                close: bar.close,
                volume: bar.volume,
                revision: bar.revision,
            },
            &mut self.rows,
        );
        self.published += self.rows.len() as u64;
        self.rows
            .iter()
            .map(|r| to_vector(&self.contract, &instrument, &bar.timeframe, r))
            .collect()
    }

    pub fn engines(&self) -> impl Iterator<Item = (&(String, String), &Engine)> {
        self.engines.iter()
    }
}

pub fn to_vector(
    contract: &Contract,
    instrument: &str,
    timeframe: &str,
    row: &Row,
) -> FeatureVector {
    FeatureVector {
        instrument: instrument.to_string(),
        timeframe: timeframe.to_string(),
        ts: row.ts,
        contract_version: contract.version.clone(),
        bar_revision: row.revision,
        values: contract
            .features
            .iter()
            .zip(&row.values)
            .map(|(f, v)| FeatureValue {
                name: f.name.clone(),
                value: *v,
            })
            .collect(),
    }
}

impl Processor for FeaturesProcessor {
    type Input = Bar;

    fn name(&self) -> &str {
        "features"
    }

    fn process(&mut self, input: &Incoming<Bar>, out: &mut Outputs) -> Result<(), ProcessError> {
        let bar = &input.value;
        if ![bar.open, bar.high, bar.low, bar.close, bar.volume]
            .iter()
            .all(|v| v.is_finite())
            || bar.close <= 0.0
        {
            return Err(ProcessError::invalid(format!(
                "bar {} @ {} has a non-finite or non-positive price",
                bar.instrument(),
                bar.ts
            )));
        }
        let key = bar.instrument();
        for v in self.apply(bar) {
            out.send(FEATURES, &key, &v)?;
        }
        Ok(())
    }

    fn rebuilds_from_inputs(&self) -> bool {
        true
    }
}
