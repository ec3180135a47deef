//! [`LinTs`]: linear Thompson sampling. Per arm, A⁻¹ (kept by
//! Sherman-Morrison rank-one updates, O(d²) per update) and b; a decision
//! samples θ ~ N(A⁻¹b, v²A⁻¹) per arm through the Cholesky factor of A⁻¹
//! (refreshed with `nalgebra` after each update) and scores θ·x.

use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

#[derive(Debug, Clone, PartialEq)]
pub struct LinArm {
    pub a_inv: DMatrix<f64>,
    pub b: DVector<f64>,
    /// Lower Cholesky factor of `a_inv`.
    chol: DMatrix<f64>,
    /// A⁻¹b, the posterior mean.
    mean: DVector<f64>,
}

impl LinArm {
    fn new(d: usize, lambda: f64) -> Self {
        let a_inv = DMatrix::identity(d, d) / lambda;
        let chol = DMatrix::identity(d, d) / lambda.sqrt();
        LinArm {
            a_inv,
            b: DVector::zeros(d),
            chol,
            mean: DVector::zeros(d),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinTs {
    pub d: usize,
    pub v: f64,
    pub lambda: f64,
    pub arms: Vec<LinArm>,
    pub updates: u64,
}

/// Reusable buffers for [`LinTs::scores`] (no allocation per decision).
#[derive(Debug, Default)]
pub struct Scratch {
    z: Vec<f64>,
}

impl LinTs {
    pub fn new(arms: usize, d: usize, v: f64, lambda: f64) -> Self {
        let lambda = if lambda > 0.0 { lambda } else { 1.0 };
        LinTs {
            d,
            v,
            lambda,
            arms: (0..arms).map(|_| LinArm::new(d, lambda)).collect(),
            updates: 0,
        }
    }

    pub fn add_arm(&mut self) {
        self.arms.push(LinArm::new(self.d, self.lambda));
    }

    /// θ·x for a θ sampled from each arm's posterior.
    pub fn scores(&self, x: &[f64], rng: &mut ChaCha8Rng, s: &mut Scratch) -> Vec<f64> {
        let d = self.d;
        s.z.resize(d, 0.0);
        self.arms
            .iter()
            .map(|arm| {
                for z in s.z.iter_mut() {
                    *z = rng.sample(StandardNormal);
                }
                // θ·x = μ·x + v (L z)·x
                let mut score = 0.0;
                for (i, xi) in x.iter().enumerate().take(d) {
                    let lz: f64 = (0..=i).map(|j| arm.chol[(i, j)] * s.z[j]).sum();
                    score += (arm.mean[i] + self.v * lz) * xi;
                }
                score
            })
            .collect()
    }

    /// The posterior mean's score per arm (no sampling).
    pub fn means(&self, x: &[f64]) -> Vec<f64> {
        self.arms
            .iter()
            .map(|a| a.mean.iter().zip(x).map(|(m, v)| m * v).sum())
            .collect()
    }

    pub fn update(&mut self, arm: usize, x: &[f64], reward: f64) {
        let d = self.d;
        let Some(a) = self.arms.get_mut(arm) else {
            return;
        };
        if x.len() != d || !reward.is_finite() || x.iter().any(|v| !v.is_finite()) {
            return;
        }
        let x = DVector::from_column_slice(x);
        let u = &a.a_inv * &x;
        let denom = 1.0 + x.dot(&u);
        a.a_inv.ger(-1.0 / denom, &u, &u, 1.0);
        a.b.axpy(reward, &x, 1.0);
        a.mean = &a.a_inv * &a.b;
        // A⁻¹ stays symmetric positive definite in exact arithmetic; if
        // rounding ever breaks that, keep the previous factor.
        if let Some(c) = a.a_inv.clone().cholesky() {
            a.chol = c.l();
        }
        self.updates += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sherman_morrison_matches_the_direct_inverse() {
        let mut p = LinTs::new(1, 3, 0.5, 2.0);
        let mut a = DMatrix::identity(3, 3) * 2.0;
        let mut b = DVector::zeros(3);
        let xs = [
            [1.0, 0.5, -0.2],
            [1.0, -1.0, 0.3],
            [1.0, 0.1, 0.9],
            [1.0, 2.0, -1.5],
        ];
        for (i, x) in xs.iter().enumerate() {
            let r = i as f64 - 1.0;
            p.update(0, x, r);
            let v = DVector::from_column_slice(x);
            a += &v * v.transpose();
            b += &v * r;
        }
        let direct = a.try_inverse().expect("invertible");
        assert!((&p.arms[0].a_inv - &direct).amax() < 1e-12);
        assert!((&p.arms[0].mean - &direct * &b).amax() < 1e-12);
    }

    #[test]
    fn it_learns_which_arm_pays_in_which_context() {
        // Arm 0 pays in context A, arm 1 in context B.
        let mut p = LinTs::new(2, 2, 0.3, 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut s = Scratch::default();
        let contexts = [[1.0, 1.0], [1.0, -1.0]];
        let pay = |arm: usize, c: usize| if arm == c { 1.0 } else { -1.0 };
        let mut right_late = 0;
        for t in 0..2_000 {
            let c = t % 2;
            let arm = super::super::argmax(&p.scores(&contexts[c], &mut rng, &mut s));
            p.update(
                arm,
                &contexts[c],
                pay(arm, c) + 0.1 * rng.sample::<f64, _>(StandardNormal),
            );
            if t >= 1_800 && arm == c {
                right_late += 1;
            }
        }
        assert!(right_late >= 190, "{right_late} of 200");
    }
}
