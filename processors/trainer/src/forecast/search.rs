//! Hyper-parameter search for the gbdt family: seeded random search over
//! declared ranges. Trial `i` of a run with seed `s` draws its parameters
//! from ChaCha8 seeded with `s` (the same trials on every rerun and every
//! machine); each is fitted with the run's seed and scored on the
//! reference set; the best by the search metric wins (ties: the earlier
//! trial).

use rand::{Rng, SeedableRng};

use crate::spec::TrainSpec;

/// What a trial may take: (name, low, high, log scale, integer).
pub const RANGES: &[(&str, f64, f64, bool, bool)] = &[
    ("learning_rate", 0.01, 0.3, true, false),
    ("max_depth", 2.0, 8.0, false, true),
    ("min_leaf_weight", 1.0, 200.0, true, false),
    ("subsample", 0.5, 1.0, false, false),
    ("l2", 0.01, 10.0, true, false),
];

/// The `n` trial specs of a search from `base` (every other parameter as
/// given, `search_trials` 0: each is a plain fit).
pub fn trials(base: &TrainSpec, seed: u64, n: usize) -> Vec<TrainSpec> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5EA2_C4ED_u64);
    (0..n)
        .map(|_| {
            let mut s = base.clone();
            s.search_trials = 0;
            for (name, lo, hi, log, int) in RANGES {
                let u: f64 = rng.random();
                let v = if *log {
                    (lo.ln() + u * (hi.ln() - lo.ln())).exp()
                } else {
                    lo + u * (hi - lo)
                };
                // Rounded so that the manifest's text gives the same value back.
                let v = if *int {
                    v.round()
                } else {
                    (v * 1e6).round() / 1e6
                };
                match *name {
                    "learning_rate" => s.learning_rate = v,
                    "max_depth" => s.max_depth = v as usize,
                    "min_leaf_weight" => s.min_leaf_weight = v,
                    "subsample" => s.subsample = v,
                    "l2" => s.l2 = v,
                    _ => {}
                }
            }
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_within_the_ranges_and_each_a_plain_valid_fit() {
        let base = TrainSpec {
            family: crate::spec::Family::Gbdt,
            search_trials: 20,
            ..TrainSpec::default()
        };
        let a = trials(&base, 7, 20);
        assert_eq!(a, trials(&base, 7, 20));
        assert_ne!(a, trials(&base, 8, 20));
        for t in &a {
            assert_eq!(t.search_trials, 0);
            assert!((2..=8).contains(&t.max_depth));
            assert!((0.01..=0.3).contains(&t.learning_rate));
            assert!(t.check().is_ok(), "{t:?}");
            let back = TrainSpec::with_params(&TrainSpec::default(), &t.to_params());
            assert_eq!(back.as_ref(), Ok(t), "the manifest gives the trial back");
        }
    }
}
