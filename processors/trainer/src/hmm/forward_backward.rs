//! The scaled forward-backward pass (Rabiner 1989, §V.A): emission
//! densities are shifted by their per-row maximum before exponentiating and
//! the forward variables are normalised each step, so nothing underflows;
//! the scale factors give the log-likelihood.

use super::{GaussianHmm, HmmError};

/// What the E-step needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Posteriors {
    pub loglik: f64,
    /// P(state at t | all observations), `n × k` row-major.
    pub gamma: Vec<f64>,
    /// Expected transition counts, `k × k`.
    pub xi: Vec<f64>,
}

/// Emission probabilities shifted by each row's maximum, and the shifts.
fn scaled_emissions(log_b: &[f64], n: usize, k: usize) -> (Vec<f64>, f64) {
    let mut b = vec![0.0; n * k];
    let mut shift = 0.0;
    for t in 0..n {
        let row = &log_b[t * k..(t + 1) * k];
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        shift += m;
        for s in 0..k {
            b[t * k + s] = (row[s] - m).exp();
        }
    }
    (b, shift)
}

/// Normalised forward variables, scale factors, log-likelihood.
fn forward_scaled(m: &GaussianHmm, b: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>), HmmError> {
    let k = m.k;
    let mut alpha = vec![0.0; n * k];
    let mut c = vec![0.0; n];
    for t in 0..n {
        let mut total = 0.0;
        for j in 0..k {
            let prior = if t == 0 {
                m.start[j]
            } else {
                let prev = &alpha[(t - 1) * k..t * k];
                let mut acc = 0.0;
                for i in 0..k {
                    acc += prev[i] * m.trans[i * k + j];
                }
                acc
            };
            let a = prior * b[t * k + j];
            alpha[t * k + j] = a;
            total += a;
        }
        if total <= 0.0 || !total.is_finite() {
            return Err(HmmError::ZeroProbability { row: t });
        }
        c[t] = total;
        for j in 0..k {
            alpha[t * k + j] /= total;
        }
    }
    Ok((alpha, c))
}

pub fn forward(m: &GaussianHmm, log_b: &[f64], n: usize) -> Result<(f64, Vec<f64>), HmmError> {
    let (b, shift) = scaled_emissions(log_b, n, m.k);
    let (alpha, c) = forward_scaled(m, &b, n)?;
    Ok((c.iter().map(|v| v.ln()).sum::<f64>() + shift, alpha))
}

pub fn posteriors(m: &GaussianHmm, log_b: &[f64], n: usize) -> Result<Posteriors, HmmError> {
    let k = m.k;
    let (b, shift) = scaled_emissions(log_b, n, k);
    let (alpha, c) = forward_scaled(m, &b, n)?;
    let loglik = c.iter().map(|v| v.ln()).sum::<f64>() + shift;
    let mut beta = vec![1.0; n * k];
    let mut xi = vec![0.0; k * k];
    let mut next = vec![0.0; k];
    for t in (0..n.saturating_sub(1)).rev() {
        // next[j] = B[t+1, j] β[t+1, j] / c[t+1]
        for j in 0..k {
            next[j] = b[(t + 1) * k + j] * beta[(t + 1) * k + j] / c[t + 1];
        }
        for i in 0..k {
            let a = alpha[t * k + i];
            let mut acc = 0.0;
            for j in 0..k {
                let w = m.trans[i * k + j] * next[j];
                acc += w;
                xi[i * k + j] += a * w;
            }
            beta[t * k + i] = acc;
        }
    }
    let mut gamma = alpha;
    for (g, bt) in gamma.iter_mut().zip(&beta) {
        *g *= bt;
    }
    Ok(Posteriors { loglik, gamma, xi })
}
