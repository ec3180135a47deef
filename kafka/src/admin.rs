//! Creates catalogue topics and reports how a cluster differs from the
//! catalogue (`autotrain topics create|list|check`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use autotrain_topics::TopicSpec;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::broker::Broker;
use crate::error::KafkaError;
use crate::settings::ClientSettings;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// A topic as the cluster has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub name: String,
    pub partitions: i32,
    /// `None` when the broker does not answer DescribeConfigs.
    pub configs: Option<BTreeMap<String, String>>,
}

/// One difference between the catalogue and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    Missing {
        topic: String,
    },
    Partitions {
        topic: String,
        want: i32,
        have: i32,
    },
    Config {
        topic: String,
        key: String,
        want: String,
        have: Option<String>,
    },
    ConfigUnknown {
        topic: String,
    },
    /// An event log (readers fold every record) whose config would let the
    /// broker delete or compact records away.
    LosesData {
        topic: String,
        key: String,
        want: String,
        have: Option<String>,
    },
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Missing { topic } => write!(f, "{topic}: missing"),
            Drift::Partitions { topic, want, have } => {
                write!(f, "{topic}: {have} partitions, catalogue says {want}")
            }
            Drift::Config {
                topic,
                key,
                want,
                have,
            } => write!(
                f,
                "{topic}: {key} = {}, catalogue says {want}",
                have.as_deref().unwrap_or("(unset)")
            ),
            Drift::LosesData {
                topic,
                key,
                want,
                have,
            } => write!(
                f,
                "{topic}: {key} = {} WOULD LOSE DATA: readers rebuild their state from every record of this topic; set {key}={want}",
                have.as_deref().unwrap_or("(unset)")
            ),
            Drift::ConfigUnknown { topic } => {
                write!(
                    f,
                    "{topic}: broker does not describe topic configs; not compared"
                )
            }
        }
    }
}

impl Drift {
    /// Differences that matter (an unknown config is only a warning).
    pub fn is_error(&self) -> bool {
        !matches!(self, Drift::ConfigUnknown { .. })
    }
}

fn wanted_configs(spec: &TopicSpec) -> [(&'static str, String); 2] {
    [
        ("cleanup.policy", spec.cleanup_policy.as_kafka().to_string()),
        ("retention.ms", spec.retention_ms.to_string()),
    ]
}

/// Creates the topics that do not exist yet; returns (name, created?).
/// `replication` of -1 leaves it to the broker's default.
pub async fn create_topics(
    broker: &Broker,
    settings: &ClientSettings,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<Vec<(String, bool)>, KafkaError> {
    let existing: Vec<String> = list_topics(settings, false)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let mut out = Vec::new();
    let mut to_create = Vec::new();
    for spec in specs {
        let name = settings.physical(&spec.name);
        if existing.contains(&name) {
            out.push((name, false));
            continue;
        }
        if let Some(result) = broker.embedded_create(&name, spec.partitions) {
            result?;
        } else {
            to_create.push((name.clone(), spec));
        }
        out.push((name, true));
    }
    if !to_create.is_empty() {
        let admin: AdminClient<DefaultClientContext> = settings.producer_config().create()?;
        let configs: Vec<_> = to_create.iter().map(|(_, s)| wanted_configs(s)).collect();
        let new: Vec<NewTopic<'_>> = to_create
            .iter()
            .zip(&configs)
            .map(|((name, spec), cfg)| {
                cfg.iter().fold(
                    NewTopic::new(name, spec.partitions, TopicReplication::Fixed(replication)),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        for result in admin.create_topics(&new, &opts).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(KafkaError::Admin(format!("create {name}: {code}")));
                }
            }
        }
    }
    wait_until_visible(
        settings,
        &out.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
    )
    .await?;
    Ok(out)
}

/// Deletes topics by physical name (a replay's sandbox). Topics that do not
/// exist count as deleted; on the embedded broker, which cannot delete,
/// nothing is done (its topics live as long as the process).
pub async fn delete_topics(
    broker: &Broker,
    settings: &ClientSettings,
    names: &[String],
) -> Result<(), KafkaError> {
    if broker.is_embedded() || names.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = settings.producer_config().create()?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    for result in admin.delete_topics(&refs, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((name, code)) => {
                return Err(KafkaError::Admin(format!("delete {name}: {code}")));
            }
        }
    }
    Ok(())
}

/// Waits until every topic is in the cluster's metadata with a leader for
/// each partition (a client reading a topic right after its creation
/// otherwise meets `NotLeaderForPartition`).
async fn wait_until_visible(settings: &ClientSettings, names: &[String]) -> Result<(), KafkaError> {
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    loop {
        let (s, wanted) = (settings.clone(), names.to_vec());
        let missing = tokio::task::spawn_blocking(move || -> Result<Vec<String>, KafkaError> {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            let client: BaseConsumer = s.reader_config().create()?;
            let metadata = client.fetch_metadata(None, Duration::from_secs(10))?;
            Ok(wanted
                .into_iter()
                .filter(|n| {
                    !metadata.topics().iter().any(|t| {
                        t.name() == n
                            && t.error().is_none()
                            && !t.partitions().is_empty()
                            && t.partitions()
                                .iter()
                                .all(|p| p.leader() >= 0 && p.error().is_none())
                    })
                })
                .collect())
        })
        .await
        .map_err(|e| KafkaError::Admin(format!("metadata task: {e}")))??;
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(KafkaError::Admin(format!(
                "topics without a leader for every partition after creation: {missing:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks the cluster for its metadata, waiting at most `timeout`: the number
/// of brokers it reports. Blocking.
pub fn probe(settings: &ClientSettings, timeout: Duration) -> Result<usize, KafkaError> {
    let admin: AdminClient<crate::link::QuietContext> = settings
        .producer_config()
        .create_with_context(crate::link::QuietContext)?;
    let metadata = admin.inner().fetch_metadata(None, timeout)?;
    Ok(metadata.brokers().len())
}

/// Topics on the cluster (internal `__` topics left out), optionally with
/// their configs.
pub async fn list_topics(
    settings: &ClientSettings,
    with_configs: bool,
) -> Result<Vec<TopicState>, KafkaError> {
    let config = settings.producer_config();
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let metadata = {
        let client = admin.inner();
        client.fetch_metadata(None, ADMIN_TIMEOUT)?
    };
    let mut topics: Vec<TopicState> = metadata
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__"))
        .map(|t| TopicState {
            name: t.name().to_string(),
            partitions: t.partitions().len() as i32,
            configs: None,
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    if with_configs && !topics.is_empty() {
        let specifiers: Vec<ResourceSpecifier<'_>> = topics
            .iter()
            .map(|t| ResourceSpecifier::Topic(&t.name))
            .collect();
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
        if let Ok(results) = admin.describe_configs(&specifiers, &opts).await {
            let described: Vec<Option<BTreeMap<String, String>>> = results
                .into_iter()
                .map(|r| {
                    r.ok().map(|res| {
                        res.entries
                            .into_iter()
                            .filter_map(|e| e.value.map(|v| (e.name, v)))
                            .collect()
                    })
                })
                .collect();
            for (t, c) in topics.iter_mut().zip(described) {
                t.configs = c.filter(|m| !m.is_empty());
            }
        }
    }
    Ok(topics)
}

/// Compares the catalogue with the cluster.
pub async fn check_topics(
    settings: &ClientSettings,
    specs: &[TopicSpec],
) -> Result<Vec<Drift>, KafkaError> {
    let cluster = list_topics(settings, true).await?;
    Ok(compare(settings, specs, &cluster))
}

/// The pure part of [`check_topics`].
pub fn compare(
    settings: &ClientSettings,
    specs: &[TopicSpec],
    cluster: &[TopicState],
) -> Vec<Drift> {
    let mut drift = Vec::new();
    for spec in specs {
        let name = settings.physical(&spec.name);
        let Some(have) = cluster.iter().find(|t| t.name == name) else {
            drift.push(Drift::Missing { topic: name });
            continue;
        };
        if have.partitions != spec.partitions {
            drift.push(Drift::Partitions {
                topic: name.clone(),
                want: spec.partitions,
                have: have.partitions,
            });
        }
        match &have.configs {
            None => drift.push(Drift::ConfigUnknown { topic: name }),
            Some(configs) => {
                for (key, want) in wanted_configs(spec) {
                    let current = configs.get(key).cloned();
                    if current.as_deref() != Some(want.as_str()) {
                        let (topic, key) = (name.clone(), key.to_string());
                        drift.push(if spec.event_log {
                            Drift::LosesData {
                                topic,
                                key,
                                want,
                                have: current,
                            }
                        } else {
                            Drift::Config {
                                topic,
                                key,
                                want,
                                have: current,
                            }
                        });
                    }
                }
            }
        }
    }
    drift
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_topics::catalogue;

    #[test]
    fn compare_reports_every_kind_of_drift() {
        let settings = ClientSettings::new("x").with_prefix("p.");
        let specs = &catalogue().topics[..2];
        let ok_configs = |s: &TopicSpec| {
            Some(
                wanted_configs(s)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
        };
        let mut cluster = vec![TopicState {
            name: settings.physical(&specs[0].name),
            partitions: specs[0].partitions,
            configs: ok_configs(&specs[0]),
        }];
        let drift = compare(&settings, specs, &cluster);
        assert_eq!(
            drift,
            vec![Drift::Missing {
                topic: "p.market.bars".into()
            }]
        );

        cluster.push(TopicState {
            name: "p.market.bars".into(),
            partitions: 3,
            configs: None,
        });
        cluster[0]
            .configs
            .as_mut()
            .map(|c| c.insert("cleanup.policy".into(), "compact".into()));
        let drift = compare(&settings, specs, &cluster);
        assert_eq!(drift.len(), 3, "{drift:?}");
        // market.bars.raw is an event log: compaction would lose records.
        assert!(matches!(&drift[0], Drift::LosesData { key, .. } if key == "cleanup.policy"));
        assert!(drift[0].to_string().contains("WOULD LOSE DATA"));
        assert!(matches!(
            drift[1],
            Drift::Partitions {
                want: 8,
                have: 3,
                ..
            }
        ));
        assert!(!drift[2].is_error());

        // A snapshot topic (last writer wins per key) only drifts.
        let snapshot = catalogue().get("source.watermarks").expect("catalogue");
        let cluster = vec![TopicState {
            name: settings.physical(&snapshot.name),
            partitions: snapshot.partitions,
            configs: Some(
                [("cleanup.policy", "delete"), ("retention.ms", "-1")]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
            ),
        }];
        let drift = compare(&settings, std::slice::from_ref(snapshot), &cluster);
        assert!(matches!(&drift[..], [Drift::Config { key, .. }] if key == "cleanup.policy"));
    }
}
