//! Log-likelihood decay: recent bars explained worse by the prod model
//! than its training data was. With the per-bar log-likelihood baseline
//! (mean μ, std σ from the model's evaluation) and the mean ℓ̄ of the last
//! `window` bars, z = (μ − ℓ̄) / (σ / √window) above the threshold means
//! the model no longer fits.

use std::collections::VecDeque;

use super::{Detection, Detector};

#[derive(Debug, Clone)]
pub struct LikelihoodDecay {
    pub baseline_mean: f64,
    pub baseline_std: f64,
    pub window: usize,
    /// z above this is decay (default 4).
    pub threshold: f64,
    recent: VecDeque<f64>,
    sum: f64,
}

impl LikelihoodDecay {
    pub fn new(baseline_mean: f64, baseline_std: f64, window: usize, threshold: f64) -> Self {
        LikelihoodDecay {
            baseline_mean,
            baseline_std,
            window: window.max(1),
            threshold,
            recent: VecDeque::new(),
            sum: 0.0,
        }
    }
}

impl Detector for LikelihoodDecay {
    fn name(&self) -> &'static str {
        "loglik_decay"
    }

    fn update(&mut self, loglik: f64) -> Option<Detection> {
        if !loglik.is_finite() {
            return None;
        }
        self.recent.push_back(loglik);
        self.sum += loglik;
        if self.recent.len() > self.window {
            if let Some(old) = self.recent.pop_front() {
                self.sum -= old;
            }
        }
        if self.recent.len() < self.window || self.baseline_std <= 0.0 {
            return None;
        }
        let mean = self.sum / self.window as f64;
        let z = (self.baseline_mean - mean) / (self.baseline_std / (self.window as f64).sqrt());
        if z > self.threshold {
            self.recent.clear();
            self.sum = 0.0;
            return Some(Detection {
                statistic: z,
                threshold: self.threshold,
                window: self.window,
            });
        }
        None
    }
}
