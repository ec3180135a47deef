//! Log densities of every row under every state: `n × k`, row-major.

use nalgebra::{Cholesky, DMatrix};

use super::{Covariance, GaussianHmm, HmmError};

const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// Per state: what the density of a row needs, precomputed.
enum Prepared {
    /// 1/σ² per column and the constant −½(D ln 2π + Σ ln σ²).
    Diag { inv: Vec<f64>, constant: f64 },
    /// Lower Cholesky factor (row-major D × D) and −½(D ln 2π + ln|Σ|).
    Full { l: Vec<f64>, constant: f64 },
}

fn prepare(m: &GaussianHmm) -> Result<Vec<Prepared>, HmmError> {
    let d = m.d;
    (0..m.k)
        .map(|s| match m.covariance {
            Covariance::Diag => {
                let var = &m.covars[s * d..(s + 1) * d];
                if var.iter().any(|v| *v <= 0.0 || !v.is_finite()) {
                    return Err(HmmError::NotPositiveDefinite { state: s });
                }
                Ok(Prepared::Diag {
                    inv: var.iter().map(|v| 1.0 / v).collect(),
                    constant: -0.5 * (d as f64 * LN_2PI + var.iter().map(|v| v.ln()).sum::<f64>()),
                })
            }
            Covariance::Full => {
                let cov = DMatrix::from_row_slice(d, d, &m.covars[s * d * d..(s + 1) * d * d]);
                let chol = Cholesky::new(cov).ok_or(HmmError::NotPositiveDefinite { state: s })?;
                let lower = chol.l();
                let mut l = vec![0.0; d * d];
                let mut log_det = 0.0;
                for i in 0..d {
                    for j in 0..=i {
                        l[i * d + j] = lower[(i, j)];
                    }
                    log_det += 2.0 * lower[(i, i)].ln();
                }
                Ok(Prepared::Full {
                    l,
                    constant: -0.5 * (d as f64 * LN_2PI + log_det),
                })
            }
        })
        .collect()
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
    let prepared = prepare(m)?;
    out.resize(n * k, 0.0);
    let mut z = vec![0.0; d];
    for t in 0..n {
        let row = &x[t * d..(t + 1) * d];
        for (s, p) in prepared.iter().enumerate() {
            let mean = &m.means[s * d..(s + 1) * d];
            out[t * k + s] = match p {
                Prepared::Diag { inv, constant } => {
                    let mut q = 0.0;
                    for j in 0..d {
                        let e = row[j] - mean[j];
                        q += e * e * inv[j];
                    }
                    constant - 0.5 * q
                }
                Prepared::Full { l, constant } => {
                    // Solve L z = (x − μ) by forward substitution.
                    let mut q = 0.0;
                    for i in 0..d {
                        let mut v = row[i] - mean[i];
                        for j in 0..i {
                            v -= l[i * d + j] * z[j];
                        }
                        z[i] = v / l[i * d + i];
                        q += z[i] * z[i];
                    }
                    constant - 0.5 * q
                }
            };
        }
    }
    Ok(())
}
