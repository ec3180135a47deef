//! [`DriftProcessor`]: `features` ⇒ `training.triggers`.
//!
//! For every instrument and watched feature, the values are standardised
//! with the mean and std of the first `warm_up` values, then fed to each
//! configured detector. A detection emits a `TrainingTrigger` (reason
//! `drift`, the detector, statistic, threshold, window, instrument,
//! feature) for the instrument's model key, unless that key triggered less
//! than `cooldown_ms` of event time ago (then it is counted as suppressed).
//! Everything is keyed on event time (the bar's ts), so a replay decides
//! the same, and the runner rebuilds the detectors by replay.
//!
//! Once a model key has a `prod` version (read from `model.updates`), two
//! more detectors watch its instrument: **PSI against the prod model's
//! reference distribution** of each watched feature (recorded by the
//! trainer from its training rows), and **log-likelihood decay**: the
//! one-step predictive log-likelihood of each bar under the prod model's
//! online filter, against the baseline the trainer measured on the
//! reference set. Both restart when `prod` moves. Which bar a `prod` move
//! falls before depends on how the two topics interleave as processed; a
//! replay after a restart applies model events in offset order per
//! partition, so these two detectors may resume from a slightly different
//! state than an uninterrupted run (the feature detectors do not).

use autotrain_kafka::{
    EventId, Inbound, Incoming, OutRecord, Outputs, ProcessError, Processor, Wait,
};
use autotrain_schemas::{
    decode, DriftEvidence, FeatureVector, ModelVersion, Priority, TrainingTrigger, TriggerReason,
    WireError,
};
use autotrain_topics::{FEATURES, MODEL_UPDATES, TRAINING_TRIGGERS};
use autotrain_trainer::{OnlineFilter, TimedRegistry, TrainedModel, PROD};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::detectors::{Adwin, Detection, Detector, LikelihoodDecay, PageHinkley, Psi, Reference};
use crate::event_clock::EventSchedules;
use crate::scheduler::{Schedule, ScheduleError};

const MODEL_UPDATES_NAME: &str = MODEL_UPDATES.name();

/// The topics the drift processor consumes.
pub const INPUTS: &[&str] = &[FEATURES.name(), MODEL_UPDATES.name()];

/// What the drift processor reads: feature rows, and the registry's
/// events (for the prod model's detectors).
#[derive(Debug, Clone)]
pub enum DriftInput {
    Features(FeatureVector),
    Model(Box<ModelVersion>),
}

impl Inbound for DriftInput {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        if topic == MODEL_UPDATES.name() {
            decode::<ModelVersion>(bytes).map(|m| DriftInput::Model(Box::new(m)))
        } else {
            decode::<FeatureVector>(bytes).map(DriftInput::Features)
        }
    }
}

/// The detectors that need a prod model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelDetectors {
    pub enabled: bool,
    /// PSI of the last `psi_window` values of each watched feature against
    /// the prod model's reference distribution of it.
    pub psi_window: usize,
    pub psi_threshold: f64,
    /// Mean predictive log-likelihood of the last `loglik_window` bars
    /// below the model's baseline by more than `loglik_threshold`
    /// standard errors.
    pub loglik_window: usize,
    pub loglik_threshold: f64,
}

impl Default for ModelDetectors {
    fn default() -> Self {
        ModelDetectors {
            enabled: true,
            psi_window: 500,
            psi_threshold: 0.25,
            loglik_window: 200,
            loglik_threshold: 4.0,
        }
    }
}

/// A detector and its parameters (for standardised values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DetectorSpec {
    PageHinkley { delta: f64, lambda: f64 },
    Adwin { delta: f64 },
    Psi { window: usize, threshold: f64 },
}

impl DetectorSpec {
    fn build(&self) -> Box<dyn Detector> {
        match *self {
            DetectorSpec::PageHinkley { delta, lambda } => {
                Box::new(PageHinkley::new(delta, lambda, 30))
            }
            DetectorSpec::Adwin { delta } => Box::new(Adwin::new(delta)),
            DetectorSpec::Psi { window, threshold } => Box::new(Psi::new(window, threshold, None)),
        }
    }
}

/// A watched feature and the detectors on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watch {
    pub feature: String,
    pub detectors: Vec<DetectorSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Features watched per instrument, each with its detectors. Mean-shift
    /// detectors (Page-Hinkley, ADWIN) assume roughly independent values:
    /// use them on returns; on autocorrelated features (rolling
    /// volatility) they fire constantly, so those get PSI.
    pub watch: Vec<Watch>,
    /// Values that set the standardisation before detectors start.
    pub warm_up: usize,
    /// Event time after a trigger during which the same model key does not
    /// trigger again.
    pub cooldown_ms: i64,
    /// Model key per instrument; `{instrument}` is replaced.
    pub model_key: String,
    pub priority: Priority,
    pub auto_promote: bool,
    pub model_detectors: ModelDetectors,
    /// Event time between two progress records on `training.triggers` per
    /// model key (the trainer turns them into `model.updates` progress,
    /// which this processor and the regime processor wait for). Shorter
    /// than the trainer's `activation_delay_ms` keeps them from waiting
    /// while no run is pending.
    pub progress_every_ms: i64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            watch: vec![
                Watch {
                    feature: "lr".into(),
                    detectors: vec![
                        DetectorSpec::PageHinkley {
                            delta: 0.1,
                            lambda: 50.0,
                        },
                        DetectorSpec::Adwin { delta: 0.002 },
                        DetectorSpec::Psi {
                            window: 1_000,
                            threshold: 0.25,
                        },
                    ],
                },
                Watch {
                    feature: "rvol_20".into(),
                    detectors: vec![DetectorSpec::Psi {
                        window: 500,
                        threshold: 0.25,
                    }],
                },
            ],
            warm_up: 500,
            cooldown_ms: 7 * 86_400_000,
            model_key: "hmm/{instrument}".into(),
            priority: Priority::High,
            auto_promote: true,
            model_detectors: ModelDetectors::default(),
            progress_every_ms: 4 * 3_600_000,
        }
    }
}

#[derive(Debug)]
struct Series {
    last_ts: i64,
    warm: Vec<f64>,
    scale: Option<(f64, f64)>,
    detectors: Vec<Box<dyn Detector>>,
    /// PSI against the prod model's reference (its version).
    prod_psi: Option<(i32, Psi)>,
}

/// An instrument's prod model and its log-likelihood detector.
#[derive(Debug)]
struct Tracked {
    version: i32,
    model: TrainedModel,
    filter: OnlineFilter,
    decay: Option<LikelihoodDecay>,
    last_ts: i64,
}

#[derive(Debug)]
pub struct DriftProcessor {
    config: DriftConfig,
    series: FxHashMap<(String, String), Series>,
    last_trigger: FxHashMap<String, i64>,
    registry: TimedRegistry,
    tracked: FxHashMap<String, Tracked>,
    /// Bars wait until `model.updates` is complete through their time
    /// (see [`DriftProcessor::aligned`]).
    aligned: bool,
    /// Per model key: the last progress published on `training.triggers`.
    progress: FxHashMap<String, i64>,
    /// Cron schedules on event time, if the scheduler runs here.
    schedules: Option<EventSchedules>,
    /// Drift triggers emitted, and detections inside a cooldown.
    pub triggers: u64,
    pub suppressed: u64,
}

impl DriftProcessor {
    pub fn new(config: DriftConfig) -> Self {
        DriftProcessor {
            config,
            series: FxHashMap::default(),
            last_trigger: FxHashMap::default(),
            registry: TimedRegistry::new(),
            tracked: FxHashMap::default(),
            aligned: false,
            progress: FxHashMap::default(),
            schedules: None,
            triggers: 0,
            suppressed: 0,
        }
    }

    /// Also fires cron schedules on the bars' event time (see
    /// [`EventSchedules`]): replays and backtests train on schedule at the
    /// same bars whenever they run.
    pub fn with_event_schedules(mut self, schedules: Vec<Schedule>) -> Result<Self, ScheduleError> {
        let s = EventSchedules::new(schedules)?;
        self.schedules = (!s.is_empty()).then_some(s);
        Ok(self)
    }

    /// Event-time alignment: each bar waits until `model.updates` is
    /// complete through its time (the trainer's progress records), and
    /// this processor publishes progress on `training.triggers` as it
    /// passes bars; registry events take effect at their `effective_from`
    /// either way. Off, bars see whatever registry events arrived before
    /// them.
    pub fn aligned(mut self, on: bool) -> Self {
        self.aligned = on;
        self
    }

    /// Scheduled triggers emitted on event time.
    pub fn scheduled(&self) -> u64 {
        self.schedules.as_ref().map_or(0, |s| s.fired)
    }

    pub fn model_key(&self, instrument: &str) -> String {
        self.config.model_key.replace("{instrument}", instrument)
    }

    /// A registry event from `model.updates`.
    pub fn apply_model(&mut self, e: &ModelVersion) -> Result<(), String> {
        self.registry.apply(e).map_err(|err| err.to_string())
    }

    /// Registry events of the instrument's key in effect at `ts`.
    fn advance(&mut self, instrument: &str, ts: i64) {
        let key = self.model_key(instrument);
        self.registry.advance(&key, ts);
    }

    /// The prod model of an instrument's key, if any and loadable.
    fn prod_of(&self, instrument: &str) -> Option<(i32, TrainedModel)> {
        let key = self.model_key(instrument);
        let prod = self.registry.current().model(&key)?.alias(PROD)?;
        let model = TrainedModel::from_bytes(prod.parameters.as_deref()?).ok()?;
        Some((prod.version, model))
    }

    /// A detection becomes a trigger unless the model key is cooling down.
    fn fire(
        &mut self,
        v: &FeatureVector,
        feature: &str,
        detector: &str,
        hit: Detection,
    ) -> Option<TrainingTrigger> {
        let model_key = self.model_key(&v.instrument);
        if self
            .last_trigger
            .get(&model_key)
            .is_some_and(|t| v.ts < t + self.config.cooldown_ms)
        {
            self.suppressed += 1;
            return None;
        }
        self.last_trigger.insert(model_key.clone(), v.ts);
        self.triggers += 1;
        let trigger_id = format!("drift:{model_key}:{}:{detector}:{feature}", v.ts);
        Some(TrainingTrigger {
            seed: seed_of(&trigger_id),
            trigger_id,
            model_key,
            tenant: None,
            reason: TriggerReason::Drift,
            instruments: vec![v.instrument.clone()],
            dataset_version: None,
            feature_contract_version: Some(v.contract_version.clone()),
            hyperparams: Vec::new(),
            priority: self.config.priority,
            auto_promote: self.config.auto_promote,
            evidence: Some(DriftEvidence {
                detector: detector.to_string(),
                instrument: v.instrument.clone(),
                feature: feature.to_string(),
                statistic: hit.statistic,
                threshold: hit.threshold,
                window: i32::try_from(hit.window).unwrap_or(i32::MAX),
            }),
            rerun_of: None,
            created_at: v.ts,
            revealed_at: Some(v.ts),
        })
    }

    /// Feeds one feature vector; returns the triggers to publish.
    pub fn apply(&mut self, v: &FeatureVector) -> Vec<TrainingTrigger> {
        self.advance(&v.instrument, v.ts);
        let mut hits: Vec<(String, &'static str, Detection)> = Vec::new();
        let md = self.config.model_detectors.clone();
        let prod = if md.enabled {
            self.prod_of(&v.instrument)
        } else {
            None
        };
        for watch in &self.config.watch {
            let name = &watch.feature;
            let Some(x) = v
                .values
                .iter()
                .find(|f| &f.name == name)
                .and_then(|f| f.value)
                .filter(|x| x.is_finite())
            else {
                continue;
            };
            let series = self
                .series
                .entry((v.instrument.clone(), name.clone()))
                .or_insert_with(|| Series {
                    last_ts: i64::MIN,
                    warm: Vec::new(),
                    scale: None,
                    detectors: watch.detectors.iter().map(DetectorSpec::build).collect(),
                    prod_psi: None,
                });
            // Corrections of past bars do not re-feed the detectors.
            if v.ts <= series.last_ts {
                continue;
            }
            series.last_ts = v.ts;
            let Some((mean, std)) = series.scale else {
                series.warm.push(x);
                if series.warm.len() >= self.config.warm_up.max(2) {
                    let n = series.warm.len() as f64;
                    let mean = series.warm.iter().sum::<f64>() / n;
                    let var = series
                        .warm
                        .iter()
                        .map(|w| (w - mean) * (w - mean))
                        .sum::<f64>()
                        / (n - 1.0);
                    series.scale = Some((mean, var.sqrt().max(1e-12)));
                    series.warm = Vec::new();
                }
                continue;
            };
            let z = (x - mean) / std;
            for d in &mut series.detectors {
                if let Some(hit) = d.update(z) {
                    hits.push((name.clone(), d.name(), hit));
                }
            }
            // The prod model's reference, in this series' standardised
            // units (PSI only depends on which bin a value falls in).
            if let Some((version, model)) = &prod {
                if series.prod_psi.as_ref().is_none_or(|(v, _)| v != version) {
                    series.prod_psi = model.reference.get(name).map(|r| {
                        let reference = Reference {
                            edges: r.edges.iter().map(|e| (e - mean) / std).collect(),
                            shares: r.shares.clone(),
                        };
                        (
                            *version,
                            Psi::new(md.psi_window, md.psi_threshold, Some(reference)),
                        )
                    });
                }
                if let Some((_, psi)) = &mut series.prod_psi {
                    if let Some(hit) = psi.update(z) {
                        hits.push((name.clone(), "psi_prod", hit));
                    }
                }
            }
        }
        if let Some((version, model)) = prod {
            if let Some(hit) = self.loglik(v, version, model, &md) {
                hits.push(("loglik".into(), "loglik_decay", hit));
            }
        }
        let mut triggers: Vec<TrainingTrigger> = hits
            .into_iter()
            .filter_map(|(feature, detector, hit)| self.fire(v, &feature, detector, hit))
            .collect();
        if let Some(s) = &mut self.schedules {
            triggers.extend(s.observe(&v.instrument, v.ts));
        }
        triggers
    }

    /// One bar through the prod model's filter; a decay detection if the
    /// recent bars fit worse than the model's baseline.
    fn loglik(
        &mut self,
        v: &FeatureVector,
        version: i32,
        model: TrainedModel,
        md: &ModelDetectors,
    ) -> Option<Detection> {
        let t = self
            .tracked
            .entry(v.instrument.clone())
            .or_insert_with(|| Tracked {
                version: -1,
                model: model.clone(),
                filter: OnlineFilter::new(),
                decay: None,
                last_ts: i64::MIN,
            });
        if t.version != version {
            let decay = model.loglik_baseline.map(|b| {
                LikelihoodDecay::new(b.mean, b.std, md.loglik_window, md.loglik_threshold)
            });
            *t = Tracked {
                version,
                model,
                filter: OnlineFilter::new(),
                decay,
                last_ts: i64::MIN,
            };
        }
        if v.ts <= t.last_ts {
            return None;
        }
        t.last_ts = v.ts;
        let row = t.model.row(v).filter(|r| r.iter().all(|x| x.is_finite()))?;
        let (_, ll) = t
            .filter
            .step(&t.model.hmm, &t.model.standardise(&row))
            .ok()?;
        t.decay.as_mut()?.update(ll + t.model.log_jacobian())
    }
}

/// A seed derived from the trigger id (same trigger ⇒ same seed).
pub fn seed_of(id: &str) -> i64 {
    (EventId::derive(&[b"seed", id.as_bytes()]).0 >> 65) as i64
}

impl Processor for DriftProcessor {
    type Input = DriftInput;

    fn name(&self) -> &str {
        "drift"
    }

    fn process(
        &mut self,
        input: &Incoming<DriftInput>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        match &input.value {
            DriftInput::Model(e) => self
                .apply_model(e)
                .map_err(|why| ProcessError::invalid(format!("registry event refused: {why}"))),
            DriftInput::Features(v) => {
                for t in self.apply(v) {
                    out.send(TRAINING_TRIGGERS, &t.model_key.clone(), &t)?;
                }
                if self.aligned {
                    let key = self.model_key(&v.instrument);
                    let every = self.config.progress_every_ms.max(1);
                    if self.progress.get(&key).is_none_or(|p| v.ts >= p + every) {
                        self.progress.insert(key.clone(), v.ts);
                        out.progress(TRAINING_TRIGGERS, &key, v.ts);
                    }
                }
                Ok(())
            }
        }
    }

    fn rebuilds_from_inputs(&self) -> bool {
        true
    }

    fn control_topics(&self) -> &'static [&'static str] {
        if self.aligned {
            &[MODEL_UPDATES_NAME]
        } else {
            &[]
        }
    }

    /// A bar waits for `model.updates` of its key through its time; while
    /// it waits, the triggers of its key are complete through the instant
    /// before it (every earlier bar was processed).
    fn wait(&self, input: &DriftInput) -> Option<Wait> {
        let DriftInput::Features(v) = input else {
            return None;
        };
        if !self.aligned {
            return None;
        }
        let key = self.model_key(&v.instrument);
        Some(Wait {
            until: v.ts,
            on: vec![(MODEL_UPDATES_NAME, key.clone())],
            also: Vec::new(),
            announce: vec![OutRecord::progress(
                TRAINING_TRIGGERS.name(),
                &key,
                v.ts.saturating_sub(1),
            )],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::FeatureValue;
    use autotrain_trainer::Registry;

    fn vector(ts: i64, lr: f64) -> FeatureVector {
        FeatureVector {
            instrument: "x:A".into(),
            timeframe: "1m".into(),
            ts,
            contract_version: "1".into(),
            bar_revision: 0,
            values: vec![FeatureValue {
                name: "lr".into(),
                value: Some(lr),
            }],
        }
    }

    #[test]
    fn a_shift_triggers_once_per_cooldown_with_its_evidence() {
        let only_lr = || DriftConfig {
            watch: DriftConfig::default().watch[..1].to_vec(),
            cooldown_ms: 1_000 * 60_000,
            ..DriftConfig::default()
        };
        let mut p = DriftProcessor::new(only_lr());
        let values = crate::stream::shifted(5, 3_000, 3_000, 1.5);
        let mut triggers = Vec::new();
        for (i, x) in values.iter().enumerate() {
            triggers.extend(p.apply(&vector(i as i64 * 60_000, 0.001 * x)));
        }
        assert!(!triggers.is_empty());
        let first = &triggers[0];
        assert!(first.created_at >= 3_000 * 60_000, "{first:?}");
        assert_eq!(first.model_key, "hmm/x:A");
        assert_eq!(first.reason, TriggerReason::Drift);
        let ev = first.evidence.as_ref().expect("evidence");
        assert_eq!((ev.instrument.as_str(), ev.feature.as_str()), ("x:A", "lr"));
        assert!(ev.statistic > ev.threshold || ev.detector == "adwin");
        // Several detectors agree on the shift; the cooldown keeps one.
        assert!(p.suppressed > 0, "suppressed {}", p.suppressed);
        for w in triggers.windows(2) {
            assert!(w[1].created_at - w[0].created_at >= 1_000 * 60_000);
        }
        // Same input, same triggers (ids, seeds).
        let mut again = DriftProcessor::new(only_lr());
        let mut replay = Vec::new();
        for (i, x) in values.iter().enumerate() {
            replay.extend(again.apply(&vector(i as i64 * 60_000, 0.001 * x)));
        }
        assert_eq!(replay, triggers);
    }

    #[test]
    fn corrections_of_past_bars_do_not_refeed_detectors() {
        let mut p = DriftProcessor::new(DriftConfig::default());
        for i in 0..600 {
            p.apply(&vector(i * 60_000, 0.001 * ((i % 5) as f64 - 2.0)));
        }
        let before = p.series.values().next().map(|s| s.last_ts);
        assert!(p.apply(&vector(10 * 60_000, 9.0)).is_empty());
        assert_eq!(p.series.values().next().map(|s| s.last_ts), before);
    }

    /// A prod model fitted to calm returns: N(0, 1e-3²) on `lr`.
    fn calm_model() -> TrainedModel {
        use autotrain_trainer::{Baseline, Covariance, Distribution, GaussianHmm};
        let calm: Vec<f64> = crate::stream::shifted(11, 4_000, 4_000, 0.0)
            .iter()
            .map(|x| 0.001 * x)
            .collect();
        let hmm = GaussianHmm {
            k: 1,
            d: 1,
            covariance: Covariance::Diag,
            start: vec![1.0],
            trans: vec![1.0],
            means: vec![0.0],
            covars: vec![1e-6],
        };
        let mut filter = OnlineFilter::new();
        let ll: Vec<f64> = calm
            .iter()
            .filter_map(|x| filter.step(&hmm, &[*x]).ok().map(|(_, l)| l))
            .collect();
        let mean = ll.iter().sum::<f64>() / ll.len() as f64;
        let std =
            (ll.iter().map(|l| (l - mean) * (l - mean)).sum::<f64>() / ll.len() as f64).sqrt();
        TrainedModel {
            columns: vec!["lr".into()],
            hmm,
            scaling: Vec::new(),
            reference: [(
                "lr".to_string(),
                Distribution::of(&calm, 10).expect("deciles"),
            )]
            .into_iter()
            .collect(),
            loglik_baseline: Some(Baseline { mean, std }),
        }
    }

    #[test]
    fn the_prod_models_detectors_fire_when_returns_leave_its_regime() {
        let mut p = DriftProcessor::new(DriftConfig {
            watch: vec![Watch {
                feature: "lr".into(),
                detectors: vec![],
            }],
            cooldown_ms: 0,
            ..DriftConfig::default()
        });
        let mut registry = Registry::new();
        let model = calm_model();
        let manifest = autotrain_schemas::Manifest {
            trigger_id: "t".into(),
            code_version: "test".into(),
            feature_contract_version: "1".into(),
            inputs: vec![],
            split_version: "v1".into(),
            reference_hash: "r".into(),
            hyperparams: vec![],
            seed: 1,
            dataset_version: None,
            code_commit: None,
            feature_contract_hash: None,
            feature_build: None,
        };
        let v1 = registry.register(
            "hmm/x:A",
            "tr",
            model.to_bytes(),
            model.hmm.param_hash(),
            vec![],
            manifest,
            0,
        );
        registry.apply(&v1).expect("v1");
        let prod = registry.promote("hmm/x:A", 1, PROD, 1).expect("promote");
        p.apply_model(&v1).expect("register");
        p.apply_model(&prod).expect("promote");

        // Calm bars (like the training data), then three times the volatility.
        let values = crate::stream::shifted(12, 2_000, 0, 0.0);
        let mut triggers = Vec::new();
        for (i, x) in values.iter().enumerate() {
            let vol = if i < 1_200 { 0.001 } else { 0.003 };
            triggers.extend(p.apply(&vector(i as i64 * 60_000, vol * x)));
        }
        let first = |name: &str| {
            triggers
                .iter()
                .find(|t| t.evidence.as_ref().is_some_and(|e| e.detector == name))
                .map(|t| t.created_at / 60_000)
        };
        let (ll, psi) = (first("loglik_decay"), first("psi_prod"));
        assert!(
            ll.is_some_and(|t| (1_200..1_500).contains(&t)),
            "loglik decay at {ll:?}"
        );
        assert!(
            psi.is_some_and(|t| (1_200..1_800).contains(&t)),
            "psi at {psi:?}"
        );
        let ev = triggers[0].evidence.as_ref().expect("evidence");
        assert!(ev.statistic > ev.threshold);
    }
}
