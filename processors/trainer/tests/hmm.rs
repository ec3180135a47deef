//! The Gaussian HMM on data simulated from a known 3-state model:
//! parameters are recovered, Viterbi finds the states, EM never lowers the
//! likelihood, and the same input and seed give the same parameters bit for
//! bit.

use autotrain_trainer::simulate::{sample, Truth};
use autotrain_trainer::{Covariance, FitOptions, GaussianHmm, HmmError};

fn options(covariance: Covariance, seed: u64) -> FitOptions {
    FitOptions {
        states: 3,
        covariance,
        max_iter: 200,
        tol: 1e-4,
        seed,
        restarts: 3,
        min_covar: 1e-6,
    }
}

fn recovered(covariance: Covariance) {
    let truth = Truth::three_regimes();
    let (x, states) = sample(&truth, 20_000, 7);
    let (m, report) = GaussianHmm::fit(&x, 2, &options(covariance, 1)).expect("fits");
    assert!(report.converged, "{report:?}");
    let width = if covariance == Covariance::Full { 4 } else { 2 };
    for s in 0..3 {
        for j in 0..2 {
            let mean = m.means[s * 2 + j];
            assert!(
                (mean - truth.means[s][j]).abs() < 0.03,
                "state {s} mean {j}: {mean} vs {}",
                truth.means[s][j]
            );
            let var = if covariance == Covariance::Full {
                m.covars[s * width + j * 2 + j]
            } else {
                m.covars[s * width + j]
            };
            let sd = var.sqrt();
            assert!(
                (sd - truth.stds[s][j]).abs() < 0.03,
                "state {s} std {j}: {sd} vs {}",
                truth.stds[s][j]
            );
        }
        let stay = m.trans[s * 3 + s];
        assert!(
            (stay - truth.trans[s][s]).abs() < 0.02,
            "state {s} stays {stay} vs {}",
            truth.trans[s][s]
        );
    }
    if covariance == Covariance::Full {
        for s in 0..3 {
            assert!(
                m.covars[s * 4 + 1].abs() < 0.01,
                "independent columns: {}",
                m.covars[s * 4 + 1]
            );
        }
    }
    let (_, path) = m.viterbi(&x).expect("viterbi");
    let agree = path.iter().zip(&states).filter(|(a, b)| a == b).count();
    assert!(
        agree as f64 / states.len() as f64 > 0.97,
        "{agree} of {} states",
        states.len()
    );
}

#[test]
fn diagonal_model_recovers_known_parameters() {
    recovered(Covariance::Diag);
}

#[test]
fn full_covariance_model_recovers_known_parameters() {
    recovered(Covariance::Full);
}

#[test]
fn em_never_lowers_the_likelihood() {
    let (x, _) = sample(&Truth::three_regimes(), 5_000, 11);
    for covariance in [Covariance::Diag, Covariance::Full] {
        for seed in 0..4 {
            for states in [2, 3, 4] {
                let o = FitOptions {
                    states,
                    restarts: 1,
                    tol: 0.0,
                    max_iter: 40,
                    ..options(covariance, seed)
                };
                let (_, report) = GaussianHmm::fit(&x, 2, &o).expect("fits");
                for w in report.history.windows(2) {
                    assert!(
                        w[1] >= w[0] - 1e-9 * w[0].abs(),
                        "{covariance:?} seed {seed} k {states}: {} then {}",
                        w[0],
                        w[1]
                    );
                }
            }
        }
    }
}

#[test]
fn same_input_and_seed_give_identical_parameters() {
    let (x, _) = sample(&Truth::three_regimes(), 5_000, 3);
    for covariance in [Covariance::Diag, Covariance::Full] {
        let (a, ra) = GaussianHmm::fit(&x, 2, &options(covariance, 42)).expect("fits");
        let (b, rb) = GaussianHmm::fit(&x, 2, &options(covariance, 42)).expect("fits");
        assert_eq!(a.param_hash(), b.param_hash());
        assert_eq!(a, b);
        assert_eq!(ra.loglik.to_bits(), rb.loglik.to_bits());
        // States come out in canonical order (ascending first-column mean).
        assert!(a.means[0] < a.means[2] && a.means[2] < a.means[4]);
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut x = vec![0.5; 40];
    x[7] = f64::NAN;
    assert_eq!(
        GaussianHmm::fit(&x, 2, &options(Covariance::Diag, 0)).unwrap_err(),
        HmmError::NotFinite { row: 3, col: 1 }
    );
    assert!(matches!(
        GaussianHmm::fit(&[1.0, 2.0], 2, &options(Covariance::Diag, 0)),
        Err(HmmError::TooFewObservations { .. })
    ));
}

#[test]
fn the_online_filter_matches_the_batch_forward_pass() {
    use autotrain_trainer::{OnlineFilter, TrainedModel};
    let (x, _) = sample(&Truth::three_regimes(), 2_000, 5);
    let (m, _) = GaussianHmm::fit(&x, 2, &options(Covariance::Diag, 3)).expect("fits");
    let mut filter = OnlineFilter::new();
    let mut total = 0.0;
    let mut last = Vec::new();
    for row in x.chunks(2) {
        let (post, ll) = filter.step(&m, row).expect("step");
        assert!((post.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        total += ll;
        last = post;
    }
    let batch = m.score(&x).expect("score");
    assert!(
        (total - batch).abs() < 1e-6 * batch.abs(),
        "{total} vs {batch}"
    );
    let forward_last = m.posteriors(&x).expect("posteriors");
    // The filter's last posterior is the smoothed one at the last row.
    for (s, p) in last.iter().enumerate() {
        assert!((p - forward_last.gamma[(2_000 - 1) * 3 + s]).abs() < 1e-9);
    }
    // Parameters survive the artifact round trip exactly.
    let artifact = TrainedModel {
        columns: vec!["lr".into(), "rvol_20".into()],
        hmm: m.clone(),
        scaling: Vec::new(),
        reference: Default::default(),
        loglik_baseline: None,
    };
    let back = TrainedModel::from_bytes(&artifact.to_bytes()).expect("decodes");
    assert_eq!(back.hmm.param_hash(), m.param_hash());
}

/// A fit past its deadline gives up with the iterations it did (whatever
/// restart it is in); one that ends in time is the fit without a deadline.
#[test]
fn a_deadline_bounds_the_fit_and_changes_nothing_in_time() {
    use std::time::{Duration, Instant};
    let (x, _) = sample(&Truth::three_regimes(), 5_000, 3);
    let o = options(Covariance::Diag, 5);
    let late =
        autotrain_trainer::hmm::fit_reporting(&x, 2, &o, 1, Some(Instant::now()), &mut |_, _| {});
    assert!(
        matches!(late, Err(HmmError::DeadlinePassed { iterations: 0 })),
        "{late:?}"
    );
    let (free, _) = GaussianHmm::fit(&x, 2, &o).expect("fits");
    let (bounded, _) = autotrain_trainer::hmm::fit_reporting(
        &x,
        2,
        &o,
        2,
        Some(Instant::now() + Duration::from_secs(600)),
        &mut |_, _| {},
    )
    .expect("fits in time");
    assert_eq!(free, bounded);
}

/// Fits `x` with `o` (diagonal and full) on 1, 2 and 4 threads and checks
/// the parameters and reports are the same bits.
fn same_fit_on_1_2_and_4_threads(x: &[f64], o: impl Fn(Covariance) -> FitOptions) {
    for covariance in [Covariance::Diag, Covariance::Full] {
        let o = o(covariance);
        let fits: Vec<_> = [1, 2, 4]
            .into_iter()
            .map(|threads| {
                autotrain_trainer::hmm::fit_reporting(x, 2, &o, threads, None, &mut |_, _| {})
                    .expect("fits")
            })
            .collect();
        for (m, report) in &fits[1..] {
            assert_eq!(m.param_hash(), fits[0].0.param_hash(), "{covariance:?}");
            assert_eq!(report, &fits[0].1);
        }
    }
}

/// One restart over enough rows that the emission densities are split
/// between threads (2 and 3 row ranges): the same fit as on one thread.
#[test]
fn emissions_split_between_threads_fit_bit_identically() {
    let (x, _) = sample(&Truth::three_regimes(), 160_000, 6);
    same_fit_on_1_2_and_4_threads(&x, |covariance| FitOptions {
        restarts: 1,
        max_iter: 4,
        ..options(covariance, 9)
    });
}

#[test]
fn the_fit_is_bit_identical_on_1_2_and_4_threads() {
    let (x, _) = sample(&Truth::three_regimes(), 30_000, 5);
    same_fit_on_1_2_and_4_threads(&x, |covariance| FitOptions {
        restarts: 4,
        ..options(covariance, 9)
    });
}

/// A fit that also starts from a previous model (a champion fitted on
/// earlier rows): it stays at least as good as the seeded starts alone,
/// gives the same bits on 1, 2 and 4 threads, and refuses a model of
/// another shape.
#[test]
fn a_warm_start_is_kept_only_when_it_fits_better_and_is_deterministic() {
    let truth = Truth::three_regimes();
    let (x, _) = sample(&truth, 24_000, 11);
    let (earlier, later) = x.split_at(16_000 * 2);
    for covariance in [Covariance::Diag, Covariance::Full] {
        let o = options(covariance, 5);
        let (champion, _) = GaussianHmm::fit(earlier, 2, &o).expect("champion");
        let fit = |threads: usize, warm: Option<&GaussianHmm>| {
            autotrain_trainer::hmm::fit_warm(later, 2, &o, warm, threads, None, &mut |_, _| {})
                .expect("fits")
        };
        let (cold, cold_report) = fit(1, None);
        let (warmed, report) = fit(1, Some(&champion));
        let w = report.warm.clone().expect("the warm start is reported");
        assert!(cold_report.warm.is_none());
        // The warm start replaced the last seeded restart.
        assert_eq!(report.restarts.len(), o.restarts - 1);
        assert_eq!(report.restarts[..], cold_report.restarts[..o.restarts - 1]);
        let best_seeded = report.restarts.iter().map(|r| r.1).fold(f64::MIN, f64::max);
        assert_eq!(w.chosen, w.loglik > best_seeded, "{report:?}");
        assert_eq!(report.loglik, w.loglik.max(best_seeded));
        if !w.chosen && cold_report.restarts[o.restarts - 1].1 <= best_seeded {
            // Neither the warm start nor the restart it replaced won.
            assert_eq!(warmed.param_hash(), cold.param_hash());
        }
        for threads in [2, 4] {
            let (again, again_report) = fit(threads, Some(&champion));
            assert_eq!(again.param_hash(), warmed.param_hash(), "{threads} threads");
            assert_eq!(again_report, report);
        }
    }
    let (champion, _) = GaussianHmm::fit(earlier, 2, &options(Covariance::Diag, 5)).expect("fits");
    let four = FitOptions {
        states: 4,
        ..options(Covariance::Diag, 5)
    };
    assert!(matches!(
        autotrain_trainer::hmm::fit_warm(later, 2, &four, Some(&champion), 1, None, &mut |_, _| {}),
        Err(HmmError::Options(_))
    ));
}
