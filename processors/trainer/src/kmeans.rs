//! Seeded k-means for the HMM's initial means, as scikit-learn's `KMeans`
//! does it for hmmlearn: `n_init` k-means++ seedings each refined by Lloyd
//! iterations until the centres move less than `tol` × the data's mean
//! variance (at most 300), the lowest within-cluster sum of squares wins.
//! On more than [`SAMPLE`] rows the initialisations run on a seeded random
//! sample and the winner is then refined on every row, so the cost
//! of a start stays bounded while the centres are those of all the data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::par;

/// Rows the `n_init` initialisations see at most.
pub const SAMPLE: usize = 2_048;
const MAX_ITER: usize = 300;
const TOL: f64 = 1e-4;

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The centres (`k × d`) of the best of `n_init` seeded runs over the
/// `n × d` rows `x`, the initialisations spread over `threads` threads
/// (the result does not depend on it).
pub fn best_of(
    x: &[f64],
    d: usize,
    k: usize,
    seed: u64,
    n_init: usize,
    threads: usize,
) -> Vec<f64> {
    let n = x.len() / d;
    let sampled = n > SAMPLE;
    let sample: Vec<f64>;
    let rows = if sampled {
        // Drawn at random (seeded), not strided: a stride can alias with a
        // season of the data (a day of bars) and see one phase of it.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5a3b_1e00_0000);
        sample = (0..SAMPLE)
            .flat_map(|_| {
                let t = rng.random_range(0..n);
                x[t * d..(t + 1) * d].iter().copied()
            })
            .collect();
        &sample[..]
    } else {
        x
    };
    let tol = TOL * mean_variance(rows, d);
    let runs = par::map(
        n_init.max(1),
        threads,
        |r| {
            let run_seed = seed.wrapping_mul(1_000).wrapping_add(r as u64);
            let centres = lloyd(rows, d, plus_plus(rows, d, k, run_seed), tol, 1);
            (inertia(rows, d, &centres), centres)
        },
        &mut |_, _| {},
    );
    let mut best = runs
        .into_iter()
        .reduce(|best, run| if run.0 < best.0 { run } else { best })
        .map(|(_, c)| c)
        .unwrap_or_default();
    if sampled {
        best = lloyd(x, d, best, TOL * mean_variance(x, d), threads);
    }
    best
}

/// `k` centres chosen by k-means++ seeding.
pub fn plus_plus(x: &[f64], d: usize, k: usize, seed: u64) -> Vec<f64> {
    let n = x.len() / d;
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centres: Vec<f64> = Vec::with_capacity(k * d);
    centres.extend_from_slice(row(rng.random_range(0..n)));
    let mut nearest = vec![f64::INFINITY; n];
    while centres.len() < k * d {
        let last = &centres[centres.len() - d..];
        let mut total = 0.0;
        for (i, best) in nearest.iter_mut().enumerate() {
            *best = best.min(dist2(row(i), last));
            total += *best;
        }
        let mut target = rng.random::<f64>() * total;
        let mut pick = n - 1;
        for (i, w) in nearest.iter().enumerate() {
            target -= w;
            if target <= 0.0 {
                pick = i;
                break;
            }
        }
        centres.extend_from_slice(row(pick));
    }
    centres
}

/// The index of the centre nearest `row` (the lowest index on a tie) and
/// its squared distance.
pub(crate) fn nearest_with_distance(row: &[f64], centres: &[f64], d: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (c, centre) in centres.chunks_exact(d).enumerate() {
        let e = dist2(row, centre);
        if e < best.1 {
            best = (c, e);
        }
    }
    best
}

/// The index of the centre nearest `row` (the lowest on a tie).
pub fn nearest(row: &[f64], centres: &[f64], d: usize) -> usize {
    nearest_with_distance(row, centres, d).0
}

/// Rows per block of a pass over every row: blocks are summed on their
/// own and their sums added in block order, so a pass gives the same bits
/// whatever the thread count (and a sample of up to [`SAMPLE`] rows is one
/// block, summed row by row).
pub(crate) const BLOCK: usize = 16_384;

/// `f` over the `n × d` rows `x` cut into [`BLOCK`]-row blocks, on up to
/// `threads` threads, the results in block order.
pub(crate) fn blocks<T: Send>(
    x: &[f64],
    d: usize,
    threads: usize,
    f: impl Fn(&[f64]) -> T + Sync,
) -> Vec<T> {
    let n = x.len() / d.max(1);
    let count = n.div_ceil(BLOCK).max(1);
    par::map(
        count,
        threads,
        |b| f(&x[(b * BLOCK * d).min(x.len())..((b + 1) * BLOCK * d).min(x.len())]),
        &mut |_, _| {},
    )
}

/// Lloyd iterations from `centres` until the centres move less than `tol`
/// (sum of squared shifts; a round in which no row changes cluster moves
/// them by exactly 0) or 300 rounds, each round's assignment spread over
/// `threads` threads (the result does not depend on it). An emptied
/// cluster keeps its centre.
pub fn lloyd(x: &[f64], d: usize, mut centres: Vec<f64>, tol: f64, threads: usize) -> Vec<f64> {
    let k = centres.len() / d;
    for _ in 0..MAX_ITER {
        let parts = blocks(x, d, threads, |rows| {
            let mut sums = vec![0.0; k * d];
            let mut counts = vec![0usize; k];
            for row in rows.chunks_exact(d) {
                let (c, _) = nearest_with_distance(row, &centres, d);
                counts[c] += 1;
                for (s, v) in sums[c * d..(c + 1) * d].iter_mut().zip(row) {
                    *s += v;
                }
            }
            (sums, counts)
        });
        let mut parts = parts.into_iter();
        let (mut sums, mut counts) = parts.next().unwrap_or_default();
        for (s, c) in parts {
            sums.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
            counts.iter_mut().zip(&c).for_each(|(a, b)| *a += b);
        }
        let mut shift = 0.0;
        for c in 0..k {
            if counts[c] > 0 {
                for j in 0..d {
                    let moved = sums[c * d + j] / counts[c] as f64;
                    shift += (moved - centres[c * d + j]).powi(2);
                    centres[c * d + j] = moved;
                }
            }
        }
        if shift <= tol {
            break;
        }
    }
    centres
}

/// Within-cluster sum of squares of `x` around its nearest `centres`.
pub fn inertia(x: &[f64], d: usize, centres: &[f64]) -> f64 {
    x.chunks_exact(d)
        .map(|row| nearest_with_distance(row, centres, d).1)
        .sum()
}

fn mean_variance(x: &[f64], d: usize) -> f64 {
    let n = (x.len() / d).max(1) as f64;
    (0..d)
        .map(|j| {
            let mean = x.iter().skip(j).step_by(d).sum::<f64>() / n;
            x.iter()
                .skip(j)
                .step_by(d)
                .map(|v| (v - mean).powi(2))
                .sum::<f64>()
                / n
        })
        .sum::<f64>()
        / d.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n: usize) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        (0..n)
            .flat_map(|i| {
                let c = (i % 3) as f64 * 10.0;
                [c + rng.random::<f64>(), -c + rng.random::<f64>()]
            })
            .collect()
    }

    #[test]
    fn finds_separated_clusters_and_ignores_the_thread_count() {
        let x = blobs(3_000);
        let one = best_of(&x, 2, 3, 7, 10, 1);
        assert_eq!(one, best_of(&x, 2, 3, 7, 10, 4));
        let mut firsts: Vec<f64> = one.chunks(2).map(|c| c[0]).collect();
        firsts.sort_by(f64::total_cmp);
        for (got, want) in firsts.iter().zip([0.5, 10.5, 20.5]) {
            assert!((got - want).abs() < 0.1, "{firsts:?}");
        }
    }

    #[test]
    fn a_sampled_start_finds_the_clusters_of_every_row() {
        let x = blobs(3 * BLOCK + 5);
        let centres = best_of(&x, 2, 3, 1, 10, 2);
        assert_eq!(centres, best_of(&x, 2, 3, 1, 10, 1));
        assert_eq!(centres, best_of(&x, 2, 3, 1, 10, 3));
        let mut firsts: Vec<f64> = centres.chunks(2).map(|c| c[0]).collect();
        firsts.sort_by(f64::total_cmp);
        for (got, want) in firsts.iter().zip([0.5, 10.5, 20.5]) {
            assert!((got - want).abs() < 0.02, "{firsts:?}");
        }
    }
}
