//! Observations drawn from a known Gaussian HMM (diagonal covariance).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A known model to sample from.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub start: Vec<f64>,
    pub trans: Vec<Vec<f64>>,
    /// Per state, per column.
    pub means: Vec<Vec<f64>>,
    pub stds: Vec<Vec<f64>>,
}

impl Truth {
    /// Three well-separated regimes over two columns (a return-like and a
    /// volatility-like one), sticky transitions.
    pub fn three_regimes() -> Self {
        Truth {
            start: vec![1.0 / 3.0; 3],
            trans: vec![
                vec![0.95, 0.03, 0.02],
                vec![0.04, 0.93, 0.03],
                vec![0.03, 0.03, 0.94],
            ],
            means: vec![vec![-1.0, 2.0], vec![0.0, 0.5], vec![1.0, 1.2]],
            stds: vec![vec![0.4, 0.3], vec![0.2, 0.2], vec![0.3, 0.25]],
        }
    }
}

fn pick(rng: &mut ChaCha8Rng, p: &[f64]) -> usize {
    let mut u = rng.random::<f64>();
    for (i, w) in p.iter().enumerate() {
        u -= w;
        if u <= 0.0 {
            return i;
        }
    }
    p.len() - 1
}

/// `n` observations (row-major, `means[0].len()` columns) and their states.
pub fn sample(truth: &Truth, n: usize, seed: u64) -> (Vec<f64>, Vec<usize>) {
    let d = truth.means[0].len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(n * d);
    let mut states = Vec::with_capacity(n);
    let mut s = pick(&mut rng, &truth.start);
    for _ in 0..n {
        states.push(s);
        for j in 0..d {
            let u1 = 1.0 - rng.random::<f64>();
            let u2 = rng.random::<f64>();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            x.push(truth.means[s][j] + truth.stds[s][j] * z);
        }
        s = pick(&mut rng, &truth.trans[s]);
    }
    (x, states)
}
