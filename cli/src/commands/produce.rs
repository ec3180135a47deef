//! `autotrain produce`: CSV bar files → `market.bars.raw`, as fast as
//! possible or paced at N× real time, with a progress bar. Rows that cannot
//! be read become dead letters (with file, line and reason) instead of being
//! skipped. Resumable: each stream's watermark (`exchange:SYMBOL:timeframe`
//! on `source.watermarks`, shared with `autotrain fetch`) moves as bars are
//! acknowledged, and a new run skips the bars before it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use autotrain_connector_exchange::{load_watermarks, publish_watermark};
use autotrain_connector_file::{infer_instrument, BarReader, InstrumentId};
use autotrain_kafka::{EventId, OutRecord, Producer};
use autotrain_schemas::{DeadLetter, ErrorKind, SourceWatermark};
use autotrain_topics::{MARKET_BARS_DLQ, MARKET_BARS_RAW};
use autotrain_validator::parse_timeframe;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::Config;
use crate::context::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// CSV files or folders of them (`<exchange>_<SYMBOL>_<timeframe>*.csv`).
    #[arg(long, short, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Instrument `exchange:SYMBOL` when file names do not say it.
    #[arg(long, requires = "timeframe")]
    pub instrument: Option<String>,
    /// Bar length (1m, 30m, 1h, …) when file names do not say it.
    #[arg(long)]
    pub timeframe: Option<String>,
    /// Replay paced at this many times real time (default: as fast as possible).
    #[arg(long)]
    pub pace: Option<f64>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Publish every row even if the stream's watermark says it was
    /// published already (and leave the watermark alone).
    #[arg(long)]
    pub no_resume: bool,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Published {
    pub files: usize,
    pub bars: u64,
    pub bad_rows: u64,
    /// Bars before their stream's watermark (published by an earlier run).
    pub skipped: u64,
    pub seconds: f64,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let ctx = Context::connect(config).await?;
    let fixed = match (&args.instrument, &args.timeframe) {
        (Some(i), Some(tf)) => Some(
            InstrumentId::parse(i, tf)
                .with_context(|| format!("bad --instrument {i:?} / --timeframe {tf:?}"))?,
        ),
        _ => None,
    };
    let files = expand(&args.input)?;
    let report = publish(
        &ctx,
        &files,
        fixed.as_ref(),
        args.pace,
        !args.quiet,
        !args.no_resume,
    )
    .await?;
    println!("{}", serde_json::to_string(&report)?);
    if report.bad_rows > 0 {
        eprintln!(
            "{} row(s) could not be read; they are in {} with the reason",
            report.bad_rows,
            MARKET_BARS_DLQ.name()
        );
    }
    Ok(())
}

/// Files named directly plus the `.csv` files of named folders, sorted.
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .with_context(|| format!("reading {}", input.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "csv"))
                .collect();
            found.sort();
            files.extend(found);
        } else if input.exists() {
            files.push(input.clone());
        } else {
            bail!("{} does not exist", input.display());
        }
    }
    if files.is_empty() {
        bail!("no CSV files in {inputs:?}");
    }
    Ok(files)
}

fn instrument_of(path: &Path, fixed: Option<&InstrumentId>) -> Result<InstrumentId> {
    match fixed {
        Some(id) => Ok(id.clone()),
        None => infer_instrument(path).with_context(|| {
            format!("{}: name is not <exchange>_<SYMBOL>_<timeframe>.csv; pass --instrument and --timeframe", path.display())
        }),
    }
}

/// Publishes every row of `files`; returns the counts once all are acknowledged.
pub async fn publish(
    ctx: &Context,
    files: &[PathBuf],
    fixed: Option<&InstrumentId>,
    pace: Option<f64>,
    progress: bool,
    resume: bool,
) -> Result<Published> {
    /// Bars between two watermark moves.
    const WATERMARK_EVERY: u64 = 5_000;
    let producer = Producer::new(&ctx.settings)?;
    let mut watermarks = if resume {
        let settings = ctx.settings.clone();
        tokio::task::spawn_blocking(move || load_watermarks(&settings)).await??
    } else {
        HashMap::new()
    };
    let total_bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = if progress {
        ProgressBar::new(total_bytes)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:30} [{bar:40}] {percent:>3}% {elapsed} ({per_sec})",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut report = Published {
        files: files.len(),
        ..Published::default()
    };
    for path in files {
        let id = instrument_of(path, fixed)?;
        bar.set_message(id.key());
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let reader = BarReader::open(path, id.clone())?;
        let stream = format!("{}:{}", id.key(), id.timeframe);
        let step = parse_timeframe(&id.timeframe).unwrap_or(1);
        let mut wm = watermarks.remove(&stream).unwrap_or(SourceWatermark {
            stream: stream.clone(),
            next_ts: i64::MIN,
            bars: 0,
            chunks: 0,
            last_chunk_sha256: None,
            source: String::new(),
        });
        let resume_from = wm.next_ts;
        wm.source = format!("file:{}", path.display());
        let mut pending = Vec::new();
        let mut rows = 0u64;
        let mut since_mark = 0u64;
        let mut prev_ts: Option<i64> = None;
        for row in reader {
            rows += 1;
            let record = match row {
                Ok(b) if b.ts < resume_from => {
                    report.skipped += 1;
                    continue;
                }
                Ok(b) => {
                    wm.next_ts = wm.next_ts.max(b.ts + step);
                    wm.bars += 1;
                    since_mark += 1;
                    if let (Some(speed), Some(prev)) = (pace, prev_ts) {
                        let wait = (b.ts - prev).max(0) as f64 / 1000.0 / speed;
                        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                    }
                    prev_ts = Some(b.ts);
                    report.bars += 1;
                    OutRecord::from_content(MARKET_BARS_RAW, &id.key(), &b)?
                }
                Err(e) => {
                    report.bad_rows += 1;
                    tracing::warn!(file = %path.display(), line = e.line, reason = %e.reason, "unreadable row dead-lettered");
                    dead_letter(path, &id, &e)?
                }
            };
            pending.push(producer.enqueue(&record).await?);
            if resume && since_mark >= WATERMARK_EVERY {
                for p in pending.drain(..) {
                    p.confirm().await?;
                }
                wm.chunks += 1;
                publish_watermark(&producer, &wm).await?;
                since_mark = 0;
            }
            if rows.is_multiple_of(4096) {
                bar.set_position(
                    bar.position()
                        .saturating_add(size.saturating_mul(4096) / 35_000)
                        .min(total_bytes),
                );
            }
        }
        for p in pending {
            p.confirm().await?;
        }
        if resume && since_mark > 0 {
            wm.chunks += 1;
            publish_watermark(&producer, &wm).await?;
        }
        bar.set_position((bar.position() / size.max(1) * size).max(bar.position()));
        bar.inc(0);
    }
    bar.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn dead_letter(
    path: &Path,
    id: &InstrumentId,
    e: &autotrain_connector_file::RowError,
) -> Result<OutRecord> {
    let source = format!("file:{}", path.display());
    let letter = DeadLetter {
        processor: "produce".into(),
        source_topic: source.clone(),
        source_partition: 0,
        source_offset: e.line as i64,
        key: Some(id.key().into_bytes()),
        payload: Some(e.raw.clone().into_bytes()),
        error_kind: ErrorKind::Invalid,
        error: e.reason.clone(),
        source_timestamp: None,
    };
    let event_id = EventId::derive(&[
        b"produce-dlq",
        source.as_bytes(),
        &e.line.to_le_bytes(),
        e.raw.as_bytes(),
    ]);
    Ok(OutRecord::new(MARKET_BARS_DLQ, &source, &letter, event_id)?)
}
