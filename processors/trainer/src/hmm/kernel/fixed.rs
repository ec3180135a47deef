//! The kernel for the common shapes (1–8 states, 1–4 columns, either
//! covariance): state count, column count and covariance kind are const
//! generics, so every per-row loop unrolls, the parameters sit in fixed
//! arrays and the backward sweep's sums stay in registers. Same algebra
//! and same order of operations as the general sweeps in the parent.

use super::{
    backward_step, exp_nonpositive, forward_step, last_beta, Buffers, Emission, Scale, Stats,
};
use crate::hmm::{GaussianHmm, HmmError};

/// A sweep to run at fixed shape.
pub(super) trait Job {
    type Out;
    fn go<const K: usize, const D: usize, const FULL: bool>(self) -> Self::Out;
}

/// `job` at one shape, compiled for the widest vector instructions this
/// CPU has ([`pulp`] picks them at run time): the loops over states and
/// columns vectorise. Each lane does the same IEEE operations in the same
/// order as scalar code (Rust never fuses a multiply and an add on its
/// own), so the result is the same bit for bit on every machine.
struct Wide<J, const K: usize, const D: usize, const FULL: bool>(J);

impl<J: Job, const K: usize, const D: usize, const FULL: bool> pulp::WithSimd
    for Wide<J, K, D, FULL>
{
    type Output = J::Out;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> J::Out {
        self.0.go::<K, D, FULL>()
    }
}

/// Runs `job` at the shape `(k, d, full)`, or `None` if that shape has no
/// fixed kernel.
pub(super) fn run<J: Job>(k: usize, d: usize, full: bool, job: J) -> Option<J::Out> {
    let arch = pulp::Arch::new();
    macro_rules! by_d {
        ($k:literal) => {
            match (d, full) {
                (1, false) => Some(arch.dispatch(Wide::<J, $k, 1, false>(job))),
                (2, false) => Some(arch.dispatch(Wide::<J, $k, 2, false>(job))),
                (3, false) => Some(arch.dispatch(Wide::<J, $k, 3, false>(job))),
                (4, false) => Some(arch.dispatch(Wide::<J, $k, 4, false>(job))),
                (1, true) => Some(arch.dispatch(Wide::<J, $k, 1, true>(job))),
                (2, true) => Some(arch.dispatch(Wide::<J, $k, 2, true>(job))),
                (3, true) => Some(arch.dispatch(Wide::<J, $k, 3, true>(job))),
                (4, true) => Some(arch.dispatch(Wide::<J, $k, 4, true>(job))),
                _ => None,
            }
        };
    }
    match k {
        1 => by_d!(1),
        2 => by_d!(2),
        3 => by_d!(3),
        4 => by_d!(4),
        5 => by_d!(5),
        6 => by_d!(6),
        7 => by_d!(7),
        8 => by_d!(8),
        _ => None,
    }
}

/// The forward sweep alone: the log-likelihood.
pub(super) struct Forward<'a> {
    pub m: &'a GaussianHmm,
    pub e: &'a Emission,
    pub x: &'a [f64],
    pub buf: &'a mut Buffers,
}

impl Job for Forward<'_> {
    type Out = Result<f64, HmmError>;
    #[inline(always)]
    fn go<const K: usize, const D: usize, const FULL: bool>(self) -> Self::Out {
        let p = Params::<K, D>::new(self.m, self.e);
        forward::<K, D, FULL>(&p, self.x, self.buf)
    }
}

/// Both sweeps: log-likelihood and the M-step's sums into `stats`.
pub(super) struct Both<'a> {
    pub m: &'a GaussianHmm,
    pub e: &'a Emission,
    pub x: &'a [f64],
    pub buf: &'a mut Buffers,
    pub stats: &'a mut Stats,
}

impl Job for Both<'_> {
    type Out = Result<(), HmmError>;
    #[inline(always)]
    fn go<const K: usize, const D: usize, const FULL: bool>(self) -> Self::Out {
        let p = Params::<K, D>::new(self.m, self.e);
        self.stats.loglik = forward::<K, D, FULL>(&p, self.x, self.buf)?;
        backward::<K, D, FULL>(&p, self.x, self.buf, self.stats);
        Ok(())
    }
}

struct Params<const K: usize, const D: usize> {
    start: [f64; K],
    trans: [[f64; K]; K],
    mean: [[f64; D]; K],
    /// Diagonal: 1/σ² per column.
    inv: [[f64; D]; K],
    /// Full: the lower Cholesky factor.
    l: [[[f64; D]; D]; K],
    constant: [f64; K],
}

impl<const K: usize, const D: usize> Params<K, D> {
    #[inline(always)]
    fn new(m: &GaussianHmm, e: &Emission) -> Self {
        let mut p = Params {
            start: [0.0; K],
            trans: [[0.0; K]; K],
            mean: [[0.0; D]; K],
            inv: [[0.0; D]; K],
            l: [[[0.0; D]; D]; K],
            constant: [0.0; K],
        };
        p.start.copy_from_slice(&m.start);
        for s in 0..K {
            p.trans[s].copy_from_slice(&m.trans[s * K..(s + 1) * K]);
            p.mean[s].copy_from_slice(&e.means[s * D..(s + 1) * D]);
            if e.full {
                for i in 0..D {
                    p.l[s][i].copy_from_slice(&e.shape[s * D * D + i * D..s * D * D + (i + 1) * D]);
                }
            } else {
                p.inv[s].copy_from_slice(&e.shape[s * D..(s + 1) * D]);
            }
            p.constant[s] = e.constant[s];
        }
        p
    }

    #[inline(always)]
    fn log_density<const FULL: bool>(&self, s: usize, row: &[f64; D]) -> f64 {
        let mean = &self.mean[s];
        let mut q = 0.0;
        if FULL {
            let l = &self.l[s];
            let mut z = [0.0; D];
            for i in 0..D {
                let mut v = row[i] - mean[i];
                for j in 0..i {
                    v -= l[i][j] * z[j];
                }
                z[i] = v / l[i][i];
                q += z[i] * z[i];
            }
        } else {
            let inv = &self.inv[s];
            for j in 0..D {
                let e = row[j] - mean[j];
                q += e * e * inv[j];
            }
        }
        self.constant[s] - 0.5 * q
    }
}

#[inline(always)]
fn rows<const D: usize>(
    x: &[f64],
) -> impl DoubleEndedIterator<Item = &[f64; D]> + ExactSizeIterator {
    x.chunks_exact(D)
        .map(|r| r.try_into().expect("chunks of D"))
}

/// The rows' shifted densities, state-major into `buf.b` (`b[s·n + t]`),
/// each loop running over rows so that it vectorises across them: the log
/// densities of one state, each row's maximum, the exponentials. Returns
/// Σ maxima (summed in row order).
///
/// Rows are independent here: with `buf.threads` > 1 and enough rows, row
/// ranges go to scoped threads (each dispatched to the CPU's widest
/// vectors again); every value is the same bits whoever computes it, and
/// the maxima are still summed in row order.
#[inline(always)]
fn emissions<const K: usize, const D: usize, const FULL: bool>(
    p: &Params<K, D>,
    x: &[f64],
    buf: &mut Buffers,
) -> f64 {
    let n = x.len() / D;
    buf.b.resize(n * K, 0.0);
    buf.top.resize(n, 0.0);
    let threads = buf.threads.clamp(1, (n / PARALLEL_ROWS).max(1));
    if threads == 1 {
        let mut states: Vec<&mut [f64]> = buf.b.chunks_exact_mut(n.max(1)).take(K).collect();
        emission_rows::<K, D, FULL>(p, x, &mut states, &mut buf.top);
    } else {
        let step = n.div_ceil(threads);
        // Per row range: its slice of each state's block, and of `top`.
        let mut parts: Vec<RowRange<'_>> = Vec::new();
        let mut blocks: Vec<&mut [f64]> = buf.b.chunks_exact_mut(n).take(K).collect();
        let mut top: &mut [f64] = &mut buf.top;
        let mut rows_left = x;
        while !top.is_empty() {
            let len = step.min(top.len());
            let mut states = Vec::with_capacity(K);
            for block in &mut blocks {
                let (head, tail) = std::mem::take(block).split_at_mut(len);
                states.push(head);
                *block = tail;
            }
            let (head, tail) = top.split_at_mut(len);
            top = tail;
            let (xs, rest) = rows_left.split_at(len * D);
            rows_left = rest;
            parts.push((states, head, xs));
        }
        std::thread::scope(|scope| {
            for (mut states, top, xs) in parts {
                scope.spawn(move || {
                    pulp::Arch::new().dispatch(EmissionRows::<K, D, FULL> {
                        p,
                        x: xs,
                        states: &mut states,
                        top,
                    })
                });
            }
        });
    }
    buf.top.iter().fold(0.0, |sum, v| sum + v)
}

/// One thread's share of the emissions: its slice of each state's block,
/// of `top`, and its rows.
type RowRange<'a> = (Vec<&'a mut [f64]>, &'a mut [f64], &'a [f64]);

/// Rows per thread below which the emissions stay on one thread.
const PARALLEL_ROWS: usize = 50_000;

/// [`emission_rows`] on a helper thread, at the widest vectors.
struct EmissionRows<'a, 'b, const K: usize, const D: usize, const FULL: bool> {
    p: &'a Params<K, D>,
    x: &'a [f64],
    states: &'a mut [&'b mut [f64]],
    top: &'a mut [f64],
}

impl<const K: usize, const D: usize, const FULL: bool> pulp::WithSimd
    for EmissionRows<'_, '_, K, D, FULL>
{
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        emission_rows::<K, D, FULL>(self.p, self.x, self.states, self.top);
    }
}

/// The shifted densities of the rows `x` into `states[s]` and each row's
/// largest log density into `top`.
#[inline(always)]
fn emission_rows<const K: usize, const D: usize, const FULL: bool>(
    p: &Params<K, D>,
    x: &[f64],
    states: &mut [&mut [f64]],
    top: &mut [f64],
) {
    for (s, out) in states.iter_mut().enumerate() {
        for (o, row) in out.iter_mut().zip(rows::<D>(x)) {
            *o = p.log_density::<FULL>(s, row);
        }
    }
    if let Some((first, rest)) = states.split_first() {
        top.copy_from_slice(first);
        for other in rest {
            for (top, v) in top.iter_mut().zip(other.iter()) {
                if *v > *top {
                    *top = *v;
                }
            }
        }
    }
    for out in states.iter_mut() {
        for (o, top) in out.iter_mut().zip(top.iter()) {
            *o = exp_nonpositive(*o - top);
        }
    }
}

/// Row t's densities from the state-major array.
#[inline(always)]
fn row_of<const K: usize>(b: &[f64], n: usize, t: usize) -> [f64; K] {
    std::array::from_fn(|s| b[s * n + t])
}

#[inline(always)]
fn forward<const K: usize, const D: usize, const FULL: bool>(
    p: &Params<K, D>,
    x: &[f64],
    buf: &mut Buffers,
) -> Result<f64, HmmError> {
    let n = x.len() / D;
    let shift = emissions::<K, D, FULL>(p, x, buf);
    buf.alpha.resize(n * K, 0.0);
    buf.c.resize(n, 0.0);
    let mut prev = p.start;
    let mut scale = Scale {
        shift,
        ..Scale::default()
    };
    for (t, (alpha, c)) in buf
        .alpha
        .chunks_exact_mut(K)
        .zip(buf.c.iter_mut())
        .enumerate()
    {
        let b = row_of::<K>(&buf.b, n, t);
        forward_step(t, &mut prev, &b, &p.trans, c, &mut scale)?;
        alpha.copy_from_slice(&prev);
    }
    Ok(scale.loglik(&prev))
}

#[inline(always)]
fn backward<const K: usize, const D: usize, const FULL: bool>(
    p: &Params<K, D>,
    x: &[f64],
    buf: &Buffers,
    stats: &mut Stats,
) {
    let n = x.len() / D;
    let mut xi = [[0.0; K]; K];
    let mut weight = [0.0; K];
    let mut sx = [[0.0; D]; K];
    let mut diag = [[0.0; D]; K];
    let mut full = [[[0.0; D]; D]; K];
    let mut beta = last_beta::<K>(buf);
    let mut first = [0.0; K];
    for (t, row) in rows::<D>(x).enumerate().rev() {
        let alpha = &buf.alpha[t * K..(t + 1) * K];
        for s in 0..K {
            let g = alpha[s] * beta[s];
            weight[s] += g;
            for j in 0..D {
                sx[s][j] += g * row[j];
            }
            if FULL {
                for i in 0..D {
                    let gi = g * row[i];
                    for j in 0..=i {
                        full[s][i][j] += gi * row[j];
                    }
                }
            } else {
                for j in 0..D {
                    diag[s][j] += g * row[j] * row[j];
                }
            }
            first[s] = g;
        }
        if t == 0 {
            break;
        }
        backward_step(
            &mut beta,
            &row_of::<K>(&buf.b, n, t),
            buf.c[t],
            &buf.alpha[(t - 1) * K..t * K],
            &p.trans,
            &mut xi,
        );
    }
    stats.first.copy_from_slice(&first);
    stats.weight.copy_from_slice(&weight);
    for s in 0..K {
        stats.xi[s * K..(s + 1) * K].copy_from_slice(&xi[s]);
        stats.sx[s * D..(s + 1) * D].copy_from_slice(&sx[s]);
        if FULL {
            for i in 0..D {
                for j in 0..D {
                    let (a, b) = if j <= i { (i, j) } else { (j, i) };
                    stats.sxx[s * D * D + i * D + j] = full[s][a][b];
                }
            }
        } else {
            stats.sxx[s * D..(s + 1) * D].copy_from_slice(&diag[s]);
        }
    }
}
