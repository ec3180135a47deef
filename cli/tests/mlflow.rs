//! The MLflow mirror (`autotrain run mlflow`) between a real Apache Kafka
//! and a real MLflow server (`scripts/mlflow`): started while MLflow is
//! down, it waits and catches up; then MLflow lists the runs, versions and
//! aliases of autotrain's registry after a demo slice, follows a promotion
//! and a rollback made with `autotrain models`, and a second mirror over
//! the whole log (a fresh group) changes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use autotrain_connector_mlflow::translate::{registered_model_name, TAG_TRAINING_ID, TAG_VERSION};
use autotrain_connector_mlflow::MlflowClient;
use autotrain_integration_tests::mlflow::Mlflow;
use autotrain_integration_tests::{caught_up, data_sample, shared_kafka, unique};
use autotrain_kafka::{read_topic, ClientSettings};
use autotrain_schemas::ModelVersion;
use autotrain_trainer::registry::Registry;
use serde_json::Value;

const KEY: &str = "hmm/bitfinex:BTCUSD";

fn autotrain(kafka: &str, prefix: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autotrain"));
    c.args(["--brokers", kafka])
        .env_remove("AUTOTRAIN_BROKERS")
        .env_remove("MLFLOW_TRACKING_URI")
        .env("AUTOTRAIN__TOPIC_PREFIX", prefix)
        .env("AUTOTRAIN__REPLICATION_FACTOR", "1")
        .env(
            "AUTOTRAIN__LOG__LEVEL",
            "warn,librdkafka=error,rdkafka=error",
        );
    c
}

fn ok(out: Output, what: &str) -> Result<String> {
    ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mirror(kafka: &str, prefix: &str, uri: &str, group: &str, log: &Path) -> Result<Child> {
    Ok(autotrain(kafka, prefix)
        .args(["run", "mlflow", "--tracking-uri", uri, "--group", group])
        .env(
            "AUTOTRAIN__LOG__LEVEL",
            "info,librdkafka=error,rdkafka=error",
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?)
}

/// SIGTERM, then what it printed.
fn stop(mut child: Child, log: &Path) -> Result<String> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait()?.is_none() {
        ensure!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(std::fs::read_to_string(log)?)
}

fn registry(settings: &ClientSettings) -> Result<(Registry, usize)> {
    let events: Vec<ModelVersion> =
        read_topic::<ModelVersion>(settings, "model.updates", Duration::from_secs(60))?
            .into_iter()
            .filter_map(|r| r.value.ok())
            .collect();
    let mut registry = Registry::new();
    for e in &events {
        registry.apply(e)?;
    }
    Ok((registry, events.len()))
}

/// MLflow's view of the model key: autotrain version ⇒ (MLflow version,
/// run id), the aliases as autotrain versions, and the runs by id.
struct Mirrored {
    versions: BTreeMap<i32, (String, String)>,
    aliases: BTreeMap<String, i32>,
    runs: BTreeMap<String, Value>,
    rolled_back: Vec<i32>,
}

async fn mirrored(client: &MlflowClient) -> Result<Option<Mirrored>> {
    let name = registered_model_name("", KEY);
    let Some(_) = client.registered_model(&name).await? else {
        return Ok(None);
    };
    let mut versions = BTreeMap::new();
    let mut rolled_back = Vec::new();
    let mut by_mlflow = BTreeMap::new();
    for v in client.versions(&name).await? {
        let n: i32 = v.tag(TAG_VERSION).context("version tag")?.parse()?;
        if v.tag("autotrain.rolled_back_to").is_some() {
            rolled_back.push(n);
        }
        by_mlflow.insert(v.version.clone(), n);
        versions.insert(n, (v.version.clone(), v.run_id.clone()));
    }
    let aliases = client
        .aliases(&name)
        .await?
        .into_iter()
        .filter_map(|(a, v)| Some((a, *by_mlflow.get(&v)?)))
        .collect();
    let experiment = client.experiment(KEY).await?;
    let runs = client
        .runs(&experiment)
        .await?
        .into_iter()
        .filter_map(|r| Some((r["info"]["run_id"].as_str()?.to_string(), r)))
        .collect();
    Ok(Some(Mirrored {
        versions,
        aliases,
        runs,
        rolled_back,
    }))
}

fn tag<'a>(run: &'a Value, key: &str) -> Option<&'a str> {
    run["data"]["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)?["value"]
        .as_str()
}

fn metric(run: &Value, key: &str) -> Option<f64> {
    run["data"]["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["key"] == key)?["value"]
        .as_f64()
}

/// Polls MLflow until it shows `registry`'s versions and aliases.
async fn until_mirrored(
    client: &MlflowClient,
    registry: &Registry,
    limit: Duration,
) -> Result<Mirrored> {
    let model = registry
        .model(KEY)
        .context("no model key in the registry")?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(m) = mirrored(client).await.unwrap_or(None) {
            if m.versions.len() == model.versions.len() && m.aliases == model.aliases {
                return Ok(m);
            }
            ensure!(
                Instant::now() < deadline,
                "MLflow shows {} versions and aliases {:?}; the registry {} and {:?}",
                m.versions.len(),
                m.aliases,
                model.versions.len(),
                model.aliases
            );
        } else {
            ensure!(Instant::now() < deadline, "MLflow never got {KEY}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every version is a finished run with its training id, metrics and
/// lineage tags, and the MLflow version points at that run.
fn same_as_registry(m: &Mirrored, registry: &Registry) -> Result<()> {
    let model = registry.model(KEY).context("no model key")?;
    for (n, v) in &model.versions {
        let (_, run_id) = m.versions.get(n).with_context(|| format!("v{n} missing"))?;
        let run = m.runs.get(run_id).with_context(|| format!("run of v{n}"))?;
        ensure!(run["info"]["status"] == "FINISHED", "v{n}: {}", run["info"]);
        ensure!(
            tag(run, TAG_TRAINING_ID) == v.training_id.as_deref(),
            "v{n}: training id {:?} vs {:?}",
            tag(run, TAG_TRAINING_ID),
            v.training_id
        );
        let manifest = v.manifest.as_ref().context("manifest")?;
        ensure!(tag(run, "autotrain.code_version") == Some(manifest.code_version.as_str()));
        ensure!(
            tag(run, "autotrain.feature_contract")
                == Some(manifest.feature_contract_version.as_str())
        );
        ensure!(tag(run, "autotrain.manifest_hash").is_some_and(|h| h.len() == 64));
        let seed = run["data"]["params"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["key"] == "seed"))
            .and_then(|p| p["value"].as_str());
        ensure!(
            seed == Some(manifest.seed.to_string().as_str()),
            "v{n} seed {seed:?}"
        );
        for want in v.metrics.iter().filter(|x| x.value.is_finite()) {
            let got = metric(run, &want.name);
            ensure!(
                got == Some(want.value),
                "v{n} {}: {got:?} vs {}",
                want.name,
                want.value
            );
        }
    }
    let registered_runs = m
        .runs
        .values()
        .filter(|r| tag(r, "autotrain.outcome") == Some("registered"))
        .count();
    ensure!(
        registered_runs == model.versions.len(),
        "{registered_runs} runs for {} versions",
        model.versions.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_is_mirrored_to_mlflow_through_outages_promotions_and_rollbacks() -> Result<()>
{
    let kafka = shared_kafka();
    let prefix = format!("{}.", unique("mlflow"));
    let settings = ClientSettings::new(&kafka).with_prefix(&prefix);
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    data_sample(&data, "bitfinex_BTCUSD_30m.csv", 8_000)?;

    // A demo slice on Kafka: trainings, versions, promotions.
    ok(
        autotrain(&kafka, &prefix)
            .args(["demo", "--json", "--api-bind", "127.0.0.1:0", "--data"])
            .arg(&data)
            .output()?,
        "demo",
    )?;
    let (registry_after_demo, _) = registry(&settings)?;
    let versions = registry_after_demo
        .model(KEY)
        .map_or(0, |m| m.versions.len());
    ensure!(
        versions >= 3,
        "the demo slice registered {versions} versions"
    );

    // The mirror starts while MLflow is down: it retries, then catches up.
    let server = Mlflow::new()?;
    let client = MlflowClient::new(&server.uri(), Duration::from_secs(10))?;
    let group = unique("mlflow-mirror");
    let log1 = tmp.path().join("mirror1.log");
    let mut first = mirror(&kafka, &prefix, &server.uri(), &group, &log1)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        first.try_wait()?.is_none(),
        "the mirror stopped while MLflow was down: {}",
        std::fs::read_to_string(&log1)?
    );
    server.start()?;
    let m = until_mirrored(&client, &registry_after_demo, Duration::from_secs(180)).await?;
    same_as_registry(&m, &registry_after_demo)?;
    let log = std::fs::read_to_string(&log1)?;
    ensure!(
        log.contains("flush failed; retrying"),
        "no retry logged while MLflow was down: {log}"
    );

    // Ops move prod through the trainer; MLflow's alias follows.
    let trainer_log = tmp.path().join("trainer.log");
    let trainer = autotrain(&kafka, &prefix)
        .args(["run", "trainer", "--group", &unique("mlflow-trainer")])
        // Nobody decides the demo slice's flags here (the demo trains with
        // block_on = [] too).
        .env("AUTOTRAIN__TRAINER__BLOCK_ON", "[]")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&trainer_log)?)
        .spawn()?;
    let prod = registry_after_demo
        .model(KEY)
        .and_then(|m| m.aliases.get("prod").copied())
        .context("no prod after the demo")?;
    let latest = versions as i32;
    let target = if prod == latest { latest - 1 } else { latest };
    let promoted = autotrain(&kafka, &prefix)
        .args(["models", "promote", KEY, "--version", &target.to_string()])
        .args(["--reason", "mlflow test"])
        .output()?;
    let rolled = autotrain(&kafka, &prefix)
        .args(["models", "rollback", KEY, "--version", "1", "--force"])
        .args(["--reason", "mlflow test: back to v1"])
        .output()?;
    // A gbdt forecast trained with a search of 3 trials: its run, and each
    // trial a child run of it.
    let searched = autotrain(&kafka, &prefix)
        .args(["train", "--model-key", "gbdt/bitfinex:BTCUSD"])
        .args(["--instrument", "bitfinex:BTCUSD", "--timeout-s", "180"])
        .args(["--param", "family=gbdt", "--param", "iterations=30"])
        .args(["--search", "trials=3"])
        .output()?;
    let _ = stop(trainer, &trainer_log);
    ok(promoted, "models promote")?;
    ok(rolled, "models rollback")?;
    ok(searched, "train gbdt with a search")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs = match client.experiment("gbdt/bitfinex:BTCUSD").await {
            Ok(id) => client.runs(&id).await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let parent = runs
            .iter()
            .find(|r| tag(r, "autotrain.outcome") == Some("registered"));
        let children = runs
            .iter()
            .filter(|r| {
                parent.is_some_and(|p| tag(r, "mlflow.parentRunId") == p["info"]["run_id"].as_str())
            })
            .count();
        if parent.is_some() && children == 3 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "MLflow shows {} gbdt run(s), {children} child run(s) of the search",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (registry_now, events) = registry(&settings)?;
    ensure!(
        registry_now.model(KEY).and_then(|m| m.aliases.get("prod")) == Some(&1),
        "prod is not v1 after the rollback"
    );
    let m = until_mirrored(&client, &registry_now, Duration::from_secs(120)).await?;
    same_as_registry(&m, &registry_now)?;
    ensure!(
        m.rolled_back == vec![1],
        "rollback tags: {:?}",
        m.rolled_back
    );
    let runs_before = m.runs.len();
    let first_log = stop(first, &log1)?;
    ensure!(first_log.contains("mlflow mirror stopped"), "{first_log}");

    // A second mirror over the whole log (a fresh group): nothing new.
    let group2 = unique("mlflow-mirror-again");
    let log2 = tmp.path().join("mirror2.log");
    let second = mirror(&kafka, &prefix, &server.uri(), &group2, &log2)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let topics = autotrain_connector_mlflow::INPUTS;
    while !caught_up(&settings, &group2, topics).unwrap_or(false) {
        ensure!(
            Instant::now() < deadline,
            "the second mirror never caught up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let second_log = stop(second, &log2)?;
    ensure!(
        second_log.contains("runs_created: 0") && second_log.contains("versions_created: 0"),
        "the second mirror wrote to MLflow: {second_log}"
    );
    let again = mirrored(&client).await?.context("gone")?;
    ensure!(
        again.runs.len() == runs_before,
        "{} runs, {runs_before} before",
        again.runs.len()
    );
    ensure!(again.versions == m.versions && again.aliases == m.aliases);
    eprintln!(
        "mirrored {} versions, {} runs, {events} registry events; aliases {:?}",
        again.versions.len(),
        again.runs.len(),
        again.aliases
    );
    Ok(())
}
