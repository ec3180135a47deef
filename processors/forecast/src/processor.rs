//! [`ForecastProcessor`]: see the crate docs. It does not hold bars for
//! event-time progress on `model.updates` (the regime processor does):
//! forecast models are trained by ops, and no writer vouches for their
//! keys in event time, so a held bar could wait for ever. Registry events
//! take effect at their `effective_from`, else on arrival.
//!
//! It vouches for what it wrote: progress records on `forecasts` per
//! instrument ("no forecast of a bar at or before t will follow"), every
//! few hours of bar time and when its input goes quiet, so a controller
//! that takes forecasts as context can wait for a bar's forecast, or for
//! the word that there is none (no `prod` model yet).

use autotrain_kafka::{Inbound, Incoming, OutRecord, Outputs, ProcessError, Processor};
use autotrain_schemas::{decode, FeatureVector, Forecast, ModelVersion, WireError};
use autotrain_topics::{FEATURES, FORECASTS, MODEL_UPDATES};
use autotrain_trainer::forecast::ForecastModel;
use autotrain_trainer::{TimedRegistry, PROD};
use rustc_hash::FxHashMap;

/// Bar time between two progress records of an instrument.
const PROGRESS_EVERY_MS: i64 = 4 * 3_600_000;

/// The topics the forecast processor consumes.
pub const INPUTS: &[&str] = &[FEATURES.name(), MODEL_UPDATES.name()];

#[derive(Debug, Clone)]
pub enum ForecastInput {
    Features(FeatureVector),
    Model(Box<ModelVersion>),
}

impl Inbound for ForecastInput {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        if topic == MODEL_UPDATES.name() {
            decode::<ModelVersion>(bytes).map(|m| ForecastInput::Model(Box::new(m)))
        } else {
            decode::<FeatureVector>(bytes).map(ForecastInput::Features)
        }
    }
}

/// What happened to feature rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ForecastStats {
    pub published: u64,
    /// Rows of an instrument whose model key has no `prod` version yet.
    pub no_model: u64,
    /// Models (re)loaded because `prod` moved.
    pub reloads: u64,
}

#[derive(Debug)]
pub struct ForecastProcessor {
    /// Model key per instrument; `{instrument}` is replaced.
    model_key: String,
    registry: TimedRegistry,
    /// Per model key: the version loaded and its model.
    loaded: FxHashMap<String, (i32, ForecastModel)>,
    /// Per instrument: the newest bar forecast (or passed without a
    /// model), and the newest one vouched for on `forecasts`.
    seen: FxHashMap<String, (i64, i64)>,
    pub stats: ForecastStats,
}

impl ForecastProcessor {
    pub fn new(model_key: &str) -> Self {
        ForecastProcessor {
            model_key: model_key.to_string(),
            registry: TimedRegistry::new(),
            loaded: FxHashMap::default(),
            seen: FxHashMap::default(),
            stats: ForecastStats::default(),
        }
    }

    /// The registry a previous run left, from `model.updates`.
    pub fn restore(
        &mut self,
        models: impl IntoIterator<Item = ModelVersion>,
    ) -> Result<(), ProcessError> {
        for e in models {
            self.registry
                .apply(&e)
                .map_err(|err| ProcessError::invalid(format!("registry event refused: {err}")))?;
        }
        Ok(())
    }

    fn on_features(&mut self, v: &FeatureVector) -> Result<Option<Forecast>, ProcessError> {
        let key = self.model_key.replace("{instrument}", &v.instrument);
        self.registry.advance(&key, v.ts);
        let Some(prod) = self
            .registry
            .current()
            .model(&key)
            .and_then(|m| m.alias(PROD))
        else {
            self.stats.no_model += 1;
            return Ok(None);
        };
        if self
            .loaded
            .get(&key)
            .is_none_or(|(version, _)| *version != prod.version)
        {
            let model = prod
                .parameters
                .as_deref()
                .and_then(|b| ForecastModel::from_json(b).ok())
                .ok_or_else(|| {
                    ProcessError::invalid(format!(
                        "{key} v{} is not a forecast (gbdt) model: its parameters do not load",
                        prod.version
                    ))
                })?;
            self.loaded.insert(key.clone(), (prod.version, model));
            self.stats.reloads += 1;
        }
        let Some((version, model)) = self.loaded.get(&key) else {
            return Ok(None);
        };
        // A missing feature is NaN: the trees route it as they learnt to.
        let row: Vec<f64> = model
            .columns
            .iter()
            .map(|c| {
                v.values
                    .iter()
                    .find(|f| &f.name == c)
                    .and_then(|f| f.value)
                    .unwrap_or(f64::NAN)
            })
            .collect();
        self.stats.published += 1;
        Ok(Some(Forecast {
            instrument: v.instrument.clone(),
            timeframe: v.timeframe.clone(),
            ts: v.ts,
            model_key: key,
            model_version: *version,
            target: model.target.name(),
            prediction: model.predict_row(&row),
        }))
    }
}

impl Processor for ForecastProcessor {
    type Input = ForecastInput;

    fn name(&self) -> &str {
        "forecast"
    }

    fn process(
        &mut self,
        input: &Incoming<ForecastInput>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        match &input.value {
            ForecastInput::Model(e) => self
                .registry
                .apply(e)
                .map_err(|err| ProcessError::invalid(format!("registry event refused: {err}"))),
            ForecastInput::Features(v) => {
                if let Some(f) = self.on_features(v)? {
                    out.send(FORECASTS, &f.instrument.clone(), &f)?;
                }
                let (seen, vouched) = self
                    .seen
                    .entry(v.instrument.clone())
                    .or_insert((i64::MIN, i64::MIN));
                *seen = (*seen).max(v.ts);
                if *seen >= vouched.saturating_add(PROGRESS_EVERY_MS) {
                    *vouched = *seen;
                    out.progress(FORECASTS, &v.instrument, *seen);
                }
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> Vec<OutRecord> {
        let mut out: Vec<OutRecord> = self
            .seen
            .iter_mut()
            .filter(|(_, (seen, vouched))| vouched < seen)
            .map(|(instrument, (seen, vouched))| {
                *vouched = *seen;
                OutRecord::progress(FORECASTS.name(), instrument, *seen)
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::{FeatureValue, Metric, RegistryEvent};
    use autotrain_trainer::forecast::model::{Node, Tree};
    use autotrain_trainer::forecast::Target;

    fn model(leaf: f64) -> Vec<u8> {
        ForecastModel {
            columns: vec!["lr".into()],
            target: Target::AbsReturn { horizon: 1 },
            base_score: 1.0,
            trees: vec![Tree {
                nodes: vec![
                    Node::Split {
                        feature: 0,
                        threshold: 0.0,
                        left: 1,
                        right: 2,
                        missing_left: false,
                    },
                    Node::Leaf { value: -leaf },
                    Node::Leaf { value: leaf },
                ],
            }],
        }
        .to_json()
    }

    fn event(
        version: i32,
        event: RegistryEvent,
        parameters: Option<Vec<u8>>,
        from: i64,
    ) -> ModelVersion {
        ModelVersion {
            model_key: "gbdt/x:A".into(),
            version,
            event,
            training_id: Some(format!("tr-{version}")),
            parameters,
            artifact_hash: None,
            parameter_hash: format!("h{version}"),
            metrics: vec![Metric {
                name: "rmsle".into(),
                value: 0.1,
            }],
            tags: vec![],
            manifest: None,
            alias: Some(
                if event == RegistryEvent::Registered {
                    "staging"
                } else {
                    "prod"
                }
                .into(),
            ),
            previous_version: None,
            at: 0,
            effective_from: Some(from),
        }
    }

    fn bar(ts: i64, lr: Option<f64>) -> FeatureVector {
        FeatureVector {
            instrument: "x:A".into(),
            timeframe: "30m".into(),
            ts,
            contract_version: "1".into(),
            bar_revision: 0,
            values: vec![FeatureValue {
                name: "lr".into(),
                value: lr,
            }],
        }
    }

    #[test]
    fn forecasts_follow_prod_in_event_time_and_route_missing_values() {
        let mut p = ForecastProcessor::new("gbdt/{instrument}");
        assert_eq!(
            p.on_features(&bar(10, Some(0.5))).expect("ok"),
            None,
            "no model yet"
        );
        for e in [
            event(1, RegistryEvent::Registered, Some(model(0.25)), 0),
            event(1, RegistryEvent::AliasMoved, None, 0),
            event(2, RegistryEvent::Registered, Some(model(0.5)), 100),
            event(2, RegistryEvent::AliasMoved, None, 100),
        ] {
            p.registry.apply(&e).expect("apply");
        }
        let f = p
            .on_features(&bar(50, Some(0.5)))
            .expect("ok")
            .expect("a forecast");
        assert_eq!((f.model_version, f.prediction), (1, 1.25));
        let f = p
            .on_features(&bar(60, None))
            .expect("ok")
            .expect("a forecast");
        assert_eq!(f.prediction, 1.25, "missing goes right, as recorded");
        let f = p
            .on_features(&bar(100, Some(-0.5)))
            .expect("ok")
            .expect("a forecast");
        assert_eq!((f.model_version, f.prediction), (2, 0.5), "v2 from bar 100");
        assert_eq!(p.stats.reloads, 2);
        assert_eq!(f.target, "abs_return:1");
    }

    #[test]
    fn an_hmm_in_prod_is_refused_with_the_reason() {
        let mut p = ForecastProcessor::new("gbdt/{instrument}");
        p.registry
            .apply(&event(
                1,
                RegistryEvent::Registered,
                Some(b"{\"columns\":[]}".to_vec()),
                0,
            ))
            .expect("apply");
        p.registry
            .apply(&event(1, RegistryEvent::AliasMoved, None, 0))
            .expect("apply");
        let e = p
            .on_features(&bar(5, Some(0.1)))
            .expect_err("not a forecast");
        assert!(e.to_string().contains("not a forecast"), "{e}");
    }
}
