//! One training run on data already read: split (reusing the split
//! version's reference set, or cutting it), standardise, fit the HMM,
//! evaluate challenger and champion on the same reference set. Pure and
//! deterministic: same table, reference, spec and seed ⇒ the same model,
//! bit for bit (what a rerun checks through the parameter hash).

use crate::artifact::{Distribution, TrainedModel};
use crate::dataset::{DatasetError, Table};
use crate::evaluate::{evaluate, EvalError, Evaluation};
use crate::forecast::dataset as forecast_dataset;
use crate::forecast::{ForecastModel, Scores};
use crate::hmm::{fit_warm, FitReport, HmmError};
use crate::spec::TrainSpec;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrainError {
    /// Not a failure: the run waits until more data arrives.
    #[error("{rows} usable training row(s), {min} needed")]
    NotEnoughData { rows: usize, min: usize },
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("fit: {0}")]
    Fit(#[from] HmmError),
    #[error("evaluation: {0}")]
    Eval(#[from] EvalError),
    #[error("forecast: {0}")]
    Forecast(String),
    #[error("cancelled {0}")]
    Cancelled(String),
}

/// The training rows and the reference set: the split version's stored
/// set (its span left out of training), or one cut now from each
/// instrument's tail. Returns (training rows, reference set, whether it was
/// cut now, rows left out).
fn split(table: &Table, reference: Option<Table>, fraction: f64) -> (Table, Table, bool, usize) {
    match reference {
        Some(r) => {
            let (t, dropped) = table.without(&r);
            (t, r, false, dropped)
        }
        None => {
            let (t, r) = table.carve_reference(fraction);
            (t, r, true, 0)
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Trained {
    pub model: TrainedModel,
    pub fit: FitReport,
    pub evaluation: Evaluation,
    /// The prod model on the same reference set.
    pub champion: Option<Evaluation>,
    pub reference: Table,
    pub reference_hash: String,
    /// True if this run cut the reference set (it must be stored).
    pub new_reference: bool,
    pub train_rows: usize,
    /// Rows left out because they fall in the reference set's span.
    pub excluded_rows: usize,
}

/// What a run may spend: threads for the fit (0: every core; the model is
/// the same whatever the count) and a time after which the fit gives up.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    pub threads: usize,
    pub deadline: Option<std::time::Instant>,
}

/// Trains on `table`. `reference` is the split version's stored reference
/// set, if one was cut already. `progress(stage, fraction)` is told as the
/// run goes; past `budget.deadline` the fit gives up.
/// The versions a new HMM run meets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Previous<'a> {
    /// Scored on the same reference set, for the promotion decision.
    pub champion: Option<&'a TrainedModel>,
    /// Also a start of the fit (used when its shape fits the spec's).
    pub warm: Option<&'a TrainedModel>,
}

pub fn train(
    spec: &TrainSpec,
    seed: u64,
    table: &Table,
    reference: Option<Table>,
    previous: Previous<'_>,
    budget: Budget,
    progress: &mut dyn FnMut(&str, f64),
) -> Result<Trained, TrainError> {
    let Previous { champion, warm } = previous;
    progress("split", 0.0);
    let (train_set, reference, new_reference, excluded) =
        split(table, reference, spec.reference_fraction);
    let reference_hash = reference.content_hash();
    let seqs = train_set.sequences(&spec.columns)?;
    let rows: usize = seqs.iter().map(|s| s.ts.len()).sum();
    if rows < spec.min_rows.max(2 * spec.states) {
        return Err(TrainError::NotEnoughData {
            rows,
            min: spec.min_rows.max(2 * spec.states),
        });
    }
    progress("split", 1.0);
    let d = spec.columns.len();
    // Instruments are concatenated in name order (one boundary
    // transition per instrument, negligible against thousands of bars).
    let raw: Vec<f64> = seqs.iter().flat_map(|s| s.x.iter().copied()).collect();
    let mut model = TrainedModel {
        columns: spec.columns.clone(),
        hmm: crate::GaussianHmm {
            k: 0,
            d,
            covariance: spec.covariance,
            start: Vec::new(),
            trans: Vec::new(),
            means: Vec::new(),
            covars: Vec::new(),
        },
        scaling: TrainedModel::scaling_of(&raw, d),
        reference: train_set
            .names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let values: Vec<f64> = train_set.rows.iter().filter_map(|r| r.values[i]).collect();
                Some((name.clone(), Distribution::of(&values, 10)?))
            })
            .collect(),
        loglik_baseline: None,
    };
    let x = model.standardise(&raw);
    // The warm start, in this fit's coordinates, if its shape fits.
    let warm = warm
        .and_then(|w| w.hmm_in(&spec.columns, &model.scaling))
        .filter(|h| h.k == spec.states && h.covariance == spec.covariance);
    progress("fit", 0.0);
    let (hmm, fit) = fit_warm(
        &x,
        d,
        &spec.fit_options(seed),
        warm.as_ref(),
        budget.threads,
        budget.deadline,
        &mut |done, of| progress("fit", done as f64 / of as f64),
    )?;
    model.hmm = hmm;
    progress("evaluate", 0.0);
    let evaluation = evaluate(&model, &reference, spec.cost_bps)?;
    model.loglik_baseline = Some(evaluation.predictive);
    progress("evaluate", 0.5);
    // A champion that cannot be scored (other columns, broken parameters)
    // is treated as absent; the metric says so.
    let champion = champion.and_then(|c| evaluate(c, &reference, spec.cost_bps).ok());
    progress("evaluate", 1.0);
    Ok(Trained {
        model,
        fit,
        evaluation,
        champion,
        reference,
        reference_hash,
        new_reference,
        train_rows: rows,
        excluded_rows: excluded,
    })
}

/// What a forecast (gbdt) run produced.
#[derive(Debug, Clone)]
pub struct TrainedForecast {
    /// The spec the model was fitted with: the run's, or the best trial's
    /// of a search (what the manifest records, so a rerun refits it).
    pub spec: TrainSpec,
    /// A search's trials in order: each one's spec and reference scores.
    pub trials: Vec<(TrainSpec, Scores)>,
    pub model: ForecastModel,
    /// On the reference set.
    pub scores: Scores,
    /// The prod model on the same reference set.
    pub champion: Option<Scores>,
    pub reference: Table,
    pub reference_hash: String,
    pub new_reference: bool,
    pub train_rows: usize,
    pub excluded_rows: usize,
}

/// The forecast metrics of `scores`, names prefixed (`champion_`,
/// `rescored_`).
pub fn forecast_metrics(scores: &Scores, prefix: &str) -> Vec<autotrain_schemas::Metric> {
    [
        ("mae", scores.mae),
        ("rmse", scores.rmse),
        ("mape", scores.mape),
        ("r2", scores.r2),
        ("rmsle", scores.rmsle),
        ("reference_rows", scores.n as f64),
    ]
    .into_iter()
    .map(|(n, value)| autotrain_schemas::Metric {
        name: format!("{prefix}{n}"),
        value,
    })
    .collect()
}

/// Scores `model` on a reference table (its target computed within it).
pub fn score_forecast(model: &ForecastModel, reference: &Table) -> Result<Scores, TrainError> {
    let data = forecast_dataset::prepare(reference, &model.columns, "lr", model.target, 1.0)
        .map_err(|e| TrainError::Forecast(e.to_string()))?;
    Ok(Scores::of(
        &model.predict(&data.x_reference),
        &data.y_reference,
    ))
}

/// A gbdt run on `table`: the same reference-set rules as [`train`] (the
/// split version's set reused, or cut), the target computed within the
/// training rows (its last `horizon` rows, whose targets would read the
/// reference's bars, have none) and within the reference rows.
#[allow(clippy::too_many_arguments)]
pub fn train_forecast(
    spec: &TrainSpec,
    seed: u64,
    table: &Table,
    reference: Option<Table>,
    champion: Option<&ForecastModel>,
    budget: Budget,
    progress: &mut dyn FnMut(&str, f64),
    stopped: &dyn Fn() -> bool,
) -> Result<TrainedForecast, TrainError> {
    progress("split", 0.0);
    let (train_set, reference, new_reference, excluded) =
        split(table, reference, spec.reference_fraction);
    let reference_hash = reference.content_hash();
    let Some((target, options)) = spec.gbdt(seed, budget.threads) else {
        return Err(TrainError::Forecast(format!("target {:?}", spec.target)));
    };
    let data = forecast_dataset::prepare(&train_set, &spec.columns, "lr", target, 0.0);
    let data = match data {
        Ok(d) => d,
        Err(forecast_dataset::PrepareError::NoTarget(_)) => {
            return Err(TrainError::NotEnoughData {
                rows: 0,
                min: spec.min_rows.max(1),
            })
        }
        Err(e) => return Err(TrainError::Forecast(e.to_string())),
    };
    let rows = data.train_rows();
    if rows < spec.min_rows.max(1) {
        return Err(TrainError::NotEnoughData {
            rows,
            min: spec.min_rows.max(1),
        });
    }
    progress("split", 1.0);
    let mut trials = Vec::new();
    let mut chosen = spec.clone();
    let (model, scores) = if spec.search_trials > 0 {
        let metric = spec.search_metric.as_str();
        let higher = Scores::higher_is_better(metric);
        let mut best: Option<(ForecastModel, Scores, TrainSpec)> = None;
        let candidates = crate::forecast::search::trials(spec, seed, spec.search_trials);
        let n = candidates.len();
        for (i, candidate) in candidates.into_iter().enumerate() {
            if stopped() {
                return Err(TrainError::Cancelled(format!("after {i} of {n} trials")));
            }
            progress("search", i as f64 / n as f64);
            let Some((_, options)) = candidate.gbdt(seed, budget.threads) else {
                return Err(TrainError::Forecast(format!("trial {i}: no target")));
            };
            let model = ForecastModel::fit(
                &data.x_train,
                &data.y_train,
                &candidate.columns,
                target,
                &options,
            )
            .map_err(|e| TrainError::Forecast(format!("trial {i}: {e}")))?;
            let scores = score_forecast(&model, &reference)?;
            let value = scores.get(metric).unwrap_or(f64::NAN);
            let better = best.as_ref().is_none_or(|(_, b, _)| {
                let current = b.get(metric).unwrap_or(f64::NAN);
                if higher {
                    value > current || current.is_nan()
                } else {
                    value < current || current.is_nan()
                }
            });
            trials.push((candidate.clone(), scores));
            if better {
                best = Some((model, scores, candidate));
            }
        }
        progress("search", 1.0);
        let (model, scores, spec) = best.ok_or(TrainError::Forecast("no trial".into()))?;
        chosen = spec;
        (model, scores)
    } else {
        progress("fit", 0.0);
        let model = ForecastModel::fit(
            &data.x_train,
            &data.y_train,
            &spec.columns,
            target,
            &options,
        )
        .map_err(|e| TrainError::Forecast(e.to_string()))?;
        progress("fit", 1.0);
        let scores = score_forecast(&model, &reference)?;
        (model, scores)
    };
    progress("evaluate", 0.0);
    // A champion that cannot be scored (other columns) is treated as absent.
    let champion = champion.and_then(|c| score_forecast(c, &reference).ok());
    progress("evaluate", 1.0);
    Ok(TrainedForecast {
        spec: chosen,
        trials,
        model,
        scores,
        champion,
        reference,
        reference_hash,
        new_reference,
        train_rows: rows,
        excluded_rows: excluded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Row;
    use crate::simulate::{sample, Truth};

    fn table(n: usize, seed: u64) -> Table {
        let (x, _) = sample(&Truth::three_regimes(), n, seed);
        Table {
            names: vec!["lr".into(), "rvol_20".into()],
            rows: x
                .chunks(2)
                .enumerate()
                .map(|(t, r)| Row {
                    instrument: "sim".into(),
                    ts: t as i64 * 60_000,
                    values: vec![Some(r[0]), Some(r[1])],
                })
                .collect(),
        }
    }

    #[test]
    fn same_inputs_same_model_and_the_reference_is_reused_not_recut() {
        let spec = TrainSpec {
            min_rows: 100,
            ..TrainSpec::default()
        };
        let t = table(3_000, 4);
        let mut stages = Vec::new();
        let a = train(
            &spec,
            9,
            &t,
            None,
            Previous::default(),
            Budget::default(),
            &mut |s, p| stages.push((s.to_string(), p)),
        )
        .expect("trains");
        assert!(a.new_reference);
        assert_eq!(a.reference.len(), 600);
        assert_eq!(a.train_rows, 2_400);
        assert!(stages.contains(&("fit".to_string(), 1.0)));
        let b = train(
            &spec,
            9,
            &t,
            None,
            Previous::default(),
            Budget::default(),
            &mut |_, _| {},
        )
        .expect("again");
        assert_eq!(a.model.hmm.param_hash(), b.model.hmm.param_hash());
        assert_eq!(a.reference_hash, b.reference_hash);

        // A later run with more data keeps the first reference set and
        // compares against the champion on it.
        let more = table(4_000, 4);
        let c = train(
            &spec,
            9,
            &more,
            Some(a.reference.clone()),
            Previous {
                champion: Some(&a.model),
                warm: Some(&a.model),
            },
            Budget::default(),
            &mut |_, _| {},
        )
        .expect("challenger");
        assert!(!c.new_reference);
        assert_eq!(c.reference_hash, a.reference_hash);
        assert_eq!(c.excluded_rows, 600);
        assert_eq!(c.train_rows, 3_400);
        let champion = c.champion.expect("champion scored");
        assert_eq!(champion.loglik_per_bar, a.evaluation.loglik_per_bar);
        // The champion was one of the fit's starts, in place of the last
        // seeded one, and the chosen fit is the best of them.
        let warm = c.fit.warm.as_ref().expect("warm start tried");
        assert_eq!(c.fit.restarts.len(), spec.restarts - 1);
        let best_seeded = c.fit.restarts.iter().map(|r| r.1).fold(f64::MIN, f64::max);
        assert_eq!(warm.chosen, warm.loglik > best_seeded);
        assert_eq!(c.fit.loglik, warm.loglik.max(best_seeded));
    }

    /// A target the features explain exactly, and only 20 rounds: a
    /// search must find the high learning rates (the known-best region).
    #[test]
    fn a_search_finds_the_known_best_region_and_records_every_trial() {
        let n = 3_000;
        let vol: Vec<f64> = (0..n)
            .map(|i| 0.001 + 0.01 * ((i * 7919) % 97) as f64 / 97.0)
            .collect();
        let table = Table {
            names: vec!["lr".into(), "vol".into()],
            rows: (0..n)
                .map(|t| Row {
                    instrument: "sim".into(),
                    ts: t as i64,
                    // Bar t's return has size vol[t-1]: |lr[t+1]| = vol[t].
                    values: vec![
                        Some(if t == 0 {
                            0.0
                        } else {
                            vol[t - 1] * if t % 2 == 0 { 1.0 } else { -1.0 }
                        }),
                        Some(vol[t]),
                    ],
                })
                .collect(),
        };
        let spec = TrainSpec {
            family: crate::spec::Family::Gbdt,
            columns: vec!["vol".into()],
            iterations: 20,
            search_trials: 12,
            search_metric: "rmse".into(),
            min_rows: 100,
            ..TrainSpec::default()
        };
        let t = train_forecast(
            &spec,
            3,
            &table,
            None,
            None,
            Budget::default(),
            &mut |_, _| {},
            &|| false,
        )
        .expect("search");
        assert_eq!(t.trials.len(), 12);
        let best = t
            .trials
            .iter()
            .map(|(_, s)| s.rmse)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(t.scores.rmse, best, "the best trial is registered");
        let mut rates: Vec<f64> = t.trials.iter().map(|(s, _)| s.learning_rate).collect();
        rates.sort_by(f64::total_cmp);
        assert!(
            t.spec.learning_rate >= rates[rates.len() / 2],
            "chose {} of {rates:?}",
            t.spec.learning_rate
        );
        // Refitting the winner's spec gives the same model.
        let again = train_forecast(
            &t.spec,
            3,
            &table,
            None,
            None,
            Budget::default(),
            &mut |_, _| {},
            &|| false,
        )
        .expect("refit");
        assert_eq!(again.model.param_hash(), t.model.param_hash());
        // Stopped before the first trial: cancelled.
        assert!(matches!(
            train_forecast(
                &spec,
                3,
                &table,
                None,
                None,
                Budget::default(),
                &mut |_, _| {},
                &|| true
            ),
            Err(TrainError::Cancelled(_))
        ));
    }

    #[test]
    fn too_little_data_waits() {
        let spec = TrainSpec::default();
        assert_eq!(
            train(
                &spec,
                1,
                &table(100, 1),
                None,
                Previous::default(),
                Budget::default(),
                &mut |_, _| {}
            )
            .map(|t| t.train_rows),
            Err(TrainError::NotEnoughData { rows: 80, min: 500 })
        );
    }
}
