//! [`TrainSpec`]: everything a training run needs to know besides its data,
//! parsed from a trigger's hyper-parameters over the trainer's defaults.
//! [`TrainSpec::to_params`] writes the complete, canonical list back: that
//! list goes into the manifest, so a rerun parses exactly the same spec.

use autotrain_schemas::{ClaimMode, Param};
use serde::{Deserialize, Serialize};

use crate::hmm::{Covariance, FitOptions};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("unknown hyper-parameter {0:?} (known: {KNOWN})")]
    Unknown(String),
    #[error("hyper-parameter {name}={value:?}: {why}")]
    Invalid {
        name: String,
        value: String,
        why: String,
    },
}

/// The largest values a run may ask for (a fit's work grows with
/// `train_window × states² × max_iter × restarts`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub search_trials: usize,
    pub iterations: usize,
    pub max_depth: usize,
    pub states: usize,
    pub max_iter: usize,
    pub restarts: usize,
    pub train_window: usize,
    pub columns: usize,
    pub name_bytes: usize,
}

pub const BOUNDS: Bounds = Bounds {
    search_trials: 200,
    iterations: 5_000,
    max_depth: 16,
    states: 16,
    max_iter: 10_000,
    restarts: 32,
    train_window: 2_000_000,
    columns: 32,
    name_bytes: 128,
};

const KNOWN: &str = "family, mode, train_window, min_rows, columns, split_version, \
                     reference_fraction, states, covariance, max_iter, tol, restarts, min_covar, \
                     cost_bps, as_of, target, iterations, learning_rate, max_depth, l2, \
                     min_leaf_weight, subsample, nbins, search_trials, search_metric";

/// What a name (a feature column, a split version) may hold: letters,
/// digits and `_ . : -`, 1 to [`Bounds::name_bytes`] bytes.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,128}$";

fn is_name(v: &str) -> bool {
    (1..=BOUNDS.name_bytes).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// The type and range of a hyper-parameter as a request gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Integer {
        min: i64,
        max: i64,
    },
    /// A finite number; `open` excludes both ends.
    Number {
        min: f64,
        max: f64,
        open: bool,
    },
    OneOf(&'static [&'static str]),
    Name,
    /// A forecast target ([`crate::forecast::target::TARGET_PATTERN`]).
    Target,
    /// A list of 1 to `max` names.
    Names {
        max: usize,
    },
}

/// Every hyper-parameter a run takes, with its [`Kind`]: the API checks
/// requests against it and documents it in `/openapi.json`, and
/// [`TrainSpec::check`] enforces the same ranges.
pub const HYPERPARAMS: &[(&str, Kind)] = &[
    ("family", Kind::OneOf(&["hmm", "gbdt"])),
    ("mode", Kind::OneOf(&["strict", "sliding"])),
    (
        "train_window",
        Kind::Integer {
            min: 2,
            max: BOUNDS.train_window as i64,
        },
    ),
    (
        "min_rows",
        Kind::Integer {
            min: 0,
            max: BOUNDS.train_window as i64,
        },
    ),
    (
        "columns",
        Kind::Names {
            max: BOUNDS.columns,
        },
    ),
    ("split_version", Kind::Name),
    (
        "reference_fraction",
        Kind::Number {
            min: 0.0,
            max: 1.0,
            open: true,
        },
    ),
    (
        "states",
        Kind::Integer {
            min: 1,
            max: BOUNDS.states as i64,
        },
    ),
    ("covariance", Kind::OneOf(&["diag", "full"])),
    (
        "max_iter",
        Kind::Integer {
            min: 1,
            max: BOUNDS.max_iter as i64,
        },
    ),
    (
        "tol",
        Kind::Number {
            min: 0.0,
            max: 1e6,
            open: false,
        },
    ),
    (
        "restarts",
        Kind::Integer {
            min: 1,
            max: BOUNDS.restarts as i64,
        },
    ),
    (
        "min_covar",
        Kind::Number {
            min: 0.0,
            max: 1e6,
            open: false,
        },
    ),
    (
        "cost_bps",
        Kind::Number {
            min: 0.0,
            max: 10_000.0,
            open: false,
        },
    ),
    (
        "as_of",
        Kind::Integer {
            min: 0,
            max: i64::MAX,
        },
    ),
    // The gbdt family (a forecast of `target` from `columns`).
    ("target", Kind::Target),
    (
        "iterations",
        Kind::Integer {
            min: 1,
            max: BOUNDS.iterations as i64,
        },
    ),
    (
        "learning_rate",
        Kind::Number {
            min: 1e-9,
            max: 1.0,
            open: false,
        },
    ),
    (
        "max_depth",
        Kind::Integer {
            min: 1,
            max: BOUNDS.max_depth as i64,
        },
    ),
    (
        "l2",
        Kind::Number {
            min: 0.0,
            max: 1e6,
            open: false,
        },
    ),
    (
        "min_leaf_weight",
        Kind::Number {
            min: 0.0,
            max: 1e9,
            open: false,
        },
    ),
    (
        "subsample",
        Kind::Number {
            min: 1e-9,
            max: 1.0,
            open: false,
        },
    ),
    ("nbins", Kind::Integer { min: 2, max: 1024 }),
    (
        "search_trials",
        Kind::Integer {
            min: 0,
            max: BOUNDS.search_trials as i64,
        },
    ),
    (
        "search_metric",
        Kind::OneOf(&["rmsle", "rmse", "mae", "mape", "r2"]),
    ),
];

/// Which model a run fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// A Gaussian HMM of the regimes (the default).
    #[default]
    Hmm,
    /// Gradient-boosted trees forecasting `target` ([`crate::forecast`]).
    Gbdt,
}

impl Family {
    /// The family a registered version was trained as (its manifest's
    /// `family`; none: an HMM).
    pub fn of(version: &autotrain_schemas::ModelVersion) -> Family {
        let gbdt = version.manifest.as_ref().is_some_and(|m| {
            m.hyperparams
                .iter()
                .any(|p| p.name == "family" && p.value == "gbdt")
        });
        if gbdt {
            Family::Gbdt
        } else {
            Family::Hmm
        }
    }
}

/// How a run trains. Defaults are the trainer's `[trainer.defaults]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    /// `hmm` (regimes) or `gbdt` (a forecast).
    pub family: Family,
    /// `strict`: each bar trains at most once (claims unclaimed offsets);
    /// `sliding`: the newest `train_window` bars per instrument.
    pub mode: Mode,
    /// Bars per instrument in sliding mode.
    pub train_window: usize,
    /// Fewer usable training rows than this ⇒ the run waits for data.
    pub min_rows: usize,
    /// Feature columns the HMM reads (the first orders the states).
    pub columns: Vec<String>,
    /// Names the train/reference split; its reference set is cut once.
    pub split_version: String,
    /// Tail of each instrument's rows the first run of a split version
    /// sets aside as the reference set.
    pub reference_fraction: f64,
    pub states: usize,
    pub covariance: Covariance,
    pub max_iter: usize,
    pub tol: f64,
    pub restarts: usize,
    pub min_covar: f64,
    /// Backtest cost per unit of position change, in basis points.
    pub cost_bps: f64,
    /// Sliding mode: only bars at or before this time (epoch ms). A run
    /// takes its trigger's time (for drift and schedule triggers the event
    /// time that fired it), so what it trains on does not depend on when
    /// it ran; written to the manifest for reruns.
    pub as_of: Option<i64>,
    /// gbdt: what is forecast, `abs_return:H` or `realised_vol:H`.
    pub target: String,
    /// gbdt: boosting rounds, learning rate, depth, L2, minimum hessian
    /// per leaf, row sampling, histogram bins ([`crate::forecast::GbdtOptions`]).
    pub iterations: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
    pub l2: f64,
    pub min_leaf_weight: f64,
    pub subsample: f64,
    pub nbins: usize,
    /// gbdt: a seeded random search of this many trials over
    /// [`crate::forecast::search::RANGES`] (0: fit the parameters as
    /// given); the best on the reference set by `search_metric` is
    /// registered, its parameters in the manifest.
    pub search_trials: usize,
    pub search_metric: String,
    /// hmm: also start a fit from the champion's parameters (in place of
    /// the last seeded restart) when the champion has the same columns,
    /// states and covariance; it is kept only if it fits better.
    pub warm_start: bool,
    /// hmm: the `parameter_hash` of the version a fit started from
    /// (written to the manifest by the run that did; a rerun starts from
    /// that version again, and from none when this is empty).
    pub warm_from: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Strict,
    Sliding,
}

impl Mode {
    pub fn claim_mode(self) -> ClaimMode {
        match self {
            Mode::Strict => ClaimMode::Strict,
            Mode::Sliding => ClaimMode::Sliding,
        }
    }
}

impl Default for TrainSpec {
    fn default() -> Self {
        TrainSpec {
            mode: Mode::Sliding,
            train_window: 20_000,
            min_rows: 500,
            columns: vec!["lr".into(), "rvol_20".into()],
            split_version: "v1".into(),
            reference_fraction: 0.2,
            states: 3,
            covariance: Covariance::Diag,
            max_iter: 100,
            tol: 1e-2,
            restarts: 3,
            min_covar: 1e-3,
            cost_bps: 1.0,
            as_of: None,
            family: Family::Hmm,
            target: "abs_return:1".into(),
            iterations: 200,
            learning_rate: 0.05,
            max_depth: 5,
            l2: 1.0,
            min_leaf_weight: 20.0,
            subsample: 1.0,
            nbins: 256,
            search_trials: 0,
            search_metric: "rmsle".into(),
            warm_start: true,
            warm_from: None,
        }
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, SpecError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e: T::Err| SpecError::Invalid {
            name: name.into(),
            value: value.into(),
            why: e.to_string(),
        })
}

fn invalid(name: &str, value: &str, why: &str) -> SpecError {
    SpecError::Invalid {
        name: name.into(),
        value: value.into(),
        why: why.into(),
    }
}

impl TrainSpec {
    /// `defaults` with `params` applied; the result is checked.
    pub fn with_params(defaults: &TrainSpec, params: &[Param]) -> Result<TrainSpec, SpecError> {
        let mut s = defaults.clone();
        for Param { name, value } in params {
            let n = name.as_str();
            match n {
                "family" => {
                    s.family = match value.trim() {
                        "hmm" => Family::Hmm,
                        "gbdt" => Family::Gbdt,
                        _ => return Err(invalid(n, value, "hmm or gbdt")),
                    }
                }
                "target" => s.target = value.trim().to_string(),
                "iterations" => s.iterations = parse(n, value)?,
                "learning_rate" => s.learning_rate = parse(n, value)?,
                "max_depth" => s.max_depth = parse(n, value)?,
                "l2" => s.l2 = parse(n, value)?,
                "min_leaf_weight" => s.min_leaf_weight = parse(n, value)?,
                "subsample" => s.subsample = parse(n, value)?,
                "nbins" => s.nbins = parse(n, value)?,
                "search_trials" => s.search_trials = parse(n, value)?,
                "search_metric" => s.search_metric = value.trim().to_string(),
                "mode" => {
                    s.mode = match value.trim() {
                        "strict" => Mode::Strict,
                        "sliding" => Mode::Sliding,
                        _ => return Err(invalid(n, value, "strict or sliding")),
                    }
                }
                "warm_start" => s.warm_start = parse(n, value)?,
                "warm_from" => s.warm_from = Some(value.trim().to_string()),
                "train_window" => s.train_window = parse(n, value)?,
                "min_rows" => s.min_rows = parse(n, value)?,
                "columns" => {
                    s.columns = value
                        .split(',')
                        .map(|c| c.trim().to_string())
                        .filter(|c| !c.is_empty())
                        .collect()
                }
                "split_version" => s.split_version = value.trim().to_string(),
                "reference_fraction" => s.reference_fraction = parse(n, value)?,
                "states" => s.states = parse(n, value)?,
                "covariance" => {
                    s.covariance = Covariance::parse(value.trim())
                        .ok_or_else(|| invalid(n, value, "diag or full"))?
                }
                "max_iter" => s.max_iter = parse(n, value)?,
                "tol" => s.tol = parse(n, value)?,
                "restarts" => s.restarts = parse(n, value)?,
                "min_covar" => s.min_covar = parse(n, value)?,
                "cost_bps" => s.cost_bps = parse(n, value)?,
                "as_of" => s.as_of = Some(parse(n, value)?),
                other => return Err(SpecError::Unknown(other.into())),
            }
        }
        s.check()?;
        Ok(s)
    }

    /// Every value within its declared bounds ([`BOUNDS`]): a request can
    /// ask for no fit that outgrows a trainer slot's time or memory.
    pub fn check(&self) -> Result<(), SpecError> {
        let bad = |n: &str, v: String, why: &str| Err(invalid(n, &v, why));
        let within = |n: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                bad(n, v.to_string(), &format!("between {lo} and {hi}"))
            }
        };
        within("states", self.states, 1, BOUNDS.states)?;
        within("max_iter", self.max_iter, 1, BOUNDS.max_iter)?;
        within("restarts", self.restarts, 1, BOUNDS.restarts)?;
        within("train_window", self.train_window, 2, BOUNDS.train_window)?;
        within("min_rows", self.min_rows, 0, BOUNDS.train_window)?;
        within("columns", self.columns.len(), 1, BOUNDS.columns)?;
        within("iterations", self.iterations, 1, BOUNDS.iterations)?;
        within("max_depth", self.max_depth, 1, BOUNDS.max_depth)?;
        within("nbins", self.nbins, 2, 1024)?;
        within("search_trials", self.search_trials, 0, BOUNDS.search_trials)?;
        if !crate::forecast::guardrails::METRICS.contains(&self.search_metric.as_str()) {
            return bad(
                "search_metric",
                self.search_metric.clone(),
                "rmsle, rmse, mae, mape or r2",
            );
        }
        if crate::forecast::Target::parse(&self.target).is_none() {
            return bad(
                "target",
                self.target.clone(),
                "abs_return:H or realised_vol:H, H >= 1",
            );
        }
        for (n, v, open_low, hi) in [
            ("learning_rate", self.learning_rate, true, 1.0),
            ("subsample", self.subsample, true, 1.0),
            ("l2", self.l2, false, 1e6),
            ("min_leaf_weight", self.min_leaf_weight, false, 1e9),
        ] {
            let low_ok = if open_low { v > 0.0 } else { v >= 0.0 };
            if !(v.is_finite() && low_ok && v <= hi) {
                let low = if open_low { "(0" } else { "[0" };
                return bad(n, v.to_string(), &format!("a number in {low}, {hi}]"));
            }
        }
        for (n, v, hi) in [
            ("tol", self.tol, 1e6),
            ("min_covar", self.min_covar, 1e6),
            ("cost_bps", self.cost_bps, 10_000.0),
        ] {
            if !(v.is_finite() && v >= 0.0 && v <= hi) {
                return bad(n, v.to_string(), &format!("a number between 0 and {hi}"));
            }
        }
        for (n, v) in self
            .columns
            .iter()
            .map(|c| ("columns", c))
            .chain([("split_version", &self.split_version)])
        {
            if !is_name(v) {
                return bad(
                    n,
                    format!("{}…", v.chars().take(32).collect::<String>()),
                    &format!(
                        "1 to {} bytes of letters, digits, _ . : -",
                        BOUNDS.name_bytes
                    ),
                );
            }
        }
        if self.as_of.is_some_and(|t| t < 0) {
            return bad("as_of", format!("{:?}", self.as_of), "an epoch time >= 0");
        }
        if !(self.reference_fraction > 0.0 && self.reference_fraction < 1.0) {
            return bad(
                "reference_fraction",
                self.reference_fraction.to_string(),
                "between 0 and 1",
            );
        }
        if self.split_version.is_empty() {
            return bad("split_version", String::new(), "not empty");
        }
        Ok(())
    }

    /// The complete list, sorted by name (the manifest's hyper-parameters).
    pub fn to_params(&self) -> Vec<Param> {
        let p = |name: &str, value: String| Param {
            name: name.into(),
            value,
        };
        let mut out = vec![
            p(
                "mode",
                match self.mode {
                    Mode::Strict => "strict",
                    Mode::Sliding => "sliding",
                }
                .into(),
            ),
            p("train_window", self.train_window.to_string()),
            p("min_rows", self.min_rows.to_string()),
            p("columns", self.columns.join(",")),
            p("split_version", self.split_version.clone()),
            p("reference_fraction", self.reference_fraction.to_string()),
            p("states", self.states.to_string()),
            p(
                "covariance",
                match self.covariance {
                    Covariance::Diag => "diag",
                    Covariance::Full => "full",
                }
                .into(),
            ),
            p("max_iter", self.max_iter.to_string()),
            p("tol", self.tol.to_string()),
            p("restarts", self.restarts.to_string()),
            p("min_covar", self.min_covar.to_string()),
            p("cost_bps", self.cost_bps.to_string()),
        ];
        if let Some(t) = self.as_of {
            out.push(p("as_of", t.to_string()));
        }
        if self.family == Family::Hmm {
            out.push(p("warm_start", self.warm_start.to_string()));
            if let Some(h) = &self.warm_from {
                out.push(p("warm_from", h.clone()));
            }
        }
        // An HMM run's list is what it was before the gbdt family existed.
        if self.family == Family::Gbdt {
            out.extend([
                p("family", "gbdt".into()),
                p("target", self.target.clone()),
                p("iterations", self.iterations.to_string()),
                p("learning_rate", self.learning_rate.to_string()),
                p("max_depth", self.max_depth.to_string()),
                p("l2", self.l2.to_string()),
                p("min_leaf_weight", self.min_leaf_weight.to_string()),
                p("subsample", self.subsample.to_string()),
                p("nbins", self.nbins.to_string()),
            ]);
            if self.search_trials > 0 {
                out.extend([
                    p("search_trials", self.search_trials.to_string()),
                    p("search_metric", self.search_metric.clone()),
                ]);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The gbdt family's fitting options and target (`None`: not a valid
    /// target, which [`TrainSpec::check`] refuses).
    pub fn gbdt(
        &self,
        seed: u64,
        threads: usize,
    ) -> Option<(crate::forecast::Target, crate::forecast::GbdtOptions)> {
        Some((
            crate::forecast::Target::parse(&self.target)?,
            crate::forecast::GbdtOptions {
                iterations: self.iterations,
                learning_rate: self.learning_rate as f32,
                max_depth: self.max_depth,
                l2: self.l2 as f32,
                min_leaf_weight: self.min_leaf_weight as f32,
                subsample: self.subsample as f32,
                nbins: self.nbins as u16,
                seed,
                threads: (threads > 0).then_some(threads),
            },
        ))
    }

    pub fn fit_options(&self, seed: u64) -> FitOptions {
        FitOptions {
            states: self.states,
            covariance: self.covariance,
            max_iter: self.max_iter,
            tol: self.tol,
            seed,
            restarts: self.restarts.max(1),
            min_covar: self.min_covar,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, value: &str) -> Param {
        Param {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn params_round_trip_through_the_manifest_list() {
        let spec = TrainSpec::with_params(
            &TrainSpec::default(),
            &[
                param("mode", "strict"),
                param("states", "4"),
                param("covariance", "full"),
                param("columns", "lr, ret_std_20"),
                param("tol", "1e-4"),
                param("as_of", "1700000000000"),
            ],
        )
        .expect("valid");
        assert_eq!(spec.mode, Mode::Strict);
        assert_eq!(spec.columns, ["lr", "ret_std_20"]);
        let again = TrainSpec::with_params(&TrainSpec::default(), &spec.to_params()).expect("ok");
        assert_eq!(again, spec);
        let again = TrainSpec::with_params(&TrainSpec::default(), &spec.to_params());
        assert_eq!(again.map(|s| s.to_params()), Ok(spec.to_params()));
    }

    #[test]
    fn bad_params_are_refused_with_the_reason() {
        let d = TrainSpec::default();
        assert_eq!(
            TrainSpec::with_params(&d, &[param("depth", "3")]),
            Err(SpecError::Unknown("depth".into()))
        );
        for (n, v) in [
            ("states", "three"),
            ("covariance", "spherical"),
            ("reference_fraction", "1.5"),
            ("mode", "greedy"),
            ("columns", " , "),
            ("states", "9223372036854775808"),
            ("states", "1000000"),
            ("states", "0"),
            ("max_iter", "1000000000"),
            ("restarts", "0"),
            ("train_window", "1000000000"),
            ("tol", "NaN"),
            ("tol", "-1"),
            ("min_covar", "inf"),
            ("cost_bps", "1e300"),
            ("split_version", "v".repeat(200).as_str()),
            ("columns", vec!["lr"; 33].join(",").as_str()),
        ] {
            assert!(
                matches!(
                    TrainSpec::with_params(&d, &[param(n, v)]),
                    Err(SpecError::Invalid { .. })
                ),
                "{n}={v}"
            );
        }
    }
}
