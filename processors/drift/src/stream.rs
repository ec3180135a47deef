//! Seeded Gaussian series with a mean shift, and how detectors do on them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::detectors::Detector;

/// `before` values from N(0, 1), then `after` from N(shift, 1).
pub fn shifted(seed: u64, before: usize, after: usize, shift: f64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..before + after)
        .map(|i| {
            let u1 = 1.0 - rng.random::<f64>();
            let u2 = rng.random::<f64>();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            z + if i >= before { shift } else { 0.0 }
        })
        .collect()
}

/// Detections before the change (false alarms) and the delay of the first
/// detection after it (`None`: missed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub false_alarms: usize,
    pub delay: Option<usize>,
}

pub fn run(detector: &mut dyn Detector, values: &[f64], change_at: usize) -> Outcome {
    let mut out = Outcome {
        false_alarms: 0,
        delay: None,
    };
    for (i, x) in values.iter().enumerate() {
        if detector.update(*x).is_some() {
            if i < change_at {
                out.false_alarms += 1;
            } else if out.delay.is_none() {
                out.delay = Some(i - change_at);
            }
        }
    }
    out
}
