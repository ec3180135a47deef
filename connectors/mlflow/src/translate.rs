//! What an autotrain event becomes in MLflow: pure, no I/O.
//!
//! - A registered version ⇒ a FINISHED run in the experiment named after
//!   the model key (params: hyper-parameters, seed, feature contract,
//!   split; metrics: every reference metric the trainer computed; tags:
//!   lineage; artifacts: the parameters and the manifest) and a registered
//!   model version pointing at the run's `model/` artifacts.
//! - A failed or cancelled training ⇒ a FAILED or KILLED run with the
//!   error, no version.
//! - An alias moved or a rollback ⇒ the MLflow alias moved.
//!
//! Registered-model names cannot hold `/` or `:` in MLflow: both become
//! `.` (`hmm/bitfinex:BTCUSD` ⇒ `hmm.bitfinex.BTCUSD`), and the model key
//! is kept in the `autotrain.model_key` tag, which the mirror checks so
//! that two keys mapping to one name fail loudly.

use autotrain_schemas::{Manifest, ModelVersion, RegistryEvent, TrainingState, TrainingStatus};
use sha2::{Digest, Sha256};

pub const TAG_MODEL_KEY: &str = "autotrain.model_key";
pub const TAG_VERSION: &str = "autotrain.version";
pub const TAG_TRAINING_ID: &str = "autotrain.training_id";
pub const TAG_OUTCOME: &str = "autotrain.outcome";

/// MLflow run states the mirror writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// One MLflow run, complete.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub experiment: String,
    pub run_name: String,
    /// Tags that identify the run (its search filter); also set on it.
    pub identity: Vec<(String, String)>,
    pub start_time: i64,
    pub end_time: i64,
    pub status: RunStatus,
    pub params: Vec<(String, String)>,
    pub metrics: Vec<(String, f64)>,
    pub tags: Vec<(String, String)>,
    /// Paths under the run's artifact root, and their bytes.
    pub artifacts: Vec<(String, Vec<u8>)>,
}

/// One registered model version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSpec {
    pub name: String,
    pub version: i32,
    pub description: String,
    pub tags: Vec<(String, String)>,
    /// Under the run's artifact root.
    pub artifact_dir: &'static str,
}

/// An alias to set.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasSpec {
    pub name: String,
    pub alias: String,
    pub version: i32,
}

/// What one input asks of MLflow.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A version registered: its run, the version, and its alias (staging);
    /// a hyper-parameter search's trials as child runs of its run.
    Register {
        model_key: String,
        run: Box<RunSpec>,
        trials: Vec<RunSpec>,
        version: VersionSpec,
        alias: Option<AliasSpec>,
    },
    /// A training that failed or was cancelled: its run.
    Failure { run: Box<RunSpec> },
    /// `prod` (or another alias) moved, by promotion or rollback.
    Alias {
        model_key: String,
        alias: AliasSpec,
        rollback: bool,
    },
}

pub fn experiment_name(prefix: &str, model_key: &str) -> String {
    format!("{prefix}{model_key}")
}

pub fn registered_model_name(prefix: &str, model_key: &str) -> String {
    format!("{prefix}{model_key}").replace(['/', ':'], ".")
}

/// MLflow accepts letters, digits and `_ - . / space` in param and metric
/// names; anything else becomes `_`.
pub fn key_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// SHA-256 of the manifest's JSON: the `autotrain.manifest_hash` tag.
pub fn manifest_hash(manifest: &Manifest) -> String {
    let json = serde_json::to_vec(manifest).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

/// MLflow caps param values at 6,000 characters and tags at 8,000.
fn capped(value: &str, max: usize) -> String {
    if value.chars().count() <= max {
        return value.to_string();
    }
    let mut out: String = value.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The step a registry event calls for.
pub fn from_registry(prefix: &str, e: &ModelVersion) -> Step {
    let name = registered_model_name(prefix, &e.model_key);
    match e.event {
        RegistryEvent::AliasMoved | RegistryEvent::Rollback => Step::Alias {
            model_key: e.model_key.clone(),
            alias: AliasSpec {
                name,
                alias: e.alias.clone().unwrap_or_default(),
                version: e.version,
            },
            rollback: e.event == RegistryEvent::Rollback,
        },
        RegistryEvent::Registered => {
            let training_id = e.training_id.clone().unwrap_or_default();
            let mut params = Vec::new();
            let mut tags = vec![
                (
                    "autotrain.parameter_hash".to_string(),
                    e.parameter_hash.clone(),
                ),
                ("autotrain.registered_at".to_string(), e.at.to_string()),
            ];
            if let Some(t) = e.effective_from {
                tags.push(("autotrain.effective_from".into(), t.to_string()));
            }
            for t in &e.tags {
                let (k, v) = t.split_once(':').unwrap_or((t.as_str(), ""));
                tags.push((format!("autotrain.{}", key_name(k)), capped(v, 8000)));
            }
            if let Some(m) = &e.manifest {
                for p in &m.hyperparams {
                    params.push((key_name(&p.name), capped(&p.value, 6000)));
                }
                params.push(("seed".into(), m.seed.to_string()));
                params.push((
                    "feature_contract".into(),
                    m.feature_contract_version.clone(),
                ));
                params.push(("split_version".into(), m.split_version.clone()));
                // One value per key (MLflow refuses repeats): the
                // hyper-parameter's own wins.
                let mut seen = std::collections::HashSet::new();
                params.retain(|(k, _)| seen.insert(k.clone()));
                tags.extend([
                    ("autotrain.trigger_id".to_string(), m.trigger_id.clone()),
                    ("autotrain.code_version".into(), m.code_version.clone()),
                    (
                        "autotrain.code_commit".into(),
                        m.code_commit.clone().unwrap_or_else(|| "unknown".into()),
                    ),
                    (
                        "autotrain.dataset_version".into(),
                        m.dataset_version.clone().unwrap_or_else(|| "none".into()),
                    ),
                    (
                        "autotrain.feature_contract".into(),
                        m.feature_contract_version.clone(),
                    ),
                    ("autotrain.reference_hash".into(), m.reference_hash.clone()),
                    ("autotrain.manifest_hash".into(), manifest_hash(m)),
                ]);
                tags.extend(
                    [
                        ("autotrain.feature_contract_hash", &m.feature_contract_hash),
                        ("autotrain.feature_build", &m.feature_build),
                    ]
                    .into_iter()
                    .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v))),
                );
            }
            let mut metrics = Vec::new();
            for m in &e.metrics {
                if m.value.is_finite() {
                    metrics.push((key_name(&m.name), m.value));
                } else {
                    // JSON has no NaN or infinity: kept as a tag.
                    tags.push((
                        format!("autotrain.metric.{}", key_name(&m.name)),
                        m.value.to_string(),
                    ));
                }
            }
            let mut artifacts = Vec::new();
            if let Some(p) = &e.parameters {
                artifacts.push(("model/parameters.json".to_string(), p.clone()));
            }
            if let Some(m) = &e.manifest {
                artifacts.push((
                    "model/manifest.json".to_string(),
                    serde_json::to_vec_pretty(m).unwrap_or_default(),
                ));
            }
            let identity = vec![
                (TAG_MODEL_KEY.to_string(), e.model_key.clone()),
                (TAG_VERSION.to_string(), e.version.to_string()),
                (TAG_OUTCOME.to_string(), "registered".to_string()),
            ];
            tags.push((TAG_TRAINING_ID.into(), training_id.clone()));
            let trials = search_trials(prefix, e, &training_id);
            let version = VersionSpec {
                name: name.clone(),
                version: e.version,
                description: format!(
                    "autotrain {} v{} (training {training_id}, parameters sha256 {})",
                    e.model_key, e.version, e.parameter_hash
                ),
                tags: vec![
                    (TAG_MODEL_KEY.to_string(), e.model_key.clone()),
                    (TAG_VERSION.to_string(), e.version.to_string()),
                    (TAG_TRAINING_ID.to_string(), training_id.clone()),
                    ("autotrain.parameter_hash".into(), e.parameter_hash.clone()),
                ],
                artifact_dir: "model",
            };
            Step::Register {
                model_key: e.model_key.clone(),
                trials,
                run: Box::new(RunSpec {
                    experiment: experiment_name(prefix, &e.model_key),
                    run_name: format!("v{} {training_id}", e.version),
                    identity,
                    start_time: e.at,
                    end_time: e.at,
                    status: RunStatus::Finished,
                    params,
                    metrics,
                    tags,
                    artifacts,
                }),
                alias: e.alias.clone().map(|alias| AliasSpec {
                    name,
                    alias,
                    version: e.version,
                }),
                version,
            }
        }
    }
}

/// A search's trials (`trial_NNN_<name>` metrics of a registered gbdt
/// version) as child runs: the metric searched on and the parameters
/// tried. The parent link (`mlflow.parentRunId`) is added by the mirror
/// once the parent run exists.
fn search_trials(prefix: &str, e: &ModelVersion, training_id: &str) -> Vec<RunSpec> {
    let mut by_trial: std::collections::BTreeMap<&str, Vec<(&str, f64)>> = Default::default();
    for m in &e.metrics {
        let Some(rest) = m.name.strip_prefix("trial_") else {
            continue;
        };
        let Some((n, name)) = rest.split_once('_') else {
            continue;
        };
        by_trial.entry(n).or_default().push((name, m.value));
    }
    const PARAMS: [&str; 5] = [
        "learning_rate",
        "max_depth",
        "min_leaf_weight",
        "subsample",
        "l2",
    ];
    by_trial
        .into_iter()
        .map(|(n, values)| {
            let (params, metrics): (Vec<_>, Vec<_>) = values
                .into_iter()
                .partition(|(name, _)| PARAMS.contains(name));
            RunSpec {
                experiment: experiment_name(prefix, &e.model_key),
                run_name: format!("v{} trial {n}", e.version),
                identity: vec![
                    (TAG_MODEL_KEY.to_string(), e.model_key.clone()),
                    (TAG_VERSION.to_string(), e.version.to_string()),
                    (TAG_OUTCOME.to_string(), format!("trial {n}")),
                ],
                start_time: e.at,
                end_time: e.at,
                status: RunStatus::Finished,
                params: params
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                metrics: metrics
                    .into_iter()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(k, v)| (key_name(k), v))
                    .collect(),
                tags: vec![(TAG_TRAINING_ID.to_string(), training_id.to_string())],
                artifacts: Vec::new(),
            }
        })
        .collect()
}

/// The step a training status calls for: only failures and cancellations
/// (a completed training is mirrored from its registered version).
pub fn from_status(prefix: &str, s: &TrainingStatus) -> Option<Step> {
    let status = match s.state {
        TrainingState::Failed => RunStatus::Failed,
        TrainingState::Cancelled => RunStatus::Killed,
        _ => return None,
    };
    let outcome = if status == RunStatus::Failed {
        "failed"
    } else {
        "cancelled"
    };
    let mut tags = vec![
        (TAG_MODEL_KEY.to_string(), s.model_key.clone()),
        ("autotrain.attempt".into(), s.attempt.to_string()),
        ("autotrain.message".into(), capped(&s.message, 8000)),
    ];
    if let Some(e) = &s.error {
        tags.push(("autotrain.error".into(), capped(e, 8000)));
    }
    if let Some(stage) = &s.stage {
        tags.push(("autotrain.stage".into(), stage.clone()));
    }
    Some(Step::Failure {
        run: Box::new(RunSpec {
            experiment: experiment_name(prefix, &s.model_key),
            run_name: format!("{outcome} {}", s.training_id),
            identity: vec![
                (TAG_TRAINING_ID.to_string(), s.training_id.clone()),
                (TAG_OUTCOME.to_string(), outcome.to_string()),
            ],
            start_time: s.at,
            end_time: s.at,
            status,
            params: Vec::new(),
            metrics: s
                .metrics
                .iter()
                .filter(|m| m.value.is_finite())
                .map(|m| (key_name(&m.name), m.value))
                .collect(),
            tags,
            artifacts: Vec::new(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::{Metric, Param};

    fn registered() -> ModelVersion {
        ModelVersion {
            model_key: "hmm/bitfinex:BTCUSD".into(),
            version: 3,
            event: RegistryEvent::Registered,
            training_id: Some("tr-9".into()),
            parameters: Some(b"{\"k\":3}".to_vec()),
            artifact_hash: None,
            parameter_hash: "abc".into(),
            metrics: vec![
                Metric {
                    name: "loglik_per_bar".into(),
                    value: 1.25,
                },
                Metric {
                    name: "trend_sharpe".into(),
                    value: f64::NAN,
                },
            ],
            tags: vec!["reason:drift".into(), "dataset:snap-1".into()],
            manifest: Some(Manifest {
                trigger_id: "t-1".into(),
                code_version: "0.1.0".into(),
                feature_contract_version: "fc-1".into(),
                inputs: vec![],
                split_version: "s1".into(),
                reference_hash: "r".into(),
                hyperparams: vec![Param {
                    name: "n_states(max)".into(),
                    value: "3".into(),
                }],
                seed: 42,
                dataset_version: Some("snap-1".into()),
                code_commit: Some("deadbeef".into()),
                feature_contract_hash: None,
                feature_build: None,
            }),
            alias: Some("staging".into()),
            previous_version: None,
            at: 1_000,
            effective_from: Some(900),
        }
    }

    #[test]
    fn a_registered_version_is_a_finished_run_a_version_and_its_alias() {
        let Step::Register {
            run,
            version,
            alias,
            model_key,
            ..
        } = from_registry("p-", &registered())
        else {
            panic!("not a registration");
        };
        assert_eq!(model_key, "hmm/bitfinex:BTCUSD");
        assert_eq!(run.experiment, "p-hmm/bitfinex:BTCUSD");
        assert_eq!(version.name, "p-hmm.bitfinex.BTCUSD");
        assert_eq!(version.version, 3);
        assert_eq!(run.status, RunStatus::Finished);
        assert!(run.params.contains(&("n_states_max_".into(), "3".into())));
        assert!(run.params.contains(&("seed".into(), "42".into())));
        assert_eq!(run.metrics, vec![("loglik_per_bar".to_string(), 1.25)]);
        let tag = |k: &str| run.tags.iter().find(|t| t.0 == k).map(|t| t.1.as_str());
        assert_eq!(tag("autotrain.metric.trend_sharpe"), Some("NaN"));
        assert_eq!(tag("autotrain.dataset_version"), Some("snap-1"));
        assert_eq!(tag("autotrain.code_commit"), Some("deadbeef"));
        assert_eq!(tag("autotrain.reason"), Some("drift"));
        assert_eq!(tag(TAG_TRAINING_ID), Some("tr-9"));
        assert_eq!(
            tag("autotrain.manifest_hash").map(str::len),
            Some(64),
            "sha256 hex"
        );
        assert_eq!(run.artifacts[0].0, "model/parameters.json");
        assert_eq!(
            alias,
            Some(AliasSpec {
                name: "p-hmm.bitfinex.BTCUSD".into(),
                alias: "staging".into(),
                version: 3
            })
        );
    }

    #[test]
    fn a_search_s_trials_become_child_runs() {
        let mut e = registered();
        e.metrics.extend([
            Metric {
                name: "trial_000_rmsle".into(),
                value: 0.2,
            },
            Metric {
                name: "trial_000_learning_rate".into(),
                value: 0.05,
            },
            Metric {
                name: "trial_001_rmsle".into(),
                value: 0.1,
            },
        ]);
        let Step::Register { trials, run, .. } = from_registry("", &e) else {
            panic!("not a registration");
        };
        assert_eq!(trials.len(), 2);
        assert_eq!(trials[0].run_name, "v3 trial 000");
        assert_eq!(
            trials[0].params,
            vec![("learning_rate".to_string(), "0.05".to_string())]
        );
        assert_eq!(trials[1].metrics, vec![("rmsle".to_string(), 0.1)]);
        assert_ne!(
            trials[0].identity, run.identity,
            "a child is never taken for its parent"
        );
    }

    #[test]
    fn alias_moves_and_rollbacks_move_the_alias() {
        let mut e = registered();
        e.event = RegistryEvent::Rollback;
        e.alias = Some("prod".into());
        e.version = 2;
        assert_eq!(
            from_registry("", &e),
            Step::Alias {
                model_key: e.model_key.clone(),
                alias: AliasSpec {
                    name: "hmm.bitfinex.BTCUSD".into(),
                    alias: "prod".into(),
                    version: 2
                },
                rollback: true
            }
        );
    }

    #[test]
    fn only_failures_and_cancellations_of_trainings_become_runs() {
        let mut s = TrainingStatus {
            training_id: "tr-1".into(),
            model_key: "k".into(),
            state: TrainingState::Running,
            stage: None,
            progress: 0.5,
            message: "fitting".into(),
            metrics: vec![],
            error: None,
            attempt: 1,
            model_version: None,
            at: 5,
        };
        assert_eq!(from_status("", &s), None);
        s.state = TrainingState::Completed;
        assert_eq!(from_status("", &s), None);
        s.state = TrainingState::Failed;
        s.error = Some("no data".into());
        let Some(Step::Failure { run }) = from_status("", &s) else {
            panic!("no run");
        };
        assert_eq!(run.status, RunStatus::Failed);
        assert!(run
            .tags
            .contains(&("autotrain.error".into(), "no data".into())));
        assert_eq!(capped(&"é".repeat(10), 5), "éééé…");
    }
}
