//! `autotrain train` and `autotrain trainings list|show|cancel|retry|rerun`:
//! submit a trigger and follow it with a progress bar; read the trainings
//! view folded from `training.status`; ops commands go to
//! `training.commands` (the trainer answers on `training.status`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use autotrain_kafka::{read_topic, ClientSettings, OutRecord, Producer};
use autotrain_schemas::{
    CommandAction, Param, Priority, TrainingCommand, TrainingState, TrainingStatus,
    TrainingTrigger, TriggerReason,
};
use autotrain_topics::{TRAINING_COMMANDS, TRAINING_STATUS, TRAINING_TRIGGERS};
use autotrain_trainer::queue::{rerun_trigger, training_id};
use autotrain_trainer::view::{trainings, TrainingView};

use crate::config::Config;
use crate::context::{now_ms, Context};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Registry key of the model (e.g. `hmm/bitfinex:BTCUSD`).
    #[arg(long)]
    pub model_key: String,
    /// Instruments whose features train it (repeatable; none = all).
    #[arg(long = "instrument")]
    pub instruments: Vec<String>,
    /// `strict` (each bar trains once) or `sliding` (newest window).
    #[arg(long)]
    pub mode: Option<String>,
    /// More hyper-parameters, `name=value` (states, covariance, columns,
    /// train_window, split_version, max_iter, tol, restarts, …).
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// gbdt: a seeded hyper-parameter search, `trials=N[,metric=rmsle]`
    /// (the `search_trials` and `search_metric` hyper-parameters;
    /// docs/forecast.md).
    #[arg(long)]
    pub search: Option<String>,
    #[arg(long, default_value_t = 42)]
    pub seed: i64,
    #[arg(long, value_enum, default_value = "normal")]
    pub priority: PriorityArg,
    /// Move `prod` to the new version if the guardrails hold.
    #[arg(long)]
    pub auto_promote: bool,
    /// Train only on features of this contract version.
    #[arg(long)]
    pub feature_contract: Option<String>,
    #[arg(long, value_enum, default_value = "manual")]
    pub reason: ReasonArg,
    #[command(flatten)]
    pub follow: Follow,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PriorityArg {
    Low,
    Normal,
    High,
    Urgent,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReasonArg {
    Manual,
    Backfill,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Follow {
    /// Return once the trigger is published.
    #[arg(long)]
    pub no_follow: bool,
    /// Give up following after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
    /// Print the final view as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum TrainingsCommand {
    /// Trainings, newest first.
    List {
        #[arg(long)]
        model_key: Option<String>,
        /// queued, waiting_data, blocked, running, completed, failed, cancelled
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: usize,
        #[arg(long, default_value_t = 20)]
        page_size: usize,
        #[arg(long)]
        json: bool,
    },
    /// One training: state, metrics and every lifecycle event (JSON).
    Show { training_id: String },
    /// Cancel a queued, waiting, blocked or running training.
    Cancel(CommandArgs),
    /// Queue a failed or cancelled training again (next attempt, same id).
    Retry(CommandArgs),
    /// Train again from the manifest of a completed training; the new
    /// version's parameter hash must equal the original's.
    Rerun {
        training_id: String,
        #[command(flatten)]
        follow: Follow,
    },
}

#[derive(Debug, clap::Args)]
pub struct CommandArgs {
    pub training_id: String,
    #[arg(long, env = "USER", default_value = "ops")]
    pub actor: String,
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Every training, folded from `training.status` (time order).
pub async fn load(settings: &ClientSettings) -> Result<BTreeMap<String, TrainingView>> {
    let s = settings.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_topic::<TrainingStatus>(&s, TRAINING_STATUS.name(), Duration::from_secs(30))
    })
    .await??;
    let mut statuses: Vec<TrainingStatus> =
        records.into_iter().filter_map(|r| r.value.ok()).collect();
    statuses.sort_by_key(|s| s.at);
    Ok(trainings(statuses))
}

fn state_name(s: TrainingState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn parse_params(args: &[String]) -> Result<Vec<Param>> {
    args.iter()
        .map(|p| {
            let (name, value) = p
                .split_once('=')
                .with_context(|| format!("--param {p:?}: expected name=value"))?;
            Ok(Param {
                name: name.trim().into(),
                value: value.trim().into(),
            })
        })
        .collect()
}

async fn publish_trigger(ctx: &Context, t: &TrainingTrigger) -> Result<()> {
    let producer = Producer::new(&ctx.settings)?;
    producer
        .send(&OutRecord::from_content(
            TRAINING_TRIGGERS,
            &t.model_key,
            t,
        )?)
        .await?;
    Ok(())
}

/// Follows a training until it ends; a progress bar on a terminal.
pub async fn follow(ctx: &Context, id: &str, f: &Follow) -> Result<TrainingView> {
    let bar = indicatif::ProgressBar::new(1_000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg:40} [{bar:30}] {percent:>3}%")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let deadline = Instant::now() + Duration::from_secs(f.timeout_s);
    let mut said = String::new();
    loop {
        if let Some(v) = load(&ctx.settings).await?.remove(id) {
            // Say why a run waits (once per reason): ops may have to act.
            if matches!(v.state, TrainingState::Blocked | TrainingState::WaitingData)
                && v.message != said
            {
                said = v.message.clone();
                bar.println(format!("{}: {said}", state_name(v.state)));
            }
            bar.set_position((v.progress * 1_000.0) as u64);
            bar.set_message(format!(
                "{id} {} {}",
                state_name(v.state),
                v.stage.clone().unwrap_or_default()
            ));
            if v.is_terminal() {
                bar.finish_and_clear();
                return Ok(v);
            }
        }
        if Instant::now() > deadline {
            bar.abandon();
            bail!("{id} has not finished after {} s", f.timeout_s);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn report(v: &TrainingView, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        let pick = |n: &str| v.metric(n).map_or("-".into(), |x| format!("{x:.4}"));
        println!(
            "{} {} (attempt {}): {}{}",
            v.training_id,
            state_name(v.state),
            v.attempt,
            v.message,
            v.error
                .as_ref()
                .map(|e| format!(" — {e}"))
                .unwrap_or_default()
        );
        if let Some(version) = v.model_version {
            println!(
                "  {} v{version}: loglik/bar {}  champion {}  trend sharpe {}  max dd {}  rows {}",
                v.model_key,
                pick("loglik_per_bar"),
                pick("champion_loglik_per_bar"),
                pick("trend_sharpe"),
                pick("trend_max_drawdown"),
                pick("train_rows"),
            );
        }
    }
    if v.state != TrainingState::Completed {
        bail!("{} ended {}", v.training_id, state_name(v.state));
    }
    Ok(())
}

pub async fn train(config: &Config, a: TrainArgs) -> Result<()> {
    let ctx = Context::connect(config).await?;
    let mut hyperparams = parse_params(&a.params)?;
    if let Some(mode) = &a.mode {
        hyperparams.push(Param {
            name: "mode".into(),
            value: mode.clone(),
        });
    }
    if let Some(search) = &a.search {
        for part in search.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = match part.split_once('=') {
                Some(("trials", v)) => ("search_trials", v),
                Some(("metric", v)) => ("search_metric", v),
                _ => bail!("--search takes trials=N[,metric=M], not {part:?}"),
            };
            hyperparams.push(Param {
                name: name.into(),
                value: value.trim().into(),
            });
        }
    }
    // Refuse what the trainer would refuse, before publishing.
    autotrain_trainer::spec::TrainSpec::with_params(&config.trainer.defaults, &hyperparams)?;
    let now = now_ms();
    let t = TrainingTrigger {
        trigger_id: format!("cli-{now}-{}", std::process::id()),
        model_key: a.model_key.clone(),
        tenant: None,
        reason: match a.reason {
            ReasonArg::Manual => TriggerReason::Manual,
            ReasonArg::Backfill => TriggerReason::Backfill,
        },
        instruments: a.instruments.clone(),
        dataset_version: None,
        feature_contract_version: a.feature_contract.clone(),
        hyperparams,
        seed: a.seed,
        priority: match a.priority {
            PriorityArg::Low => Priority::Low,
            PriorityArg::Normal => Priority::Normal,
            PriorityArg::High => Priority::High,
            PriorityArg::Urgent => Priority::Urgent,
        },
        auto_promote: a.auto_promote,
        evidence: None,
        rerun_of: None,
        created_at: now,
        revealed_at: None,
    };
    publish_trigger(&ctx, &t).await?;
    let id = training_id(&t);
    eprintln!("submitted {id}");
    if a.follow.no_follow {
        println!("{id}");
        return Ok(());
    }
    let v = follow(&ctx, &id, &a.follow).await?;
    report(&v, a.follow.json)
}

async fn command(
    ctx: &Context,
    views: &BTreeMap<String, TrainingView>,
    action: CommandAction,
    a: &CommandArgs,
) -> Result<()> {
    let v = views
        .get(&a.training_id)
        .with_context(|| format!("no training {:?} on training.status", a.training_id))?;
    let allowed = match action {
        CommandAction::Cancel => !v.is_terminal(),
        _ => matches!(v.state, TrainingState::Failed | TrainingState::Cancelled),
    };
    if !allowed {
        bail!(
            "{} is {}: cannot {}",
            a.training_id,
            state_name(v.state),
            format!("{action:?}").to_lowercase()
        );
    }
    let now = now_ms();
    let c = TrainingCommand {
        command_id: format!("cmd-{now}-{}", std::process::id()),
        action,
        training_id: Some(a.training_id.clone()),
        model_key: Some(v.model_key.clone()),
        version: None,
        tenant: None,
        actor: a.actor.clone(),
        reason: a.reason.clone(),
        at: now,
        force: false,
    };
    let producer = Producer::new(&ctx.settings)?;
    producer
        .send(&OutRecord::from_content(
            TRAINING_COMMANDS,
            &a.training_id,
            &c,
        )?)
        .await?;
    let seen = v.events.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(now_v) = load(&ctx.settings).await?.remove(&a.training_id) {
            if now_v.events.len() > seen {
                println!(
                    "{} {}: {}",
                    a.training_id,
                    state_name(now_v.state),
                    now_v.message
                );
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!("no answer from the trainer within 30 s (is `autotrain run trainer` running?)")
}

pub async fn run(config: &Config, cmd: TrainingsCommand) -> Result<()> {
    let ctx = Context::connect(config).await?;
    let views = load(&ctx.settings).await?;
    match cmd {
        TrainingsCommand::List {
            model_key,
            state,
            page,
            page_size,
            json,
        } => {
            let mut items: Vec<&TrainingView> = views
                .values()
                .filter(|v| model_key.as_ref().is_none_or(|k| &v.model_key == k))
                .filter(|v| state.as_ref().is_none_or(|s| &state_name(v.state) == s))
                .collect();
            items.sort_by_key(|v| std::cmp::Reverse((v.created_at, v.training_id.clone())));
            let total = items.len();
            let page_size = page_size.max(1);
            for v in items
                .into_iter()
                .skip((page.max(1) - 1) * page_size)
                .take(page_size)
            {
                if json {
                    let mut brief = serde_json::to_value(v)?;
                    if let Some(o) = brief.as_object_mut() {
                        o.remove("events");
                    }
                    println!("{brief}");
                } else {
                    println!(
                        "{:<36} {:<28} {:<12} {:>4.0}% v{:<4} {}",
                        v.training_id,
                        v.model_key,
                        state_name(v.state),
                        v.progress * 100.0,
                        v.model_version.map_or("-".into(), |x| x.to_string()),
                        v.message
                    );
                }
            }
            if !json {
                eprintln!(
                    "{total} training(s), page {page} of {}",
                    total.div_ceil(page_size).max(1)
                );
            }
        }
        TrainingsCommand::Show { training_id } => {
            let v = views
                .get(&training_id)
                .with_context(|| format!("no training {training_id:?} on training.status"))?;
            println!("{}", serde_json::to_string_pretty(v)?);
        }
        TrainingsCommand::Cancel(a) => command(&ctx, &views, CommandAction::Cancel, &a).await?,
        TrainingsCommand::Retry(a) => command(&ctx, &views, CommandAction::Retry, &a).await?,
        TrainingsCommand::Rerun {
            training_id: of,
            follow: f,
        } => {
            let v = views
                .get(&of)
                .with_context(|| format!("no training {of:?} on training.status"))?;
            if v.model_version.is_none() {
                bail!("{of} registered no model version; nothing to rerun");
            }
            let now = now_ms();
            let t = rerun_trigger(
                format!("rerun-{now}-{}", std::process::id()),
                &v.model_key,
                &of,
                None,
                now,
            );
            publish_trigger(&ctx, &t).await?;
            let id = training_id(&t);
            eprintln!("submitted {id} (rerun of {of})");
            if f.no_follow {
                println!("{id}");
                return Ok(());
            }
            let done = follow(&ctx, &id, &f).await?;
            report(&done, f.json)?;
            match done.metric("rerun_parameter_hash_matches") {
                Some(1.0) => println!("parameter hash matches {of}"),
                _ => bail!("the rerun's parameter hash differs from {of}"),
            }
        }
    }
    Ok(())
}
