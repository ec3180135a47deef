//! `autotrain demo`, the main job: publish the bundled real bars (five
//! coins, 30-minute, 2017-10 … 2019-10) through the broker as fast as
//! possible and run the validator processor over them: every raw bar ends
//! as passed (on `market.bars`), flagged and withheld (`market.flags`),
//! duplicate, or dead letter, and the summary accounts for each one.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use autotrain_connector_file::{infer_instrument, BarReader};
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{OutRecord, Producer};
use autotrain_schemas::Bar;
use autotrain_topics::MARKET_BARS_RAW;
use autotrain_validator::ValidatorProcessor;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::Config;
use crate::context::{shutdown_signal, Context};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder (or files) of bar CSVs to replay instead of the bundled data.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Leave the broker up after the summary, until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub bootstrap: String,
    pub files: usize,
    pub bars_in: u64,
    pub bad_rows: u64,
    /// Published on `market.bars` (corrections included).
    pub bars_passed: u64,
    /// Withheld with a flag (invalid OHLC, anomaly awaiting review).
    pub bars_flagged: u64,
    /// Identical re-sends, dropped (by event id or by checksum).
    pub duplicates: u64,
    pub dead_letters: u64,
    /// Flags raised, by kind (gaps and stale bars accompany passed bars).
    pub flags: BTreeMap<&'static str, u64>,
    pub gaps: usize,
    pub seconds: f64,
    pub bars_per_second: f64,
}

fn bundled_data() -> PathBuf {
    let here = PathBuf::from("data");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data")
}

pub async fn run_demo(config: &Config, args: &Args, ctx: &Context) -> Result<Summary> {
    let inputs = if args.data.is_empty() {
        vec![bundled_data()]
    } else {
        args.data.clone()
    };
    let mut files = super::produce::expand(&inputs)?;
    files.retain(|f| {
        infer_instrument(f).is_some_and(|id| id.timeframe == "30m") || !args.data.is_empty()
    });
    ensure!(!files.is_empty(), "no bar files to replay in {inputs:?}");

    let counters = Arc::new(Counters::default());
    let group = format!("autotrain-demo-validator-{}", std::process::id());
    let rc = ctx.runner_config(config, &group, &[MARKET_BARS_RAW.name()]);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let validator = ValidatorProcessor::new(HashMap::new());
    let validating = autotrain_kafka::run(&ctx.settings, &rc, validator, counters.clone(), async {
        let _ = done_rx.await;
    });
    let started = Instant::now();
    let publisher = publish_with_backpressure(ctx, &files, counters.clone(), !args.json);
    let (validated, published) = tokio::join!(validating, async {
        let published = publisher.await;
        if let Ok((bars, _)) = &published {
            let want = *bars;
            while counters.snapshot().received < want {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let _ = done_tx.send(());
        published
    });
    let (bars_in, bad_rows) = published?;
    let (validator, stats) = validated?;
    let seconds = started.elapsed().as_secs_f64();
    let v = &validator.summary;
    let checksum_duplicates = v.flags.get("duplicate").copied().unwrap_or(0);
    Ok(Summary {
        bootstrap: ctx.broker.bootstrap().to_string(),
        files: files.len(),
        bars_in,
        bad_rows,
        bars_passed: v.passed,
        bars_flagged: v.bars - v.passed - checksum_duplicates,
        duplicates: stats.duplicates + checksum_duplicates,
        dead_letters: stats.dead_lettered + bad_rows,
        flags: v.flags.clone(),
        gaps: v.gaps.len(),
        seconds,
        bars_per_second: bars_in as f64 / seconds,
    })
}

/// Publishes the files, never letting the consumer fall more than `LAG`
/// records behind: the embedded broker keeps only the newest ~5 MiB per
/// partition, so an unbounded head start would lose data (and the runner
/// would stop with a data-loss error).
async fn publish_with_backpressure(
    ctx: &Context,
    files: &[PathBuf],
    counters: Arc<Counters>,
    progress: bool,
) -> Result<(u64, u64)> {
    const LAG: u64 = 10_000;
    let producer = Producer::new(&ctx.settings)?;
    let mut rows: Vec<(String, Result<Bar, autotrain_connector_file::RowError>)> = Vec::new();
    for path in files {
        let id = infer_instrument(path).with_context(|| {
            format!(
                "{}: name is not <exchange>_<SYMBOL>_<timeframe>.csv",
                path.display()
            )
        })?;
        rows.extend(BarReader::open(path, id.clone())?.map(|r| (id.key(), r)));
    }
    let bar = if progress {
        ProgressBar::new(rows.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("replaying bars [{bar:40}] {pos}/{len} {elapsed} ({per_sec})")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut bars_in, mut bad) = (0u64, 0u64);
    let mut pending = Vec::new();
    for (key, row) in rows {
        match row {
            Ok(b) => {
                bars_in += 1;
                pending.push(
                    producer
                        .enqueue(&OutRecord::from_content(MARKET_BARS_RAW, &key, &b)?)
                        .await?,
                );
            }
            Err(e) => {
                bad += 1;
                tracing::warn!(%key, line = e.line, reason = %e.reason, "unreadable row");
            }
        }
        if bars_in % 1000 == 0 {
            bar.set_position(bars_in + bad);
            while bars_in.saturating_sub(counters.snapshot().received) > LAG {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    for p in pending {
        p.confirm().await?;
    }
    bar.finish_and_clear();
    Ok((bars_in, bad))
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    let ctx = Context::connect(config).await?;
    if !ctx.broker.is_embedded() {
        ctx.create_topics(config).await?;
    }
    let summary = run_demo(config, &args, &ctx).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("broker            {}", summary.bootstrap);
        println!("files             {}", summary.files);
        println!("bars in           {}", summary.bars_in);
        println!("  passed          {}", summary.bars_passed);
        println!("  flagged, held   {}", summary.bars_flagged);
        println!("  duplicates      {}", summary.duplicates);
        println!(
            "  dead letters    {}",
            summary.dead_letters - summary.bad_rows
        );
        println!("unreadable rows   {}", summary.bad_rows);
        let flags: Vec<String> = summary
            .flags
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("flags             {}", flags.join(", "));
        println!(
            "time              {:.2} s ({:.0} bars/s end to end)",
            summary.seconds, summary.bars_per_second
        );
    }
    let accounted =
        summary.bars_passed + summary.bars_flagged + summary.duplicates + summary.dead_letters
            - summary.bad_rows;
    ensure!(
        accounted == summary.bars_in,
        "not every bar was accounted for: {} in, {accounted} accounted",
        summary.bars_in
    );
    if args.keep_running {
        eprintln!("broker up at {}; Ctrl-C to stop", summary.bootstrap);
        shutdown_signal().await;
    }
    Ok(())
}
