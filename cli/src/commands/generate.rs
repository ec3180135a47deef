//! `autotrain generate`: seeded regime-switching synthetic bars, written as
//! CSV files (one per instrument, named so `produce` infers the instrument,
//! plus `regimes.csv` with the true regime of every bar) or published
//! straight to `market.bars.raw`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{ensure, Context as _, Result};
use autotrain_connector_synthetic::{Generator, SyntheticConfig};
use autotrain_kafka::{OutRecord, Producer};
use autotrain_topics::MARKET_BARS_RAW;
use autotrain_validator::parse_timeframe;
use serde_json::json;

use crate::config::Config;
use crate::context::Context;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 5)]
    pub instruments: usize,
    /// Bars per instrument.
    #[arg(long, default_value_t = 10_000)]
    pub bars: usize,
    #[arg(long, default_value = "1m")]
    pub timeframe: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write CSV files into this folder.
    #[arg(long, conflicts_with = "publish")]
    pub output: Option<PathBuf>,
    /// Publish to `market.bars.raw` instead.
    #[arg(long)]
    pub publish: bool,
}

pub async fn run(config: &Config, args: Args) -> Result<()> {
    ensure!(
        args.output.is_some() || args.publish,
        "say where the bars go: --output DIR or --publish"
    );
    let step = parse_timeframe(&args.timeframe)
        .with_context(|| format!("unknown --timeframe {:?}", args.timeframe))?;
    let generator = Generator::new(SyntheticConfig::new(
        args.seed,
        args.instruments,
        &args.timeframe,
        step,
    ));
    let total = args.instruments * args.bars;
    if let Some(dir) = &args.output {
        std::fs::create_dir_all(dir)?;
        let mut files = (0..args.instruments)
            .map(|i| {
                let path = dir.join(format!(
                    "synthetic_{}_{}.csv",
                    SyntheticConfig::symbol(i),
                    args.timeframe
                ));
                let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
                writeln!(w, "ts,open,high,low,close,volume")?;
                Ok(w)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut regimes = std::io::BufWriter::new(std::fs::File::create(dir.join("regimes.csv"))?);
        writeln!(regimes, "ts,symbol,regime")?;
        for (i, g) in generator.take(total).enumerate() {
            let b = &g.bar;
            writeln!(
                files[i % args.instruments],
                "{},{},{},{},{},{}",
                b.ts,
                b.open,
                b.high,
                b.low,
                b.close,
                b.volume
            )?;
            writeln!(regimes, "{},{},{}", b.ts, b.symbol, g.regime)?;
        }
        for mut f in files {
            f.flush()?;
        }
        regimes.flush()?;
    } else {
        let ctx = Context::connect(config).await?;
        let producer = Producer::new(&ctx.settings)?;
        let mut pending = Vec::with_capacity(total);
        for g in generator.take(total) {
            let record = OutRecord::from_content(MARKET_BARS_RAW, &g.bar.instrument(), &g.bar)?;
            pending.push(producer.enqueue(&record).await?);
        }
        for p in pending {
            p.confirm().await?;
        }
    }
    println!(
        "{}",
        json!({"instruments": args.instruments, "bars": total, "seed": args.seed, "timeframe": args.timeframe})
    );
    Ok(())
}
