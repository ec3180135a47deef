//! The seed systems' regression metrics on the reference set.

use serde::Serialize;

/// Scores of predictions against targets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scores {
    pub n: usize,
    pub mae: f64,
    pub rmse: f64,
    /// Mean absolute percentage error over the targets that are not zero
    /// (a fraction, not percent).
    pub mape: f64,
    pub r2: f64,
    /// Root mean squared log error, predictions below zero taken as zero
    /// (the targets here are never negative).
    pub rmsle: f64,
}

impl Scores {
    pub fn of(predicted: &[f64], actual: &[f64]) -> Scores {
        let n = predicted.len().min(actual.len());
        if n == 0 {
            return Scores {
                n,
                mae: f64::NAN,
                rmse: f64::NAN,
                mape: f64::NAN,
                r2: f64::NAN,
                rmsle: f64::NAN,
            };
        }
        let (p, a) = (&predicted[..n], &actual[..n]);
        let nf = n as f64;
        let mae = p.iter().zip(a).map(|(p, a)| (p - a).abs()).sum::<f64>() / nf;
        let sse = p.iter().zip(a).map(|(p, a)| (p - a).powi(2)).sum::<f64>();
        let mean = a.iter().sum::<f64>() / nf;
        let sst = a.iter().map(|a| (a - mean).powi(2)).sum::<f64>();
        let (ape, nonzero) = p
            .iter()
            .zip(a)
            .filter(|(_, a)| **a != 0.0)
            .fold((0.0, 0usize), |(s, k), (p, a)| {
                (s + ((p - a) / a).abs(), k + 1)
            });
        let sle = p
            .iter()
            .zip(a)
            .map(|(p, a)| (p.max(0.0).ln_1p() - a.max(0.0).ln_1p()).powi(2))
            .sum::<f64>();
        Scores {
            n,
            mae,
            rmse: (sse / nf).sqrt(),
            mape: if nonzero == 0 {
                f64::NAN
            } else {
                ape / nonzero as f64
            },
            r2: if sst > 0.0 { 1.0 - sse / sst } else { f64::NAN },
            rmsle: (sle / nf).sqrt(),
        }
    }

    /// The metric named `name` (`mae`, `rmse`, `mape`, `r2`, `rmsle`).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "mae" => self.mae,
            "rmse" => self.rmse,
            "mape" => self.mape,
            "r2" => self.r2,
            "rmsle" => self.rmsle,
            _ => return None,
        })
    }

    /// Whether a higher value of `name` is better (only R²).
    pub fn higher_is_better(name: &str) -> bool {
        name == "r2"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textbook_values() {
        let s = Scores::of(&[1.0, 2.0, 4.0], &[1.0, 3.0, 3.0]);
        assert_eq!(s.n, 3);
        assert!((s.mae - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.rmse - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((s.mape - (0.0 + 1.0 / 3.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
        // mean 7/3, sst = 16/9 + 4/9 + 4/9 = 24/9, sse = 2.
        assert!((s.r2 - (1.0 - 2.0 / (24.0 / 9.0))).abs() < 1e-12);
        let perfect = Scores::of(&[0.5, 0.25], &[0.5, 0.25]);
        assert_eq!((perfect.rmse, perfect.rmsle, perfect.r2), (0.0, 0.0, 1.0));
        assert!(Scores::higher_is_better("r2") && !Scores::higher_is_better("rmsle"));
    }
}
