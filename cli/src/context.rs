//! What every command needs: the broker (external or embedded), client
//! settings from the config, logging, and a Ctrl-C / SIGTERM future.

use anyhow::{Context as _, Result};
use autotrain_kafka::{create_topics, Broker, ClientSettings};
use autotrain_topics::catalogue;

use crate::config::{Config, LogFormat, LogSettings};

pub fn init_logging(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// A connected broker plus the settings clients use with it.
#[derive(Debug)]
pub struct Context {
    pub broker: Broker,
    pub settings: ClientSettings,
}

impl Context {
    /// Connects to `config.brokers`, or starts the embedded broker and
    /// creates every catalogue topic on it (it starts empty).
    pub async fn connect(config: &Config) -> Result<Self> {
        let broker = Broker::connect_or_embed(config.brokers.as_deref()).context("broker")?;
        let mut settings = broker.settings(&config.topic_prefix);
        settings.properties.extend(config.kafka.clone());
        let ctx = Context { broker, settings };
        if !ctx.broker.is_embedded() {
            ctx.await_broker(std::time::Duration::from_secs(
                config.runner.connect_timeout_s,
            ))
            .await?;
        }
        if ctx.broker.is_embedded() {
            // The address is said once the topics exist: a producer
            // started on this line finds them.
            ctx.create_topics(config).await?;
            eprintln!(
                "embedded broker (in memory, bounded to ~100,000 records / 5 MiB per partition) at {}, its {} topics created",
                ctx.broker.bootstrap(),
                catalogue().topics.len()
            );
        }
        Ok(ctx)
    }

    /// Waits until the cluster answers a metadata request, saying so on
    /// stderr while it does not; gives up after `limit`.
    pub async fn await_broker(&self, limit: std::time::Duration) -> Result<()> {
        let started = std::time::Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let wait = limit.saturating_sub(started.elapsed()).clamp(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(2),
            );
            let settings = self.settings.clone();
            let probe =
                tokio::task::spawn_blocking(move || autotrain_kafka::probe(&settings, wait))
                    .await?;
            match probe {
                Ok(_) => {
                    if attempt > 1 {
                        eprintln!("reached Kafka at {}", self.settings.bootstrap);
                    }
                    return Ok(());
                }
                Err(e) if started.elapsed() < limit => {
                    eprintln!(
                        "cannot reach Kafka at {} (attempt {attempt}, giving up after {} s): {e}; retrying",
                        self.settings.bootstrap,
                        limit.as_secs()
                    );
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => {
                    anyhow::bail!(
                        "cannot reach Kafka at {} after {} s ({attempt} attempts): {e}",
                        self.settings.bootstrap,
                        limit.as_secs()
                    )
                }
            }
        }
    }

    pub async fn create_topics(&self, config: &Config) -> Result<Vec<(String, bool)>> {
        create_topics(
            &self.broker,
            &self.settings,
            &catalogue().topics,
            config.replication_factor,
        )
        .await
        .context("creating catalogue topics")
    }

    /// Runner settings from the config.
    pub fn runner_config(
        &self,
        config: &Config,
        group: &str,
        topics: &[&str],
    ) -> autotrain_kafka::RunnerConfig {
        let mut rc = autotrain_kafka::RunnerConfig::new(group, topics);
        rc.max_in_flight = config.runner.max_in_flight;
        rc.max_record_bytes = config.runner.max_record_bytes;
        rc.dedupe_window = config.runner.dedupe_window;
        rc.retry_attempts = config.runner.retry_attempts;
        rc.strict_log_start = self.broker.is_embedded();
        rc.accept_log_start = config.runner.accept_log_start;
        rc.unreachable_limit = std::time::Duration::from_secs(config.runner.unreachable_limit_s);
        // Static membership on a real cluster: a restarted instance takes
        // its partitions back at once (the embedded broker's mock group
        // coordinator is left with dynamic membership).
        if !self.broker.is_embedded() {
            rc.group_instance_id = Some(format!("{group}.{}", config.runner.instance));
        }
        if self.exactly_once(config) {
            let mut eo = autotrain_kafka::ExactlyOnce::new(format!(
                "{}{group}.{}",
                config.topic_prefix, config.runner.instance
            ));
            eo.max_inputs = config.runner.transaction_max_inputs.max(1);
            eo.max_interval = std::time::Duration::from_millis(config.runner.transaction_max_ms);
            eo.transaction_timeout =
                std::time::Duration::from_millis(config.runner.transaction_timeout_ms);
            rc.exactly_once = Some(eo);
        }
        rc
    }

    /// Whether processors commit in Kafka transactions (`[runner] delivery`).
    pub fn exactly_once(&self, config: &Config) -> bool {
        match config.runner.delivery {
            crate::config::Delivery::ExactlyOnce => true,
            crate::config::Delivery::AtLeastOnce => false,
            crate::config::Delivery::Auto => !self.broker.is_embedded(),
        }
    }
}

/// Wall-clock time, epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
