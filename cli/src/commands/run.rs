//! `autotrain run PROCESSOR`: one processor as a long-running service in its
//! consumer group, until Ctrl-C / SIGTERM (then it drains and commits).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use autotrain_kafka::runner::Counters;
use autotrain_topics::{MARKET_BARS_RAW, MARKET_FLAGS};
use autotrain_validator::{Calendar, ValidatorProcessor};

use crate::config::Config;
use crate::context::{shutdown_signal, Context};

#[derive(Debug, clap::Subcommand)]
pub enum RunCommand {
    /// `market.bars.raw` + ops decisions ⇒ `market.bars`, `market.flags`.
    /// State (last bars, checksums, held bars) is rebuilt on start by
    /// replaying what the group already processed.
    Validator(ValidatorArgs),
}

#[derive(Debug, clap::Args)]
pub struct ValidatorArgs {
    /// Consumer group (instances of one group share the partitions).
    #[arg(long, default_value = "autotrain-validator")]
    pub group: String,
    /// `INSTRUMENT=CALENDAR` (`oanda:EURUSD=fx`), added to the config's
    /// `[validator.calendars]`.
    #[arg(long = "calendar", value_parser = parse_calendar)]
    pub calendars: Vec<(String, Calendar)>,
}

fn parse_calendar(text: &str) -> Result<(String, Calendar), String> {
    let (instrument, name) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected INSTRUMENT=CALENDAR"))?;
    let calendar = Calendar::parse(name)
        .ok_or_else(|| format!("{name:?}: calendars are 24x7, fx, us-equity"))?;
    Ok((instrument.to_string(), calendar))
}

pub async fn run(config: &Config, cmd: RunCommand) -> Result<()> {
    let ctx = Context::connect(config).await?;
    match cmd {
        RunCommand::Validator(args) => {
            let mut calendars: HashMap<String, Calendar> = config
                .validator
                .calendars
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            calendars.extend(args.calendars);
            let rc = ctx.runner_config(
                config,
                &args.group,
                &[MARKET_BARS_RAW.name(), MARKET_FLAGS.name()],
            );
            let counters = Arc::new(Counters::default());
            let (core, stats) = autotrain_kafka::run(
                &ctx.settings,
                &rc,
                ValidatorProcessor::new(calendars),
                counters,
                shutdown_signal(),
            )
            .await?;
            eprintln!(
                "validator stopped: {}",
                serde_json::json!({ "runner": stats, "validated": core.summary, "held": core.held().len() })
            );
        }
    }
    Ok(())
}
