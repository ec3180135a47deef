//! The Baum-Welch iteration's hot loop, fused: one forward sweep computes
//! each row's emission densities (once), their shifted exponentials and the
//! scaled forward variables; one backward sweep carries the backward
//! variables in registers and folds each row's state posterior straight
//! into the M-step's sufficient statistics (weights, first and second
//! moments, expected transitions). Nothing is allocated in the loop and no
//! `n × k` posterior or backward array exists; the state count is a const
//! generic (1–16) so the per-row loops over states unroll.
//!
//! `hmm::forward_backward` is the straightforward version of the same
//! algebra (and what `posteriors` still uses); tests hold the two equal.

use super::emission::Emission;
use super::{GaussianHmm, HmmError};

mod fixed;

/// Calls `f::<K>` for the model's state count (1–16).
macro_rules! dispatch {
    ($k:expr, $f:ident, ($($arg:expr),*)) => {
        match $k {
            1 => $f::<1>($($arg),*), 2 => $f::<2>($($arg),*), 3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*), 5 => $f::<5>($($arg),*), 6 => $f::<6>($($arg),*),
            7 => $f::<7>($($arg),*), 8 => $f::<8>($($arg),*), 9 => $f::<9>($($arg),*),
            10 => $f::<10>($($arg),*), 11 => $f::<11>($($arg),*), 12 => $f::<12>($($arg),*),
            13 => $f::<13>($($arg),*), 14 => $f::<14>($($arg),*), 15 => $f::<15>($($arg),*),
            16 => $f::<16>($($arg),*),
            k => unreachable!("state count {k} outside 1–16 reached the kernel"),
        }
    };
}

/// The M-step's inputs, summed over rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub loglik: f64,
    /// State posterior of the first row (`k`).
    pub first: Vec<f64>,
    /// Expected transition counts (`k × k`).
    pub xi: Vec<f64>,
    /// Σ γ per state (`k`).
    pub weight: Vec<f64>,
    /// Σ γ x per state (`k × d`).
    pub sx: Vec<f64>,
    /// Σ γ x² (diagonal, `k × d`) or Σ γ x xᵀ (full, `k × d × d`).
    pub sxx: Vec<f64>,
}

/// Buffers reused across iterations: shifted densities and scaled
/// forward variables (`n × k` each), inverse scale factors (`n`).
#[derive(Debug, Default)]
pub struct Buffers {
    /// Row-major (general path) or state-major (fixed shapes).
    b: Vec<f64>,
    alpha: Vec<f64>,
    c: Vec<f64>,
    /// Each row's largest log density (fixed shapes).
    top: Vec<f64>,
    /// Threads the emission densities may use (fixed shapes; 0 or 1: the
    /// calling thread). The result is the same bits whatever the count.
    pub threads: usize,
}

/// Log-likelihood of `x` under `m` (the forward sweep alone).
pub fn loglik(m: &GaussianHmm, x: &[f64], buf: &mut Buffers) -> Result<f64, HmmError> {
    let e = Emission::new(m)?;
    if let Some(out) = fixed::run(m.k, m.d, e.full, fixed::Forward { m, e: &e, x, buf }) {
        return out;
    }
    dispatch!(m.k, forward, (m, &e, x, buf))
}

/// One E-step: the log-likelihood of `x` under `m` and the sufficient
/// statistics of the M-step.
pub fn e_step(m: &GaussianHmm, x: &[f64], buf: &mut Buffers) -> Result<Stats, HmmError> {
    let e = Emission::new(m)?;
    let mut stats = Stats {
        loglik: 0.0,
        first: vec![0.0; m.k],
        xi: vec![0.0; m.k * m.k],
        weight: vec![0.0; m.k],
        sx: vec![0.0; m.k * m.d],
        sxx: vec![0.0; if e.full { m.k * m.d * m.d } else { m.k * m.d }],
    };
    let job = fixed::Both {
        m,
        e: &e,
        x,
        buf: &mut *buf,
        stats: &mut stats,
    };
    if let Some(out) = fixed::run(m.k, m.d, e.full, job) {
        out?;
        return Ok(stats);
    }
    stats.loglik = dispatch!(m.k, forward, (m, &e, x, buf))?;
    dispatch!(m.k, backward, (m, e.full, x, buf, &mut stats));
    Ok(stats)
}

fn square<const K: usize>(flat: &[f64]) -> [[f64; K]; K] {
    let mut out = [[0.0; K]; K];
    for (i, row) in out.iter_mut().enumerate() {
        row.copy_from_slice(&flat[i * K..(i + 1) * K]);
    }
    out
}

/// eˣ for x ≤ 0 in plain arithmetic that vectorises (no library call):
/// x = k ln 2 + r with |r| ≤ ln 2 / 2, e^r by its Taylor polynomial to
/// degree 13 (truncation < 5e-18), 2ᵏ built from its bits; below −708 the
/// result is 0. Within a few ulp of the correctly rounded value, and the
/// same bits on every IEEE machine (no FMA contraction, no libm version).
#[inline(always)]
pub fn exp_nonpositive(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    // ln 2 split so that k · LN2_HI is exact for |k| < 2²⁰ (fdlibm's).
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    // 1.5 · 2⁵²: adding it rounds to an integer held in the low bits.
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    const C: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    let inside = x >= -708.0;
    let y = if inside { x } else { -708.0 };
    let t = y * LOG2E + MAGIC;
    let k = t - MAGIC;
    let r = (y - k * LN2_HI) - k * LN2_LO;
    // Estrin's scheme: a short dependency chain.
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let pair = |i: usize| C[i] + C[i + 1] * r;
    let low = (pair(0) + pair(2) * r2) + (pair(4) + pair(6) * r2) * r4;
    let high = (pair(8) + pair(10) * r2) + pair(12) * r4;
    let p = low + high * r8;
    let k_int = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i64;
    let two_k = f64::from_bits(((k_int + 1023) as u64) << 52);
    if inside {
        p * two_k
    } else {
        0.0
    }
}

/// Exponentiates a row's log densities in place, shifted by their
/// maximum (so the largest is 1); returns the maximum.
#[inline(always)]
fn exp_shifted<const K: usize>(ld: &mut [f64; K]) -> f64 {
    let mut top = ld[0];
    for v in &ld[1..] {
        if *v > top {
            top = *v;
        }
    }
    for v in ld.iter_mut() {
        *v = exp_nonpositive(*v - top);
    }
    top
}

/// Σ v, summed pairwise (a short dependency chain; fixed order).
#[inline(always)]
fn tree_sum<const K: usize>(mut w: [f64; K]) -> f64 {
    let mut len = K;
    while len > 1 {
        let half = len.div_ceil(2);
        for i in 0..len / 2 {
            w[i] += w[i + half];
        }
        len = half;
    }
    w[0]
}

/// The log-likelihood's running parts: scale factors are powers of two
/// (their logarithms are integers; multiplying by them is exact), kept as
/// a count, except a subnormal row total, kept as its logarithm.
#[derive(Default)]
struct Scale {
    twos: i64,
    logs: f64,
    shift: f64,
}

/// One forward step: αₜ ∝ (αₜ₋₁ A or π) ⊙ bₜ, scaled by the power of two
/// at or below its total (1 / that scale into `inv_c`).
#[inline(always)]
fn forward_step<const K: usize>(
    t: usize,
    prev: &mut [f64; K],
    b: &[f64; K],
    trans: &[[f64; K]; K],
    inv_c: &mut f64,
    scale: &mut Scale,
) -> Result<(), HmmError> {
    let mut next = [0.0; K];
    for j in 0..K {
        let prior = if t == 0 {
            prev[j]
        } else {
            let mut terms = [0.0; K];
            for i in 0..K {
                terms[i] = prev[i] * trans[i][j];
            }
            tree_sum(terms)
        };
        next[j] = prior * b[j];
    }
    let total = tree_sum(next);
    if !(total > 0.0 && total.is_finite()) {
        return Err(HmmError::ZeroProbability { row: t });
    }
    let exponent = ((total.to_bits() >> 52) & 0x7ff) as i64;
    let inv = if exponent == 0 {
        scale.logs += total.ln();
        1.0 / total
    } else {
        scale.twos += exponent - 1023;
        f64::from_bits(((2 * 1023 - exponent) as u64) << 52)
    };
    for j in 0..K {
        prev[j] = next[j] * inv;
    }
    *inv_c = inv;
    Ok(())
}

impl Scale {
    /// ln P(x): Σ ln cₜ + ln Σ α̂ₙ₋₁ + Σ shiftₜ.
    fn loglik<const K: usize>(&self, last: &[f64; K]) -> f64 {
        self.twos as f64 * std::f64::consts::LN_2 + self.logs + tree_sum(*last).ln() + self.shift
    }
}

/// One backward step from row t to t − 1: β̂ₜ₋₁(i) = Σⱼ aᵢⱼ bₜ(j) β̂ₜ(j) / cₜ,
/// and ξ(i, j) += α̂ₜ₋₁(i) aᵢⱼ bₜ(j) β̂ₜ(j) / cₜ.
#[inline(always)]
fn backward_step<const K: usize>(
    beta: &mut [f64; K],
    b: &[f64],
    inv_c: f64,
    before: &[f64],
    trans: &[[f64; K]; K],
    xi: &mut [[f64; K]; K],
) {
    let mut next = [0.0; K];
    for j in 0..K {
        next[j] = b[j] * beta[j] * inv_c;
    }
    for i in 0..K {
        let mut terms = [0.0; K];
        for j in 0..K {
            terms[j] = trans[i][j] * next[j];
            xi[i][j] += before[i] * terms[j];
        }
        beta[i] = tree_sum(terms);
    }
}

/// The starting backward variables: 1 / Σ α̂ₙ₋₁, so that γₜ = α̂ₜ β̂ₜ.
fn last_beta<const K: usize>(buf: &Buffers) -> [f64; K] {
    let mut last = [0.0; K];
    last.copy_from_slice(&buf.alpha[buf.alpha.len() - K..]);
    [1.0 / tree_sum(last); K]
}

/// Densities (shifted by each row's maximum log density), scaled forward
/// variables and inverse scales into `buf`; returns the log-likelihood.
fn forward<const K: usize>(
    m: &GaussianHmm,
    e: &Emission,
    x: &[f64],
    buf: &mut Buffers,
) -> Result<f64, HmmError> {
    let d = m.d;
    let n = x.len() / d;
    let trans = square::<K>(&m.trans);
    buf.b.resize(n * K, 0.0);
    buf.alpha.resize(n * K, 0.0);
    buf.c.resize(n, 0.0);
    let mut z = vec![0.0; d];
    let mut prev = [0.0; K];
    prev.copy_from_slice(&m.start);
    let mut scale = Scale::default();
    for (t, ((row, b), (alpha, c))) in x
        .chunks_exact(d)
        .zip(buf.b.chunks_exact_mut(K))
        .zip(buf.alpha.chunks_exact_mut(K).zip(buf.c.iter_mut()))
        .enumerate()
    {
        let mut ld = [0.0; K];
        for (s, v) in ld.iter_mut().enumerate() {
            *v = e.log_density(s, row, &mut z);
        }
        scale.shift += exp_shifted(&mut ld);
        b.copy_from_slice(&ld);
        forward_step(t, &mut prev, &ld, &trans, c, &mut scale)?;
        alpha.copy_from_slice(&prev);
    }
    Ok(scale.loglik(&prev))
}

/// The backward sweep over `buf` (filled by [`forward`]): βₜ in registers,
/// γₜ = αₜ βₜ folded into `stats` with row t, expected transitions
/// αₜ₋₁(i) aᵢⱼ bₜ(j) βₜ(j) / cₜ summed.
fn backward<const K: usize>(
    m: &GaussianHmm,
    full: bool,
    x: &[f64],
    buf: &Buffers,
    stats: &mut Stats,
) {
    let d = m.d;
    let n = x.len() / d;
    let trans = square::<K>(&m.trans);
    let mut xi = [[0.0; K]; K];
    let mut weight = [0.0; K];
    let mut beta = last_beta::<K>(buf);
    for t in (0..n).rev() {
        let row = &x[t * d..(t + 1) * d];
        let alpha = &buf.alpha[t * K..(t + 1) * K];
        for s in 0..K {
            let g = alpha[s] * beta[s];
            weight[s] += g;
            let sx = &mut stats.sx[s * d..(s + 1) * d];
            for j in 0..d {
                sx[j] += g * row[j];
            }
            if full {
                let sxx = &mut stats.sxx[s * d * d..(s + 1) * d * d];
                for i in 0..d {
                    let gi = g * row[i];
                    for j in 0..=i {
                        sxx[i * d + j] += gi * row[j];
                    }
                }
            } else {
                let sxx = &mut stats.sxx[s * d..(s + 1) * d];
                for j in 0..d {
                    sxx[j] += g * row[j] * row[j];
                }
            }
            if t == 0 {
                stats.first[s] = g;
            }
        }
        if t == 0 {
            break;
        }
        backward_step(
            &mut beta,
            &buf.b[t * K..(t + 1) * K],
            buf.c[t],
            &buf.alpha[(t - 1) * K..t * K],
            &trans,
            &mut xi,
        );
    }
    for i in 0..K {
        stats.weight[i] = weight[i];
        stats.xi[i * K..(i + 1) * K].copy_from_slice(&xi[i]);
    }
    if full {
        for s in 0..K {
            let sxx = &mut stats.sxx[s * d * d..(s + 1) * d * d];
            for i in 0..d {
                for j in 0..i {
                    sxx[j * d + i] = sxx[i * d + j];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The fused kernel against the straightforward forward-backward pass
    //! (posteriors and expected transitions, then the sums by hand), on
    //! random models and rows: the fixed shapes and the general path.

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::hmm::Covariance;

    fn random_model(rng: &mut ChaCha8Rng, k: usize, d: usize, full: bool) -> GaussianHmm {
        let stochastic = |rng: &mut ChaCha8Rng, len: usize| {
            let v: Vec<f64> = (0..len).map(|_| 0.05 + rng.random::<f64>()).collect();
            let total: f64 = v.iter().sum();
            v.into_iter().map(|p| p / total).collect::<Vec<_>>()
        };
        let mut covars = Vec::new();
        for _ in 0..k {
            if full {
                let a: Vec<f64> = (0..d * d).map(|_| rng.random::<f64>() - 0.5).collect();
                for i in 0..d {
                    for j in 0..d {
                        let dot: f64 = (0..d).map(|l| a[i * d + l] * a[j * d + l]).sum();
                        covars.push(dot + if i == j { 0.2 } else { 0.0 });
                    }
                }
            } else {
                covars.extend((0..d).map(|_| 0.1 + rng.random::<f64>()));
            }
        }
        GaussianHmm {
            k,
            d,
            covariance: if full {
                Covariance::Full
            } else {
                Covariance::Diag
            },
            start: stochastic(rng, k),
            trans: (0..k).flat_map(|_| stochastic(rng, k)).collect(),
            means: (0..k * d)
                .map(|_| 3.0 * rng.random::<f64>() - 1.5)
                .collect(),
            covars,
        }
    }

    fn close(a: f64, b: f64, what: &str) {
        let scale = a.abs().max(b.abs()).max(1e-300);
        assert!((a - b).abs() <= 1e-9 * scale, "{what}: {a} vs {b}");
    }

    #[test]
    fn the_fused_e_step_equals_the_straightforward_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let shapes = [
            (1, 1),
            (2, 3),
            (3, 2),
            (4, 2),
            (8, 4),
            (5, 1),
            (10, 5),
            (16, 2),
            (3, 6),
        ];
        for (k, d) in shapes {
            for full in [false, true] {
                let m = random_model(&mut rng, k, d, full);
                let n = 500 + rng.random_range(0..500);
                let x: Vec<f64> = (0..n * d)
                    .map(|_| 4.0 * rng.random::<f64>() - 2.0)
                    .collect();
                let what = format!("k {k} d {d} full {full}");
                let mut buf = Buffers::default();
                let got = e_step(&m, &x, &mut buf).expect("kernel");
                let want = m.posteriors(&x).expect("reference");
                close(got.loglik, want.loglik, &format!("{what} loglik"));
                close(
                    loglik(&m, &x, &mut buf).expect("forward"),
                    want.loglik,
                    &what,
                );
                for i in 0..k * k {
                    close(got.xi[i], want.xi[i], &format!("{what} xi {i}"));
                }
                for s in 0..k {
                    close(got.first[s], want.gamma[s], &format!("{what} first {s}"));
                    let g = |t: usize| want.gamma[t * k + s];
                    close(
                        got.weight[s],
                        (0..n).map(g).sum(),
                        &format!("{what} weight {s}"),
                    );
                    for i in 0..d {
                        let sx: f64 = (0..n).map(|t| g(t) * x[t * d + i]).sum();
                        close(got.sx[s * d + i], sx, &format!("{what} sx {s} {i}"));
                        for j in 0..d {
                            if !full && j != i {
                                continue;
                            }
                            let sxx: f64 = (0..n).map(|t| g(t) * x[t * d + i] * x[t * d + j]).sum();
                            let at = if full {
                                s * d * d + i * d + j
                            } else {
                                s * d + i
                            };
                            close(got.sxx[at], sxx, &format!("{what} sxx {s} {i} {j}"));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn exp_matches_the_library_to_a_few_ulp() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..100_000 {
            let x = -750.0 * rng.random::<f64>().powi(3);
            let (got, want) = (exp_nonpositive(x), x.exp());
            if x < -708.0 {
                assert_eq!(got, 0.0);
            } else {
                assert!(
                    (got - want).abs() <= 4.0 * f64::EPSILON * want,
                    "e^{x}: {got} vs {want}"
                );
            }
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }
}
