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

use autotrain_kafka::{EventId, Incoming, Outputs, ProcessError, Processor};
use autotrain_schemas::{DriftEvidence, FeatureVector, Priority, TrainingTrigger, TriggerReason};
use autotrain_topics::TRAINING_TRIGGERS;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::detectors::{Adwin, Detector, PageHinkley, Psi};

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
        }
    }
}

#[derive(Debug)]
struct Series {
    last_ts: i64,
    warm: Vec<f64>,
    scale: Option<(f64, f64)>,
    detectors: Vec<Box<dyn Detector>>,
}

#[derive(Debug)]
pub struct DriftProcessor {
    config: DriftConfig,
    series: FxHashMap<(String, String), Series>,
    last_trigger: FxHashMap<String, i64>,
    /// Triggers emitted, and detections inside a cooldown.
    pub triggers: u64,
    pub suppressed: u64,
}

impl DriftProcessor {
    pub fn new(config: DriftConfig) -> Self {
        DriftProcessor {
            config,
            series: FxHashMap::default(),
            last_trigger: FxHashMap::default(),
            triggers: 0,
            suppressed: 0,
        }
    }

    pub fn model_key(&self, instrument: &str) -> String {
        self.config.model_key.replace("{instrument}", instrument)
    }

    /// Feeds one feature vector; returns the triggers to publish.
    pub fn apply(&mut self, v: &FeatureVector) -> Vec<TrainingTrigger> {
        let mut out = Vec::new();
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
                let Some(hit) = d.update(z) else { continue };
                let model_key = self.config.model_key.replace("{instrument}", &v.instrument);
                if self
                    .last_trigger
                    .get(&model_key)
                    .is_some_and(|t| v.ts < t + self.config.cooldown_ms)
                {
                    self.suppressed += 1;
                    continue;
                }
                self.last_trigger.insert(model_key.clone(), v.ts);
                self.triggers += 1;
                let trigger_id = format!("drift:{model_key}:{}:{}:{name}", v.ts, d.name());
                out.push(TrainingTrigger {
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
                        detector: d.name().to_string(),
                        instrument: v.instrument.clone(),
                        feature: name.clone(),
                        statistic: hit.statistic,
                        threshold: hit.threshold,
                        window: i32::try_from(hit.window).unwrap_or(i32::MAX),
                    }),
                    rerun_of: None,
                    created_at: v.ts,
                });
            }
        }
        out
    }
}

/// A seed derived from the trigger id (same trigger ⇒ same seed).
pub fn seed_of(id: &str) -> i64 {
    (EventId::derive(&[b"seed", id.as_bytes()]).0 >> 65) as i64
}

impl Processor for DriftProcessor {
    type Input = FeatureVector;

    fn name(&self) -> &str {
        "drift"
    }

    fn process(
        &mut self,
        input: &Incoming<FeatureVector>,
        out: &mut Outputs,
    ) -> Result<(), ProcessError> {
        for t in self.apply(&input.value) {
            out.send(TRAINING_TRIGGERS, &t.model_key.clone(), &t)?;
        }
        Ok(())
    }

    fn rebuilds_from_inputs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::FeatureValue;

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
}
