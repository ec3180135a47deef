//! `autotrain flags list|show|approve|reject|override`: the human-in-the-loop
//! queue. Reads `market.flags` from the start into a [`ReviewQueue`];
//! decisions are published back to `market.flags` as events (with actor
//! and time), where the validator releases or discards held bars and the
//! trainer lifts gap blocks.

use std::time::Duration;

use anyhow::{Context as _, Result};
use autotrain_kafka::{read_topic, OutRecord, Producer};
use autotrain_schemas::ValidationFlag;
use autotrain_topics::MARKET_FLAGS;
use autotrain_validator::{Action, ReviewQueue, StateFilter};

use crate::config::Config;
use crate::context::Context;

#[derive(Debug, clap::Subcommand)]
pub enum FlagsCommand {
    /// Flags in a state (default: pending anomalies), as a table or JSON lines.
    List {
        #[arg(long, value_enum, default_value = "pending")]
        state: StateFilter,
        /// Only this instrument (`exchange:SYMBOL`).
        #[arg(long)]
        instrument: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One flag as raised and as it stands now (JSON).
    Show { flag_id: String },
    /// A held anomalous bar is genuine: publish it on `market.bars`.
    Approve(Decision),
    /// A held anomalous bar is bad data: keep it out.
    Reject(Decision),
    /// Accept an open gap (trainings over it are no longer blocked) or
    /// release a held bar.
    Override(Decision),
}

#[derive(Debug, clap::Args)]
pub struct Decision {
    pub flag_id: String,
    /// Who decides (default: $USER).
    #[arg(long, env = "USER", default_value = "ops")]
    pub actor: String,
    /// Why (kept in the decision event's detail).
    #[arg(long)]
    pub reason: Option<String>,
}

async fn load(ctx: &Context) -> Result<ReviewQueue> {
    let settings = ctx.settings.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_topic::<ValidationFlag>(&settings, MARKET_FLAGS.name(), Duration::from_secs(30))
    })
    .await??;
    let mut queue = ReviewQueue::new();
    let mut undecodable = 0usize;
    let mut flags: Vec<(i64, ValidationFlag)> = Vec::new();
    for r in records {
        match r.value {
            Ok(f) => flags.push((r.timestamp.unwrap_or(0), f)),
            Err(e) => {
                undecodable += 1;
                tracing::warn!(partition = r.partition, offset = r.offset, error = %e, "undecodable flag");
            }
        }
    }
    if undecodable > 0 {
        eprintln!("{undecodable} record(s) on market.flags could not be decoded (see the log)");
    }
    // Partitions are per instrument; a stable sort by broker time keeps each
    // flag's decision after its finding.
    flags.sort_by_key(|(t, _)| *t);
    for (_, f) in &flags {
        queue.apply(f);
    }
    Ok(queue)
}

fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub async fn run(config: &Config, cmd: FlagsCommand) -> Result<()> {
    let ctx = Context::connect(config).await?;
    let queue = load(&ctx).await?;
    let (decision, action) = match cmd {
        FlagsCommand::List {
            state,
            instrument,
            json,
        } => {
            let items: Vec<_> = queue
                .list(state)
                .into_iter()
                .filter(|i| {
                    instrument
                        .as_ref()
                        .is_none_or(|x| &i.current.instrument == x)
                })
                .collect();
            for i in &items {
                if json {
                    println!("{}", serde_json::to_string(&i.current)?);
                } else {
                    println!(
                        "{:<48} {:<9} {:<8} {:<16} {}  {}",
                        i.current.flag_id,
                        format!("{:?}", i.current.kind).to_lowercase(),
                        format!("{:?}", i.current.state).to_lowercase(),
                        i.current.instrument,
                        when(i.current.ts),
                        i.current.detail
                    );
                }
            }
            if !json {
                eprintln!("{} flag(s)", items.len());
            }
            return Ok(());
        }
        FlagsCommand::Show { flag_id } => {
            let item = queue
                .get(&flag_id)
                .with_context(|| format!("no flag {flag_id:?} on market.flags"))?;
            println!("{}", serde_json::to_string_pretty(item)?);
            return Ok(());
        }
        FlagsCommand::Approve(d) => (d, Action::Approve),
        FlagsCommand::Reject(d) => (d, Action::Reject),
        FlagsCommand::Override(d) => (d, Action::Override),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let event = queue.decide(
        &decision.flag_id,
        action,
        &decision.actor,
        decision.reason.as_deref(),
        now,
    )?;
    let producer = Producer::new(&ctx.settings)?;
    let record = OutRecord::from_content(MARKET_FLAGS, &event.instrument, &event)?;
    producer.enqueue(&record).await?.confirm().await?;
    println!("{}", serde_json::to_string(&event)?);
    Ok(())
}
