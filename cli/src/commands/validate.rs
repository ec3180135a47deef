//! `autotrain validate`: check a bar file offline with the validator core
//! (same rules as the validator processor) before publishing it.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use autotrain_connector_file::{infer_instrument, BarReader, InstrumentId};
use autotrain_validator::{parse_timeframe, Calendar, Summary, Validator, ValidatorConfig};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// CSV file (`ts,open,high,low,close,volume`).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Instrument `exchange:SYMBOL` (default: from the file name).
    #[arg(long)]
    pub instrument: Option<String>,
    /// Bar length: 1m, 30m, 1h, … (default: from the file name).
    #[arg(long)]
    pub timeframe: Option<String>,
    /// Trading calendar: `24x7` (crypto), `fx` or `us-equity`.
    #[arg(long, default_value = "24x7")]
    pub calendar: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The instrument of a bar file: from `--instrument`/`--timeframe`, else
/// from its name (`<exchange>_<SYMBOL>_<timeframe>*.csv`), the flags
/// overriding parts of it.
pub fn resolve_instrument(
    input: &std::path::Path,
    instrument: Option<&String>,
    timeframe: Option<&String>,
) -> Result<InstrumentId> {
    let inferred = infer_instrument(input);
    Ok(match (instrument, timeframe, inferred) {
        (Some(i), Some(tf), _) => {
            InstrumentId::parse(i, tf).context("bad --instrument/--timeframe")?
        }
        (i, tf, Some(mut id)) => {
            if let Some(i) = i {
                let (ex, sym) = i
                    .split_once(':')
                    .context("--instrument is exchange:SYMBOL")?;
                id.exchange = ex.into();
                id.symbol = sym.into();
            }
            if let Some(tf) = tf {
                id.timeframe = tf.clone();
            }
            id
        }
        _ => anyhow::bail!("pass --instrument and --timeframe (the file name does not say them)"),
    })
}

pub async fn run(_config: &Config, args: Args) -> Result<()> {
    let id = resolve_instrument(
        &args.input,
        args.instrument.as_ref(),
        args.timeframe.as_ref(),
    )?;
    let step = parse_timeframe(&id.timeframe)
        .with_context(|| format!("bad timeframe {:?}", id.timeframe))?;
    let calendar = Calendar::parse(&args.calendar)
        .with_context(|| format!("unknown calendar {:?} (24x7, fx, us-equity)", args.calendar))?;
    let mut validator = Validator::new(ValidatorConfig::new(step, calendar));
    let mut summary = Summary::default();
    let mut unreadable = 0u64;
    for row in BarReader::open(&args.input, id)? {
        match row {
            Ok(bar) => summary.add(&validator.validate(&bar)),
            Err(e) => {
                unreadable += 1;
                eprintln!("unreadable row: {e}");
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "bars {}  passed {}  unreadable rows {unreadable}",
            summary.bars, summary.passed
        );
        for (k, n) in &summary.flags {
            println!("  {k:<11} {n}");
        }
        for g in &summary.gaps {
            let day = |ms: i64| {
                chrono::DateTime::from_timestamp_millis(ms)
                    .map_or_else(String::new, |d| d.to_rfc3339())
            };
            println!(
                "  gap {} .. {} ({} bars)",
                day(g.start),
                day(g.end),
                g.missing_bars
            );
        }
    }
    Ok(())
}
