//! `autotrain params status|resume`: the parameter controller as ops see
//! it. Folds `param.presets`, `param.updates` and `regimes` from the start
//! into a replica of the controller (what is in force, which kill-switches
//! hold); `resume` publishes a `manual` update with the actor and reason,
//! which the controller applies from the bar after the newest posterior.

use std::time::Duration;

use anyhow::{Context as _, Result};
use autotrain_kafka::{read_topic, OutRecord, Producer};
use autotrain_params::{update_key, Controller, StrategySchema};
use autotrain_schemas::{ParamUpdate, PresetRegistration, RegimePosterior};
use autotrain_topics::{PARAM_PRESETS, PARAM_UPDATES, REGIMES};

use crate::config::Config;
use crate::context::Context;

#[derive(Debug, clap::Subcommand)]
pub enum ParamsCommand {
    /// Every (strategy, instrument): the preset in force and whether its
    /// kill-switch holds.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Reset a tripped kill-switch: the controller chooses again from the
    /// bar after the newest posterior.
    Resume {
        strategy: String,
        instrument: String,
        /// Why (recorded on the update).
        #[arg(long)]
        reason: String,
        /// Who (default: $USER).
        #[arg(long, env = "USER", default_value = "ops")]
        actor: String,
    },
}

/// The controller replica folded from what the topics hold.
async fn load(ctx: &Context, config: &Config) -> Result<Controller> {
    let schemas = StrategySchema::load_dir(&crate::config::schemas_dir(config))?;
    let mut c = Controller::new(config.params.clone(), schemas);
    let settings = ctx.settings.clone();
    let (presets, updates, regimes) = tokio::task::spawn_blocking(move || {
        let t = Duration::from_secs(30);
        anyhow::Ok((
            read_topic::<PresetRegistration>(&settings, PARAM_PRESETS.name(), t)?,
            read_topic::<ParamUpdate>(&settings, PARAM_UPDATES.name(), t)?,
            read_topic::<RegimePosterior>(&settings, REGIMES.name(), t)?,
        ))
    })
    .await??;
    let mut undecodable = 0usize;
    for r in presets {
        match r.value {
            Ok(p) => {
                // Refused registrations were dead-lettered when published.
                let _ = autotrain_params::processor::register(&mut c, &p);
            }
            Err(_) => undecodable += 1,
        }
    }
    for r in updates {
        match r.value {
            Ok(u) => c.on_update(&u),
            Err(_) => undecodable += 1,
        }
    }
    for r in regimes {
        match r.value {
            Ok(p) => c.observe_regime(&p),
            Err(_) => undecodable += 1,
        }
    }
    if undecodable > 0 {
        eprintln!("{undecodable} record(s) could not be decoded and were left out");
    }
    Ok(c)
}

pub async fn run(config: &Config, cmd: ParamsCommand) -> Result<()> {
    let ctx = Context::connect(config).await?;
    let c = load(&ctx, config).await?;
    match cmd {
        ParamsCommand::Status { json } => {
            let mut slots: Vec<_> = c.slots().collect();
            slots.sort_by(|a, b| a.0.cmp(b.0));
            for ((strategy, instrument), slot) in slots {
                let in_force = slot.current.as_ref().map(|(_, id)| id.as_str());
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "strategy": strategy, "instrument": instrument,
                            "config_id": in_force, "kill_switch": slot.killed,
                        })
                    );
                } else {
                    println!(
                        "{strategy:<20} {instrument:<20} {:<22} {}",
                        in_force.unwrap_or("-"),
                        if slot.killed { "KILL-SWITCH HOLDS" } else { "" }
                    );
                }
            }
            Ok(())
        }
        ParamsCommand::Resume {
            strategy,
            instrument,
            reason,
            actor,
        } => {
            anyhow::ensure!(!reason.is_empty(), "--reason is empty");
            let u = c
                .resume(&strategy, &instrument, &format!("cli:{actor}"), &reason)
                .context("nothing to resume")?;
            let record =
                OutRecord::from_content(PARAM_UPDATES, &update_key(&strategy, &instrument), &u)?;
            Producer::new(&ctx.settings)?
                .enqueue(&record)
                .await?
                .confirm()
                .await?;
            println!("{}", serde_json::to_string(&u)?);
            Ok(())
        }
    }
}
