//! [`ForecastModel`]: boosted regression trees in autotrain's own layout.
//!
//! Fitting is `forust-ml`'s (a pure-Rust, XGBoost-style histogram GBDT
//! that builds on stable Rust with no native library, seeded, with the
//! usual knobs: rounds, learning rate, depth, L2, min child weight,
//! sampling); its trees are then copied into the layout below, which
//! predicts, hashes, serialises (documented JSON, `docs/forecast.md`) and
//! exports to ONNX without the fitting crate's types.
//!
//! A tree is a vector of nodes, the root first. A split sends a row left
//! when `x[feature] < threshold`, right otherwise, and a missing value
//! (NaN) to the side `missing_left` says. A prediction is `base_score`
//! plus the leaf value of every tree.

use forust_ml::objective::ObjectiveType;
use forust_ml::{GradientBooster, Matrix};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::target::Target;

/// Fitting options (the trigger's hyper-parameters for this family).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GbdtOptions {
    /// Boosting rounds (trees).
    pub iterations: usize,
    pub learning_rate: f32,
    pub max_depth: usize,
    /// L2 regularisation of leaf weights.
    pub l2: f32,
    /// Minimum hessian sum (rows, for squared loss) in a leaf.
    pub min_leaf_weight: f32,
    /// Fraction of rows drawn (seeded) for each tree.
    pub subsample: f32,
    /// Histogram bins per feature.
    pub nbins: u16,
    pub seed: u64,
    /// Fitting threads (None: every core). The trees do not depend on it.
    pub threads: Option<usize>,
}

impl Default for GbdtOptions {
    fn default() -> Self {
        GbdtOptions {
            iterations: 200,
            learning_rate: 0.05,
            max_depth: 5,
            l2: 1.0,
            min_leaf_weight: 20.0,
            subsample: 1.0,
            nbins: 256,
            seed: 0,
            threads: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Node {
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
        missing_left: bool,
    },
    Leaf {
        value: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn predict(&self, row: &[f64]) -> f64 {
        let mut i = 0;
        loop {
            match &self.nodes[i] {
                Node::Leaf { value } => return *value,
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    missing_left,
                } => {
                    let x = row[*feature];
                    i = if x.is_nan() {
                        if *missing_left {
                            *left
                        } else {
                            *right
                        }
                    } else if x < *threshold {
                        *left
                    } else {
                        *right
                    };
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    #[error("nothing to fit: {0}")]
    Empty(String),
    #[error("GBDT fit: {0}")]
    Fit(String),
    #[error("tree {tree}: {why}")]
    Layout { tree: usize, why: String },
}

/// A fitted forecast: the feature columns it reads (in order), what it
/// predicts, and its trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastModel {
    pub columns: Vec<String>,
    pub target: Target,
    pub base_score: f64,
    pub trees: Vec<Tree>,
}

impl ForecastModel {
    /// Fits on `x` (row-major, `columns.len()` values per row; NaN is
    /// missing) against `y`.
    pub fn fit(
        x: &[f64],
        y: &[f64],
        columns: &[String],
        target: Target,
        options: &GbdtOptions,
    ) -> Result<ForecastModel, ForecastError> {
        let d = columns.len();
        if d == 0 || y.is_empty() || x.len() != y.len() * d {
            return Err(ForecastError::Empty(format!(
                "{} rows, {} values, {d} columns",
                y.len(),
                x.len()
            )));
        }
        let n = y.len();
        // forust reads columns: transpose once.
        let mut by_column = vec![0.0; n * d];
        for r in 0..n {
            for c in 0..d {
                by_column[c * n + r] = x[r * d + c];
            }
        }
        let data = Matrix::new(&by_column, n, d);
        let mut booster = GradientBooster::default()
            .set_objective_type(ObjectiveType::SquaredLoss)
            .set_iterations(options.iterations)
            .set_learning_rate(options.learning_rate)
            .set_max_depth(options.max_depth)
            .set_l2(options.l2)
            .set_min_leaf_weight(options.min_leaf_weight)
            .set_subsample(options.subsample)
            .set_nbins(options.nbins)
            .set_seed(options.seed)
            .set_parallel(options.threads != Some(1))
            .set_num_threads(options.threads)
            .set_create_missing_branch(false);
        booster
            .fit_unweighted(&data, y, None)
            .map_err(|e| ForecastError::Fit(e.to_string()))?;
        // No early stopping: every tree predicts.
        let trees = booster
            .trees
            .iter()
            .enumerate()
            .map(|(i, t)| convert(i, t))
            .collect::<Result<_, _>>()?;
        Ok(ForecastModel {
            columns: columns.to_vec(),
            target,
            base_score: booster.base_score,
            trees,
        })
    }

    /// `base_score`, then each tree's leaf added in order (the fitting
    /// crate's own order of additions, so both predict the same bits).
    pub fn predict_row(&self, row: &[f64]) -> f64 {
        self.trees
            .iter()
            .fold(self.base_score, |acc, t| acc + t.predict(row))
    }

    /// Predictions of row-major rows.
    pub fn predict(&self, x: &[f64]) -> Vec<f64> {
        x.chunks(self.columns.len().max(1))
            .map(|row| self.predict_row(row))
            .collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<ForecastModel, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// SHA-256 of the JSON layout: equal hashes, equal models.
    pub fn param_hash(&self) -> String {
        hex::encode(Sha256::digest(self.to_json()))
    }

    pub fn nodes(&self) -> usize {
        self.trees.iter().map(|t| t.nodes.len()).sum()
    }
}

/// forust's node vector (indexed by node number, root 0) as a dense
/// vector in pre-order.
fn convert(index: usize, tree: &forust_ml::tree::Tree) -> Result<Tree, ForecastError> {
    let bad = |why: String| ForecastError::Layout { tree: index, why };
    let mut nodes = Vec::with_capacity(tree.nodes.len());
    // (perpetual's number, the slot of the parent's link to fill)
    let mut stack: Vec<(usize, Option<(usize, bool)>)> = vec![(0, None)];
    while let Some((num, link)) = stack.pop() {
        let node = tree
            .nodes
            .get(num)
            .ok_or_else(|| bad(format!("no node {num}")))?;
        let at = nodes.len();
        if let Some((parent, is_left)) = link {
            if let Some(Node::Split { left, right, .. }) = nodes.get_mut(parent) {
                if is_left {
                    *left = at;
                } else {
                    *right = at;
                }
            }
        }
        if node.is_leaf {
            nodes.push(Node::Leaf {
                value: f64::from(node.weight_value),
            });
            continue;
        }
        let missing_left = if node.missing_node == node.left_child {
            true
        } else if node.missing_node == node.right_child {
            false
        } else {
            return Err(bad(format!("node {num} has a separate missing branch")));
        };
        nodes.push(Node::Split {
            feature: node.split_feature,
            threshold: node.split_value,
            left: usize::MAX,
            right: usize::MAX,
            missing_left,
        });
        // Right pushed first: the left subtree is laid out first.
        stack.push((node.right_child, Some((at, false))));
        stack.push((node.left_child, Some((at, true))));
    }
    if nodes.len() != tree.nodes.len() {
        return Err(bad(format!(
            "{} nodes reachable of {}",
            nodes.len(),
            tree.nodes.len()
        )));
    }
    Ok(Tree { nodes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::metrics::Scores;
    use rand::{Rng, SeedableRng};

    /// y = 2·[x0 > 0.5] + x1² + noise, x2 irrelevant.
    fn problem(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(n * 3);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let (a, b, c): (f64, f64, f64) = (rng.random(), rng.random(), rng.random());
            x.extend([a, b, c]);
            y.push(2.0 * f64::from(u8::from(a > 0.5)) + b * b + 0.05 * (rng.random::<f64>() - 0.5));
        }
        (x, y)
    }

    fn columns() -> Vec<String> {
        ["a", "b", "c"].map(String::from).to_vec()
    }

    #[test]
    fn recovers_a_known_structure_and_predicts_like_forust() {
        let (x, y) = problem(4_000, 1);
        let (xt, yt) = problem(1_000, 2);
        let opts = GbdtOptions {
            seed: 7,
            ..GbdtOptions::default()
        };
        let m = ForecastModel::fit(&x, &y, &columns(), Target::AbsReturn { horizon: 1 }, &opts)
            .expect("fit");
        let s = Scores::of(&m.predict(&xt), &yt);
        assert!(s.r2 > 0.95, "{s:?}");
        // The same bits as forust's own prediction.
        let mut booster = GradientBooster::default()
            .set_objective_type(ObjectiveType::SquaredLoss)
            .set_iterations(opts.iterations)
            .set_learning_rate(opts.learning_rate)
            .set_max_depth(opts.max_depth)
            .set_l2(opts.l2)
            .set_min_leaf_weight(opts.min_leaf_weight)
            .set_nbins(opts.nbins)
            .set_seed(opts.seed)
            .set_create_missing_branch(false);
        let cols = |x: &[f64], n: usize| -> Vec<f64> {
            (0..3)
                .flat_map(|c| (0..n).map(move |r| x[r * 3 + c]))
                .collect()
        };
        let (train, test) = (cols(&x, 4_000), cols(&xt, 1_000));
        booster
            .fit_unweighted(&Matrix::new(&train, 4_000, 3), &y, None)
            .expect("forust fit");
        assert_eq!(
            booster.predict(&Matrix::new(&test, 1_000, 3), false),
            m.predict(&xt)
        );
        assert!(m.trees.len() > 1 && m.nodes() > m.trees.len());
        // The JSON layout round-trips to the same predictions.
        let back = ForecastModel::from_json(&m.to_json()).expect("json");
        assert_eq!(back.predict(&xt), m.predict(&xt));
        // A missing value follows the recorded side.
        let mut row = xt[..3].to_vec();
        row[0] = f64::NAN;
        assert!(m.predict_row(&row).is_finite());
    }

    #[test]
    fn the_same_trees_whatever_the_thread_count() {
        let (x, y) = problem(3_000, 3);
        let fit = |threads| {
            let opts = GbdtOptions {
                seed: 11,
                threads: Some(threads),
                ..GbdtOptions::default()
            };
            ForecastModel::fit(&x, &y, &columns(), Target::AbsReturn { horizon: 1 }, &opts)
                .expect("fit")
                .param_hash()
        };
        let one = fit(1);
        assert_eq!(fit(2), one);
        assert_eq!(fit(4), one);
    }
}
