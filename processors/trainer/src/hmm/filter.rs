//! The online forward filter: regime probabilities given the bars so far,
//! one bar at a time (what the regime processor publishes per bar).

use super::{check, emission, GaussianHmm, HmmError};

#[derive(Debug, Clone, PartialEq)]
pub struct OnlineFilter {
    alpha: Option<Vec<f64>>,
}

impl Default for OnlineFilter {
    fn default() -> Self {
        OnlineFilter::new()
    }
}

impl OnlineFilter {
    pub fn new() -> Self {
        OnlineFilter { alpha: None }
    }

    /// A filter that continues from published probabilities (the filter's
    /// state after a bar is exactly its posterior).
    pub fn resume(probabilities: Vec<f64>) -> Self {
        OnlineFilter {
            alpha: Some(probabilities),
        }
    }

    /// Takes one observation row; returns P(state | rows so far) and
    /// log p(row | rows before).
    pub fn step(&mut self, m: &GaussianHmm, row: &[f64]) -> Result<(Vec<f64>, f64), HmmError> {
        check(row, m.d, 1)?;
        let log_b = emission::log_densities(m, row)?;
        let shift = log_b.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let k = m.k;
        let prior: Vec<f64> = match &self.alpha {
            None => m.start.clone(),
            Some(a) => (0..k)
                .map(|j| (0..k).map(|i| a[i] * m.trans[i * k + j]).sum())
                .collect(),
        };
        let b: Vec<f64> = log_b.iter().map(|v| (v - shift).exp()).collect();
        let mut joint: Vec<f64> = prior.iter().zip(&b).map(|(p, b)| p * b).collect();
        let mut total: f64 = joint.iter().sum();
        if total == 0.0 {
            // The row is impossible under the filtered prior (its states
            // have probability 0, or densities below f64's range): the
            // filter restarts from a uniform prior rather than stay stuck
            // on every later row.
            joint = b.iter().map(|b| b / k as f64).collect();
            total = joint.iter().sum();
        }
        if total <= 0.0 || !total.is_finite() {
            return Err(HmmError::ZeroProbability { row: 0 });
        }
        let post: Vec<f64> = joint.iter().map(|v| v / total).collect();
        self.alpha = Some(post.clone());
        Ok((post, total.ln() + shift))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Covariance;

    #[test]
    fn a_row_impossible_under_the_prior_restarts_the_filter_instead_of_sticking() {
        let m = GaussianHmm {
            k: 2,
            d: 1,
            covariance: Covariance::Diag,
            start: vec![1.0, 0.0],
            trans: vec![1.0, 0.0, 0.0, 1.0],
            means: vec![0.0, 100.0],
            covars: vec![1.0, 1.0],
        };
        let mut f = OnlineFilter::new();
        let (post, _) = f.step(&m, &[100.0]).expect("restarts");
        assert!(post[1] > 0.999, "{post:?}");
        let (post, ll) = f.step(&m, &[100.5]).expect("goes on");
        assert!(post[1] > 0.999 && ll.is_finite(), "{post:?} {ll}");
    }
}
