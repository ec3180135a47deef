//! `autotrain models list|show|promote|rollback`: the registry folded from
//! `model.updates`; promote and rollback are commands to the trainer
//! (`training.commands`), which re-scores a rollback target on the
//! reference set and publishes the alias move.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use autotrain_kafka::{read_topic, ClientSettings, OutRecord, Producer};
use autotrain_schemas::{CommandAction, DeadLetter, ModelVersion, TrainingCommand};
use autotrain_topics::{MARKET_BARS_DLQ, MODEL_UPDATES, TRAINING_COMMANDS};
use autotrain_trainer::{Registry, PROD, STAGING};

use crate::config::Config;
use crate::context::{now_ms, Context};

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Model keys with their versions and aliases.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One model key: versions (metrics, manifest, tags), aliases, and the
    /// registry's event history (JSON).
    Show { model_key: String },
    /// Move `prod` to a version (overrides the guardrails; recorded with
    /// the actor).
    Promote(AliasArgs),
    /// Move `prod` back to an earlier version, after the trainer re-scores
    /// it on prod's reference set: refused when it scores below prod there
    /// by more than `[trainer.guardrails] rollback_tolerance`, unless
    /// `--force` with a `--reason`. `--plan` re-scores here and says what
    /// would happen, without acting.
    Rollback(AliasArgs),
    /// Write a version's model to a file for other runtimes: a gbdt
    /// forecast as ONNX (`TreeEnsembleRegressor`, checked against
    /// onnxruntime in the tests) or JSON; an HMM as JSON (the layout in
    /// docs/forecast.md and docs/hmm.md).
    Export(ExportArgs),
    /// An HMM version's online forward filter over a feature table
    /// (`autotrain features`), as the regime processor runs it after a
    /// `prod` move: from the start distribution, rows with a missing
    /// column passed over. CSV `ts,p0,…,loglik` (what the documented JSON
    /// layout must reproduce elsewhere; docs/hmm.md).
    Posteriors(PosteriorsArgs),
}

#[derive(Debug, clap::Args)]
pub struct PosteriorsArgs {
    pub model_key: String,
    /// Default: the version in `prod`.
    #[arg(long)]
    pub version: Option<i32>,
    /// A feature table CSV (`ts` and the model's columns).
    #[arg(long, short)]
    pub input: std::path::PathBuf,
    #[arg(long, short)]
    pub output: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    pub model_key: String,
    /// Default: the version in `prod`.
    #[arg(long)]
    pub version: Option<i32>,
    /// `onnx` (gbdt only) or `json`.
    #[arg(long, default_value = "json")]
    pub format: String,
    #[arg(long, short)]
    pub output: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct AliasArgs {
    pub model_key: String,
    #[arg(long)]
    pub version: i32,
    #[arg(long, env = "USER", default_value = "ops")]
    pub actor: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Seconds to wait for the trainer's answer.
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
    /// Rollback: go through although the re-score is worse than the
    /// tolerance (needs `--reason`).
    #[arg(long)]
    pub force: bool,
    /// Rollback: re-score here (the reference store must be readable from
    /// this host) and print the verdict; nothing is sent.
    #[arg(long)]
    pub plan: bool,
}

/// The registry as `model.updates` holds it now.
pub async fn load(settings: &ClientSettings) -> Result<Registry> {
    let s = settings.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_topic::<ModelVersion>(&s, MODEL_UPDATES.name(), Duration::from_secs(30))
    })
    .await??;
    let mut events: Vec<ModelVersion> = records.into_iter().filter_map(|r| r.value.ok()).collect();
    events.sort_by_key(|e| e.at);
    let mut r = Registry::new();
    for e in &events {
        if let Err(err) = r.apply(e) {
            tracing::warn!(error = %err, "registry event refused");
        }
    }
    Ok(r)
}

fn metric(v: &ModelVersion, name: &str) -> String {
    v.metrics
        .iter()
        .find(|m| m.name == name)
        .map_or("-".into(), |m| format!("{:.4}", m.value))
}

pub async fn run(config: &Config, cmd: ModelsCommand) -> Result<()> {
    let ctx = Context::connect(config).await?;
    let registry = load(&ctx.settings).await?;
    let (action, a) = match cmd {
        ModelsCommand::Export(args) => return export(&registry, &args),
        ModelsCommand::Posteriors(args) => return posteriors(&registry, &args),
        ModelsCommand::List { json } => {
            for key in registry.keys() {
                let Some(m) = registry.model(key) else {
                    continue;
                };
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "model_key": key,
                            "versions": m.versions.len(),
                            "aliases": m.aliases,
                        })
                    );
                } else {
                    println!(
                        "{key:<36} versions {:<4} prod {:<6} staging {}",
                        m.versions.len(),
                        m.aliases.get(PROD).map_or("-".into(), |v| format!("v{v}")),
                        m.aliases
                            .get(STAGING)
                            .map_or("-".into(), |v| format!("v{v}")),
                    );
                }
            }
            return Ok(());
        }
        ModelsCommand::Show { model_key } => {
            let m = registry
                .model(&model_key)
                .with_context(|| format!("no model {model_key:?} on model.updates"))?;
            for v in m.versions.values() {
                eprintln!(
                    "v{:<4} {} loglik/bar {} trend sharpe {} max dd {} hash {}…",
                    v.version,
                    v.training_id.as_deref().unwrap_or("-"),
                    metric(v, "loglik_per_bar"),
                    metric(v, "trend_sharpe"),
                    metric(v, "trend_max_drawdown"),
                    &v.parameter_hash[..12.min(v.parameter_hash.len())]
                );
            }
            let brief: Vec<serde_json::Value> = m
                .versions
                .values()
                .map(|v| {
                    let mut j = serde_json::to_value(v).unwrap_or_default();
                    if let Some(o) = j.as_object_mut() {
                        o.remove("parameters");
                    }
                    j
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "model_key": model_key,
                    "aliases": m.aliases,
                    "versions": brief,
                    "events": m.events.iter().map(|e| serde_json::json!({
                        "event": e.event, "version": e.version, "alias": e.alias,
                        "previous_version": e.previous_version, "tags": e.tags, "at": e.at,
                    })).collect::<Vec<_>>(),
                }))?
            );
            return Ok(());
        }
        ModelsCommand::Promote(a) => (CommandAction::Promote, a),
        ModelsCommand::Rollback(a) => (CommandAction::Rollback, a),
    };
    // Refuse locally what the trainer would refuse.
    let check = match action {
        CommandAction::Promote => registry
            .promote(&a.model_key, a.version, PROD, 0)
            .map(|_| ()),
        _ => registry.rollback(&a.model_key, a.version, 0).map(|_| ()),
    };
    check?;
    if action == CommandAction::Rollback && a.plan {
        return plan(config, &registry, &a);
    }
    anyhow::ensure!(
        !a.force || !a.reason.trim().is_empty(),
        "--force needs a --reason (it is recorded with the rollback)"
    );
    let now = now_ms();
    let c = TrainingCommand {
        command_id: format!("cmd-{now}-{}", std::process::id()),
        action,
        training_id: None,
        model_key: Some(a.model_key.clone()),
        version: Some(a.version),
        tenant: None,
        actor: a.actor.clone(),
        reason: a.reason.clone(),
        at: now,
        force: a.force,
    };
    Producer::new(&ctx.settings)?
        .send(&OutRecord::from_content(
            TRAINING_COMMANDS,
            &a.model_key,
            &c,
        )?)
        .await?;
    let tag = format!("command:{}", c.command_id);
    let deadline = Instant::now() + Duration::from_secs(a.timeout_s);
    while Instant::now() < deadline {
        let r = load(&ctx.settings).await?;
        if let Some(e) = r
            .model(&a.model_key)
            .and_then(|m| m.events.iter().find(|e| e.tags.contains(&tag)))
        {
            println!(
                "{} prod → v{} (was {}){}",
                a.model_key,
                e.version,
                e.previous_version.map_or("-".into(), |v| format!("v{v}")),
                e.metrics
                    .iter()
                    .find(|m| m.name == "rescored_loglik_per_bar")
                    .map(|m| format!("; re-scored loglik/bar {:.4}", m.value))
                    .unwrap_or_default()
            );
            return Ok(());
        }
        if let Some(why) = refusal(&ctx.settings, &c.command_id).await? {
            bail!("{why}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!(
        "no answer from the trainer within {} s (is `autotrain run trainer` running? refused commands go to market.bars.dlq)",
        a.timeout_s
    )
}

/// The trainer's refusal of command `id`, if it dead-lettered it.
async fn refusal(settings: &ClientSettings, id: &str) -> Result<Option<String>> {
    let settings = settings.clone();
    let needle = format!("command {id} ");
    let letters = tokio::task::spawn_blocking(move || {
        read_topic::<DeadLetter>(&settings, MARKET_BARS_DLQ.name(), Duration::from_secs(10))
    })
    .await??;
    Ok(letters
        .into_iter()
        .filter_map(|r| r.value.ok())
        .find(|d| d.processor == "trainer" && d.error.contains(&needle))
        .map(|d| d.error))
}

/// `models rollback --plan`: the trainer's check, run here.
fn plan(config: &Config, registry: &Registry, a: &AliasArgs) -> Result<()> {
    let m = registry
        .model(&a.model_key)
        .with_context(|| format!("no model {:?}", a.model_key))?;
    let prod = m.alias(PROD).context("no version is prod")?;
    let target = m
        .versions
        .get(&a.version)
        .with_context(|| format!("{} has no version {}", a.model_key, a.version))?;
    let store = autotrain_trainer::service::ReferenceStore::new(&config.trainer.store_dir);
    let rescored = autotrain_trainer::service::intake::rescore(
        &store,
        Some(prod),
        target,
        config.trainer.defaults.cost_bps,
    )
    .map_err(anyhow::Error::msg)
    .context("re-scoring here (is the trainer's store_dir readable from this host?)")?;
    let g = &config.trainer.guardrails;
    let verdict = g.rollback_check(&prod.metrics, &rescored);
    println!(
        "{} prod v{} → v{}: {} on prod's reference set {:.4} (prod {:.4}, tolerance {})",
        a.model_key,
        prod.version,
        a.version,
        g.metric,
        rescored
            .iter()
            .find(|r| r.name == format!("rescored_{}", g.metric))
            .map_or(f64::NAN, |r| r.value),
        prod.metrics
            .iter()
            .find(|r| r.name == g.metric)
            .map_or(f64::NAN, |r| r.value),
        g.rollback_tolerance
    );
    match verdict {
        Ok(_) => println!(
            "verified: `autotrain models rollback {} --version {}` goes through",
            a.model_key, a.version
        ),
        Err(why) => println!(
            "would be refused: {why}\nto override: `autotrain models rollback {} --version {} --force --reason \"…\"`",
            a.model_key, a.version
        ),
    }
    Ok(())
}

/// The version `version` (default: prod) of `key`.
fn version_of<'a>(
    registry: &'a Registry,
    key: &str,
    version: Option<i32>,
) -> Result<&'a ModelVersion> {
    let model = registry
        .model(key)
        .with_context(|| format!("no model key {key:?}"))?;
    let version = match version {
        Some(v) => v,
        None => *model
            .aliases
            .get(PROD)
            .with_context(|| format!("{key} has no prod version: name one with --version"))?,
    };
    model
        .versions
        .get(&version)
        .with_context(|| format!("{key} has no version {version}"))
}

/// `autotrain models posteriors`.
fn posteriors(registry: &Registry, args: &PosteriorsArgs) -> Result<()> {
    use autotrain_trainer::{OnlineFilter, TrainedModel};
    let v = version_of(registry, &args.model_key, args.version)?;
    let model = v
        .parameters
        .as_deref()
        .context("the version carries no inline parameters")
        .and_then(|b| {
            TrainedModel::from_bytes(b).context("its parameters do not load as an HMM")
        })?;
    let mut reader =
        csv::Reader::from_path(&args.input).with_context(|| args.input.display().to_string())?;
    let header = reader.headers()?.clone();
    let idx: Vec<usize> = model
        .columns
        .iter()
        .map(|c| {
            header
                .iter()
                .position(|h| h == c)
                .with_context(|| format!("no column {c:?} in {}", args.input.display()))
        })
        .collect::<Result<_>>()?;
    let mut w =
        csv::Writer::from_path(&args.output).with_context(|| args.output.display().to_string())?;
    let mut head = vec!["ts".to_string()];
    head.extend((0..model.hmm.k).map(|s| format!("p{s}")));
    head.push("loglik".into());
    w.write_record(&head)?;
    let mut filter = OnlineFilter::new();
    let (mut rows, mut skipped) = (0usize, 0usize);
    for record in reader.records() {
        let record = record?;
        let row: Option<Vec<f64>> = idx
            .iter()
            .map(|i| {
                record
                    .get(*i)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite())
            })
            .collect();
        let Some(row) = row else {
            skipped += 1;
            continue;
        };
        let (p, loglik) = filter.step(&model.hmm, &model.standardise(&row))?;
        let mut out = vec![record.get(0).unwrap_or_default().to_string()];
        out.extend(p.iter().map(|x| format!("{x:?}")));
        out.push(format!("{loglik:?}"));
        w.write_record(&out)?;
        rows += 1;
    }
    w.flush()?;
    eprintln!(
        "{} v{}: {rows} posterior(s) to {} ({skipped} row(s) with a missing column passed over)",
        args.model_key,
        v.version,
        args.output.display()
    );
    Ok(())
}

/// `autotrain models export`.
fn export(registry: &Registry, args: &ExportArgs) -> Result<()> {
    use autotrain_trainer::forecast::{onnx, ForecastModel};
    use autotrain_trainer::spec::Family;
    let v = version_of(registry, &args.model_key, args.version)?;
    let version = v.version;
    let bytes = v
        .parameters
        .as_deref()
        .context("the version carries no inline parameters")?;
    let family = Family::of(v);
    let out = match (args.format.as_str(), family) {
        ("json", _) => bytes.to_vec(),
        ("onnx", Family::Gbdt) => onnx::export(
            &ForecastModel::from_json(bytes).context("its parameters do not load as a forecast")?,
            env!("CARGO_PKG_VERSION"),
        ),
        ("onnx", Family::Hmm) => anyhow::bail!(
            "{} v{version} is an HMM: ONNX has no HMM operator; export it as json",
            args.model_key
        ),
        (other, _) => anyhow::bail!("--format is onnx or json, not {other:?}"),
    };
    std::fs::write(&args.output, &out).with_context(|| args.output.display().to_string())?;
    eprintln!(
        "{} v{version} ({family:?}) written as {} to {} ({} bytes)",
        args.model_key,
        args.format,
        args.output.display(),
        out.len()
    );
    Ok(())
}
