//! Sink connector: autotrain's model registry mirrored into MLflow, for
//! teams whose tooling reads MLflow (its UI, `mlflow.pyfunc` lookups by
//! alias, their own dashboards). autotrain's registry (`model.updates`)
//! stays the truth; MLflow is a copy that catches up.
//!
//! - [`translate`]: what an event becomes in MLflow (names, params,
//!   metrics, tags, artifacts), pure and unit-tested.
//! - [`client`]: MLflow's REST API (`/api/2.0/mlflow/…` and the artifact
//!   proxy `/api/2.0/mlflow-artifacts/…`), with errors that know
//!   retriable (MLflow down, 5xx) from refused (4xx).
//! - [`mirror`]: the [`Sink`](autotrain_kafka::Sink) run by
//!   `autotrain run mlflow` (and by the demo when `[mlflow] tracking_uri`
//!   is set). Each step looks before it writes, so a batch delivered twice
//!   (a crash before the offsets were stored) changes nothing.
//!
//! The mirror is its own consumer group: training never waits on MLflow.
//! MLflow down ⇒ the batch is retried with backoff for as long as it takes
//! (`[mlflow] retry_attempts = 0`), and the mirror catches up from its
//! committed offsets.

pub mod client;
pub mod mirror;
pub mod translate;

use serde::{Deserialize, Serialize};

pub use client::{MlflowClient, MlflowError};
pub use mirror::{MirrorStats, MlflowMirror, INPUTS};

/// `[mlflow]`: the mirror's settings. Off unless `tracking_uri` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlflowConfig {
    /// MLflow's tracking server, e.g. `http://127.0.0.1:5000`; unset: no
    /// mirror. The server must proxy artifacts (`mlflow server`'s default,
    /// `--serve-artifacts`) for the model files to be uploaded.
    pub tracking_uri: Option<String>,
    /// Prefix of the experiment and registered-model names (one of each
    /// per model key), e.g. `prod-`.
    pub name_prefix: String,
    /// The mirror's consumer group.
    pub group: String,
    /// Attempts of one batch before the mirror stops with the error;
    /// 0: for ever (the waits grow to 30 s).
    pub retry_attempts: usize,
    /// Per-request timeout, seconds.
    pub timeout_s: u64,
}

impl Default for MlflowConfig {
    fn default() -> Self {
        MlflowConfig {
            tracking_uri: None,
            name_prefix: String::new(),
            group: "autotrain-mlflow-mirror".into(),
            retry_attempts: 0,
            timeout_s: 30,
        }
    }
}
