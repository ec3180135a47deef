//! The control-plane API over the embedded broker, through real HTTP:
//! - the closed loop: real bars in ⇒ validator ⇒ features ⇒ a training
//!   submitted through the API, blocked by the bars' held anomalies until
//!   ops approve them through the API ⇒ promoted model ⇒ regimes ⇒
//!   `param.updates` seen by a plain consumer ⇒ engine outcomes; the
//!   training window the API keeps equals a recomputation from
//!   `features`; then promote, rollback and rerun through the API;
//! - every endpoint's success and error paths: 401 (no or unknown token),
//!   403 (scope, tenant, platform-wide resources), 400 (malformed), 404,
//!   409 (state), 422 (refused values), with JSON bodies; cancel and retry
//!   of a waiting training; flags, presets, advice and outcomes, each
//!   checked on its topic.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{ensure, Result};
use autotrain_api::{hash_token, ApiConfig, Scope, TokenConfig};
use autotrain_features::{Contract, FeaturesProcessor};
use autotrain_integration_tests::services::{
    start_api, start_stage, start_trainer, trainer_config, ApiClient, Running,
};
use autotrain_integration_tests::*;
use autotrain_kafka::{read_topic as read_decoded, ClientSettings};
use autotrain_params::{
    Controller, Engine, EngineProcessor, ParamsConfig, ParamsProcessor, StrategySchema,
};
use autotrain_regime::RegimeProcessor;
use autotrain_schemas::{
    BuildKind, FeatureBuild, FlagKind, HitlState, ParamUpdate, PresetRegistration, Severity,
    TradeOutcome, UpdateReason, ValidationFlag,
};
use autotrain_topics::{
    FEATURES, FEATURE_BUILDS, MARKET_BARS, MARKET_BARS_RAW, MARKET_FLAGS, MODEL_UPDATES,
    PARAM_PRESETS, PARAM_UPDATES, TRADE_OUTCOMES,
};
use autotrain_validator::ValidatorProcessor;
use serde_json::{json, Value};

const INSTRUMENT: &str = "bitfinex:BTCUSD";
const KEY: &str = "hmm/bitfinex:BTCUSD";

/// Bearer tokens of the tests, by what they may do.
const READ_A: &str = "read-desk-a";
const TRAIN_A: &str = "train-desk-a";
const WRITE_A: &str = "write-desk-a";
const ALL_B: &str = "all-desk-b";
const PLATFORM: &str = "platform";

fn api_config() -> ApiConfig {
    let token = |secret: &str, scopes: &[Scope], tenant: &str| TokenConfig {
        name: secret.to_string(),
        sha256: hash_token(secret),
        scopes: scopes.to_vec(),
        tenant: tenant.into(),
    };
    let all = [Scope::Read, Scope::Train, Scope::Write];
    ApiConfig {
        tokens: vec![
            token(READ_A, &[Scope::Read], "desk-a"),
            token(TRAIN_A, &[Scope::Read, Scope::Train], "desk-a"),
            token(WRITE_A, &all, "desk-a"),
            token(ALL_B, &all, "desk-b"),
            token(PLATFORM, &all, "*"),
        ],
        ..ApiConfig::default()
    }
}

fn schemas() -> Result<Vec<StrategySchema>> {
    Ok(StrategySchema::load_dir(
        &repo_root().join("strategy_schemas"),
    )?)
}

fn decoded<T: autotrain_schemas::Payload>(settings: &ClientSettings, topic: &str) -> Vec<T> {
    read_decoded::<T>(settings, topic, Duration::from_secs(30))
        .map(|rs| rs.into_iter().filter_map(|r| r.value.ok()).collect())
        .unwrap_or_default()
}

/// Polls a topic (plain reads) until `done` holds for what it decodes.
async fn until_topic<T: autotrain_schemas::Payload + Send + 'static>(
    settings: &ClientSettings,
    topic: &'static str,
    what: &str,
    done: impl Fn(&[T]) -> bool,
) -> Result<Vec<T>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = settings.clone();
        let got = tokio::task::spawn_blocking(move || decoded::<T>(&s, topic)).await?;
        if done(&got) {
            return Ok(got);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{topic} never held {what} ({} record(s))",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_caught_up(settings: &ClientSettings, group: &str, topics: &[&str]) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (s, g, t) = (
            settings.clone(),
            group.to_string(),
            topics.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        );
        let done = tokio::task::spawn_blocking(move || {
            let t: Vec<&str> = t.iter().map(String::as_str).collect();
            caught_up(&s, &g, &t)
        })
        .await??;
        if done {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{group} never caught up with {topics:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn submit(api: &ApiClient, token: &str, body: Value) -> Result<String> {
    let (status, r) = api
        .call("POST", "/api/trainings", Some(token), Some(&body))
        .await?;
    ensure!(status == 202, "submit: {status} {r}");
    Ok(r["training_id"].as_str().unwrap_or_default().to_string())
}

/// Follows a training to its end; when it is blocked by unresolved
/// anomalies (the real bars have some), ops approve them through the API.
/// Returns the training and how many flags were approved.
async fn ended(api: &ApiClient, id: &str) -> Result<(Value, usize)> {
    let mut approved = 0;
    loop {
        let v = api
            .until(
                &format!("/api/trainings/{id}"),
                PLATFORM,
                "ended or blocked",
                |v| {
                    matches!(
                        v["state"].as_str(),
                        Some("completed" | "failed" | "cancelled" | "blocked")
                    )
                },
            )
            .await?;
        if v["state"] != "blocked" {
            return Ok((v, approved));
        }
        let pending = api
            .expect(200, "GET", "/api/flags?state=pending", Some(READ_A), None)
            .await?;
        for flag in pending["items"].as_array().into_iter().flatten() {
            let id = flag["flag_id"].as_str().unwrap_or_default();
            api.expect(
                200,
                "POST",
                &format!("/api/flags/{id}/approve"),
                Some(PLATFORM),
                Some(&json!({"reason": "checked against the exchange"})),
            )
            .await?;
            approved += 1;
        }
        // The trainer re-checks the window every `recheck_ms`.
        api.until(
            &format!("/api/trainings/{id}"),
            PLATFORM,
            "left blocked",
            |v| v["state"] != "blocked",
        )
        .await?;
    }
}

async fn prod_is(api: &ApiClient, version: i64) -> Result<Value> {
    api.until(
        &format!("/api/models/{KEY}"),
        READ_A,
        &format!("had prod v{version}"),
        |m| m["prod"] == version,
    )
    .await
}

/// The 30-day window of every feature as of the newest bar on `features`,
/// from scratch (the rows in offset order; a later row of a bar replaces
/// it), as the API's JSON.
fn window_from_topic(settings: &ClientSettings) -> Result<Value> {
    use autotrain_features::window::{reference, RowUpdate, WindowSpec};
    let names: Vec<String> = Contract::bundled()?
        .names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let rows: Vec<autotrain_schemas::FeatureVector> = decoded(settings, FEATURES.name());
    ensure!(rows.len() > 3_000, "{} feature rows", rows.len());
    let updates: Vec<RowUpdate> = rows
        .iter()
        .map(|v| RowUpdate {
            instrument: 0,
            ts: v.ts,
            values: Some(
                names
                    .iter()
                    .map(|n| v.values.iter().find(|f| &f.name == n).and_then(|f| f.value))
                    .collect(),
            ),
        })
        .collect();
    let mut out = serde_json::Map::new();
    for c in reference(&updates, WindowSpec::days(30)) {
        let name = names[usize::from(c.feature)].clone();
        match c.moments {
            Some(m) => {
                let std = m.std();
                out.insert(
                    name,
                    json!({"n": m.n, "mean": m.mean, "std": if std.is_finite() { json!(std) } else { Value::Null }}),
                );
            }
            None => {
                out.remove(&name);
            }
        }
    }
    Ok(Value::Object(out))
}

fn metric(training: &Value, name: &str) -> f64 {
    training["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .and_then(|m| m["value"].as_f64())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bars_in_a_training_through_the_api_promoted_and_param_updates_out() -> Result<()> {
    init_logging();
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("api-loop").await?;
    let store = tempfile::tempdir()?;
    let trainer = trainer_config(store.path());
    let groups = [unique("validator"), unique("features")];
    let mut running: Vec<Running> = vec![
        start_stage(
            &settings,
            &groups[0],
            &[MARKET_BARS_RAW.name()],
            ValidatorProcessor::new(HashMap::new()),
        ),
        start_stage(
            &settings,
            &groups[1],
            &[MARKET_BARS.name()],
            FeaturesProcessor::new(Contract::bundled()?),
        ),
        start_stage(
            &settings,
            &unique("regime"),
            &[FEATURES.name(), MODEL_UPDATES.name()],
            RegimeProcessor::new("hmm/{instrument}"),
        ),
        start_stage(
            &settings,
            &unique("params"),
            autotrain_params::processor::INPUTS,
            ParamsProcessor::new(Controller::new(ParamsConfig::default(), schemas()?)),
        ),
        start_stage(
            &settings,
            &unique("engine"),
            autotrain_params::processor::ENGINE_INPUTS,
            EngineProcessor::new(Engine::new(schemas()?, 2.0)),
        ),
        start_trainer(&settings, trainer.clone()),
    ];
    let (api, server) = start_api(&settings, api_config(), trainer).await?;

    // 1. Real bars in, through the validator and the features processor.
    let bars = bars("bitfinex_BTCUSD_30m.csv", 4_000);
    produce_bars(&settings, &bars[..3_000]).await?;
    wait_caught_up(&settings, &groups[0], &[MARKET_BARS_RAW.name()]).await?;
    wait_caught_up(&settings, &groups[1], &[MARKET_BARS.name()]).await?;

    // 2. A training through the API, auto-promoted by the guardrails.
    let first = submit(
        &api,
        TRAIN_A,
        json!({"model_key": KEY, "instruments": [INSTRUMENT], "auto_promote": true,
               "hyperparams": {"states": 3}, "priority": "high",
               "dataset_version": "bitfinex-2017q4"}),
    )
    .await?;
    let (done, approved) = ended(&api, &first).await?;
    assert!(
        approved > 0,
        "the real bars hold anomalies that block the run"
    );
    assert_eq!(done["state"], "completed", "{done:#}");
    assert_eq!(done["tenant"], "desk-a");
    assert_eq!(metric(&done, "promoted"), 1.0, "{done:#}");
    let model = prod_is(&api, 1).await?;
    assert_eq!(model["versions"][0]["training_id"], first);
    // Lineage: the dataset asked for and the commit of the trainer's build.
    let v1 = &model["versions"][0];
    assert_eq!(v1["manifest"]["dataset_version"], "bitfinex-2017q4", "{v1}");
    assert!(
        v1["tags"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("dataset:bitfinex-2017q4"))),
        "{v1}"
    );
    let commit = v1["manifest"]["code_commit"].as_str().unwrap_or_default();
    assert!(
        commit.len() >= 40 && commit[..40].chars().all(|c| c.is_ascii_hexdigit()),
        "{v1}"
    );
    // … the feature contract's hash and the training set's build record.
    let contract = Contract::bundled()?;
    assert_eq!(
        v1["manifest"]["feature_contract_hash"],
        json!(contract.definition_hash()),
        "{v1}"
    );
    let build_id = v1["manifest"]["feature_build"].as_str().unwrap_or_default();
    let builds = until_topic::<FeatureBuild>(
        &settings,
        FEATURE_BUILDS.name(),
        "the training set's build",
        |bs| bs.iter().any(|b| b.build_id == build_id),
    )
    .await?;
    let build = builds
        .iter()
        .find(|b| b.build_id == build_id)
        .expect("found");
    assert_eq!(build.kind, BuildKind::TrainingSet);
    assert_eq!(
        (
            build.contract_version.as_str(),
            build.contract_hash.as_str()
        ),
        (
            contract.version.as_str(),
            contract.definition_hash().as_str()
        )
    );
    assert!(
        build.rows > 1_000 && build.output_sha256.is_some(),
        "{build:?}"
    );
    assert!(build.source.contains(first.as_str()), "{build:?}");
    let inputs: Vec<(String, i64, i64)> = build
        .inputs
        .iter()
        .map(|r| (r.topic.clone(), r.first_offset, r.next_offset))
        .collect();
    let manifest_inputs: Vec<(String, i64, i64)> = v1["manifest"]["inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["topic"].as_str().unwrap_or_default().to_string(),
                r["start"].as_i64().unwrap_or(-1),
                r["end"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(inputs, manifest_inputs, "the build names what was read");

    // 3. New bars: regimes under the prod model ⇒ the controller's
    //    decisions on param.updates, read by a plain consumer ⇒ outcomes.
    produce_bars(&settings, &bars[3_000..]).await?;
    let updates = until_topic::<ParamUpdate>(
        &settings,
        PARAM_UPDATES.name(),
        "an update under the promoted model",
        |us| {
            us.iter()
                .any(|u| u.model_key.as_deref() == Some(KEY) && u.model_version == Some(1))
        },
    )
    .await?;
    assert!(updates
        .iter()
        .all(|u| u.instrument == INSTRUMENT && !u.params.is_empty()));
    until_topic::<TradeOutcome>(&settings, TRADE_OUTCOMES.name(), "outcomes", |os| {
        !os.is_empty()
    })
    .await?;
    let advice = api
        .until(
            &format!("/param/trend_following/{INSTRUMENT}"),
            READ_A,
            "showed the preset in force",
            |a| a["in_force"].is_string(),
        )
        .await?;
    assert_eq!(advice["context"].as_array().map(Vec::len), Some(1 + 4 + 2));

    // 3b. The training window the API keeps (differential dataflow over
    //     `features`) equals a recomputation from the topic.
    wait_caught_up(&settings, &groups[1], &[MARKET_BARS.name()]).await?;
    let expected = window_from_topic(&settings)?;
    let window = api
        .until(
            &format!("/api/features/{INSTRUMENT}/window"),
            READ_A,
            "matched the features topic",
            |w| w["features"] == expected,
        )
        .await?;
    assert_eq!(window["days"], 30);
    assert_eq!(window["features"], expected, "{window:#}");

    // 4. A second version stays in staging; ops promote it, then roll back.
    let second = submit(
        &api,
        TRAIN_A,
        json!({"model_key": KEY, "instruments": [INSTRUMENT], "hyperparams": {"states": 2}}),
    )
    .await?;
    let (done, _) = ended(&api, &second).await?;
    assert_eq!(
        (done["state"].as_str(), done["model_version"].as_i64()),
        (Some("completed"), Some(2))
    );
    let promote = json!({"model_version": 2, "reason": "reviewed"});
    let path = format!("/api/models/{KEY}/promote");
    api.expect(403, "POST", &path, Some(READ_A), Some(&promote))
        .await?;
    api.expect(403, "POST", &path, Some(ALL_B), Some(&promote))
        .await?;
    api.expect(202, "POST", &path, Some(WRITE_A), Some(&promote))
        .await?;
    prod_is(&api, 2).await?;
    let rollback = format!("/api/models/{KEY}/rollback");
    api.expect(
        404,
        "POST",
        &rollback,
        Some(WRITE_A),
        Some(&json!({"model_version": 3})),
    )
    .await?;
    // The plan: v1 re-scored on prod's reference set, the verdict, nothing
    // sent; then the rollback as the plan says (forced when refused).
    let plan = api
        .expect(
            200,
            "POST",
            &rollback,
            Some(WRITE_A),
            Some(&json!({"model_version": 1, "plan": true})),
        )
        .await?;
    let (rescored, prod_score, tolerance) = (
        plan["rescored"].as_f64().unwrap_or(f64::NAN),
        plan["prod_score"].as_f64().unwrap_or(f64::NAN),
        plan["rollback_tolerance"].as_f64().unwrap_or(f64::NAN),
    );
    assert!(rescored.is_finite() && prod_score.is_finite(), "{plan}");
    let verified = rescored >= prod_score - tolerance;
    assert_eq!(plan["verified"], verified, "{plan}");
    assert_eq!(plan["refusal"].is_null(), verified, "{plan}");
    prod_is(&api, 2).await?;
    api.expect(
        422,
        "POST",
        &format!("/api/models/{KEY}/promote"),
        Some(WRITE_A),
        Some(&json!({"model_version": 1, "plan": true})),
    )
    .await?;
    api.expect(
        202,
        "POST",
        &rollback,
        Some(WRITE_A),
        Some(&json!({"model_version": 1, "force": !verified, "reason": "test"})),
    )
    .await?;
    prod_is(&api, 1).await?;
    api.expect(
        422,
        "POST",
        &rollback,
        Some(WRITE_A),
        Some(&json!({"model_version": 2})),
    )
    .await?;

    // 5. A rerun from the first training's manifest reproduces its hash.
    let body = api
        .expect(
            202,
            "POST",
            &format!("/api/trainings/{first}/rerun"),
            Some(TRAIN_A),
            None,
        )
        .await?;
    let (rerun, _) = ended(&api, body["training_id"].as_str().unwrap_or_default()).await?;
    assert_eq!(
        rerun["tenant"], "desk-a",
        "a rerun is the original's tenant"
    );
    assert_eq!(
        metric(&rerun, "rerun_parameter_hash_matches"),
        1.0,
        "{rerun:#}"
    );

    // 6. What ops watch.
    let (_, list) = api
        .call(
            "GET",
            &format!("/api/trainings?model_key={KEY}&status=completed"),
            Some(READ_A),
            None,
        )
        .await?;
    assert_eq!(list["total"], 3, "{list:#}");
    let (_, other) = api.call("GET", "/api/trainings", Some(ALL_B), None).await?;
    assert_eq!(other["total"], 0, "desk-b sees none of desk-a's: {other}");
    let metrics = api.expect(200, "GET", "/metrics", None, None).await?;
    let text = metrics.as_str().unwrap_or_default();
    for needle in [
        &format!("autotrain_promotions_total{{model_key=\"{KEY}\"}} 3") as &str,
        "autotrain_trainings{state=\"completed\"} 3",
        "autotrain_param_changes_total{",
        "autotrain_training_duration_seconds_count 3",
        "autotrain_api_requests_total{method=\"POST\",route=\"/api/trainings\",status=\"202\"} 2",
        "autotrain_topic_records{topic=\"param.updates\"}",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle:?}:\n{text}");
    }

    server.stop().await?;
    while let Some(r) = running.pop() {
        r.stop().await?;
    }
    Ok(())
}

fn pending_anomaly(ts: i64) -> ValidationFlag {
    ValidationFlag {
        flag_id: format!("anomaly:{INSTRUMENT}:{ts}").to_lowercase(),
        instrument: INSTRUMENT.into(),
        timeframe: "30m".into(),
        kind: FlagKind::Anomaly,
        severity: Severity::Warning,
        ts,
        gap_start: None,
        gap_end: None,
        missing_bars: None,
        detail: "return 12 sigma".into(),
        state: HitlState::Pending,
        actor: None,
        decided_at: None,
    }
}

fn error_of(body: &Value) -> String {
    body["error"]["message"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_answers_its_errors_in_json() -> Result<()> {
    init_logging();
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("api-errors").await?;
    let store = tempfile::tempdir()?;
    let trainer = trainer_config(store.path());
    let trainer_service = start_trainer(&settings, trainer.clone());
    let (api, server) = start_api(&settings, api_config(), trainer).await?;

    // Authentication: every protected operation of the OpenAPI document
    // is routed and refuses a call without a token; public ones answer.
    let doc = api.expect(200, "GET", "/openapi.json", None, None).await?;
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            operations += 1;
            let concrete = path
                .replace("{model_key}", "m")
                .replace("{action}", "approve")
                .replace(['{', '}'], "");
            let (status, body) = api
                .call(&method.to_uppercase(), &concrete, None, None)
                .await?;
            if op["x-scope"].is_string() {
                assert_eq!(status, 401, "{method} {path}: {body}");
                assert_eq!(body["error"]["code"], "unauthorized", "{body}");
            } else {
                assert!(status == 200, "{method} {path}: {status} {body}");
            }
        }
    }
    assert_eq!(operations, 28);
    let (status, body) = api
        .call("GET", "/api/trainings", Some("not-a-token"), None)
        .await?;
    assert_eq!((status, error_of(&body).as_str()), (401, "unknown token"));
    let (status, body) = api
        .call("GET", "/api/features/x:NONE/window", Some(READ_A), None)
        .await?;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (404, "no feature rows for \"x:NONE\"")
    );
    let (status, body) = api.call("GET", "/nowhere", Some(READ_A), None).await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // What the dashboard reads: who calls, charts, bounds.
    let (status, me) = api.call("GET", "/api/whoami", Some(READ_A), None).await?;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["scopes"], json!(["ml:read"]), "{me}");
    let (status, body) = api
        .call("GET", "/api/instruments/x:NONE/chart", Some(READ_A), None)
        .await?;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (404, "no bars or regimes for \"x:NONE\"")
    );
    for limit in ["0", "5001", "many"] {
        let (status, body) = api
            .call(
                "GET",
                &format!("/api/instruments/{INSTRUMENT}/chart?limit={limit}"),
                Some(READ_A),
                None,
            )
            .await?;
        assert_eq!(status, 400, "limit={limit}: {body}");
    }
    // The page itself is public (it holds no data); its data is not.
    let (status, page) = api.call("GET", "/dashboard", None, None).await?;
    assert_eq!(status, 200);
    assert!(page
        .as_str()
        .is_some_and(|p| p.contains("<title>autotrain</title>")));
    api.expect(401, "GET", "/dashboard/events", None, None)
        .await?;

    // Trainings: scope, malformed and refused bodies, queries.
    let good = json!({"model_key": "hmm/test:NODATA", "hyperparams": {"min_rows": 100000}});
    api.expect(403, "POST", "/api/trainings", Some(READ_A), Some(&good))
        .await?;
    let (status, body) = api
        .raw(
            "POST",
            "/api/trainings",
            Some(TRAIN_A),
            Some("{\"model_key\"".into()),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    for (bad, why) in [
        (json!({"model_key": "k", "bogus": 1}), "unknown field"),
        (json!({"hyperparams": {}}), "model_key"),
        (json!({"model_key": ""}), "model_key is empty"),
        (
            json!({"model_key": "k", "hyperparams": {"states": "many"}}),
            "states",
        ),
        (json!({"model_key": "k", "run_fetch": true}), "run_fetch"),
        (json!({"model_key": "k", "priority": "asap"}), "asap"),
        (
            json!({"model_key": "k", "hyperparams": {"states": {"n": 1}}}),
            "states",
        ),
        // Bounded: no request can ask for a fit that jams a trainer slot.
        (
            json!({"model_key": "k", "hyperparams": {"states": 9_223_372_036_854_775_808u64}}),
            "between 1 and 16",
        ),
        (
            json!({"model_key": "k", "hyperparams": {"states": 1_000_000}}),
            "between 1 and 16",
        ),
        (
            json!({"model_key": "k", "hyperparams": {"max_iter": "1000000000"}}),
            "max_iter",
        ),
        (
            json!({"model_key": "k", "hyperparams": {"tol": "NaN"}}),
            "tol",
        ),
    ] {
        let body = api
            .expect(422, "POST", "/api/trainings", Some(TRAIN_A), Some(&bad))
            .await?;
        assert!(error_of(&body).contains(why), "{bad}: {body}");
    }
    // The schema's bounds are the whole rule: a key of white space is a key,
    // and the trainer takes it like any other.
    let odd = submit(
        &api,
        TRAIN_A,
        json!({"model_key": " \u{1f}", "hyperparams": {"min_rows": 100000}}),
    )
    .await?;
    api.until(
        &format!("/api/trainings/{odd}"),
        READ_A,
        "an odd key waited for data",
        |v| v["state"] == "waiting_data",
    )
    .await?;
    api.expect(
        202,
        "DELETE",
        &format!("/api/trainings/{odd}"),
        Some(TRAIN_A),
        None,
    )
    .await?;
    api.until(
        &format!("/api/trainings/{odd}"),
        READ_A,
        "an odd key was cancelled",
        |v| v["state"] == "cancelled",
    )
    .await?;
    for query in [
        "status=bogus",
        "page=0",
        "page_size=100000",
        "page=abc",
        "colour=red",
    ] {
        api.expect(
            400,
            "GET",
            &format!("/api/trainings?{query}"),
            Some(READ_A),
            None,
        )
        .await?;
    }
    api.expect(404, "GET", "/api/trainings/tr-nope", Some(READ_A), None)
        .await?;

    // A training that waits for data: cancel, retry, cancel again; the
    // other tenant can neither see nor touch it.
    let id = submit(&api, TRAIN_A, good).await?;
    api.until(
        &format!("/api/trainings/{id}"),
        READ_A,
        "waited for data",
        |v| v["state"] == "waiting_data",
    )
    .await?;
    api.expect(
        403,
        "GET",
        &format!("/api/trainings/{id}"),
        Some(ALL_B),
        None,
    )
    .await?;
    api.expect(
        403,
        "DELETE",
        &format!("/api/trainings/{id}"),
        Some(ALL_B),
        None,
    )
    .await?;
    api.expect(
        409,
        "POST",
        &format!("/api/trainings/{id}/retry"),
        Some(TRAIN_A),
        None,
    )
    .await?;
    api.expect(
        202,
        "DELETE",
        &format!("/api/trainings/{id}"),
        Some(TRAIN_A),
        Some(&json!({"reason": "wrong key"})),
    )
    .await?;
    api.until(
        &format!("/api/trainings/{id}"),
        READ_A,
        "was cancelled",
        |v| v["state"] == "cancelled",
    )
    .await?;
    api.expect(
        409,
        "DELETE",
        &format!("/api/trainings/{id}"),
        Some(TRAIN_A),
        None,
    )
    .await?;
    api.expect(
        202,
        "POST",
        &format!("/api/trainings/{id}/retry"),
        Some(TRAIN_A),
        None,
    )
    .await?;
    api.until(
        &format!("/api/trainings/{id}"),
        READ_A,
        "waited again",
        |v| v["state"] == "waiting_data" && v["attempt"] == 2,
    )
    .await?;
    api.expect(
        409,
        "POST",
        &format!("/api/trainings/{id}/rerun"),
        Some(TRAIN_A),
        None,
    )
    .await?;
    let (_, logs) = api
        .call(
            "GET",
            &format!("/api/trainings/{id}/logs?tail=2"),
            Some(READ_A),
            None,
        )
        .await?;
    assert_eq!(logs["lines"].as_array().map(Vec::len), Some(2), "{logs}");
    assert!(logs["total"].as_u64() > Some(4), "{logs}");
    let (_, stats) = api
        .call("GET", "/api/trainings/stats", Some(READ_A), None)
        .await?;
    assert_eq!(
        (stats["capacity"].as_u64(), stats["waiting"].as_u64()),
        (Some(2), Some(1)),
        "{stats}"
    );
    api.expect(
        202,
        "DELETE",
        &format!("/api/trainings/{id}"),
        Some(TRAIN_A),
        None,
    )
    .await?;

    // Models.
    api.expect(404, "GET", "/api/models/hmm/none:X", Some(READ_A), None)
        .await?;
    api.expect(
        404,
        "POST",
        "/api/models/hmm/none:X/promote",
        Some(WRITE_A),
        Some(&json!({"model_version": 1})),
    )
    .await?;
    api.expect(
        422,
        "POST",
        "/api/models/hmm/none:X/promote",
        Some(WRITE_A),
        Some(&json!({"version": 1})),
    )
    .await?;

    // Flags: deciding market data needs a platform token.
    let flag = pending_anomaly(1_500_000_000_000);
    publish(
        &settings,
        MARKET_FLAGS,
        INSTRUMENT,
        std::slice::from_ref(&flag),
    )
    .await?;
    api.until("/api/flags?state=pending", READ_A, "listed the flag", |v| {
        v["total"] == 1
    })
    .await?;
    let approve = format!("/api/flags/{}/approve", flag.flag_id);
    api.expect(403, "POST", &approve, Some(WRITE_A), None)
        .await?;
    let body = api
        .expect(
            200,
            "POST",
            &approve,
            Some(PLATFORM),
            Some(&json!({"reason": "genuine move"})),
        )
        .await?;
    assert_eq!(
        (body["state"].as_str(), body["actor"].as_str()),
        (Some("approved"), Some("api:platform"))
    );
    api.expect(409, "POST", &approve, Some(PLATFORM), None)
        .await?;
    api.expect(
        404,
        "POST",
        &format!("/api/flags/{}/bless", flag.flag_id),
        Some(PLATFORM),
        None,
    )
    .await?;
    api.expect(404, "POST", "/api/flags/nope/reject", Some(PLATFORM), None)
        .await?;
    api.expect(400, "GET", "/api/flags?state=later", Some(READ_A), None)
        .await?;
    let decided =
        until_topic::<ValidationFlag>(&settings, MARKET_FLAGS.name(), "the decision", |fs| {
            fs.iter().any(|f| f.state == HitlState::Approved)
        })
        .await?;
    assert_eq!(decided.len(), 2);

    // Presets: bounds are 400 with the reason; registered ones are arms.
    let register = format!("/preset/register/market_making/{INSTRUMENT}");
    let preset =
        json!({"preset_id": "mid", "params": {"half_spread_bps": 15.0, "size": 0.5, "skew": 0.3}});
    api.expect(403, "POST", &register, Some(READ_A), Some(&preset))
        .await?;
    let wild = json!({"preset_id": "wild", "params": {"half_spread_bps": 15.0, "size": 50.0, "skew": 0.3}});
    let body = api
        .expect(400, "POST", &register, Some(PLATFORM), Some(&wild))
        .await?;
    assert!(error_of(&body).contains("size"), "{body}");
    api.expect(201, "POST", &register, Some(PLATFORM), Some(&preset))
        .await?;
    api.expect(409, "POST", &register, Some(PLATFORM), Some(&preset))
        .await?;
    api.expect(
        404,
        "POST",
        &format!("/preset/register/nope/{INSTRUMENT}"),
        Some(PLATFORM),
        Some(&preset),
    )
    .await?;
    let registered =
        until_topic::<PresetRegistration>(&settings, PARAM_PRESETS.name(), "the preset", |ps| {
            !ps.is_empty()
        })
        .await?;
    assert_eq!(
        (
            registered[0].preset_id.as_str(),
            registered[0].actor.as_str()
        ),
        ("mid", "api:platform")
    );

    // Advice and outcomes.
    let advise = format!(
        "/param/market_making/{INSTRUMENT}?features[rvol_20]=1.2&features[volume_z_20]=-0.5"
    );
    let advice = api.expect(200, "GET", &advise, Some(READ_A), None).await?;
    assert_eq!(
        advice["scores"].as_object().map(|s| s.len()),
        Some(4),
        "{advice}"
    );
    let (_, again) = api.call("GET", &advise, Some(READ_A), None).await?;
    assert_eq!(again, advice, "the same question, the same answer");
    for bad in ["?features[nope]=1", "?features[rvol_20]=abc", "?rvol_20=1"] {
        api.expect(
            400,
            "GET",
            &format!("/param/market_making/{INSTRUMENT}{bad}"),
            Some(READ_A),
            None,
        )
        .await?;
    }
    api.expect(404, "GET", "/param/nope/x:Y", Some(READ_A), None)
        .await?;
    let config_id = advice["config_id"].as_str().unwrap_or_default().to_string();
    let learn = format!("/learn/outcome/market_making/{INSTRUMENT}/mid");
    api.expect(
        403,
        "POST",
        &learn,
        Some(TRAIN_A),
        Some(&json!({"reward": 1.0, "config_id": config_id})),
    )
    .await?;
    // No decision to learn on; a context of the wrong length; no number.
    for refused in [
        json!({"reward": 1.0}),
        json!({"reward": 1.0, "context": [1.0]}),
        json!({"reward": "lots"}),
        json!({"reward": 1.0, "config_id": "adv-unknown"}),
    ] {
        api.expect(422, "POST", &learn, Some(PLATFORM), Some(&refused))
            .await?;
    }
    api.expect(
        404,
        "POST",
        &format!("/learn/outcome/market_making/{INSTRUMENT}/nope"),
        Some(PLATFORM),
        Some(&json!({"reward": 1.0, "config_id": config_id})),
    )
    .await?;
    api.expect(
        202,
        "POST",
        &learn,
        Some(PLATFORM),
        Some(&json!({"reward": 2.5, "config_id": config_id, "trade_id": "t-1"})),
    )
    .await?;
    let outcomes =
        until_topic::<TradeOutcome>(&settings, TRADE_OUTCOMES.name(), "the outcome", |os| {
            !os.is_empty()
        })
        .await?;
    assert_eq!(outcomes.len(), 1);
    let context: Vec<f64> = serde_json::from_value(advice["context"].clone())?;
    assert_eq!(
        (
            outcomes[0].trade_id.as_str(),
            outcomes[0].reward,
            &outcomes[0].context
        ),
        ("t-1", 2.5, &context)
    );
    // The replica learnt from it: the same question now scores `mid`
    // differently.
    let (_, learnt) = api
        .until(&advise, READ_A, "learnt", |a| {
            a["scores"]["mid"] != advice["scores"]["mid"]
        })
        .await
        .map(|a| (200, a))?;
    assert!(learnt["scores"]["mid"].is_number());

    // The kill-switch: ops resume what it holds (platform token, a reason),
    // recorded with who and why on `param.updates`.
    let resume = format!("/param/market_making/{INSTRUMENT}/resume");
    let why = json!({"reason": "drawdown reviewed"});
    let body = api
        .expect(409, "POST", &resume, Some(PLATFORM), Some(&why))
        .await?;
    assert!(error_of(&body).contains("not held"), "{body}");
    let tripped =
        autotrain_integration_tests::cycle::kill_switch_tripped("market_making", INSTRUMENT);
    let key = autotrain_params::update_key("market_making", INSTRUMENT);
    publish(&settings, PARAM_UPDATES, &key, &[tripped]).await?;
    for (token, body, status) in [
        (WRITE_A, &why, 403),
        (READ_A, &why, 403),
        (PLATFORM, &json!({"reason": ""}), 422),
        (PLATFORM, &json!({}), 422),
    ] {
        api.expect(status, "POST", &resume, Some(token), Some(body))
            .await?;
    }
    api.expect(
        404,
        "POST",
        &format!("/param/nope/{INSTRUMENT}/resume"),
        Some(PLATFORM),
        Some(&why),
    )
    .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        let (status, body) = api
            .call("POST", &resume, Some(PLATFORM), Some(&why))
            .await?;
        if status == 202 {
            break body;
        }
        ensure!(
            status == 409 && std::time::Instant::now() < deadline,
            "resume: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(resumed["actor"], "api:platform", "{resumed}");
    let updates = until_topic::<ParamUpdate>(&settings, PARAM_UPDATES.name(), "the reset", |us| {
        us.iter().any(|u| u.reason == UpdateReason::Manual)
    })
    .await?;
    let manual = updates
        .iter()
        .find(|u| u.reason == UpdateReason::Manual)
        .expect("found");
    assert_eq!(
        (
            manual.preset_id.as_str(),
            manual.actor.as_deref(),
            manual.note.as_deref()
        ),
        ("safe", Some("api:platform"), Some("drawdown reviewed"))
    );
    api.until(&advise, READ_A, "saw the reset", |a| {
        a["kill_switch"] == false
    })
    .await?;
    api.expect(409, "POST", &resume, Some(PLATFORM), Some(&why))
        .await?;

    server.stop().await?;
    trainer_service.stop().await?;
    Ok(())
}

/// The HTTP contract at its edges: the bearer scheme in any case, a 414
/// (not a 5xx) for an oversized target, 405 with the right `Allow` on the
/// model routes, the OpenAPI document saying what the routes answer, and a
/// burst of 1,000 concurrent connections all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_http_contract_holds_at_its_edges() -> Result<()> {
    init_logging();
    let broker = TestBroker::embedded();
    let settings = broker.fresh_topics("api-edges").await?;
    let store = tempfile::tempdir()?;
    let trainer = trainer_config(store.path());
    let (api, server) = start_api(&settings, api_config(), trainer).await?;
    let http = reqwest::Client::new();

    for scheme in ["bearer", "BEARER", "Bearer"] {
        let status = http
            .get(format!("{}/api/trainings", api.base))
            .header("authorization", format!("{scheme} {READ_A}"))
            .send()
            .await?
            .status();
        assert_eq!(status, 200, "scheme {scheme}");
    }

    let long_key = "k".repeat(20_000);
    let (status, body) = api
        .call(
            "GET",
            &format!("/api/models/{long_key}"),
            Some(READ_A),
            None,
        )
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (414, Some("uri_too_long"))
    );

    for (method, path, allow) in [
        (reqwest::Method::PUT, "/api/models/hmm/m/promote", "POST"),
        (
            reqwest::Method::DELETE,
            "/api/models/hmm/m/rollback",
            "POST",
        ),
        (reqwest::Method::DELETE, "/api/models/hmm/m", "GET"),
    ] {
        let response = http
            .request(method.clone(), format!("{}{path}", api.base))
            .bearer_auth(PLATFORM)
            .send()
            .await?;
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
    }

    let doc = api.expect(200, "GET", "/openapi.json", None, None).await?;
    for (method, path) in [
        ("post", "/api/trainings/{id}/retry"),
        ("post", "/api/trainings/{id}/rerun"),
        ("delete", "/api/trainings/{id}"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]["409"].is_object(),
            "{method} {path} documents 409"
        );
    }
    assert!(
        doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
            ["application/openmetrics-text"]
            .is_object()
    );
    let promote = &doc["paths"]["/api/models/{model_key}/promote"]["post"]["requestBody"]
        ["content"]["application/json"]["schema"]["properties"]["model_version"];
    assert_eq!(promote["maximum"], 2_147_483_647);
    // A key taken from a path into a body (schemathesis links) obeys both.
    let body_key = &doc["paths"]["/api/trainings"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["properties"]["model_key"];
    for path in ["/api/models/{model_key}", "/api/models/{model_key}/promote"] {
        let item = &doc["paths"][path];
        let op = if item["get"].is_object() {
            &item["get"]
        } else {
            &item["post"]
        };
        let param = op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "model_key"))
            .expect("model_key is a path parameter");
        assert_eq!(&param["schema"], body_key, "{path}");
    }
    assert_eq!(body_key["minLength"], 1);
    assert!(body_key.get("pattern").is_none(), "{body_key}");

    let answered = futures::future::join_all((0..1_000).map(|_| {
        let url = format!("{}/health", api.base);
        async move {
            reqwest::Client::new()
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    }))
    .await;
    let failed: Vec<_> = answered.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 1,000 got no answer: {:?}",
        failed.len(),
        failed.first()
    );

    server.stop().await?;
    Ok(())
}
