//! The bandits learn on a seeded simulated environment: three presets whose
//! expected reward depends on the regime; regret per block of decisions
//! falls as the posterior concentrates.

use autotrain_params::policy::{argmax, Policy, PolicySpec, Scratch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Expected reward of each arm given regime probabilities (calm, trend).
fn expected(arm: usize, calm: f64) -> f64 {
    match arm {
        0 => 0.5 * calm - 0.2,         // mean reversion: calm markets
        1 => 0.6 * (1.0 - calm) - 0.1, // trend: trending markets
        _ => 0.05,                     // safe: small, steady
    }
}

fn regret_per_block(spec: &PolicySpec, seed: u64) -> Vec<f64> {
    run(spec, seed).0
}

/// Regret per 1,000 decisions, and how often each arm was chosen in the
/// last 1,000.
fn run(spec: &PolicySpec, seed: u64) -> (Vec<f64>, [usize; 3]) {
    let mut policy = Policy::new(spec, 3, 3);
    let mut env = ChaCha8Rng::seed_from_u64(seed);
    let mut scratch = Scratch::default();
    let mut blocks = Vec::new();
    let mut regret = 0.0;
    let mut late = [0usize; 3];
    for t in 0..6_000 {
        let calm: f64 = env.random();
        let x = [1.0, calm, 1.0 - calm];
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (t as u64) << 1);
        let arm = argmax(&policy.scores(&x, &mut rng, &mut scratch));
        let best = (0..3).map(|a| expected(a, calm)).fold(f64::MIN, f64::max);
        regret += best - expected(arm, calm);
        if t >= 5_000 {
            late[arm] += 1;
        }
        let noise: f64 = env.sample(StandardNormal);
        policy.update(arm, &x, expected(arm, calm) + 0.3 * noise);
        if (t + 1) % 1_000 == 0 {
            blocks.push(regret / 1_000.0);
            regret = 0.0;
        }
    }
    (blocks, late)
}

#[test]
fn linear_thompson_sampling_regret_falls() {
    let blocks = regret_per_block(
        &PolicySpec::LinTs {
            v: 0.3,
            lambda: 1.0,
        },
        7,
    );
    assert!(blocks[5] < blocks[0] * 0.5, "{blocks:?}");
    assert!(blocks[5] < 0.03, "{blocks:?}");
}

#[test]
fn context_free_policies_learn_the_best_arm_on_average() {
    // Without context the best single arm is the trend arm (mean 0.2).
    for spec in [
        PolicySpec::ThompsonGaussian { sigma: 0.3 },
        PolicySpec::EpsilonGreedy { epsilon: 0.05 },
        PolicySpec::ThompsonBeta,
    ] {
        let (_, late) = run(&spec, 11);
        assert!(late[1] >= 800, "{spec:?} chose {late:?} in the last 1,000");
    }
}

#[test]
fn same_seed_same_decisions() {
    let spec = PolicySpec::default();
    assert_eq!(regret_per_block(&spec, 3), regret_per_block(&spec, 3));
}
