//! [`EpsilonGreedy`]: the best mean reward so far, or with probability ε a
//! uniformly random arm.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct EpsilonGreedy {
    pub epsilon: f64,
    /// (reward sum, count) per arm.
    pub sums: Vec<(f64, f64)>,
    pub updates: u64,
}

impl EpsilonGreedy {
    pub fn new(arms: usize, epsilon: f64) -> Self {
        EpsilonGreedy {
            epsilon: epsilon.clamp(0.0, 1.0),
            sums: vec![(0.0, 0.0); arms],
            updates: 0,
        }
    }

    pub fn add_arm(&mut self) {
        self.sums.push((0.0, 0.0));
    }

    /// Means, or (exploring) one random arm scored 1 and the rest 0.
    pub fn scores(&self, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let n = self.sums.len();
        if n > 0 && rng.random::<f64>() < self.epsilon {
            let pick = rng.random_range(0..n);
            return (0..n).map(|i| f64::from(u8::from(i == pick))).collect();
        }
        self.sums
            .iter()
            .map(|(s, c)| if *c > 0.0 { s / c } else { 0.0 })
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
