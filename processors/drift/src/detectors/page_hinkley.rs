//! Page-Hinkley test (Page 1954; Hinkley 1971) for a change in the mean,
//! in both directions. With x̄ₜ the running mean, the cumulative deviations
//! m⁺ₜ = Σ (xᵢ − x̄ᵢ − δ) and m⁻ₜ = Σ (x̄ᵢ − xᵢ − δ) are compared with their
//! running minima; a gap above λ is a change.

use super::{Detection, Detector};

#[derive(Debug, Clone, PartialEq)]
pub struct PageHinkley {
    /// Magnitude of changes tolerated (δ).
    pub delta: f64,
    /// Detection threshold (λ).
    pub lambda: f64,
    /// Values seen before a change may be declared.
    pub warm_up: usize,
    n: usize,
    mean: f64,
    up: f64,
    up_min: f64,
    down: f64,
    down_min: f64,
}

impl PageHinkley {
    pub fn new(delta: f64, lambda: f64, warm_up: usize) -> Self {
        PageHinkley {
            delta,
            lambda,
            warm_up,
            n: 0,
            mean: 0.0,
            up: 0.0,
            up_min: 0.0,
            down: 0.0,
            down_min: 0.0,
        }
    }

    fn reset(&mut self) {
        *self = PageHinkley::new(self.delta, self.lambda, self.warm_up);
    }
}

impl Detector for PageHinkley {
    fn name(&self) -> &'static str {
        "page_hinkley"
    }

    fn update(&mut self, x: f64) -> Option<Detection> {
        if !x.is_finite() {
            return None;
        }
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        self.up += x - self.mean - self.delta;
        self.down += self.mean - x - self.delta;
        self.up_min = self.up_min.min(self.up);
        self.down_min = self.down_min.min(self.down);
        let stat = (self.up - self.up_min).max(self.down - self.down_min);
        if self.n >= self.warm_up && stat > self.lambda {
            let window = self.n;
            self.reset();
            return Some(Detection {
                statistic: stat,
                threshold: self.lambda,
                window,
            });
        }
        None
    }
}
