//! Log densities of every row under every state (`n × k`, row-major), and
//! [`Emission`]: the per-state parameters they need, prepared once per
//! model (the fused kernel uses the same).

use super::{Covariance, GaussianHmm, HmmError};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Per state, what a row's log density needs: the mean, then either the
/// inverse variances (diagonal) or the lower Cholesky factor (full), and
/// the normalising constant.
pub(super) struct Emission {
    pub(super) d: usize,
    pub(super) full: bool,
    pub(super) means: Vec<f64>,
    /// Diagonal: `k × d` of 1/σ²; full: `k × d × d` of L (row-major).
    pub(super) shape: Vec<f64>,
    pub(super) constant: Vec<f64>,
}

impl Emission {
    pub(super) fn new(m: &GaussianHmm) -> Result<Self, HmmError> {
        let (k, d) = (m.k, m.d);
        let full = m.covariance == Covariance::Full;
        let mut shape = Vec::with_capacity(if full { k * d * d } else { k * d });
        let mut constant = Vec::with_capacity(k);
        for s in 0..k {
            if full {
                let cov =
                    nalgebra::DMatrix::from_row_slice(d, d, &m.covars[s * d * d..(s + 1) * d * d]);
                let chol = nalgebra::Cholesky::new(cov)
                    .ok_or(HmmError::NotPositiveDefinite { state: s })?;
                let lower = chol.l();
                let mut log_det = 0.0;
                for i in 0..d {
                    for j in 0..d {
                        shape.push(if j <= i { lower[(i, j)] } else { 0.0 });
                    }
                    log_det += 2.0 * lower[(i, i)].ln();
                }
                constant.push(-0.5 * (d as f64 * LN_2PI + log_det));
            } else {
                let var = &m.covars[s * d..(s + 1) * d];
                if var.iter().any(|v| *v <= 0.0 || !v.is_finite()) {
                    return Err(HmmError::NotPositiveDefinite { state: s });
                }
                shape.extend(var.iter().map(|v| 1.0 / v));
                constant.push(-0.5 * (d as f64 * LN_2PI + var.iter().map(|v| v.ln()).sum::<f64>()));
            }
        }
        Ok(Emission {
            d,
            full,
            means: m.means.clone(),
            shape,
            constant,
        })
    }

    /// Log density of `row` under state `s`; `z` is scratch of length `d`.
    #[inline(always)]
    pub(super) fn log_density(&self, s: usize, row: &[f64], z: &mut [f64]) -> f64 {
        let d = self.d;
        let mean = &self.means[s * d..(s + 1) * d];
        let mut q = 0.0;
        if self.full {
            let l = &self.shape[s * d * d..(s + 1) * d * d];
            for i in 0..d {
                let mut v = row[i] - mean[i];
                for j in 0..i {
                    v -= l[i * d + j] * z[j];
                }
                z[i] = v / l[i * d + i];
                q += z[i] * z[i];
            }
        } else {
            let inv = &self.shape[s * d..(s + 1) * d];
            for j in 0..d {
                let e = row[j] - mean[j];
                q += e * e * inv[j];
            }
        }
        self.constant[s] - 0.5 * q
    }
}

pub fn log_densities(m: &GaussianHmm, x: &[f64]) -> Result<Vec<f64>, HmmError> {
    let mut out = Vec::new();
    log_densities_into(m, x, &mut out)?;
    Ok(out)
}

/// [`log_densities`] into a reused buffer.
pub fn log_densities_into(m: &GaussianHmm, x: &[f64], out: &mut Vec<f64>) -> Result<(), HmmError> {
    let (d, k) = (m.d, m.k);
    let n = x.len() / d;
    let prepared = Emission::new(m)?;
    out.resize(n * k, 0.0);
    let mut z = vec![0.0; d];
    for (row, out) in x.chunks_exact(d).zip(out.chunks_exact_mut(k)) {
        for (s, v) in out.iter_mut().enumerate() {
            *v = prepared.log_density(s, row, &mut z);
        }
    }
    Ok(())
}
