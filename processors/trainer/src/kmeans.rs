//! Seeded k-means (k-means++ seeding, then Lloyd iterations) over
//! row-major observations, for the HMM's initial means.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The best (lowest within-cluster sum of squares) of `n_init` seeded
/// k-means runs, as scikit-learn does.
pub fn best_of(
    x: &[f64],
    d: usize,
    k: usize,
    seed: u64,
    iterations: usize,
    n_init: usize,
) -> (Vec<f64>, Vec<usize>) {
    let mut best: Option<(f64, Vec<f64>, Vec<usize>)> = None;
    for r in 0..n_init.max(1) {
        let run_seed = seed.wrapping_mul(1_000).wrapping_add(r as u64);
        let (c, labels) = kmeans(x, d, k, run_seed, iterations);
        let inertia: f64 = labels
            .iter()
            .enumerate()
            .map(|(i, &l)| dist2(&x[i * d..(i + 1) * d], &c[l * d..(l + 1) * d]))
            .sum();
        if best.as_ref().is_none_or(|(b, _, _)| inertia < *b) {
            best = Some((inertia, c, labels));
        }
    }
    best.map(|(_, c, l)| (c, l)).unwrap_or_default()
}

/// `k` centroids of the `n × d` observations `x`, and each row's cluster.
pub fn kmeans(
    x: &[f64],
    d: usize,
    k: usize,
    seed: u64,
    iterations: usize,
) -> (Vec<f64>, Vec<usize>) {
    let n = x.len() / d;
    let row = |i: usize| &x[i * d..(i + 1) * d];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centroids: Vec<f64> = Vec::with_capacity(k * d);
    centroids.extend_from_slice(row(rng.random_range(0..n)));
    let mut nearest = vec![f64::INFINITY; n];
    while centroids.len() < k * d {
        let last = &centroids[centroids.len() - d..];
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
        centroids.extend_from_slice(row(pick));
    }
    let mut labels = vec![0usize; n];
    for _ in 0..iterations {
        let mut changed = false;
        for (i, label) in labels.iter_mut().enumerate() {
            let r = row(i);
            let best = (0..k)
                .min_by(|a, b| {
                    dist2(r, &centroids[a * d..(a + 1) * d])
                        .total_cmp(&dist2(r, &centroids[b * d..(b + 1) * d]))
                })
                .unwrap_or(0);
            changed |= best != *label;
            *label = best;
        }
        let mut sums = vec![0.0; k * d];
        let mut counts = vec![0usize; k];
        for (i, &c) in labels.iter().enumerate() {
            counts[c] += 1;
            for j in 0..d {
                sums[c * d + j] += row(i)[j];
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for j in 0..d {
                    centroids[c * d + j] = sums[c * d + j] / counts[c] as f64;
                }
            }
        }
        if !changed {
            break;
        }
    }
    (centroids, labels)
}
