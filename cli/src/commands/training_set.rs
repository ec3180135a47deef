//! `autotrain training-set`: the point-in-time feature table of some
//! instruments over a time range, as of a time (default now), read from
//! `features` — what a training run reads.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use autotrain_connector_file::parse_ts;
use autotrain_features::manifest::{manifest, sha256_hex, BuildInput};
use autotrain_features::training_set::{load, Query};
use autotrain_kafka::{OutRecord, Producer};
use autotrain_schemas::BuildKind;
use autotrain_topics::FEATURE_BUILDS;

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
    let (table, inputs) = tokio::task::spawn_blocking(move || load(&settings, &q)).await??;
    let mut w = std::io::BufWriter::new(Vec::new());
    let names: Vec<String> = table
        .values()
        .next()
        .map(|v| v.values.iter().map(|x| x.name.clone()).collect())
        .unwrap_or_default();
    writeln!(w, "instrument,ts,{}", names.join(","))?;
    for ((instrument, ts), v) in &table {
        write!(w, "{instrument},{ts}")?;
        super::features::write_cells(&mut w, v)?;
    }
    let bytes = w.into_inner()?;
    std::fs::write(&args.output, &bytes).with_context(|| args.output.display().to_string())?;
    let contract = autotrain_features::Contract::bundled()?;
    let build = manifest(BuildInput {
        kind: BuildKind::TrainingSet,
        source: format!(
            "{} [{}, {})",
            args.instruments.join(","),
            query.from_ms,
            query.to_ms
        ),
        inputs,
        as_of: Some(query.as_of_ms),
        rows: table.len() as i64,
        output_sha256: Some(sha256_hex(&bytes)),
        built_at: chrono::Utc::now().timestamp_millis(),
        contract: (&contract).into(),
    });
    let producer = Producer::new(&ctx.settings)?;
    let record = OutRecord::from_content(FEATURE_BUILDS, &build.build_id, &build)?;
    producer.enqueue(&record).await?.confirm().await?;
    println!("{}", serde_json::to_string(&build)?);
    eprintln!(
        "{} rows for {} instrument(s) as of {}; manifest {} on {}",
        table.len(),
        query.instruments.len(),
        query.as_of_ms,
        build.build_id,
        FEATURE_BUILDS.name()
    );
    Ok(())
}
