//! [`TrainedModel`]: what a `ModelVersion` carries in `parameters`: the
//! feature columns a model reads, how each is standardised, and its HMM,
//! as JSON (floats round-trip exactly), so any consumer — the regime
//! processor, an audit script — can load it.

use serde::{Deserialize, Serialize};

use crate::hmm::{GaussianHmm, HmmError};

/// A column's standardisation: `(x - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    pub mean: f64,
    pub std: f64,
}

/// A feature's distribution over the training rows: equal-count bin edges
/// (inner boundaries, ascending) and the share of rows in each of the
/// `edges.len() + 1` bins. Drift detectors compare recent windows with it
/// (PSI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

impl Distribution {
    /// `bins` equal-count bins of the finite values (`None` if fewer than
    /// two values per bin).
    pub fn of(values: &[f64], bins: usize) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if bins < 2 || sorted.len() < 2 * bins {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = (1..bins).map(|k| sorted[k * sorted.len() / bins]).collect();
        edges.dedup();
        let mut counts = vec![0usize; edges.len() + 1];
        for v in &sorted {
            counts[edges.partition_point(|e| *e <= *v)] += 1;
        }
        let n = sorted.len() as f64;
        Some(Distribution {
            edges,
            shares: counts.iter().map(|c| *c as f64 / n).collect(),
        })
    }
}

/// Mean and standard deviation of the one-step predictive log-likelihood
/// per bar on the reference set: what "the model still fits" looks like
/// (the drift processor's log-likelihood decay detector).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub mean: f64,
    pub std: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedModel {
    /// Feature names, in the HMM's column order.
    pub columns: Vec<String>,
    pub hmm: GaussianHmm,
    /// Per column; empty ⇒ the HMM reads raw values.
    #[serde(default)]
    pub scaling: Vec<Scale>,
    /// Per feature of the training rows (every contract feature).
    #[serde(default)]
    pub reference: std::collections::BTreeMap<String, Distribution>,
    #[serde(default)]
    pub loglik_baseline: Option<Baseline>,
}

impl TrainedModel {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Mean and (population) standard deviation per column of row-major
    /// `x`; a constant column gets std 1.
    pub fn scaling_of(x: &[f64], d: usize) -> Vec<Scale> {
        let n = (x.len() / d.max(1)).max(1) as f64;
        (0..d)
            .map(|j| {
                let mean = x.iter().skip(j).step_by(d).sum::<f64>() / n;
                let var = x
                    .iter()
                    .skip(j)
                    .step_by(d)
                    .map(|v| (v - mean) * (v - mean))
                    .sum::<f64>()
                    / n;
                let std = var.sqrt();
                Scale {
                    mean,
                    std: if std > 0.0 && std.is_finite() {
                        std
                    } else {
                        1.0
                    },
                }
            })
            .collect()
    }

    /// The model's columns of a feature vector (`None` if one is absent).
    pub fn row(&self, v: &autotrain_schemas::FeatureVector) -> Option<Vec<f64>> {
        self.columns
            .iter()
            .map(|c| v.values.iter().find(|f| &f.name == c).and_then(|f| f.value))
            .collect()
    }

    /// Row-major raw values as the HMM reads them.
    pub fn standardise(&self, x: &[f64]) -> Vec<f64> {
        if self.scaling.is_empty() {
            return x.to_vec();
        }
        let d = self.scaling.len();
        x.iter()
            .enumerate()
            .map(|(i, v)| {
                let s = self.scaling[i % d];
                (v - s.mean) / s.std
            })
            .collect()
    }

    /// `log |d standardise / d x|` per row: add to a log-likelihood of
    /// standardised values to get one of raw values.
    pub fn log_jacobian(&self) -> f64 {
        -self.scaling.iter().map(|s| s.std.ln()).sum::<f64>()
    }

    /// Log-likelihood of raw rows (the standardisation's Jacobian
    /// included, so models with different scalings compare fairly).
    pub fn score(&self, x: &[f64]) -> Result<f64, HmmError> {
        let n = x.len() / self.hmm.d.max(1);
        Ok(self.hmm.score(&self.standardise(x))? + n as f64 * self.log_jacobian())
    }
}
