//! Configuration: a documented serde struct read from a TOML file
//! (`--config`, else `./autotrain.toml` if present), then `AUTOTRAIN__…`
//! environment variables (`AUTOTRAIN__RUNNER__DEDUPE_WINDOW=5000`), then
//! command-line flags. Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kafka bootstrap servers (`host:port,…`). Unset: start the embedded,
    /// in-memory broker in-process.
    pub brokers: Option<String>,
    /// Put in front of every catalogue topic name (one cluster, several
    /// deployments).
    pub topic_prefix: String,
    /// Replication factor for `topics create`; -1 takes the broker default.
    pub replication_factor: i32,
    /// Extra librdkafka properties for every client (`security.protocol`, …).
    pub kafka: BTreeMap<String, String>,
    pub runner: RunnerSettings,
    pub validator: ValidatorSettings,
    /// Drift detection (`autotrain run drift`).
    pub drift: autotrain_drift::DriftConfig,
    pub scheduler: SchedulerSettings,
    /// The trainer (`autotrain run trainer`): queue capacity, retries,
    /// alerts, flag blocking, reference store, default hyper-parameters
    /// (`[trainer.defaults]`) and promotion guardrails
    /// (`[trainer.guardrails]`).
    pub trainer: autotrain_trainer::core::TrainerConfig,
    /// The parameter controller (`autotrain run params`): strategy schemas
    /// folder, policy (`[params.policy] kind = "lin_ts"|"thompson_beta"|
    /// "thompson_gaussian"|"epsilon_greedy"`), guardrails, seed.
    pub params: autotrain_params::ParamsConfig,
    /// The control-plane API (`autotrain serve`): bind address, dev mode
    /// (no auth, localhost only), `[[api.tokens]]` (name, sha256 of the
    /// token, scopes, tenant).
    pub api: autotrain_api::ApiConfig,
    /// The MLflow mirror (`autotrain run mlflow`, and the demo when set):
    /// `tracking_uri` (unset: off), `name_prefix`, `group`,
    /// `retry_attempts` (0: for ever), `timeout_s`.
    pub mlflow: autotrain_connector_mlflow::MlflowConfig,
    pub log: LogSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// Which clock the schedules follow: `wall` (`autotrain run
    /// scheduler`, production) or `event` (the bars' time, inside `autotrain
    /// run drift`: replays and backtests train at the same bars whenever
    /// they run).
    pub clock: Clock,
    /// Seconds between checks for due runs (wall clock).
    pub tick_seconds: f64,
    /// `[[scheduler.schedule]]` entries: model_key, cron, timezone,
    /// tenant, instruments, hyperparams, auto_promote.
    pub schedule: Vec<autotrain_drift::Schedule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    #[default]
    Wall,
    Event,
}

impl SchedulerSettings {
    /// The schedules the drift processor runs on event time (none on the
    /// wall clock).
    pub fn event_schedules(&self) -> Vec<autotrain_drift::Schedule> {
        match self.clock {
            Clock::Event => self.schedule.clone(),
            Clock::Wall => Vec::new(),
        }
    }
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            clock: Clock::Wall,
            tick_seconds: 30.0,
            schedule: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidatorSettings {
    /// Trading calendar per instrument (`"oanda:EURUSD" = "fx"`,
    /// `"nasdaq:AAPL" = "us-equity"`); others are `24x7`.
    pub calendars: BTreeMap<String, autotrain_validator::Calendar>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerSettings {
    /// Input records whose outputs may await acknowledgement at once.
    pub max_in_flight: usize,
    /// Event ids remembered per input partition for dropping duplicates.
    pub dedupe_window: usize,
    /// Attempts of a retriable failure before the processor stops.
    pub retry_attempts: usize,
    /// Largest output record (key + value bytes) a processor sends; an input
    /// whose output would be larger is dead-lettered with the reason (keep
    /// below the broker's `message.max.bytes`).
    pub max_record_bytes: usize,
    /// A processor whose group has no committed offset stops with a
    /// data-loss error if an input's log no longer starts at offset 0
    /// (records it never read were deleted). `true` lets it start at the
    /// log start instead (a new consumer of a long-kept topic, on purpose).
    /// Never applies to event logs or the in-process embedded broker.
    pub accept_log_start: bool,
    /// `exactly_once` (Kafka transactions), `at_least_once` (event-id
    /// dedupe), or `auto`: exactly-once on an external cluster,
    /// at-least-once on the embedded broker (it has no transactions).
    pub delivery: Delivery,
    /// This instance's name within its group: part of its transactional id
    /// (`{topic_prefix}{group}.{instance}`) and, on a real cluster, its
    /// static group membership (`group.instance.id` = `{group}.{instance}`:
    /// restarted after a crash, it takes its partitions back at once).
    /// Instances of one group must differ; a restarted instance keeps its
    /// name.
    pub instance: String,
    /// Inputs per transaction at most (exactly-once).
    pub transaction_max_inputs: usize,
    /// Milliseconds a transaction stays open at most (exactly-once).
    pub transaction_max_ms: u64,
    /// The broker aborts a transaction of a vanished instance after this.
    pub transaction_timeout_ms: u64,
    /// Seconds a processor keeps retrying to reach a broker at start
    /// before it gives up with an error.
    pub connect_timeout_s: u64,
    /// Seconds a running processor waits for unreachable brokers (logging
    /// the outage once) before it exits with an error for its supervisor.
    pub unreachable_limit_s: u64,
    /// Event-time alignment of the processors that read `model.updates`
    /// next to `features` (drift, regime): a bar waits until the trainer
    /// has vouched for `model.updates` through its time, so their outputs
    /// are a function of the logs, not of arrival order (see
    /// `docs/determinism.md`). Off: a bar sees whatever arrived before it.
    pub align_event_time: bool,
    /// Where an `autotrain run …` process serves `GET /metrics`
    /// (Prometheus text: records in, out and dead-lettered, processing
    /// time, its group's lag, broker reachability), e.g. `0.0.0.0:9101`.
    /// None by default.
    pub metrics_bind: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Auto,
    ExactlyOnce,
    AtLeastOnce,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `autotrain_kafka=debug,info`, …
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            brokers: None,
            topic_prefix: String::new(),
            replication_factor: -1,
            kafka: BTreeMap::new(),
            runner: RunnerSettings::default(),
            validator: ValidatorSettings::default(),
            drift: autotrain_drift::DriftConfig::default(),
            scheduler: SchedulerSettings::default(),
            trainer: autotrain_trainer::core::TrainerConfig::default(),
            params: autotrain_params::ParamsConfig::default(),
            api: autotrain_api::ApiConfig::default(),
            mlflow: autotrain_connector_mlflow::MlflowConfig::default(),
            log: LogSettings::default(),
        }
    }
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            max_in_flight: 50_000,
            dedupe_window: 100_000,
            retry_attempts: 5,
            max_record_bytes: 1_000_000,
            accept_log_start: false,
            delivery: Delivery::Auto,
            instance: "0".into(),
            transaction_max_inputs: 10_000,
            transaction_max_ms: 100,
            transaction_timeout_ms: 10_000,
            connect_timeout_s: 120,
            unreachable_limit_s: 300,
            align_event_time: true,
            metrics_bind: None,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Human,
            level: "warn".into(),
        }
    }
}

impl Config {
    /// Defaults ← TOML file ← `AUTOTRAIN__` environment.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                anyhow::ensure!(
                    path.exists(),
                    "config file {} does not exist",
                    path.display()
                );
                figment = figment.merge(Toml::file(path));
            }
            None if Path::new("autotrain.toml").exists() => {
                figment = figment.merge(Toml::file("autotrain.toml"))
            }
            None => {}
        }
        let mut config: Config = figment
            .merge(Env::prefixed("AUTOTRAIN__").split("__"))
            .extract()
            .context("invalid configuration")?;
        config.kafka.extend(kafka_env(std::env::vars()));
        config.trainer.guardrails.check()?;
        config
            .trainer
            .forecast_guardrails
            .check()
            .map_err(|e| anyhow::anyhow!(e))?;
        Ok(config)
    }
}

/// `[kafka]` properties from the environment, for secrets a deployment
/// keeps out of files: `AUTOTRAIN_KAFKA_SASL_PASSWORD=…` sets
/// `sasl.password` (after the prefix, lower case, `_` ⇒ `.`; librdkafka's
/// property names have no underscores). They win over the file.
fn kafka_env(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.filter_map(|(k, v)| {
        let name = k.strip_prefix("AUTOTRAIN_KAFKA_")?;
        (!name.is_empty()).then(|| (name.to_ascii_lowercase().replace('_', "."), v))
    })
    .collect()
}

/// The strategy schemas folder: as configured, else the bundled one next to
/// the sources when run from elsewhere.
pub fn schemas_dir(config: &Config) -> std::path::PathBuf {
    let configured = std::path::PathBuf::from(&config.params.schemas_dir);
    if configured.is_dir() {
        return configured;
    }
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../strategy_schemas")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_properties_come_from_the_environment_too() {
        let vars = [
            ("AUTOTRAIN_KAFKA_SASL_PASSWORD", "s3cret"),
            ("AUTOTRAIN_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("AUTOTRAIN__KAFKA__X", "not this way"),
            ("AUTOTRAIN_KAFKA_", "nothing"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let got = kafka_env(vars.into_iter());
        assert_eq!(
            got,
            [
                ("sasl.password".to_string(), "s3cret".to_string()),
                (
                    "security.protocol".to_string(),
                    "SASL_PLAINTEXT".to_string()
                )
            ]
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature
    fn file_then_env_override_defaults_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "topic_prefix = \"desk.\"\n[drift]\ncooldown_ms = 60000\n[[scheduler.schedule]]\nmodel_key = \"hmm/btc\"\ncron = \"0 2 * * 0\"\n[validator.calendars]\n\"oanda:EURUSD\" = \"fx\"\n[runner]\ndedupe_window = 7\n[kafka]\n\"security.protocol\" = \"plaintext\"\n").expect("write");
        figment::Jail::expect_with(|jail| {
            jail.set_env("AUTOTRAIN__RUNNER__RETRY_ATTEMPTS", "9");
            let c = Config::load(Some(&path)).map_err(|e| figment::Error::from(e.to_string()))?;
            assert_eq!(c.topic_prefix, "desk.");
            assert_eq!(c.runner.dedupe_window, 7);
            assert_eq!(c.runner.retry_attempts, 9);
            assert_eq!(c.runner.max_in_flight, 50_000);
            assert_eq!(c.runner.delivery, Delivery::Auto);
            assert_eq!(c.drift.cooldown_ms, 60_000);
            assert_eq!(c.drift.watch[0].feature, "lr");
            assert_eq!(c.scheduler.schedule[0].timezone, "UTC");
            assert_eq!(c.scheduler.clock, Clock::Wall);
            assert!(c.scheduler.event_schedules().is_empty(), "wall clock");
            jail.set_env("AUTOTRAIN__SCHEDULER__CLOCK", "event");
            let c = Config::load(Some(&path)).map_err(|e| figment::Error::from(e.to_string()))?;
            assert_eq!(c.scheduler.event_schedules()[0].model_key, "hmm/btc");
            assert_eq!(
                c.validator.calendars.get("oanda:EURUSD"),
                Some(&autotrain_validator::Calendar::Fx)
            );
            assert_eq!(
                c.kafka.get("security.protocol").map(String::as_str),
                Some("plaintext")
            );
            // A guardrail on a metric the evaluation does not produce stops
            // the start, with the metrics it could name.
            jail.set_env("AUTOTRAIN__TRAINER__GUARDRAILS__METRIC", "trend_sharp");
            let err = Config::load(Some(&path)).map(|_| ()).unwrap_err();
            assert!(format!("{err:#}").contains("trend_sharpe"), "{err:#}");
            jail.set_env("AUTOTRAIN__TRAINER__GUARDRAILS__METRIC", "trend_sharpe");
            let c = Config::load(Some(&path)).map_err(|e| figment::Error::from(e.to_string()))?;
            assert_eq!(c.trainer.guardrails.metric, "trend_sharpe");
            Ok(())
        });
        std::fs::write(&path, "colour = \"red\"\n").expect("write");
        let err = Config::load(Some(&path)).expect_err("unknown key");
        assert!(format!("{err:#}").contains("colour"), "{err:#}");
    }
}
