//! Context-free Thompson sampling: [`ThompsonBeta`] (a reward > 0 is a
//! success) and [`ThompsonGaussian`] (known noise σ, flat prior).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, StandardNormal};

#[derive(Debug, Clone, PartialEq)]
pub struct ThompsonBeta {
    /// (successes, failures) per arm.
    pub counts: Vec<(f64, f64)>,
    pub updates: u64,
}

impl ThompsonBeta {
    pub fn new(arms: usize) -> Self {
        ThompsonBeta {
            counts: vec![(0.0, 0.0); arms],
            updates: 0,
        }
    }

    pub fn add_arm(&mut self) {
        self.counts.push((0.0, 0.0));
    }

    pub fn scores(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        self.counts
            .iter()
            .map(|(s, f)| Beta::new(1.0 + s, 1.0 + f).map_or(0.5, |b| b.sample(rng)))
            .collect()
    }

    pub fn update(&mut self, arm: usize, reward: f64) {
        if let Some(c) = self.counts.get_mut(arm) {
            if reward > 0.0 {
                c.0 += 1.0;
            } else {
                c.1 += 1.0;
            }
            self.updates += 1;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ThompsonGaussian {
    pub sigma: f64,
    /// (reward sum, count) per arm.
    pub sums: Vec<(f64, f64)>,
    pub updates: u64,
}

impl ThompsonGaussian {
    pub fn new(arms: usize, sigma: f64) -> Self {
        ThompsonGaussian {
            sigma,
            sums: vec![(0.0, 0.0); arms],
            updates: 0,
        }
    }

    pub fn add_arm(&mut self) {
        self.sums.push((0.0, 0.0));
    }

    pub fn scores(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        self.sums
            .iter()
            .map(|(sum, n)| {
                let mean = if *n > 0.0 { sum / n } else { 0.0 };
                let z: f64 = rng.sample(StandardNormal);
                mean + self.sigma / (n + 1.0).sqrt() * z
            })
            .collect()
    }

    pub fn update(&mut self, arm: usize, reward: f64) {
        if let (Some(s), true) = (self.sums.get_mut(arm), reward.is_finite()) {
            s.0 += reward;
            s.1 += 1.0;
            self.updates += 1;
        }
    }
}
