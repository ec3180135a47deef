//! `[trainer.forecast_guardrails]`: when a forecast challenger may become
//! `prod`, and when a rollback to an older forecast goes through unforced.
//! The metric is read on the reference set, challenger and champion alike
//! (`champion_*` re-scored there); MAE, RMSE, MAPE and RMSLE are better
//! lower, R² higher.

use autotrain_schemas::Metric;
use serde::{Deserialize, Serialize};

use super::metrics::Scores;
use crate::registry::promotion::Decision;

pub const METRICS: [&str; 5] = ["rmsle", "rmse", "mae", "mape", "r2"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastGuardrails {
    /// Compared challenger against champion (seed systems: RMSLE).
    pub metric: String,
    /// The challenger's metric must be at least this good (for R² a
    /// floor, for the error metrics a ceiling); unset: no bound.
    pub bound: Option<f64>,
    /// The challenger must beat the champion by this much of the metric.
    pub min_improvement: f64,
    /// A rollback's re-score may be this much worse than prod's own.
    pub rollback_tolerance: f64,
}

impl Default for ForecastGuardrails {
    fn default() -> Self {
        ForecastGuardrails {
            metric: "rmsle".into(),
            bound: None,
            min_improvement: 0.0,
            rollback_tolerance: 0.0,
        }
    }
}

fn get(metrics: &[Metric], name: &str) -> f64 {
    metrics
        .iter()
        .find(|m| m.name == name)
        .map_or(f64::NAN, |m| m.value)
}

impl ForecastGuardrails {
    pub fn check(&self) -> Result<(), String> {
        if METRICS.contains(&self.metric.as_str()) {
            Ok(())
        } else {
            Err(format!(
                "[trainer.forecast_guardrails] metric {:?} is not one of {METRICS:?}",
                self.metric
            ))
        }
    }

    /// `a` better than `b` by at least `margin` (false with a NaN).
    fn better(&self, a: f64, b: f64, margin: f64) -> bool {
        if Scores::higher_is_better(&self.metric) {
            a >= b + margin
        } else {
            a <= b - margin
        }
    }

    /// The promotion rules over a run's metrics (`champion_*` when there is
    /// a champion) and its critical flags.
    pub fn decide(&self, metrics: &[Metric], critical_flags: usize) -> Decision {
        let mut why = Vec::new();
        let challenger = get(metrics, &self.metric);
        if challenger.is_nan() {
            why.push(format!("no {} on the reference set", self.metric));
        }
        if let Some(bound) = self.bound {
            if !self.better(challenger, bound, 0.0) {
                why.push(format!(
                    "{} {challenger} beyond the bound {bound}",
                    self.metric
                ));
            }
        }
        if critical_flags > 0 {
            why.push(format!(
                "{critical_flags} unresolved critical flag(s) in the training window"
            ));
        }
        let champion = get(metrics, &format!("champion_{}", self.metric));
        let has_champion = metrics.iter().any(|m| m.name.starts_with("champion_"));
        if has_champion && !self.better(challenger, champion, self.min_improvement) {
            why.push(format!(
                "{} {challenger} does not beat the champion's {champion} by {}",
                self.metric, self.min_improvement
            ));
        }
        if why.is_empty() {
            Decision::Promote
        } else {
            Decision::Stay(why)
        }
    }

    /// Whether a rollback to the version re-scored as `rescored` (its
    /// `rescored_*` metrics on prod's reference set) may go through.
    pub fn rollback_check(
        &self,
        prod: &[Metric],
        rescored: &[Metric],
    ) -> Result<(f64, f64), String> {
        let current = get(prod, &self.metric);
        let older = get(rescored, &format!("rescored_{}", self.metric));
        if self.better(older, current, -self.rollback_tolerance) {
            Ok((older, current))
        } else {
            Err(format!(
                "{} {older} on prod's reference set, worse than prod's {current} by more than the rollback_tolerance {}",
                self.metric, self.rollback_tolerance
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, value: f64) -> Metric {
        Metric {
            name: name.into(),
            value,
        }
    }

    #[test]
    fn lower_error_wins_and_r2_higher() {
        let g = ForecastGuardrails::default();
        assert_eq!(g.decide(&[m("rmsle", 0.1)], 0), Decision::Promote);
        assert_eq!(
            g.decide(&[m("rmsle", 0.1), m("champion_rmsle", 0.09)], 0),
            Decision::Stay(vec![
                "rmsle 0.1 does not beat the champion's 0.09 by 0".into()
            ])
        );
        assert_eq!(
            g.decide(&[m("rmsle", 0.08), m("champion_rmsle", 0.09)], 0),
            Decision::Promote
        );
        assert!(matches!(
            g.decide(&[m("rmsle", 0.08)], 1),
            Decision::Stay(_)
        ));
        assert!(
            matches!(g.decide(&[m("mae", 0.08)], 0), Decision::Stay(_)),
            "no rmsle"
        );
        let r2 = ForecastGuardrails {
            metric: "r2".into(),
            bound: Some(0.05),
            ..ForecastGuardrails::default()
        };
        assert_eq!(r2.decide(&[m("r2", 0.06)], 0), Decision::Promote);
        assert!(matches!(r2.decide(&[m("r2", 0.04)], 0), Decision::Stay(_)));
        assert!(g
            .rollback_check(&[m("rmsle", 0.1)], &[m("rescored_rmsle", 0.1)])
            .is_ok());
        assert!(g
            .rollback_check(&[m("rmsle", 0.1)], &[m("rescored_rmsle", 0.2)])
            .is_err());
        assert!(ForecastGuardrails {
            metric: "auc".into(),
            ..g
        }
        .check()
        .is_err());
    }
}
