//! The scaled forward-backward pass (Rabiner 1989, §V.A): emission
//! densities are shifted by their per-row maximum before exponentiating and
//! the forward variables are normalised each step, so nothing underflows;
//! the scale factors give the log-likelihood. Buffers live in a
//! [`Workspace`] reused across EM iterations.

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

/// Buffers of one pass (`n × k` each, and `n` scale factors).
#[derive(Debug, Default)]
pub struct Workspace {
    /// Log densities, then shifted densities (in place).
    pub b: Vec<f64>,
    /// Forward variables, then (after the backward pass) state posteriors.
    pub gamma: Vec<f64>,
    beta: Vec<f64>,
    c: Vec<f64>,
}

/// Exponentiates log densities in place, shifted by each row's maximum;
/// returns the sum of the shifts.
fn exp_shifted(b: &mut [f64], n: usize, k: usize) -> f64 {
    let mut shift = 0.0;
    for t in 0..n {
        let row = &mut b[t * k..(t + 1) * k];
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        shift += m;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
        }
    }
    shift
}

/// Normalised forward variables into `alpha`, scale factors into `c`.
fn forward_scaled(
    m: &GaussianHmm,
    b: &[f64],
    n: usize,
    alpha: &mut Vec<f64>,
    c: &mut Vec<f64>,
) -> Result<(), HmmError> {
    let k = m.k;
    alpha.resize(n * k, 0.0);
    c.resize(n, 0.0);
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
        let inv = 1.0 / total;
        for v in &mut alpha[t * k..(t + 1) * k] {
            *v *= inv;
        }
    }
    Ok(())
}

pub fn forward(m: &GaussianHmm, log_b: &[f64], n: usize) -> Result<(f64, Vec<f64>), HmmError> {
    let mut b = log_b.to_vec();
    let shift = exp_shifted(&mut b, n, m.k);
    let (mut alpha, mut c) = (Vec::new(), Vec::new());
    forward_scaled(m, &b, n, &mut alpha, &mut c)?;
    Ok((c.iter().map(|v| v.ln()).sum::<f64>() + shift, alpha))
}

pub fn posteriors(m: &GaussianHmm, log_b: &[f64], n: usize) -> Result<Posteriors, HmmError> {
    let mut ws = Workspace {
        b: log_b.to_vec(),
        ..Workspace::default()
    };
    let (loglik, xi) = e_step(m, n, &mut ws)?;
    Ok(Posteriors {
        loglik,
        gamma: ws.gamma,
        xi,
    })
}

/// The E-step over `ws.b` (log densities on entry): returns the
/// log-likelihood and expected transitions; leaves the posteriors in
/// `ws.gamma`.
pub fn e_step(m: &GaussianHmm, n: usize, ws: &mut Workspace) -> Result<(f64, Vec<f64>), HmmError> {
    let k = m.k;
    let shift = exp_shifted(&mut ws.b, n, k);
    forward_scaled(m, &ws.b, n, &mut ws.gamma, &mut ws.c)?;
    let loglik = ws.c.iter().map(|v| v.ln()).sum::<f64>() + shift;
    let (b, alpha, c) = (&ws.b, &ws.gamma, &ws.c);
    ws.beta.clear();
    ws.beta.resize(n * k, 1.0);
    let beta = &mut ws.beta;
    let mut xi = vec![0.0; k * k];
    let mut next = vec![0.0; k];
    for t in (0..n.saturating_sub(1)).rev() {
        // next[j] = B[t+1, j] β[t+1, j] / c[t+1]
        let inv = 1.0 / c[t + 1];
        for j in 0..k {
            next[j] = b[(t + 1) * k + j] * beta[(t + 1) * k + j] * inv;
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
    for (g, bt) in ws.gamma.iter_mut().zip(ws.beta.iter()) {
        *g *= bt;
    }
    Ok((loglik, xi))
}
