//! `autotrain training-set`: the point-in-time feature table of some
//! instruments over a time range, as of a time (default now), read from
//! `features` — what a training run reads.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use autotrain_connector_file::parse_ts;
use autotrain_features::training_set::{load, Query};

use crate::config::Config;
use crate::context::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Instruments (`exchange:SYMBOL`).
    #[arg(long = "instrument", required = true, num_args = 1..)]
    pub instruments: Vec<String>,
    /// First bar time (ISO-8601 or epoch).
    #[arg(long)]
    pub from: String,
    /// End of the range (exclusive).
    #[arg(long)]
    pub to: String,
    /// Only features computed at or before this time (default: now).
    #[arg(long)]
    pub as_of: Option<String>,
    #[arg(long, short)]
    pub output: PathBuf,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let ts = |text: &str, what: &str| {
        parse_ts(text)
            .map_err(anyhow::Error::msg)
            .with_context(|| what.to_string())
    };
    let query = Query {
        instruments: args.instruments.iter().cloned().collect(),
        from_ms: ts(&args.from, "--from")?,
        to_ms: ts(&args.to, "--to")?,
        as_of_ms: match &args.as_of {
            Some(t) => ts(t, "--as-of")?,
            None => chrono::Utc::now().timestamp_millis(),
        },
    };
    let ctx = Context::connect(config).await?;
    let settings = ctx.settings.clone();
    let q = query.clone();
    let table = tokio::task::spawn_blocking(move || load(&settings, &q)).await??;
    let mut w = std::io::BufWriter::new(std::fs::File::create(&args.output)?);
    let names: Vec<String> = table
        .values()
        .next()
        .map(|v| v.values.iter().map(|x| x.name.clone()).collect())
        .unwrap_or_default();
    writeln!(w, "instrument,ts,{}", names.join(","))?;
    for ((instrument, ts), v) in &table {
        write!(w, "{instrument},{ts}")?;
        for x in &v.values {
            match x.value {
                Some(f) => write!(w, ",{f}")?,
                None => write!(w, ",")?,
            }
        }
        writeln!(w)?;
    }
    w.flush()?;
    eprintln!(
        "{} rows for {} instrument(s) as of {}",
        table.len(),
        query.instruments.len(),
        query.as_of_ms
    );
    Ok(())
}
