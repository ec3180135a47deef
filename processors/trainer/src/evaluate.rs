//! Evaluation of a model on a reference set: log-likelihood per bar and a
//! regime-conditioned backtest of the strategy presets.
//!
//! The backtest is causal: after bar `t` the online filter's most likely
//! regime sets the position held over bar `t+1`, whose log return (`lr`)
//! it earns, minus `cost_bps` per unit of position change. Regimes are in
//! canonical order (ascending mean of the first column), so the presets
//! read them the same way for every version:
//! - `trend`: long in the top regime, short in the bottom one, flat else;
//! - `long_top`: long in the top regime only;
//! - `avoid_turbulence`: long except in the regime whose first column has
//!   the largest variance.

use autotrain_schemas::Metric;

use crate::artifact::TrainedModel;
use crate::dataset::{DatasetError, Table};
use crate::hmm::{Covariance, HmmError, OnlineFilter};

pub const PRESETS: [&str; 3] = ["trend", "long_top", "avoid_turbulence"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EvalError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Hmm(#[from] HmmError),
    #[error("the reference set has no complete row for columns {0}")]
    Empty(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Backtest {
    pub preset: String,
    /// Sum of per-bar log returns after costs.
    pub pnl: f64,
    pub sharpe: f64,
    pub sortino: f64,
    /// Worst peak-to-trough fall of equity, a fraction (0.25 = 25 %).
    pub max_drawdown: f64,
    /// Mean absolute position change per bar.
    pub turnover: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub bars: usize,
    pub loglik_per_bar: f64,
    /// Mean and std of the one-step predictive log-likelihood per bar.
    pub predictive: crate::artifact::Baseline,
    pub backtests: Vec<Backtest>,
}

impl Evaluation {
    pub fn backtest(&self, preset: &str) -> Option<&Backtest> {
        self.backtests.iter().find(|b| b.preset == preset)
    }

    /// Flat metrics, names prefixed (e.g. `champion_`).
    pub fn metrics(&self, prefix: &str) -> Vec<Metric> {
        let m = |name: String, value: f64| Metric { name, value };
        let mut out = vec![
            m(format!("{prefix}loglik_per_bar"), self.loglik_per_bar),
            m(format!("{prefix}reference_bars"), self.bars as f64),
        ];
        for b in &self.backtests {
            let p = format!("{prefix}{}_", b.preset);
            out.push(m(format!("{p}pnl"), b.pnl));
            out.push(m(format!("{p}sharpe"), b.sharpe));
            out.push(m(format!("{p}sortino"), b.sortino));
            out.push(m(format!("{p}max_drawdown"), b.max_drawdown));
            out.push(m(format!("{p}turnover"), b.turnover));
        }
        out
    }
}

fn position(preset: &str, regime: usize, k: usize, turbulent: usize) -> f64 {
    match preset {
        "trend" if k > 1 && regime == k - 1 => 1.0,
        "trend" if k > 1 && regime == 0 => -1.0,
        "long_top" if regime == k - 1 => 1.0,
        "avoid_turbulence" if regime != turbulent => 1.0,
        _ => 0.0,
    }
}

fn turbulent_state(model: &TrainedModel) -> usize {
    let h = &model.hmm;
    let var = |s: usize| match h.covariance {
        Covariance::Diag => h.covars[s * h.d],
        Covariance::Full => h.covars[s * h.d * h.d],
    };
    (0..h.k).fold(0, |best, s| if var(s) > var(best) { s } else { best })
}

/// Scores `model` on `reference`.
pub fn evaluate(
    model: &TrainedModel,
    reference: &Table,
    cost_bps: f64,
) -> Result<Evaluation, EvalError> {
    let seqs = reference.sequences(&model.columns)?;
    let d = model.columns.len();
    let k = model.hmm.k;
    let turbulent = turbulent_state(model);
    let cost = cost_bps / 10_000.0;
    let mut bars = 0;
    let mut loglik = 0.0;
    let mut pnl: Vec<Vec<Vec<f64>>> = vec![Vec::new(); PRESETS.len()];
    let mut turnover = vec![0.0; PRESETS.len()];
    let mut steps: Vec<i64> = Vec::new();
    let mut predictive: Vec<f64> = Vec::new();
    let jacobian = model.log_jacobian();
    for s in &seqs {
        let n = s.ts.len();
        bars += n;
        loglik += model.score(&s.x)?;
        steps.extend(s.ts.windows(2).map(|w| w[1] - w[0]));
        let z = model.standardise(&s.x);
        let mut filter = OnlineFilter::new();
        let mut regimes = Vec::with_capacity(n);
        for t in 0..n {
            let (p, ll) = filter.step(&model.hmm, &z[t * d..(t + 1) * d])?;
            predictive.push(ll + jacobian);
            regimes.push(
                p.iter()
                    .enumerate()
                    .fold(0, |b, (i, v)| if *v > p[b] { i } else { b }),
            );
        }
        for (pi, preset) in PRESETS.iter().enumerate() {
            let mut series = Vec::with_capacity(n);
            let mut held = 0.0;
            for t in 0..n.saturating_sub(1) {
                let want = position(preset, regimes[t], k, turbulent);
                let change = (want - held).abs();
                turnover[pi] += change;
                held = want;
                let r = if s.ret[t + 1].is_finite() {
                    s.ret[t + 1]
                } else {
                    0.0
                };
                series.push(held * r - change * cost);
            }
            pnl[pi].push(series);
        }
    }
    if bars == 0 {
        return Err(EvalError::Empty(model.columns.join(",")));
    }
    steps.sort_unstable();
    let step = steps.get(steps.len() / 2).copied().unwrap_or(0);
    let per_year = if step > 0 {
        365.25 * 86_400_000.0 / step as f64
    } else {
        1.0
    };
    let backtests = PRESETS
        .iter()
        .enumerate()
        .map(|(pi, preset)| {
            let all: Vec<f64> = pnl[pi].iter().flatten().copied().collect();
            let n = all.len().max(1) as f64;
            let mean = all.iter().sum::<f64>() / n;
            let sd = (all.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
            let down = (all.iter().map(|v| v.min(0.0).powi(2)).sum::<f64>() / n).sqrt();
            let ratio = |den: f64| {
                if den > 0.0 {
                    mean / den * per_year.sqrt()
                } else {
                    0.0
                }
            };
            let max_drawdown = pnl[pi]
                .iter()
                .map(|series| {
                    let (mut cum, mut peak, mut worst) = (0.0f64, 0.0f64, 0.0f64);
                    for r in series {
                        cum += r;
                        peak = peak.max(cum);
                        worst = worst.max(1.0 - (cum - peak).exp());
                    }
                    worst
                })
                .fold(0.0, f64::max);
            Backtest {
                preset: preset.to_string(),
                pnl: all.iter().sum(),
                sharpe: ratio(sd),
                sortino: ratio(down),
                max_drawdown,
                turnover: turnover[pi] / n,
            }
        })
        .collect();
    let pn = predictive.len().max(1) as f64;
    let pm = predictive.iter().sum::<f64>() / pn;
    let ps = (predictive.iter().map(|v| (v - pm) * (v - pm)).sum::<f64>() / pn).sqrt();
    Ok(Evaluation {
        bars,
        loglik_per_bar: loglik / bars as f64,
        predictive: crate::artifact::Baseline { mean: pm, std: ps },
        backtests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Row;
    use crate::hmm::GaussianHmm;

    /// Two regimes on `lr` alone: calm up (+1 %/bar) and falling (−1 %).
    fn model() -> TrainedModel {
        TrainedModel {
            columns: vec!["lr".into()],
            hmm: GaussianHmm {
                k: 2,
                d: 1,
                covariance: Covariance::Diag,
                start: vec![0.5, 0.5],
                trans: vec![0.9, 0.1, 0.1, 0.9],
                means: vec![-0.01, 0.01],
                covars: vec![1e-6, 1e-6],
            },
            scaling: Vec::new(),
            reference: Default::default(),
            loglik_baseline: None,
        }
    }

    fn table(returns: &[f64]) -> Table {
        Table {
            names: vec!["lr".into()],
            rows: returns
                .iter()
                .enumerate()
                .map(|(t, r)| Row {
                    instrument: "x".into(),
                    ts: t as i64 * 1_800_000,
                    values: vec![Some(*r)],
                })
                .collect(),
        }
    }

    #[test]
    fn a_persistent_regime_is_traded_causally_with_costs() {
        // 10 bars up then 10 down: trend goes long, then short one bar late.
        let r: Vec<f64> = (0..20).map(|t| if t < 10 { 0.01 } else { -0.01 }).collect();
        let e = evaluate(&model(), &table(&r), 10.0).expect("evaluates");
        assert_eq!(e.bars, 20);
        let trend = e.backtest("trend").expect("trend");
        // Long for bars 1..=10 (+9 %, −1 % at the turn), short 11..=19 (+9 %);
        // three position changes (0→1, 1→−1) cost 3 × 10 bp.
        let expected = 0.09 - 0.01 + 0.09 - 3.0 * 0.001;
        assert!((trend.pnl - expected).abs() < 1e-12, "{}", trend.pnl);
        assert!(trend.max_drawdown > 0.0 && trend.max_drawdown < 0.02);
        let long = e.backtest("long_top").expect("long");
        assert!(
            (long.pnl - (0.09 - 0.01 - 2.0 * 0.001)).abs() < 1e-12,
            "{}",
            long.pnl
        );
        assert!(trend.sharpe > long.sharpe);
        let names: Vec<String> = e.metrics("champion_").into_iter().map(|m| m.name).collect();
        assert!(names.contains(&"champion_trend_max_drawdown".to_string()));
    }

    #[test]
    fn scaling_keeps_likelihoods_comparable() {
        let r: Vec<f64> = (0..50)
            .map(|t| ((t * 7 % 11) as f64 - 5.0) * 1e-3)
            .collect();
        let raw = model();
        let scaling = TrainedModel::scaling_of(&r, 1);
        let mut scaled = raw.clone();
        scaled.scaling = scaling.clone();
        // The same density expressed on standardised values.
        let s = scaling[0];
        scaled.hmm.means = raw.hmm.means.iter().map(|m| (m - s.mean) / s.std).collect();
        scaled.hmm.covars = raw.hmm.covars.iter().map(|v| v / (s.std * s.std)).collect();
        let a = raw.score(&r).expect("raw");
        let b = scaled.score(&r).expect("scaled");
        assert!((a - b).abs() < 1e-6 * a.abs(), "{a} vs {b}");
    }
}
