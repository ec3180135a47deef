//! The model registry as a fold over `model.updates`: every `ModelVersion`
//! event (a version registered, an alias moved, a rollback) applied in
//! order gives the versions and aliases of each model key. The same fold
//! validates new events (version numbers are dense and increasing, aliases
//! point at registered versions) and builds them, so what the trainer and
//! the API publish is always something a replay accepts.
//!
//! [`promotion`] is the guardrail decision: a challenger moves `prod` only
//! if every rule holds, and the reasons are kept either way.

use std::collections::BTreeMap;

use autotrain_schemas::{Manifest, Metric, ModelVersion, RegistryEvent};

pub const PROD: &str = "prod";
pub const STAGING: &str = "staging";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("{key}: version {got} registered out of order (next is {expected})")]
    OutOfOrder {
        key: String,
        expected: i32,
        got: i32,
    },
    #[error("{key}: no version {version}")]
    NoSuchVersion { key: String, version: i32 },
    #[error("{key}: {event:?} without an alias")]
    NoAlias { key: String, event: RegistryEvent },
    #[error("{key}: v{version} is {alias} already")]
    AlreadyThere {
        key: String,
        version: i32,
        alias: String,
    },
    #[error("{key}: rollback to version {version}, which is not older than prod ({prod:?})")]
    NotARollback {
        key: String,
        version: i32,
        prod: Option<i32>,
    },
}

/// One model key's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    /// Registered versions by number.
    pub versions: BTreeMap<i32, ModelVersion>,
    /// Alias → version.
    pub aliases: BTreeMap<String, i32>,
    /// Every event, in order (the audit trail).
    pub events: Vec<ModelVersion>,
}

impl Model {
    pub fn next_version(&self) -> i32 {
        self.versions.keys().next_back().map_or(1, |v| v + 1)
    }

    pub fn alias(&self, alias: &str) -> Option<&ModelVersion> {
        self.aliases.get(alias).and_then(|v| self.versions.get(v))
    }

    pub fn metric(&self, version: i32, name: &str) -> Option<f64> {
        self.versions
            .get(&version)?
            .metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    models: BTreeMap<String, Model>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    pub fn model(&self, key: &str) -> Option<&Model> {
        self.models.get(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    /// Applies the next event from the topic.
    pub fn apply(&mut self, e: &ModelVersion) -> Result<(), RegistryError> {
        let key = e.model_key.clone();
        let model = self.models.entry(key.clone()).or_default();
        match e.event {
            RegistryEvent::Registered => {
                // The same event again (a replay overlapping a restore).
                if model.versions.get(&e.version) == Some(e) {
                    return Ok(());
                }
                let expected = model.next_version();
                if e.version != expected {
                    return Err(RegistryError::OutOfOrder {
                        key,
                        expected,
                        got: e.version,
                    });
                }
                model.versions.insert(e.version, e.clone());
                if let Some(alias) = &e.alias {
                    model.aliases.insert(alias.clone(), e.version);
                }
            }
            RegistryEvent::AliasMoved | RegistryEvent::Rollback => {
                if !model.versions.contains_key(&e.version) {
                    return Err(RegistryError::NoSuchVersion {
                        key,
                        version: e.version,
                    });
                }
                let Some(alias) = &e.alias else {
                    return Err(RegistryError::NoAlias {
                        key,
                        event: e.event,
                    });
                };
                model.aliases.insert(alias.clone(), e.version);
            }
        }
        model.events.push(e.clone());
        Ok(())
    }

    /// The event registering a new version (in `staging`).
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &self,
        key: &str,
        training_id: &str,
        parameters: Vec<u8>,
        parameter_hash: String,
        metrics: Vec<Metric>,
        manifest: Manifest,
        at: i64,
    ) -> ModelVersion {
        let version = self.models.get(key).map_or(1, Model::next_version);
        ModelVersion {
            model_key: key.to_string(),
            version,
            event: RegistryEvent::Registered,
            training_id: Some(training_id.to_string()),
            parameters: Some(parameters),
            artifact_hash: None,
            parameter_hash,
            metrics,
            tags: Vec::new(),
            manifest: Some(manifest),
            alias: Some(STAGING.into()),
            previous_version: None,
            at,
            effective_from: None,
        }
    }

    fn alias_event(
        &self,
        key: &str,
        version: i32,
        alias: &str,
        event: RegistryEvent,
        at: i64,
    ) -> Result<ModelVersion, RegistryError> {
        let model = self.models.get(key);
        let v = model
            .and_then(|m| m.versions.get(&version))
            .ok_or_else(|| RegistryError::NoSuchVersion {
                key: key.to_string(),
                version,
            })?;
        let previous_version = model.and_then(|m| m.aliases.get(alias).copied());
        if previous_version == Some(version) {
            return Err(RegistryError::AlreadyThere {
                key: key.to_string(),
                version,
                alias: alias.to_string(),
            });
        }
        Ok(ModelVersion {
            event,
            alias: Some(alias.to_string()),
            previous_version,
            at,
            effective_from: None,
            parameters: None,
            manifest: None,
            metrics: Vec::new(),
            tags: Vec::new(),
            ..v.clone()
        })
    }

    /// The event moving `alias` (e.g. `prod`) to `version`.
    pub fn promote(
        &self,
        key: &str,
        version: i32,
        alias: &str,
        at: i64,
    ) -> Result<ModelVersion, RegistryError> {
        self.alias_event(key, version, alias, RegistryEvent::AliasMoved, at)
    }

    /// The event moving `prod` back to an older `version`.
    pub fn rollback(
        &self,
        key: &str,
        version: i32,
        at: i64,
    ) -> Result<ModelVersion, RegistryError> {
        let prod = self
            .models
            .get(key)
            .and_then(|m| m.aliases.get(PROD).copied());
        if prod.is_none_or(|p| version >= p) {
            return Err(RegistryError::NotARollback {
                key: key.to_string(),
                version,
                prod,
            });
        }
        self.alias_event(key, version, PROD, RegistryEvent::Rollback, at)
    }
}

pub mod promotion {
    //! Whether a challenger may become `prod`.

    use autotrain_schemas::Metric;
    use serde::{Deserialize, Serialize};

    use crate::evaluate::PRESETS;

    /// The seed runbook's promotion rules, as config (`[trainer.guardrails]`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Guardrails {
        /// Metric compared (higher is better), challenger against
        /// `min_metric` and against the champion re-scored on the same
        /// reference set: `loglik_per_bar`, or a preset's backtest
        /// `<preset>_sharpe|sortino|pnl` (presets: `trend`, `long_top`,
        /// `avoid_turbulence`).
        pub metric: String,
        /// The challenger's metric must reach this.
        pub min_metric: f64,
        /// The preset whose backtest on the reference set the drawdown and
        /// Sharpe rules read.
        pub preset: String,
        /// That backtest's max drawdown (a positive fraction) must stay
        /// within this.
        pub max_drawdown: f64,
        /// That backtest's Sharpe ratio (annualised) must reach this.
        pub min_sharpe: f64,
        /// The challenger must beat the champion's metric on the same
        /// reference set by at least this margin.
        pub min_improvement: f64,
        /// A rollback goes through when the older version, re-scored on
        /// prod's reference set, scores at least prod's `metric` there
        /// minus this; otherwise it needs `force` and a reason.
        pub rollback_tolerance: f64,
    }

    impl Default for Guardrails {
        fn default() -> Self {
            Guardrails {
                metric: "loglik_per_bar".into(),
                min_metric: f64::NEG_INFINITY,
                preset: "trend".into(),
                max_drawdown: 0.5,
                min_sharpe: f64::NEG_INFINITY,
                min_improvement: 0.0,
                rollback_tolerance: 0.05,
            }
        }
    }

    /// A guardrail naming something the evaluation does not produce.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum GuardrailError {
        #[error("[trainer.guardrails] metric {0:?} is not one the evaluation produces (higher is better): {1}")]
        UnknownMetric(String, String),
        #[error("[trainer.guardrails] preset {0:?} is not a backtest preset: {1:?}")]
        UnknownPreset(String, [&'static str; 3]),
    }

    impl Guardrails {
        /// The metrics [`Guardrails::metric`] may name.
        pub fn metrics() -> Vec<String> {
            let mut out = vec!["loglik_per_bar".to_string()];
            for p in PRESETS {
                for m in ["sharpe", "sortino", "pnl"] {
                    out.push(format!("{p}_{m}"));
                }
            }
            out
        }

        /// Refuses a metric or preset the evaluation does not produce (at
        /// start, not at the first promotion).
        pub fn check(&self) -> Result<(), GuardrailError> {
            let known = Self::metrics();
            if !known.contains(&self.metric) {
                return Err(GuardrailError::UnknownMetric(
                    self.metric.clone(),
                    known.join(", "),
                ));
            }
            if !PRESETS.contains(&self.preset.as_str()) {
                return Err(GuardrailError::UnknownPreset(self.preset.clone(), PRESETS));
            }
            Ok(())
        }

        /// The evidence for these rules among a run's metrics (the
        /// challenger's, and the champion's re-scored as `champion_*`); a
        /// metric missing is NaN, which no rule passes.
        pub fn evidence(&self, metrics: &[Metric], critical_flags: usize) -> Evidence {
            let get = |name: &str| metrics.iter().find(|m| m.name == name).map(|m| m.value);
            let backtest = |what: &str| get(&format!("{}_{what}", self.preset)).unwrap_or(f64::NAN);
            Evidence {
                challenger_metric: get(&self.metric).unwrap_or(f64::NAN),
                champion_metric: get(&format!("champion_{}", self.metric)),
                max_drawdown: backtest("max_drawdown"),
                sharpe: backtest("sharpe"),
                critical_flags,
            }
        }
    }

    impl Guardrails {
        /// Whether a rollback from `prod` to the version re-scored as
        /// `rescored` (its `rescored_*` metrics on prod's reference set)
        /// may go through unforced: `Err` says why not.
        pub fn rollback_check(
            &self,
            prod: &[Metric],
            rescored: &[Metric],
        ) -> Result<(f64, f64), String> {
            let get = |ms: &[Metric], name: &str| {
                ms.iter()
                    .find(|m| m.name == name)
                    .map_or(f64::NAN, |m| m.value)
            };
            let current = get(prod, &self.metric);
            let older = get(rescored, &format!("rescored_{}", self.metric));
            if holds(older >= current - self.rollback_tolerance) {
                Ok((older, current))
            } else {
                Err(format!(
                    "{} {older} on prod's reference set, below prod's {current} by more than the rollback_tolerance {}",
                    self.metric, self.rollback_tolerance
                ))
            }
        }
    }

    /// What the decision rests on.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Evidence {
        pub challenger_metric: f64,
        /// `None` when there is no champion yet.
        pub champion_metric: Option<f64>,
        pub max_drawdown: f64,
        /// The backtest's Sharpe ratio.
        pub sharpe: f64,
        /// Unresolved critical flags (gaps, held anomalies) in the window.
        pub critical_flags: usize,
    }

    #[derive(Debug, Clone, PartialEq)]
    pub enum Decision {
        Promote,
        /// Stays in staging, with every rule that failed.
        Stay(Vec<String>),
    }

    /// A rule's comparison (false when a NaN is involved, so a NaN metric
    /// never passes a guardrail).
    fn holds(comparison: bool) -> bool {
        comparison
    }

    pub fn decide(g: &Guardrails, e: &Evidence) -> Decision {
        let mut why = Vec::new();
        if !holds(e.challenger_metric >= g.min_metric) {
            why.push(format!(
                "{} {} below the minimum {}",
                g.metric, e.challenger_metric, g.min_metric
            ));
        }
        if e.critical_flags > 0 {
            why.push(format!(
                "{} unresolved critical flag(s) in the training window",
                e.critical_flags
            ));
        }
        if !holds(e.sharpe >= g.min_sharpe) {
            why.push(format!(
                "{} backtest Sharpe {:.3} below the policy's {:.3}",
                g.preset, e.sharpe, g.min_sharpe
            ));
        }
        if !holds(e.max_drawdown <= g.max_drawdown) {
            why.push(format!(
                "max drawdown {:.3} beyond the policy's {:.3}",
                e.max_drawdown, g.max_drawdown
            ));
        }
        if let Some(champion) = e.champion_metric {
            if !holds(e.challenger_metric > champion + g.min_improvement) {
                why.push(format!(
                    "{} {} does not beat the champion's {} by {}",
                    g.metric, e.challenger_metric, champion, g.min_improvement
                ));
            }
        }
        if why.is_empty() {
            Decision::Promote
        } else {
            Decision::Stay(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::promotion::{decide, Decision, Evidence, GuardrailError, Guardrails};
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            trigger_id: "t".into(),
            code_version: "0.1.0".into(),
            feature_contract_version: "1".into(),
            inputs: Vec::new(),
            split_version: "s1".into(),
            reference_hash: "r".into(),
            hyperparams: Vec::new(),
            seed: 7,
            dataset_version: None,
            code_commit: None,
            feature_contract_hash: None,
            feature_build: None,
        }
    }

    fn metric(v: f64) -> Vec<Metric> {
        vec![Metric {
            name: "loglik_per_bar".into(),
            value: v,
        }]
    }

    #[test]
    fn a_replay_of_the_events_rebuilds_versions_and_aliases() {
        let mut r = Registry::new();
        let v1 = r.register(
            "hmm/a",
            "tr-1",
            vec![1],
            "h1".into(),
            metric(-1.0),
            manifest(),
            10,
        );
        r.apply(&v1).expect("v1");
        let p1 = r.promote("hmm/a", 1, PROD, 11).expect("promote");
        r.apply(&p1).expect("p1");
        let v2 = r.register(
            "hmm/a",
            "tr-2",
            vec![2],
            "h2".into(),
            metric(-0.9),
            manifest(),
            20,
        );
        assert_eq!(v2.version, 2);
        r.apply(&v2).expect("v2");
        let p2 = r.promote("hmm/a", 2, PROD, 21).expect("promote");
        assert_eq!(p2.previous_version, Some(1));
        r.apply(&p2).expect("p2");
        let back = r.rollback("hmm/a", 1, 30).expect("rollback");
        assert_eq!(
            (back.event, back.previous_version),
            (RegistryEvent::Rollback, Some(2))
        );
        r.apply(&back).expect("back");

        let m = r.model("hmm/a").expect("model");
        assert_eq!(m.alias(PROD).map(|v| v.version), Some(1));
        assert_eq!(m.aliases.get(STAGING), Some(&2));
        assert_eq!(m.events.len(), 5);
        assert_eq!(m.metric(2, "loglik_per_bar"), Some(-0.9));

        let mut replayed = Registry::new();
        for e in &m.events {
            replayed.apply(e).expect("replay");
        }
        assert_eq!(replayed, r);
    }

    #[test]
    fn a_compacted_log_does_not_restore() {
        let mut r = Registry::new();
        let v1 = r.register("k", "t1", vec![], "h1".into(), vec![], manifest(), 0);
        r.apply(&v1).expect("v1");
        let v2 = r.register("k", "t2", vec![], "h2".into(), vec![], manifest(), 1);
        r.apply(&v2).expect("v2");
        let p2 = r.promote("k", 2, PROD, 2).expect("promote");
        r.apply(&p2).expect("p2");
        // What a log cleaner keeps of key "k": its newest event only.
        let mut restored = Registry::new();
        assert!(matches!(
            restored.apply(&p2),
            Err(RegistryError::NoSuchVersion { .. })
        ));
        let mut restored = Registry::new();
        assert!(matches!(
            restored.apply(&v2),
            Err(RegistryError::OutOfOrder {
                expected: 1,
                got: 2,
                ..
            })
        ));
    }

    #[test]
    fn invalid_events_are_refused() {
        let mut r = Registry::new();
        let mut v = r.register("k", "t", vec![], "h".into(), vec![], manifest(), 0);
        v.version = 3;
        assert!(matches!(
            r.apply(&v),
            Err(RegistryError::OutOfOrder {
                expected: 1,
                got: 3,
                ..
            })
        ));
        assert!(matches!(
            r.promote("k", 1, PROD, 0),
            Err(RegistryError::NoSuchVersion { .. })
        ));
        v.version = 1;
        r.apply(&v).expect("v1");
        assert!(matches!(
            r.rollback("k", 1, 0),
            Err(RegistryError::NotARollback { .. })
        ));
        let p1 = r.promote("k", 1, PROD, 1).expect("promote v1");
        r.apply(&p1).expect("p1");
        // A promotion to what is already prod would log a v1 → v1 move.
        assert!(matches!(
            r.promote("k", 1, PROD, 2),
            Err(RegistryError::AlreadyThere { version: 1, .. })
        ));
    }

    #[test]
    fn guardrails_decide_with_reasons() {
        let g = Guardrails {
            min_metric: -2.0,
            max_drawdown: 0.3,
            min_improvement: 0.01,
            ..Guardrails::default()
        };
        let ok = Evidence {
            challenger_metric: -1.0,
            champion_metric: Some(-1.1),
            max_drawdown: 0.1,
            sharpe: 0.5,
            critical_flags: 0,
        };
        assert_eq!(decide(&g, &ok), Decision::Promote);
        assert_eq!(
            decide(
                &g,
                &Evidence {
                    champion_metric: None,
                    ..ok.clone()
                }
            ),
            Decision::Promote
        );
        let bad = Evidence {
            challenger_metric: -1.105,
            champion_metric: Some(-1.1),
            max_drawdown: 0.4,
            sharpe: 0.5,
            critical_flags: 2,
        };
        match decide(&g, &bad) {
            Decision::Stay(why) => assert_eq!(why.len(), 3, "{why:?}"),
            other => panic!("{other:?}"),
        }
        let nan = Evidence {
            challenger_metric: f64::NAN,
            ..ok
        };
        assert!(matches!(decide(&g, &nan), Decision::Stay(_)));
    }

    /// The configured metric is the one compared, read from the run's
    /// metrics with the champion's re-scored beside it; a Sharpe floor
    /// holds back a model whose backtest does not reach it.
    #[test]
    fn guardrails_compare_the_configured_metric() {
        let metrics: Vec<Metric> = [
            ("loglik_per_bar", -1.0),
            ("champion_loglik_per_bar", -1.2),
            ("trend_sharpe", 0.4),
            ("champion_trend_sharpe", 0.9),
            ("trend_max_drawdown", 0.1),
        ]
        .iter()
        .map(|(n, v)| Metric {
            name: n.to_string(),
            value: *v,
        })
        .collect();
        let by_loglik = Guardrails::default();
        assert_eq!(
            decide(&by_loglik, &by_loglik.evidence(&metrics, 0)),
            Decision::Promote
        );
        let by_sharpe = Guardrails {
            metric: "trend_sharpe".into(),
            ..Guardrails::default()
        };
        by_sharpe.check().expect("known");
        let e = by_sharpe.evidence(&metrics, 0);
        assert_eq!((e.challenger_metric, e.champion_metric), (0.4, Some(0.9)));
        match decide(&by_sharpe, &e) {
            Decision::Stay(why) => assert!(why[0].contains("trend_sharpe"), "{why:?}"),
            other => panic!("{other:?}"),
        }
        let floor = Guardrails {
            min_sharpe: 0.5,
            ..Guardrails::default()
        };
        match decide(&floor, &floor.evidence(&metrics, 0)) {
            Decision::Stay(why) => assert!(why[0].contains("Sharpe 0.400"), "{why:?}"),
            other => panic!("{other:?}"),
        }
        // A rollback: the older version re-scored on prod's reference set
        // against prod's own score there, within the tolerance.
        let prod = [Metric {
            name: "loglik_per_bar".into(),
            value: -1.0,
        }];
        let rescored = |v: f64| {
            [Metric {
                name: "rescored_loglik_per_bar".into(),
                value: v,
            }]
        };
        let g = Guardrails::default();
        assert_eq!(g.rollback_check(&prod, &rescored(-1.04)), Ok((-1.04, -1.0)));
        assert!(g.rollback_check(&prod, &rescored(-1.06)).is_err());
        assert!(
            g.rollback_check(&prod, &[]).is_err(),
            "no re-score, no verdict"
        );
        // What the evaluation does not produce is refused at start.
        let typo = Guardrails {
            metric: "trend_sharp".into(),
            ..Guardrails::default()
        };
        assert!(matches!(
            typo.check(),
            Err(GuardrailError::UnknownMetric(..))
        ));
        let lower_is_better = Guardrails {
            metric: "trend_max_drawdown".into(),
            ..Guardrails::default()
        };
        assert!(lower_is_better.check().is_err());
        let preset = Guardrails {
            preset: "yolo".into(),
            ..Guardrails::default()
        };
        assert!(matches!(
            preset.check(),
            Err(GuardrailError::UnknownPreset(..))
        ));
    }
}
