//! `autotrain`: the command-line entry point.
//!
//! # Layout
//! - [`config`] — the TOML + environment configuration.
//! - [`context`] — connects to the configured broker (or starts the
//!   embedded one) and hands out client settings; logging; Ctrl-C.
//! - [`topology`] — each processor's inputs, outputs, restore and time
//!   semantics, and how its core is built: what `run`, `demo` and `replay`
//!   build from.
//! - `commands/` — one file per subcommand: `up`, `topics`, `produce`,
//!   `fetch`, `generate`, `tail`, `run`, `flags`, `demo`, `validate`,
//!   `features`, `training-set`, `train`, `trainings`, `models`, `fit`,
//!   `serve`, `token`, `bench`, `digest`, `replay`.

/// mimalloc: the pipelines allocate many small records; it is markedly
/// faster than the system allocator for that (see `autotrain bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;
mod config;
mod context;
mod topology;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Keeps trading models trained on live market data, over Kafka topics.
#[derive(Debug, Parser)]
#[command(name = "autotrain", version, about, long_about = None)]
pub struct Cli {
    /// Kafka bootstrap servers. Without it (and without `brokers` in the
    /// config) an embedded in-memory broker is started in-process.
    #[arg(long, global = true, env = "AUTOTRAIN_BROKERS")]
    brokers: Option<String>,
    /// TOML configuration file (default: ./autotrain.toml if present).
    #[arg(long, global = true, env = "AUTOTRAIN_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the embedded broker with every catalogue topic and keep it up
    /// until Ctrl-C (other clients connect to the printed address).
    Up(commands::up::Args),
    /// Create, list or check the catalogue's topics on the cluster.
    #[command(subcommand)]
    Topics(commands::topics::TopicsCommand),
    /// Publish bars from CSV files (`ts,open,high,low,close,volume`) to
    /// `market.bars.raw`.
    Produce(commands::produce::Args),
    /// Fetch bars from an exchange REST API (backfill, then live polling)
    /// into `market.bars.raw`, resuming from each stream's watermark.
    Fetch(commands::fetch::Args),
    /// Seeded regime-switching synthetic bars, to CSV files or the broker.
    Generate(commands::generate::Args),
    /// Decode any topic to JSON lines.
    Tail(commands::tail::Args),
    /// Fingerprint what topics hold by content (wall-clock fields and
    /// offsets left out), to compare two runs over the same bars.
    Digest(commands::digest::Args),
    Replay(commands::replay::Args),
    Topology(commands::topology::Args),
    /// Run one processor as a service in its consumer group.
    #[command(subcommand)]
    Run(commands::run::RunCommand),
    /// The human-in-the-loop queue: list flags, approve / reject held bars,
    /// override gaps.
    #[command(subcommand)]
    Flags(commands::flags::FlagsCommand),
    /// The parameter controller: what is in force, kill-switches, resume.
    #[command(subcommand)]
    Params(commands::params::ParamsCommand),
    /// The main job: publish the bundled real bars through the broker into
    /// the validator and account for every one of them.
    Demo(commands::demo::Args),
    /// Check a bar file offline with the validator's rules (gaps, OHLC,
    /// duplicates, anomalies) and print a report.
    Validate(commands::validate::Args),
    /// The feature contract over a bar file, offline (same engines as the
    /// features processor), to a CSV table; `--check` checks the contract.
    Features(commands::features::Args),
    /// The point-in-time feature table (as of a time) of instruments over a
    /// range, from `features`, as a training run reads it.
    TrainingSet(commands::training_set::Args),
    /// Submit a training trigger and follow it to the end with a progress
    /// bar (the trainer must be running: `autotrain run trainer`).
    Train(commands::trainings::TrainArgs),
    /// Training runs: list, show, cancel, retry, rerun from a manifest.
    #[command(subcommand)]
    Trainings(commands::trainings::TrainingsCommand),
    /// The model registry: list, show, promote, rollback.
    #[command(subcommand)]
    Models(commands::models::ModelsCommand),
    /// Fit a model offline to columns of a CSV file.
    #[command(subcommand)]
    Fit(commands::fit::FitCommand),
    /// The control-plane HTTP API (trainings, models, flags, presets,
    /// parameters, outcomes, /health, /metrics, /openapi.json).
    Serve(commands::serve::Args),
    /// Make a bearer token for the API and print its `[[api.tokens]]`
    /// entry (the config holds only the hash).
    Token(commands::serve::TokenArgs),
    /// Measure throughput and latency (prints figures).
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.command.prints_for_a_reader() {
        // Rust ignores SIGPIPE, so a print to a pipe whose reader went
        // away (`autotrain features … | head`) would panic; a report ends
        // quietly instead, as any Unix tool does. Services keep ignoring
        // it (their sockets and logs must not kill them).
        sigpipe::reset();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(cli));
    // A broker call still blocking a thread (a commit waiting on an
    // unreachable coordinator) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

impl Command {
    /// Commands that print a report, a table or records for a reader
    /// (not services, producers or the demo).
    fn prints_for_a_reader(&self) -> bool {
        matches!(
            self,
            Command::Topics(_)
                | Command::Generate(_)
                | Command::Tail(_)
                | Command::Digest(_)
                | Command::Topology(_)
                | Command::Flags(_)
                | Command::Params(_)
                | Command::Validate(_)
                | Command::Features(_)
                | Command::TrainingSet(_)
                | Command::Trainings(_)
                | Command::Models(_)
                | Command::Fit(_)
                | Command::Token(_)
                | Command::Bench(_)
        )
    }
}

async fn run(cli: Cli) -> Result<()> {
    let mut config = config::Config::load(cli.config.as_deref())?;
    if cli.brokers.is_some() {
        config.brokers = cli.brokers.clone();
    }
    if cli.json_logs {
        config.log.format = config::LogFormat::Json;
    }
    context::init_logging(&config.log);
    match cli.command {
        Command::Up(args) => commands::up::run(&config, args).await,
        Command::Topics(cmd) => commands::topics::run(&config, cmd).await,
        Command::Produce(args) => commands::produce::run(&config, args).await,
        Command::Fetch(args) => commands::fetch::run(&config, args).await,
        Command::Generate(args) => commands::generate::run(&config, args).await,
        Command::Tail(args) => commands::tail::run(&config, args).await,
        Command::Digest(args) => commands::digest::run(&config, args).await,
        Command::Replay(args) => commands::replay::run(&config, args).await,
        Command::Topology(args) => commands::topology::run(&args),
        Command::Run(cmd) => commands::run::run(&config, cmd).await,
        Command::Flags(cmd) => commands::flags::run(&config, cmd).await,
        Command::Params(cmd) => commands::params::run(&config, cmd).await,
        Command::Demo(args) => commands::demo::run(&config, args).await,
        Command::Validate(args) => commands::validate::run(&config, args).await,
        Command::Features(args) => commands::features::run(&config, args).await,
        Command::TrainingSet(args) => commands::training_set::run(&config, args).await,
        Command::Train(args) => commands::trainings::train(&config, args).await,
        Command::Trainings(cmd) => commands::trainings::run(&config, cmd).await,
        Command::Models(cmd) => commands::models::run(&config, cmd).await,
        Command::Fit(cmd) => commands::fit::run(&config, cmd).await,
        Command::Serve(args) => commands::serve::run(&config, args).await,
        Command::Token(args) => commands::serve::token(args),
        Command::Bench(cmd) => commands::bench::run(&config, cmd).await,
    }
}
