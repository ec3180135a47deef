//! Detectors on streams with a known 1σ mean shift (20 seeds, 5,000 values
//! before, 2,000 after): every shift is found within a bounded delay, and
//! false alarms before it stay rare. Figures are printed.

use autotrain_drift::stream::{run, shifted, Outcome};
use autotrain_drift::{Adwin, Detector, LikelihoodDecay, PageHinkley, Psi};

const BEFORE: usize = 5_000;
const AFTER: usize = 2_000;

fn evaluate(
    name: &str,
    make: &dyn Fn() -> Box<dyn Detector>,
    transform: fn(f64) -> f64,
) -> (f64, usize, usize) {
    let mut delays = Vec::new();
    let (mut false_alarms, mut missed) = (0, 0);
    for seed in 0..20 {
        let values: Vec<f64> = shifted(seed, BEFORE, AFTER, 1.0)
            .into_iter()
            .map(transform)
            .collect();
        let Outcome {
            false_alarms: f,
            delay,
        } = run(make().as_mut(), &values, BEFORE);
        false_alarms += f;
        match delay {
            Some(d) => delays.push(d),
            None => missed += 1,
        }
    }
    let mean_delay = delays.iter().sum::<usize>() as f64 / delays.len().max(1) as f64;
    let max_delay = delays.iter().copied().max().unwrap_or(0);
    eprintln!("{name}: mean delay {mean_delay:.0}, max {max_delay}, false alarms {false_alarms} in {} values, missed {missed}/20", 20 * BEFORE);
    assert_eq!(missed, 0, "{name} missed a shift");
    (mean_delay, max_delay, false_alarms)
}

/// Per-value log-likelihood under the N(0, 1) "model".
fn loglik(x: f64) -> f64 {
    -0.5 * (std::f64::consts::TAU).ln() - 0.5 * x * x
}

#[test]
fn page_hinkley_finds_a_one_sigma_shift() {
    let (mean, max, fa) = evaluate(
        "page_hinkley",
        &|| Box::new(PageHinkley::new(0.1, 50.0, 30)),
        |x| x,
    );
    assert!(mean < 100.0 && max < 200, "delay {mean}/{max}");
    assert!(fa <= 2, "{fa} false alarms");
}

#[test]
fn adwin_finds_a_one_sigma_shift() {
    let (mean, max, fa) = evaluate("adwin", &|| Box::new(Adwin::new(0.002)), |x| x);
    assert!(mean < 150.0 && max < 300, "delay {mean}/{max}");
    assert!(fa <= 2, "{fa} false alarms");
}

#[test]
fn psi_finds_a_one_sigma_shift() {
    let (mean, max, fa) = evaluate("psi", &|| Box::new(Psi::new(500, 0.25, None)), |x| x);
    assert!(mean < 400.0 && max < 500, "delay {mean}/{max}");
    assert_eq!(fa, 0, "{fa} false alarms");
}

#[test]
fn likelihood_decay_finds_a_worse_fit() {
    // Baseline of N(0,1) log-likelihoods: mean −½ln2π − ½, std 1/√2.
    let mean = -0.5 * std::f64::consts::TAU.ln() - 0.5;
    let (d, max, fa) = evaluate(
        "loglik_decay",
        &move || Box::new(LikelihoodDecay::new(mean, 0.5f64.sqrt(), 100, 5.0)),
        loglik,
    );
    assert!(d < 150.0 && max < 300, "delay {d}/{max}");
    assert!(fa <= 2, "{fa} false alarms");
}

#[test]
fn adwin_window_tracks_the_stream() {
    let mut a = Adwin::new(0.002);
    for x in shifted(3, 3_000, 0, 0.0) {
        a.update(x);
    }
    assert!(
        a.width() > 2_500,
        "a stable stream keeps its window: {}",
        a.width()
    );
    assert!(a.mean().abs() < 0.1);
    for x in shifted(4, 0, 1_000, 3.0) {
        a.update(x);
    }
    assert!(
        a.width() < 1_100,
        "the old regime was dropped: {}",
        a.width()
    );
    assert!((a.mean() - 3.0).abs() < 0.2, "{}", a.mean());
}
