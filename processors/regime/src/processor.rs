//! [`RegimeProcessor`]: see the crate docs. Its state is restored at start
//! by [`RegimeProcessor::restore`] from `model.updates` and `regimes`
//! rather than by replaying features: the filter state depends on where
//! each model switch fell between bars, which the published posteriors
//! record and a replay of two topics could not reproduce.

use autotrain_kafka::{Inbound, Incoming, OutRecord, Outputs, ProcessError, Processor, Wait};
use autotrain_schemas::{decode, FeatureVector, ModelVersion, RegimePosterior, WireError};
use autotrain_topics::{FEATURES, MODEL_UPDATES, REGIMES};
use autotrain_trainer::{OnlineFilter, TimedRegistry, TrainedModel, PROD};

const MODEL_UPDATES_NAME: &str = MODEL_UPDATES.name();
use rustc_hash::FxHashMap;

/// The topics the regime processor consumes.
pub const INPUTS: &[&str] = &[FEATURES.name(), MODEL_UPDATES.name()];

#[derive(Debug, Clone)]
pub enum RegimeInput {
    Features(FeatureVector),
    Model(Box<ModelVersion>),
}

impl Inbound for RegimeInput {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        if topic == MODEL_UPDATES.name() {
            decode::<ModelVersion>(bytes).map(|m| RegimeInput::Model(Box::new(m)))
        } else {
            decode::<FeatureVector>(bytes).map(RegimeInput::Features)
        }
    }
}

/// What happened to feature rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RegimeStats {
    pub published: u64,
    /// Rows of an instrument whose model key has no `prod` version yet.
    pub no_model: u64,
    /// Rows lacking a value the model reads (windows not yet full).
    pub incomplete: u64,
    /// Filters (re)loaded because `prod` moved.
    pub reloads: u64,
}

#[derive(Debug)]
struct Tracking {
    version: i32,
    model: TrainedModel,
    filter: OnlineFilter,
}

#[derive(Debug)]
pub struct RegimeProcessor {
    /// Model key per instrument; `{instrument}` is replaced.
    model_key: String,
    registry: TimedRegistry,
    /// Bars wait until `model.updates` is complete through their time.
    aligned: bool,
    tracking: FxHashMap<(String, String), Tracking>,
    /// Per instrument: the newest bar processed, and the newest progress
    /// published on `regimes` (aligned only).
    seen: FxHashMap<String, (i64, i64)>,
    pub stats: RegimeStats,
}

/// Event time between two progress records on `regimes` per instrument
/// while bars pass without a posterior (plus one whenever the input goes
/// quiet): the parameter controller turns them into `param.updates`
/// progress, which the engine waits for.
const PROGRESS_EVERY_MS: i64 = 4 * 3_600_000;

impl RegimeProcessor {
    pub fn new(model_key: &str) -> Self {
        RegimeProcessor {
            model_key: model_key.to_string(),
            registry: TimedRegistry::new(),
            aligned: false,
            tracking: FxHashMap::default(),
            seen: FxHashMap::default(),
            stats: RegimeStats::default(),
        }
    }

    /// Event-time alignment: each bar waits until `model.updates` is
    /// complete through its time (the trainer's progress records), so its
    /// posterior is taken under the model in `prod` at that bar whatever
    /// the timing. Registry events take effect at their `effective_from`
    /// either way.
    pub fn aligned(mut self, on: bool) -> Self {
        self.aligned = on;
        self
    }

    /// Restores the state a previous run left: the registry from
    /// `model.updates`, and each instrument's filter from its newest
    /// `regimes` record (the posterior *is* the filter's state), so the
    /// next bar is filtered exactly as an uninterrupted run would.
    pub fn restore(
        &mut self,
        models: impl IntoIterator<Item = ModelVersion>,
        latest: impl IntoIterator<Item = RegimePosterior>,
    ) -> Result<(), ProcessError> {
        for e in models {
            self.registry
                .apply(&e)
                .map_err(|err| ProcessError::invalid(format!("registry event refused: {err}")))?;
        }
        for p in latest {
            self.registry.advance(&p.model_key, p.ts);
            let Some(v) = self
                .registry
                .current()
                .model(&p.model_key)
                .and_then(|m| m.versions.get(&p.model_version))
            else {
                continue;
            };
            let Some(model) = v
                .parameters
                .as_deref()
                .and_then(|b| TrainedModel::from_bytes(b).ok())
            else {
                continue;
            };
            self.tracking.insert(
                (p.instrument.clone(), p.timeframe.clone()),
                Tracking {
                    version: p.model_version,
                    model,
                    filter: OnlineFilter::resume(p.probabilities.clone()),
                },
            );
        }
        Ok(())
    }

    fn on_features(&mut self, v: &FeatureVector) -> Result<Option<RegimePosterior>, ProcessError> {
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
        let slot = (v.instrument.clone(), v.timeframe.clone());
        if self
            .tracking
            .get(&slot)
            .is_none_or(|t| t.version != prod.version)
        {
            let bytes = prod.parameters.as_deref().ok_or_else(|| {
                ProcessError::invalid(format!("{key} v{} has no inline parameters", prod.version))
            })?;
            let model = TrainedModel::from_bytes(bytes).map_err(|e| {
                ProcessError::invalid(format!(
                    "{key} v{} parameters do not load: {e}",
                    prod.version
                ))
            })?;
            self.tracking.insert(
                slot.clone(),
                Tracking {
                    version: prod.version,
                    model,
                    filter: OnlineFilter::new(),
                },
            );
            self.stats.reloads += 1;
        }
        let Some(t) = self.tracking.get_mut(&slot) else {
            return Ok(None);
        };
        let Some(row) = t.model.row(v) else {
            self.stats.incomplete += 1;
            return Ok(None);
        };
        let (probabilities, loglik) = t
            .filter
            .step(&t.model.hmm, &t.model.standardise(&row))
            .map_err(|e| ProcessError::invalid(format!("{} @ {}: {e}", v.instrument, v.ts)))?;
        let regime = probabilities
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (i, p)| {
                if *p > best.1 {
                    (i, *p)
                } else {
                    best
                }
            })
            .0;
        self.stats.published += 1;
        Ok(Some(RegimePosterior {
            instrument: v.instrument.clone(),
            timeframe: v.timeframe.clone(),
            ts: v.ts,
            model_key: key,
            model_version: t.version,
            probabilities,
            regime: regime as i32,
            loglik,
            features: v.values.clone(),
        }))
    }
}

impl Processor for RegimeProcessor {
    type Input = RegimeInput;

    fn name(&self) -> &str {
        "regime"
    }

    fn process(
        &mut self,
        input: &Incoming<RegimeInput>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        match &input.value {
            RegimeInput::Model(e) => self
                .registry
                .apply(e)
                .map_err(|err| ProcessError::invalid(format!("registry event refused: {err}"))),
            RegimeInput::Features(v) => {
                let posterior = self.on_features(v)?;
                if let Some(p) = &posterior {
                    out.send(REGIMES, &p.instrument.clone(), p)?;
                }
                if self.aligned {
                    let (seen, vouched) = self
                        .seen
                        .entry(v.instrument.clone())
                        .or_insert((i64::MIN, i64::MIN));
                    *seen = (*seen).max(v.ts);
                    if posterior.is_none() && *seen >= vouched.saturating_add(PROGRESS_EVERY_MS) {
                        *vouched = *seen;
                        out.progress(REGIMES, &v.instrument, *seen);
                    }
                }
                Ok(())
            }
        }
    }

    fn control_topics(&self) -> &'static [&'static str] {
        if self.aligned {
            &[MODEL_UPDATES_NAME]
        } else {
            &[]
        }
    }

    fn flush(&mut self) -> Vec<OutRecord> {
        self.seen
            .iter_mut()
            .filter(|(_, (seen, vouched))| vouched < seen)
            .map(|(instrument, (seen, vouched))| {
                *vouched = *seen;
                OutRecord::progress(REGIMES.name(), instrument, *seen)
            })
            .collect()
    }

    fn wait(&self, input: &RegimeInput) -> Option<Wait> {
        let RegimeInput::Features(v) = input else {
            return None;
        };
        self.aligned.then(|| Wait {
            until: v.ts,
            on: vec![(
                MODEL_UPDATES_NAME,
                self.model_key.replace("{instrument}", &v.instrument),
            )],
            also: Vec::new(),
            announce: Vec::new(),
        })
    }
}
