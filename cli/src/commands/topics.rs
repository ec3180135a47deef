//! `autotrain topics create|list|check`.

use anyhow::{bail, Result};
use autotrain_kafka::{check_topics, list_topics};
use autotrain_topics::catalogue;

use crate::config::Config;
use crate::context::Context;

#[derive(Debug, clap::Subcommand)]
pub enum TopicsCommand {
    /// Create the catalogue topics that do not exist yet.
    Create,
    /// List the cluster's topics with partitions and configs.
    List,
    /// Compare the cluster with the catalogue; exit 1 on any difference.
    Check,
}

pub async fn run(config: &Config, cmd: TopicsCommand) -> Result<()> {
    let ctx = Context::connect(config).await?;
    match cmd {
        TopicsCommand::Create => {
            for (name, created) in ctx.create_topics(config).await? {
                println!("{name}\t{}", if created { "created" } else { "exists" });
            }
        }
        TopicsCommand::List => {
            for t in list_topics(&ctx.settings, true).await? {
                let configs = t.configs.map_or_else(
                    || "-".to_string(),
                    |c| {
                        ["cleanup.policy", "retention.ms"]
                            .iter()
                            .filter_map(|k| c.get(*k).map(|v| format!("{k}={v}")))
                            .collect::<Vec<_>>()
                            .join(" ")
                    },
                );
                let known = ctx
                    .settings
                    .logical(&t.name)
                    .and_then(|l| catalogue().get(l));
                println!(
                    "{}\t{} partitions\t{}\t{}",
                    t.name,
                    t.partitions,
                    configs,
                    known.map_or("(not in catalogue)", |s| s.value.as_str())
                );
            }
        }
        TopicsCommand::Check => {
            let drift = check_topics(&ctx.settings, &catalogue().topics).await?;
            let errors = drift.iter().filter(|d| d.is_error()).count();
            for d in &drift {
                println!("{} {d}", if d.is_error() { "DRIFT" } else { "note " });
            }
            if errors > 0 {
                bail!("{errors} difference(s) between the catalogue and the cluster");
            }
            println!(
                "ok: {} catalogue topics match the cluster",
                catalogue().topics.len()
            );
        }
    }
    Ok(())
}
