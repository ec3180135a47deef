//! `autotrain fit hmm`: fit a Gaussian HMM to columns of a CSV file offline
//! (the trainer's model code) and report the fit.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use autotrain_trainer::{Covariance, FitOptions, GaussianHmm};
use serde_json::json;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum FitCommand {
    /// Gaussian hidden Markov model (Baum-Welch).
    Hmm(HmmArgs),
}

#[derive(Debug, clap::Args)]
pub struct HmmArgs {
    /// CSV with a header (a bar file, or a table from `autotrain features`).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Columns to model, comma-separated (rows with an empty or
    /// non-numeric cell in them are skipped and counted).
    #[arg(long, value_delimiter = ',', required = true)]
    pub columns: Vec<String>,
    #[arg(long, default_value_t = 3)]
    pub states: usize,
    /// `diag` or `full`.
    #[arg(long, default_value = "diag")]
    pub covariance: String,
    #[arg(long, default_value_t = 100)]
    pub max_iter: usize,
    #[arg(long, default_value_t = 1e-2)]
    pub tol: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Seeded restarts (the best log-likelihood wins).
    #[arg(long, default_value_t = 3)]
    pub restarts: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub min_covar: f64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// With `--json`: include the fitted parameters (`start`, `trans`,
    /// `means`, `covars`, row-major).
    #[arg(long, requires = "json")]
    pub params: bool,
}

/// The selected columns of a CSV, row-major, and the rows skipped.
pub fn read_columns(path: &PathBuf, columns: &[String]) -> Result<(Vec<f64>, usize)> {
    let mut reader = csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
    let header = reader.headers()?.clone();
    let idx: Vec<usize> = columns
        .iter()
        .map(|c| {
            header.iter().position(|h| h == c).with_context(|| {
                format!(
                    "no column {c:?} in {} (has {:?})",
                    path.display(),
                    header.iter().collect::<Vec<_>>()
                )
            })
        })
        .collect::<Result<_>>()?;
    let (mut x, mut skipped) = (Vec::new(), 0usize);
    for record in reader.records() {
        let record = record?;
        let row: Option<Vec<f64>> = idx
            .iter()
            .map(|i| {
                record
                    .get(*i)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite())
            })
            .collect();
        match row {
            Some(r) => x.extend(r),
            None => skipped += 1,
        }
    }
    Ok((x, skipped))
}

pub async fn run(_config: &Config, cmd: FitCommand) -> Result<()> {
    let FitCommand::Hmm(args) = cmd;
    let Some(covariance) = Covariance::parse(&args.covariance) else {
        bail!("--covariance is diag or full, not {:?}", args.covariance);
    };
    let (x, skipped) = read_columns(&args.input, &args.columns)?;
    let d = args.columns.len();
    let options = FitOptions {
        states: args.states,
        covariance,
        max_iter: args.max_iter,
        tol: args.tol,
        seed: args.seed,
        restarts: args.restarts,
        min_covar: args.min_covar,
    };
    let started = Instant::now();
    let (model, report) =
        tokio::task::spawn_blocking(move || GaussianHmm::fit(&x, d, &options)).await??;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let mut out = json!({
            "loglik": report.loglik,
            "iters": report.iters,
            "converged": report.converged,
            "fit_seconds": seconds,
            "param_hash": model.param_hash(),
            "rows_skipped": skipped,
            "history": report.history,
        });
        if args.params {
            out["params"] = json!({
                "start": model.start,
                "trans": model.trans,
                "means": model.means,
                "covars": model.covars,
            });
        }
        println!("{out}");
    } else {
        println!(
            "loglik {:.4}  iters {}  converged {}  {:.3} s  ({} rows skipped)",
            report.loglik, report.iters, report.converged, seconds, skipped
        );
        for s in 0..model.k {
            println!(
                "state {s}: start {:.3}  stay {:.4}  means {:?}",
                model.start[s],
                model.trans[s * model.k + s],
                &model.means[s * model.d..(s + 1) * model.d]
            );
        }
        println!("parameter hash {}", model.param_hash());
    }
    Ok(())
}
