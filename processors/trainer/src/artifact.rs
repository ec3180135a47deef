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

    /// This model's HMM in the coordinates of `scaling` (the same
    /// distribution of raw rows, standardised another way): the start of
    /// a warm fit on rows standardised with `scaling`. `None` when the
    /// columns differ.
    pub fn hmm_in(&self, columns: &[String], scaling: &[Scale]) -> Option<GaussianHmm> {
        let d = self.hmm.d;
        if self.columns != columns || scaling.len() != d {
            return None;
        }
        let unit = Scale {
            mean: 0.0,
            std: 1.0,
        };
        let from = |j: usize| self.scaling.get(j).copied().unwrap_or(unit);
        // raw = z·σ₀ + μ₀, z' = (raw − μ₁)/σ₁ = z·a + b.
        let a: Vec<f64> = (0..d).map(|j| from(j).std / scaling[j].std).collect();
        let b: Vec<f64> = (0..d)
            .map(|j| (from(j).mean - scaling[j].mean) / scaling[j].std)
            .collect();
        let mut hmm = self.hmm.clone();
        for (i, m) in hmm.means.iter_mut().enumerate() {
            *m = *m * a[i % d] + b[i % d];
        }
        match hmm.covariance {
            crate::hmm::Covariance::Diag => {
                for (i, c) in hmm.covars.iter_mut().enumerate() {
                    *c *= a[i % d] * a[i % d];
                }
            }
            crate::hmm::Covariance::Full => {
                for (i, c) in hmm.covars.iter_mut().enumerate() {
                    let (r, col) = ((i / d) % d, i % d);
                    *c *= a[r] * a[col];
                }
            }
        }
        Some(hmm)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hmm::{Covariance, FitOptions};
    use crate::simulate::{sample, Truth};

    /// The same model in other coordinates scores raw rows the same (the
    /// standardisation's Jacobian included), diagonal and full.
    #[test]
    fn a_model_moved_to_another_scaling_scores_raw_rows_the_same() {
        let (x, _) = sample(&Truth::three_regimes(), 4_000, 3);
        // Raw rows far from standard: shifted and stretched per column.
        let raw: Vec<f64> = x
            .chunks_exact(2)
            .flat_map(|r| [r[0] * 0.01 + 0.002, r[1] * 40.0 - 7.0])
            .collect();
        let columns = vec!["a".to_string(), "b".to_string()];
        for covariance in [Covariance::Diag, Covariance::Full] {
            let (early, late) = raw.split_at(2_000 * 2);
            let scaling = TrainedModel::scaling_of(early, 2);
            let z: Vec<f64> = early
                .iter()
                .enumerate()
                .map(|(i, v)| (v - scaling[i % 2].mean) / scaling[i % 2].std)
                .collect();
            let options = FitOptions {
                covariance,
                ..FitOptions::default()
            };
            let (hmm, _) = GaussianHmm::fit(&z, 2, &options).expect("fits");
            let champion = TrainedModel {
                columns: columns.clone(),
                hmm,
                scaling,
                reference: Default::default(),
                loglik_baseline: None,
            };
            let other = TrainedModel::scaling_of(late, 2);
            let moved = TrainedModel {
                hmm: champion.hmm_in(&columns, &other).expect("same columns"),
                scaling: other.clone(),
                ..champion.clone()
            };
            let (a, b) = (
                champion.score(late).expect("scores"),
                moved.score(late).expect("scores"),
            );
            assert!(
                (a - b).abs() <= 1e-9 * a.abs(),
                "{covariance:?}: {a} vs {b}"
            );
            assert_eq!(champion.hmm_in(&["a".into()], &other[..1]), None);
        }
    }
}
