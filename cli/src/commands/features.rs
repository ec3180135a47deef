//! `autotrain features`: the feature contract over a bar file, offline, on
//! the same engines and timely dataflow as the features processor; writes
//! `ts` plus every contract feature (empty where absent); with
//! `--window-days N`, training-window statistics per day on differential
//! dataflow. `--check` only checks the contract against its lock.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use autotrain_connector_file::BarReader;
use autotrain_features::manifest::{manifest, sha256_hex, BuildInput};
use autotrain_features::{dataflow, Contract};
use autotrain_schemas::Bar;
use autotrain_schemas::{BuildKind, FeatureVector};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// CSV bar file (`ts,open,high,low,close,volume`).
    #[arg(long, short, required_unless_present = "check")]
    pub input: Option<PathBuf>,
    /// Instrument `exchange:SYMBOL` (default: from the file name).
    #[arg(long)]
    pub instrument: Option<String>,
    /// Bar length (default: from the file name).
    #[arg(long)]
    pub timeframe: Option<String>,
    /// Where to write the feature table (CSV).
    #[arg(long, short, required_unless_present = "check")]
    pub output: Option<PathBuf>,
    /// Timely worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// A contract file instead of the bundled one (with `--lock`).
    #[arg(long, requires = "lock")]
    pub contract: Option<PathBuf>,
    /// The lock file for `--contract`.
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Only check the contract against its lock (exit 1 on drift).
    #[arg(long)]
    pub check: bool,
    /// Also write `OUTPUT.window.csv`: per day and feature, the count,
    /// mean and sample std over the last N days (training-window
    /// statistics on differential dataflow, corrections included).
    #[arg(long, value_name = "N")]
    pub window_days: Option<i64>,
}

pub fn load_contract(contract: Option<&PathBuf>, lock: Option<&PathBuf>) -> Result<Contract> {
    match (contract, lock) {
        (Some(c), Some(l)) => {
            let contract = Contract::parse(
                &std::fs::read_to_string(c).with_context(|| c.display().to_string())?,
            )?;
            contract.check_lock(
                &std::fs::read_to_string(l).with_context(|| l.display().to_string())?,
            )?;
            Ok(contract)
        }
        _ => Ok(Contract::bundled()?),
    }
}

/// `,value` per feature (empty where absent, shortest exact float text),
/// then the line end.
pub fn write_cells(w: &mut impl Write, v: &FeatureVector) -> std::io::Result<()> {
    for x in &v.values {
        match x.value {
            Some(f) => write!(w, ",{f}")?,
            None => write!(w, ",")?,
        }
    }
    writeln!(w)
}

/// The rows as published (corrections re-publish a bar) through the
/// training-window dataflow: `date,feature,n,mean,std` per day on which a
/// feature's statistics over the `days` days ending that day changed.
fn write_window(
    path: &PathBuf,
    contract: &Contract,
    rows: &[FeatureVector],
    days: i64,
    workers: usize,
) -> Result<usize> {
    use autotrain_features::window::{self, RowUpdate, WindowSpec};
    let spec = WindowSpec::days(days);
    let updates: Vec<RowUpdate> = rows
        .iter()
        .map(|v| RowUpdate {
            instrument: 0,
            ts: v.ts,
            values: Some(v.values.iter().map(|f| f.value).collect()),
        })
        .collect();
    let changes = window::run(&updates, spec, workers).map_err(anyhow::Error::msg)?;
    let names = contract.names();
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| path.display().to_string())?,
    );
    writeln!(w, "date,feature,n,mean,std")?;
    for c in &changes {
        let date = chrono::DateTime::from_timestamp_millis(c.round * spec.bucket_ms)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let name = names.get(usize::from(c.feature)).copied().unwrap_or("?");
        match c.moments {
            Some(m) if m.n > 1 => writeln!(w, "{date},{name},{},{},{}", m.n, m.mean, m.std())?,
            Some(m) => writeln!(w, "{date},{name},{},{},", m.n, m.mean)?,
            None => writeln!(w, "{date},{name},0,,")?,
        }
    }
    w.flush()?;
    Ok(changes.len())
}

pub async fn run(_config: &Config, args: Args) -> Result<()> {
    let contract = load_contract(args.contract.as_ref(), args.lock.as_ref())?;
    if args.check {
        println!(
            "contract version {} ok ({} features, definitions {})",
            contract.version,
            contract.features.len(),
            contract.definition_hash()
        );
        return Ok(());
    }
    let (Some(input), Some(output)) = (&args.input, &args.output) else {
        anyhow::bail!("--input and --output are required");
    };
    let id = super::validate::resolve_instrument(
        input,
        args.instrument.as_ref(),
        args.timeframe.as_ref(),
    )?;
    let mut bars: Vec<Bar> = Vec::new();
    let mut unreadable = 0u64;
    for row in BarReader::open(input, id)? {
        match row {
            Ok(b) if b.close > 0.0 && b.close.is_finite() && b.volume.is_finite() => bars.push(b),
            Ok(b) => {
                unreadable += 1;
                eprintln!(
                    "skipped bar at {}: close {} volume {}",
                    b.ts, b.close, b.volume
                );
            }
            Err(e) => {
                unreadable += 1;
                eprintln!("unreadable row: {e}");
            }
        }
    }
    let m = dataflow::run(&contract, &bars, args.workers, true).map_err(anyhow::Error::msg)?;
    if let Some(days) = args.window_days {
        let path = PathBuf::from(format!("{}.window.csv", output.display()));
        let lines = write_window(&path, &contract, &m.rows, days, args.workers)?;
        eprintln!(
            "{lines} window statistics ({days}-day window) → {}",
            path.display()
        );
    }
    // Latest row per ts (a file with repeated timestamps re-publishes).
    let mut latest = std::collections::BTreeMap::new();
    for v in m.rows {
        latest.insert(v.ts, v);
    }
    let mut w = std::io::BufWriter::new(Vec::new());
    write!(w, "ts")?;
    for name in contract.names() {
        write!(w, ",{name}")?;
    }
    writeln!(w)?;
    for (ts, v) in &latest {
        write!(w, "{ts}")?;
        write_cells(&mut w, v)?;
    }
    let bytes = w.into_inner()?;
    std::fs::write(output, &bytes).with_context(|| output.display().to_string())?;
    let build = manifest(BuildInput {
        kind: BuildKind::File,
        source: input.display().to_string(),
        inputs: Vec::new(),
        as_of: None,
        rows: latest.len() as i64,
        output_sha256: Some(sha256_hex(&bytes)),
        built_at: chrono::Utc::now().timestamp_millis(),
        contract: (&contract).into(),
    });
    let manifest_path = PathBuf::from(format!("{}.manifest.json", output.display()));
    std::fs::write(&manifest_path, serde_json::to_string_pretty(&build)?)?;
    eprintln!(
        "{} bars → {} rows ({} features, contract {}); {unreadable} row(s) skipped",
        bars.len(),
        latest.len(),
        contract.features.len(),
        contract.version
    );
    Ok(())
}
