//! The gbdt forecast family end to end on a real Apache Kafka: features of
//! the real BTC/USD bars on `features`, `autotrain run trainer`, a
//! training submitted with `autotrain train --param family=gbdt`;
//! `autotrain models export` writes the prod version as ONNX, which
//! onnxruntime (PyPI) runs to autotrain's predictions within 1e-6, and as
//! JSON, which loads back to the same model; `GET /api/models/{key}/predict`
//! answers the model's prediction for a feature vector, and names a
//! missing feature.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use autotrain_features::{dataflow, Contract};
use autotrain_integration_tests::{bars, publish, repo_root, shared_kafka, unique};
use autotrain_kafka::ClientSettings;
use autotrain_topics::FEATURES;
use autotrain_trainer::forecast::ForecastModel;

const INSTRUMENT: &str = "bitfinex:BTCUSD";
const KEY: &str = "gbdt/bitfinex:BTCUSD";
const COLUMNS: &str = "lr,ret_std_20,rvol_20,rsi_14";

fn autotrain(kafka: &str, prefix: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autotrain"));
    c.args(["--brokers", kafka])
        .env_remove("AUTOTRAIN_BROKERS")
        .env("AUTOTRAIN__TOPIC_PREFIX", prefix)
        .env("AUTOTRAIN__REPLICATION_FACTOR", "1")
        .env(
            "AUTOTRAIN__LOG__LEVEL",
            "warn,librdkafka=error,rdkafka=error",
        );
    c
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ok(out: std::process::Output, what: &str) -> Result<()> {
    ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn a_gbdt_forecast_trains_exports_to_onnx_and_predicts_over_http() -> Result<()> {
    let kafka = shared_kafka();
    let prefix = format!("{}.", unique("forecast"));
    let tmp = tempfile::tempdir()?;
    ok(
        autotrain(&kafka, &prefix)
            .args(["topics", "create"])
            .output()?,
        "topics create",
    )?;
    let vectors = dataflow::run(
        &Contract::bundled()?,
        &bars("bitfinex_BTCUSD_30m.csv", 4_000),
        1,
        true,
    )
    .map_err(anyhow::Error::msg)?
    .rows;
    let rt = tokio::runtime::Runtime::new()?;
    let settings = ClientSettings::new(&kafka).with_prefix(&prefix);
    rt.block_on(publish(&settings, FEATURES, INSTRUMENT, &vectors))?;

    let store = tmp.path().join("references");
    let _trainer = Killed(
        autotrain(&kafka, &prefix)
            .args(["run", "trainer", "--group", &unique("forecast-trainer")])
            .env("AUTOTRAIN__TRAINER__STORE_DIR", &store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    ok(
        autotrain(&kafka, &prefix)
            .args(["train", "--model-key", KEY, "--instrument", INSTRUMENT])
            .args(["--param", "family=gbdt"])
            .args(["--param", &format!("columns={COLUMNS}")])
            .args(["--param", "iterations=80", "--param", "target=abs_return:1"])
            .args(["--search", "trials=3,metric=rmse"])
            .args(["--auto-promote", "--timeout-s", "180"])
            .output()?,
        "train",
    )?;

    // Exported as JSON and as ONNX.
    let (json_path, onnx_path) = (tmp.path().join("m.json"), tmp.path().join("m.onnx"));
    for (format, path) in [("json", &json_path), ("onnx", &onnx_path)] {
        ok(
            autotrain(&kafka, &prefix)
                .args(["models", "export", KEY, "--format", format, "-o"])
                .arg(path)
                .output()?,
            "models export",
        )?;
    }
    let model = ForecastModel::from_json(&std::fs::read(&json_path)?)?;
    ensure!(model.trees.len() == 80, "{} trees", model.trees.len());
    ensure!(model.columns.join(",") == COLUMNS);

    // onnxruntime predicts what autotrain predicts, missing values included.
    let names: Vec<&str> = COLUMNS.split(',').collect();
    let mut csv = format!("ts,{COLUMNS},prediction\n");
    let mut rows = Vec::new();
    for v in vectors.iter().step_by(7) {
        let row: Vec<f64> = names
            .iter()
            .map(|n| {
                v.values
                    .iter()
                    .find(|f| f.name == *n)
                    .and_then(|f| f.value)
                    .unwrap_or(f64::NAN)
            })
            .collect();
        let cells: Vec<String> = row
            .iter()
            .map(|x| {
                if x.is_nan() {
                    String::new()
                } else {
                    format!("{x:?}")
                }
            })
            .collect();
        csv.push_str(&format!(
            "{},{},{:?}\n",
            v.ts,
            cells.join(","),
            model.predict_row(&row)
        ));
        rows.push(row);
    }
    ensure!(
        rows.iter().any(|r| r.iter().any(|x| x.is_nan())),
        "no missing value tried"
    );
    let csv_path = tmp.path().join("predictions.csv");
    std::fs::write(&csv_path, csv)?;
    ok(
        Command::new("python3")
            .arg(repo_root().join("tests/interop/onnx_check.py"))
            .arg(&onnx_path)
            .arg(&csv_path)
            .output()?,
        "onnxruntime check",
    )?;

    // An HMM of the same features, exported as JSON: a loader written
    // from docs/hmm.md reproduces autotrain's forward filter.
    ok(
        autotrain(&kafka, &prefix)
            .args(["train", "--model-key", "hmm/bitfinex:BTCUSD"])
            .args([
                "--instrument",
                INSTRUMENT,
                "--auto-promote",
                "--timeout-s",
                "180",
            ])
            .args(["--param", "max_iter=30", "--param", "restarts=1"])
            .output()?,
        "train hmm",
    )?;
    let features_csv = tmp.path().join("features.csv");
    let mut table = format!("ts,{}\n", names.join(","));
    for v in &vectors {
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                v.values
                    .iter()
                    .find(|f| f.name == *n)
                    .and_then(|f| f.value)
                    .map_or(String::new(), |x| format!("{x:?}"))
            })
            .collect();
        table.push_str(&format!("{},{}\n", v.ts, cells.join(",")));
    }
    std::fs::write(&features_csv, table)?;
    let (hmm_json, posteriors) = (tmp.path().join("hmm.json"), tmp.path().join("post.csv"));
    ok(
        autotrain(&kafka, &prefix)
            .args([
                "models",
                "export",
                "hmm/bitfinex:BTCUSD",
                "--format",
                "json",
                "-o",
            ])
            .arg(&hmm_json)
            .output()?,
        "export hmm",
    )?;
    ok(
        autotrain(&kafka, &prefix)
            .args(["models", "posteriors", "hmm/bitfinex:BTCUSD", "-i"])
            .arg(&features_csv)
            .arg("-o")
            .arg(&posteriors)
            .output()?,
        "models posteriors",
    )?;
    ok(
        Command::new("python3")
            .arg(repo_root().join("tests/interop/hmm_loader.py"))
            .arg(&hmm_json)
            .arg(&features_csv)
            .arg(&posteriors)
            .output()?,
        "the HMM loader",
    )?;

    // The API's prediction for one feature vector.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _api = Killed(
        autotrain(&kafka, &prefix)
            .args(["serve", "--dev", "--bind", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let row = rows
        .iter()
        .find(|r| r.iter().all(|x| x.is_finite()))
        .context("a full row")?;
    let query: Vec<(String, String)> = names
        .iter()
        .zip(row)
        .map(|(n, x)| (n.to_string(), format!("{x:?}")))
        .collect();
    let url = format!("http://127.0.0.1:{port}/api/models/{KEY}/predict");
    let client = reqwest::Client::new();
    let get = |query: &[(String, String)]| -> Result<(u16, String)> {
        rt.block_on(async {
            let r = client.get(&url).query(query).send().await?;
            Ok((r.status().as_u16(), r.text().await?))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer: serde_json::Value = loop {
        match get(&query) {
            Ok((200, body)) => break serde_json::from_str(&body)?,
            Ok((status, body)) if Instant::now() > deadline => {
                anyhow::bail!("{status}: {body}")
            }
            Err(e) if Instant::now() > deadline => return Err(e),
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    };
    ensure!(
        answer["prediction"].as_f64() == Some(model.predict_row(row)),
        "{answer}"
    );
    ensure!(
        answer["version"] == 1 && answer["target"] == "abs_return:1",
        "{answer}"
    );
    let (status, body) = get(&query[1..])?;
    let message: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(
        status == 400
            && message["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("\"lr\" missing")),
        "{status} {body}"
    );
    Ok(())
}
