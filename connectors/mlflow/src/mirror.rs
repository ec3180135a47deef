//! The mirror: a [`Sink`] over `model.updates` and `training.status` that
//! applies each input's [`Step`] to MLflow, in order, looking before it
//! writes (a run is found by its identity tags, a version by its
//! `autotrain.version` tag), so a batch applied twice leaves MLflow as
//! once. A flush applies the pending steps front to back and keeps the
//! ones not yet applied for the retry.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use autotrain_kafka::{Inbound, Incoming, ProcessError, Sink};
use autotrain_schemas::{decode, ModelVersion, TrainingStatus, WireError};
use autotrain_topics::{MODEL_UPDATES, TRAINING_STATUS};

use crate::client::{MlflowClient, MlflowError, RunInfo};
use crate::translate::{self, RunSpec, Step, VersionSpec, TAG_MODEL_KEY, TAG_VERSION};

/// The topics the mirror reads.
pub const INPUTS: &[&str] = &[MODEL_UPDATES.name(), TRAINING_STATUS.name()];

#[derive(Debug, Clone)]
pub enum MirrorInput {
    Registry(Box<ModelVersion>),
    Status(TrainingStatus),
}

impl Inbound for MirrorInput {
    fn decode(topic: &str, bytes: &[u8]) -> Result<Self, WireError> {
        if topic == TRAINING_STATUS.name() {
            decode(bytes).map(MirrorInput::Status)
        } else {
            decode(bytes).map(|v| MirrorInput::Registry(Box::new(v)))
        }
    }
}

/// Counts of the mirror's work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MirrorStats {
    pub registry_events: u64,
    pub statuses: u64,
    /// Statuses with nothing for MLflow (progress, completions).
    pub passed_over: u64,
    pub steps_applied: u64,
    pub runs_created: u64,
    /// Runs found already complete (a batch applied again).
    pub runs_found: u64,
    pub versions_created: u64,
    pub aliases_set: u64,
    pub artifacts_uploaded: u64,
    /// Artifacts not uploaded: the server does not proxy artifacts.
    pub artifacts_skipped: u64,
    pub failed_flushes: u64,
}

#[derive(Debug)]
pub struct MlflowMirror {
    client: MlflowClient,
    prefix: String,
    pending: VecDeque<Step>,
    experiments: HashMap<String, String>,
    /// Registered model ⇒ autotrain version ⇒ MLflow version.
    versions: HashMap<String, BTreeMap<i32, String>>,
    checked: HashSet<String>,
    pub stats: MirrorStats,
}

impl MlflowMirror {
    pub fn new(client: MlflowClient, name_prefix: &str) -> Self {
        MlflowMirror {
            client,
            prefix: name_prefix.to_string(),
            pending: VecDeque::new(),
            experiments: HashMap::new(),
            versions: HashMap::new(),
            checked: HashSet::new(),
            stats: MirrorStats::default(),
        }
    }

    async fn experiment(&mut self, name: &str) -> Result<String, MlflowError> {
        if let Some(id) = self.experiments.get(name) {
            return Ok(id.clone());
        }
        let id = self.client.experiment(name).await?;
        self.experiments.insert(name.to_string(), id.clone());
        Ok(id)
    }

    /// The run, complete: found, or created (or finished if a crash left
    /// it half written) with its params, metrics, tags and artifacts.
    async fn ensure_run(&mut self, run: &RunSpec) -> Result<RunInfo, MlflowError> {
        let experiment = self.experiment(&run.experiment).await?;
        let found = self.client.find_runs(&experiment, &run.identity).await?;
        if let Some(done) = found.iter().find(|r| r.status == run.status.as_str()) {
            self.stats.runs_found += 1;
            return Ok(done.clone());
        }
        let info = match found.into_iter().next() {
            Some(half_written) => half_written,
            None => {
                let mut tags = run.identity.clone();
                tags.extend(run.tags.iter().cloned());
                self.stats.runs_created += 1;
                self.client
                    .create_run(&experiment, &run.run_name, run.start_time, &tags)
                    .await?
            }
        };
        self.client
            .log(
                &info.run_id,
                &run.params,
                &run.metrics,
                &run.tags,
                run.end_time,
            )
            .await?;
        for (path, bytes) in &run.artifacts {
            if self
                .client
                .upload(&info.artifact_uri, path, bytes.clone())
                .await?
            {
                self.stats.artifacts_uploaded += 1;
            } else {
                self.stats.artifacts_skipped += 1;
                tracing::warn!(artifact_uri = %info.artifact_uri, path, "MLflow does not proxy this run's artifacts (start `mlflow server` with --serve-artifacts): not uploaded");
            }
        }
        self.client
            .finish_run(&info.run_id, run.status.as_str(), run.end_time)
            .await?;
        Ok(info)
    }

    /// The registered model exists, belongs to `model_key`, and its
    /// versions are known.
    async fn ensure_model(&mut self, name: &str, model_key: &str) -> Result<(), MlflowError> {
        if self.checked.contains(name) {
            return Ok(());
        }
        match self.client.registered_model(name).await? {
            None => {
                self.client
                    .create_registered_model(
                        name,
                        &format!("autotrain model key {model_key} (mirrored from model.updates)"),
                        &[(TAG_MODEL_KEY.to_string(), model_key.to_string())],
                    )
                    .await?
            }
            Some(tags) => match tags.get(TAG_MODEL_KEY) {
                Some(k) if k != model_key => {
                    return Err(MlflowError::Unexpected(format!(
                        "registered model {name:?} mirrors {k:?}, not {model_key:?}: two model keys map to one MLflow name (set [mlflow] name_prefix, or rename a key)"
                    )))
                }
                _ => {}
            },
        }
        let mut map = BTreeMap::new();
        for v in self.client.versions(name).await? {
            if let Some(n) = v.tag(TAG_VERSION).and_then(|t| t.parse::<i32>().ok()) {
                map.insert(n, v.version.clone());
            }
        }
        self.versions.insert(name.to_string(), map);
        self.checked.insert(name.to_string());
        Ok(())
    }

    fn mlflow_version(&self, name: &str, version: i32) -> Option<String> {
        self.versions.get(name)?.get(&version).cloned()
    }

    async fn ensure_version(
        &mut self,
        spec: &VersionSpec,
        run: &RunInfo,
    ) -> Result<String, MlflowError> {
        if let Some(v) = self.mlflow_version(&spec.name, spec.version) {
            return Ok(v);
        }
        let source = format!(
            "{}/{}",
            run.artifact_uri.trim_end_matches('/'),
            spec.artifact_dir
        );
        let created = self
            .client
            .create_version(
                &spec.name,
                &source,
                &run.run_id,
                &spec.description,
                &spec.tags,
            )
            .await?;
        self.stats.versions_created += 1;
        self.versions
            .entry(spec.name.clone())
            .or_default()
            .insert(spec.version, created.version.clone());
        Ok(created.version)
    }

    async fn apply(&mut self, step: &Step) -> Result<(), MlflowError> {
        match step {
            Step::Register {
                model_key,
                run,
                trials,
                version,
                alias,
            } => {
                let info = self.ensure_run(run).await?;
                for trial in trials {
                    let mut child = trial.clone();
                    child
                        .tags
                        .push(("mlflow.parentRunId".into(), info.run_id.clone()));
                    self.ensure_run(&child).await?;
                }
                self.ensure_model(&version.name, model_key).await?;
                let v = self.ensure_version(version, &info).await?;
                if let Some(a) = alias {
                    self.client.set_alias(&a.name, &a.alias, &v).await?;
                    self.stats.aliases_set += 1;
                }
            }
            Step::Failure { run } => {
                self.ensure_run(run).await?;
            }
            Step::Alias {
                model_key,
                alias,
                rollback,
            } => {
                self.ensure_model(&alias.name, model_key).await?;
                let Some(v) = self.mlflow_version(&alias.name, alias.version) else {
                    return Err(MlflowError::Unexpected(format!(
                        "{model_key} v{} is not in MLflow, so {} cannot point at it: its registration was not mirrored (did the mirror's group start after it?)",
                        alias.version, alias.alias
                    )));
                };
                self.client.set_alias(&alias.name, &alias.alias, &v).await?;
                if *rollback {
                    self.client
                        .set_version_tag(&alias.name, &v, "autotrain.rolled_back_to", "true")
                        .await?;
                }
                self.stats.aliases_set += 1;
            }
        }
        Ok(())
    }

    async fn apply_pending(&mut self) -> Result<(), MlflowError> {
        while let Some(step) = self.pending.front().cloned() {
            self.apply(&step).await?;
            self.pending.pop_front();
            self.stats.steps_applied += 1;
        }
        Ok(())
    }
}

impl Sink for MlflowMirror {
    type Input = MirrorInput;

    fn name(&self) -> &str {
        "mlflow-mirror"
    }

    fn add(&mut self, input: &Incoming<MirrorInput>) -> Result<(), ProcessError> {
        let step = match &input.value {
            MirrorInput::Registry(e) => {
                self.stats.registry_events += 1;
                Some(translate::from_registry(&self.prefix, e))
            }
            MirrorInput::Status(s) => {
                self.stats.statuses += 1;
                translate::from_status(&self.prefix, s)
            }
        };
        match step {
            Some(step) => self.pending.push_back(step),
            None => self.stats.passed_over += 1,
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Called by the sink loop inside `block_in_place`, on the runtime.
    fn flush(&mut self) -> Result<(), ProcessError> {
        let applied = tokio::runtime::Handle::current().block_on(self.apply_pending());
        applied.map_err(|e| {
            self.stats.failed_flushes += 1;
            // What MLflow said may have changed what is cached.
            self.checked.clear();
            ProcessError::from(e)
        })
    }
}
