//! `autotrain fit hmm|gbdt`: fit the trainer's models offline to columns of
//! a CSV file and report the fit: a Gaussian HMM, or a gradient-boosted
//! forecast scored on its reference set (and exported to ONNX or JSON).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use autotrain_trainer::dataset::{Row, Table};
use autotrain_trainer::{Covariance, FitOptions, GaussianHmm};
use serde_json::json;

use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum FitCommand {
    /// Gaussian hidden Markov model (Baum-Welch).
    Hmm(HmmArgs),
    /// Gradient-boosted trees forecasting a target (the absolute return or
    /// realised volatility over the next bars) from a feature table
    /// (`autotrain features`); scored on the last `--reference-fraction`
    /// of the rows (purged), MAE, RMSE, MAPE, R², RMSLE.
    Gbdt(GbdtArgs),
}

#[derive(Debug, clap::Args)]
pub struct GbdtArgs {
    /// A feature table (CSV with `ts` and the feature columns).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Feature columns, comma-separated (an empty cell is missing).
    #[arg(long, value_delimiter = ',', required = true)]
    pub columns: Vec<String>,
    /// `abs_return:H` or `realised_vol:H`: over the next H bars.
    #[arg(long, default_value = "abs_return:1")]
    pub target: String,
    /// The column holding each bar's log return (the target's source).
    #[arg(long, default_value = "lr")]
    pub return_column: String,
    #[arg(long, default_value_t = 0.2)]
    pub reference_fraction: f64,
    #[arg(long, default_value_t = 200)]
    pub iterations: usize,
    #[arg(long, default_value_t = 0.05)]
    pub learning_rate: f32,
    #[arg(long, default_value_t = 5)]
    pub max_depth: usize,
    #[arg(long, default_value_t = 1.0)]
    pub l2: f32,
    #[arg(long, default_value_t = 20.0)]
    pub min_leaf_weight: f32,
    #[arg(long, default_value_t = 1.0)]
    pub subsample: f32,
    #[arg(long, default_value_t = 256)]
    pub nbins: u16,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fitting threads (default: every core; the trees do not depend on it).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the model as ONNX (`TreeEnsembleRegressor`).
    #[arg(long)]
    pub export_onnx: Option<PathBuf>,
    /// Write the model in autotrain's JSON layout (docs/forecast.md).
    #[arg(long)]
    pub export_json: Option<PathBuf>,
    /// Write the reference rows: their features, target and prediction
    /// (CSV; what another runtime should reproduce).
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
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

/// A one-shot fit touches each of its buffers once: with transparent huge
/// pages (which mimalloc asks for) every first touch zeroes 2 MiB, and a
/// 1,000,000-row fit spent a third of its time in the kernel clearing
/// pages (0.73 s against 0.45 s without). Long-lived processes reuse their
/// heap and keep them.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(error = %e, "transparent huge pages stay on");
    }
}

/// The selected columns of a CSV, row-major, and the rows skipped (a row
/// whose selected cells are not all finite numbers).
///
/// The file is read whole and its body parsed in one slice per core, cut
/// at line ends, the slices' rows concatenated in file order: parsing is
/// a sixth of a one-shot fit's time on one core. A file with a quote in it
/// (a quoted cell may hold a line end) is parsed as one slice.
pub fn read_columns(path: &PathBuf, columns: &[String]) -> Result<(Vec<f64>, usize)> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let mut reader = csv::Reader::from_reader(&bytes[..]);
    let header = reader.headers()?.clone();
    let body = usize::try_from(reader.position().byte())?;
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
    let body = &bytes[body.min(bytes.len())..];
    let parts = if body.contains(&b'"') {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let width = header.len();
    let slices = split_at_lines(body, parts);
    let parsed: Vec<Result<(Vec<f64>, usize)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = slices
            .iter()
            .map(|slice| scope.spawn(|| parse_rows(slice, width, &idx)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a CSV parser thread panicked"))
            })
            .collect()
    });
    let (mut x, mut skipped) = (Vec::new(), 0usize);
    for part in parsed {
        let (rows, s) = part?;
        if x.is_empty() {
            x = rows;
        } else {
            x.extend_from_slice(&rows);
        }
        skipped += s;
    }
    Ok((x, skipped))
}

/// `body` cut into at most `parts` slices of about equal length, each
/// ending at a line end (or the end of the body).
fn split_at_lines(body: &[u8], parts: usize) -> Vec<&[u8]> {
    let mut slices = Vec::with_capacity(parts);
    let mut from = 0;
    for p in 1..parts {
        let target = (body.len() * p / parts).max(from);
        let Some(nl) = body[target..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let to = target + nl + 1;
        slices.push(&body[from..to]);
        from = to;
    }
    slices.push(&body[from..]);
    slices
}

/// The selected cells (`idx`) of headerless CSV rows of `width` cells,
/// row-major, and the rows skipped; a row of another width is an error.
fn parse_rows(slice: &[u8], width: usize, idx: &[usize]) -> Result<(Vec<f64>, usize)> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(slice);
    // Rows of the width seen in the first ones: one allocation, not a
    // doubling copy of the whole table.
    let guess = slice.len() / 16;
    let (mut x, mut skipped) = (Vec::with_capacity(guess * idx.len()), 0usize);
    // One record buffer for every row, parsed in place.
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record)? {
        if record.len() != width {
            bail!(
                "a row of {} cells where the header has {width}: {:?}",
                record.len(),
                String::from_utf8_lossy(record.as_slice())
            );
        }
        let start = x.len();
        let whole = idx.iter().all(|i| {
            match record
                .get(*i)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
            {
                Some(v) => {
                    x.push(v);
                    true
                }
                None => false,
            }
        });
        if !whole {
            x.truncate(start);
            skipped += 1;
        }
    }
    Ok((x, skipped))
}

/// A feature table CSV (`ts` first) as the trainer's [`Table`] of one
/// instrument.
fn read_table(path: &PathBuf) -> Result<Table> {
    let mut reader = csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
    let header = reader.headers()?.clone();
    let names: Vec<String> = header.iter().skip(1).map(str::to_string).collect();
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record?;
        let ts: i64 = record
            .get(0)
            .and_then(|t| t.trim().parse().ok())
            .with_context(|| format!("{} row {}: no ts", path.display(), i + 1))?;
        let values = record
            .iter()
            .skip(1)
            .map(|v| v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect();
        rows.push(Row {
            instrument: String::new(),
            ts,
            values,
        });
    }
    Ok(Table { names, rows })
}

async fn gbdt(args: GbdtArgs) -> Result<()> {
    use autotrain_trainer::forecast::{dataset, onnx, ForecastModel, GbdtOptions, Scores, Target};
    let Some(target) = Target::parse(&args.target) else {
        bail!(
            "--target is abs_return:H or realised_vol:H, not {:?}",
            args.target
        );
    };
    let table = read_table(&args.input)?;
    let data = dataset::prepare(
        &table,
        &args.columns,
        &args.return_column,
        target,
        args.reference_fraction,
    )?;
    let options = GbdtOptions {
        iterations: args.iterations,
        learning_rate: args.learning_rate,
        max_depth: args.max_depth,
        l2: args.l2,
        min_leaf_weight: args.min_leaf_weight,
        subsample: args.subsample,
        nbins: args.nbins,
        seed: args.seed,
        threads: args.threads,
    };
    let started = Instant::now();
    let (model, data) = tokio::task::spawn_blocking(move || {
        ForecastModel::fit(
            &data.x_train,
            &data.y_train,
            &data.columns,
            target,
            &options,
        )
        .map(|m| (m, data))
    })
    .await??;
    let fit_seconds = started.elapsed().as_secs_f64();
    let predicted = model.predict(&data.x_reference);
    let scores = Scores::of(&predicted, &data.y_reference);
    if let Some(path) = &args.export_onnx {
        std::fs::write(path, onnx::export(&model, env!("CARGO_PKG_VERSION")))
            .with_context(|| path.display().to_string())?;
    }
    if let Some(path) = &args.export_json {
        std::fs::write(path, model.to_json()).with_context(|| path.display().to_string())?;
    }
    if let Some(path) = &args.predictions {
        let mut w = csv::Writer::from_path(path).with_context(|| path.display().to_string())?;
        let mut header = vec!["ts".to_string()];
        header.extend(data.columns.iter().cloned());
        header.extend(["target".to_string(), "prediction".to_string()]);
        w.write_record(&header)?;
        let d = data.columns.len();
        for (i, (_, ts)) in data.reference_rows.iter().enumerate() {
            let mut record = vec![ts.to_string()];
            record.extend(data.x_reference[i * d..(i + 1) * d].iter().map(|v| {
                if v.is_nan() {
                    String::new()
                } else {
                    format!("{v:?}")
                }
            }));
            record.push(format!("{:?}", data.y_reference[i]));
            record.push(format!("{:?}", predicted[i]));
            w.write_record(&record)?;
        }
        w.flush()?;
    }
    if args.json {
        println!(
            "{}",
            json!({
                "target": target.name(),
                "columns": data.columns,
                "train_rows": data.train_rows(),
                "reference_rows": data.y_reference.len(),
                "trees": model.trees.len(),
                "nodes": model.nodes(),
                "fit_seconds": fit_seconds,
                "reference": scores,
                "parameter_hash": model.param_hash(),
            })
        );
    } else {
        println!(
            "{} from {}: {} train / {} reference rows, {} trees ({} nodes), fit {:.3} s",
            target.name(),
            data.columns.join(","),
            data.train_rows(),
            data.y_reference.len(),
            model.trees.len(),
            model.nodes(),
            fit_seconds
        );
        println!(
            "reference: MAE {:.6}  RMSE {:.6}  MAPE {:.4}  R² {:.4}  RMSLE {:.6}",
            scores.mae, scores.rmse, scores.mape, scores.r2, scores.rmsle
        );
        println!("parameter hash {}", model.param_hash());
    }
    Ok(())
}

pub async fn run(_config: &Config, cmd: FitCommand) -> Result<()> {
    let args = match cmd {
        FitCommand::Hmm(args) => args,
        FitCommand::Gbdt(args) => return gbdt(args).await,
    };
    let Some(covariance) = Covariance::parse(&args.covariance) else {
        bail!("--covariance is diag or full, not {:?}", args.covariance);
    };
    no_huge_pages();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows, one in seven with a cell that is not a number, one in seven
    /// with a NaN.
    fn body(rows: usize) -> String {
        (0..rows)
            .map(|i| match i % 7 {
                3 => format!("{i},x,{}\n", i as f64 * 0.5),
                5 => format!("{i},{}, nan\n", i as f64 / 3.0),
                _ => format!("{i},{},{}\n", i as f64 / 3.0, -(i as f64) * 1.25),
            })
            .collect()
    }

    #[test]
    fn any_number_of_slices_parses_as_one() {
        for rows in [0, 1, 2, 9, 100, 1_001] {
            let text = body(rows);
            let whole = parse_rows(text.as_bytes(), 3, &[2, 1]).unwrap();
            assert_eq!(
                whole.1,
                2 * (rows / 7) + usize::from(rows % 7 > 3) + usize::from(rows % 7 > 5)
            );
            for parts in 1..6 {
                let slices = split_at_lines(text.as_bytes(), parts);
                assert_eq!(slices.concat(), text.as_bytes());
                let (mut x, mut skipped) = (Vec::new(), 0);
                for s in slices {
                    let (r, k) = parse_rows(s, 3, &[2, 1]).unwrap();
                    x.extend(r);
                    skipped += k;
                }
                assert_eq!((x, skipped), whole, "{rows} rows in {parts} slices");
            }
        }
    }

    #[test]
    fn a_file_is_read_whole_a_short_row_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, format!("t,a,b\n{}", body(500))).unwrap();
        let cols = ["a".to_string(), "b".to_string()];
        let (x, skipped) = read_columns(&path, &cols).unwrap();
        let expected = parse_rows(body(500).as_bytes(), 3, &[1, 2]).unwrap();
        assert_eq!((x, skipped), expected);
        std::fs::write(&path, format!("t,a,b\n{}9,1\n", body(20))).unwrap();
        let err = read_columns(&path, &cols).unwrap_err().to_string();
        assert!(
            err.contains("a row of 2 cells where the header has 3"),
            "{err}"
        );
    }
}
