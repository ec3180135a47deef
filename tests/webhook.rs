//! Training notifications to a webhook, on a real Apache Kafka into a real
//! HTTP receiver (an axum server standing in for the user's endpoint):
//! every completed, failed or cancelled training and every alert arrives,
//! progress does not; failed POSTs (503) are retried and nothing is lost
//! or repeated; a redelivery (a fresh group) carries the same ids; a
//! receiver refusing the payload (400) stops the sink with its answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use autotrain_connector_webhook::{WebhookSink, INPUTS};
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run_sink, SinkConfig};
use autotrain_schemas::{TrainingState, TrainingStatus};
use autotrain_topics::TRAINING_STATUS;
use axum::extract::State;
use axum::http::StatusCode;

#[derive(Debug, Default)]
struct Received {
    /// Answer these first requests with this status.
    refuse: Vec<StatusCode>,
    posts: usize,
    /// Every notification received, by id (deliveries per id).
    by_id: BTreeMap<String, (usize, serde_json::Value)>,
}

type Shared = Arc<Mutex<Received>>;

async fn hook(State(s): State<Shared>, body: axum::Json<serde_json::Value>) -> StatusCode {
    let mut r = s.lock().unwrap_or_else(|p| p.into_inner());
    r.posts += 1;
    if !r.refuse.is_empty() {
        return r.refuse.remove(0);
    }
    for n in body["notifications"].as_array().into_iter().flatten() {
        let id = n["id"].as_str().unwrap_or_default().to_string();
        let slot = r.by_id.entry(id).or_insert((0, n.clone()));
        slot.0 += 1;
    }
    StatusCode::NO_CONTENT
}

async fn receiver(refuse: Vec<StatusCode>) -> Result<(String, Shared)> {
    let state: Shared = Arc::new(Mutex::new(Received {
        refuse,
        ..Received::default()
    }));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, state))
}

fn status(i: usize, state: TrainingState, at: i64) -> TrainingStatus {
    TrainingStatus {
        training_id: format!("tr-{i}"),
        model_key: format!("hmm/test:I{}", i % 3),
        state,
        stage: None,
        progress: if state == TrainingState::Running {
            0.5
        } else {
            1.0
        },
        message: format!("{state:?}"),
        metrics: vec![],
        error: (state == TrainingState::Failed).then(|| "fit diverged".to_string()),
        attempt: 1,
        model_version: (state == TrainingState::Completed).then_some(i as i32),
        at,
    }
}

fn config(group: &str) -> SinkConfig {
    let mut c = SinkConfig::new(group, INPUTS);
    c.max_rows = 20;
    c.max_age = Duration::from_millis(100);
    c.retry_attempts = 10;
    c.retry_min_delay = Duration::from_millis(20);
    c.retry_max_delay = Duration::from_millis(200);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_ends_and_alerts_reach_a_webhook_once_each() -> Result<()> {
    let broker = TestBroker::kafka();
    let settings = broker.fresh_topics("webhook").await?;
    let mut statuses = Vec::new();
    let ends = [
        TrainingState::Completed,
        TrainingState::Failed,
        TrainingState::Cancelled,
    ];
    for i in 0..60 {
        let at = 1_700_000_000_000 + i as i64 * 1_000;
        statuses.push(status(i, TrainingState::Queued, at));
        statuses.push(status(i, TrainingState::Running, at + 1));
        statuses.push(status(i, ends[i % 3], at + 2));
        if i % 10 == 0 {
            statuses.push(status(i, TrainingState::Alert, at + 3));
        }
    }
    for s in &statuses {
        publish(
            &settings,
            TRAINING_STATUS,
            &s.training_id,
            std::slice::from_ref(s),
        )
        .await?;
    }
    let notable = 60 + 6;

    // Two refusals (503) first: retried, nothing lost.
    let (url, got) = receiver(vec![StatusCode::SERVICE_UNAVAILABLE; 2]).await?;
    let limit = Duration::from_secs(120);
    let (sink, stats) = sink_until_caught_up(
        &settings,
        &config(&unique("webhook")),
        INPUTS,
        WebhookSink::new(&url)?,
        limit,
    )
    .await?;
    eprintln!("{sink:?} {stats:?}");
    {
        let r = got.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(r.by_id.len(), notable, "one notification per end and alert");
        assert!(r.by_id.values().all(|(n, _)| *n == 1), "none repeated");
        assert!(stats.retries >= 2, "the refusals were retried: {stats:?}");
        let events: BTreeMap<&str, usize> =
            r.by_id.values().fold(BTreeMap::new(), |mut m, (_, n)| {
                *m.entry(n["event"].as_str().unwrap_or("?")).or_default() += 1;
                m
            });
        assert_eq!(
            events,
            BTreeMap::from([
                ("training.alert", 6),
                ("training.cancelled", 20),
                ("training.completed", 20),
                ("training.failed", 20)
            ])
        );
        let failed = r
            .by_id
            .values()
            .find(|(_, n)| n["event"] == "training.failed")
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        assert_eq!(failed["error"], "fit diverged", "{failed}");
    }
    assert_eq!(sink.stats.statuses as usize, statuses.len());
    assert_eq!(sink.stats.delivered as usize, notable);

    // A redelivery from the start carries the same ids.
    sink_until_caught_up(
        &settings,
        &config(&unique("webhook-again")),
        INPUTS,
        WebhookSink::new(&url)?,
        limit,
    )
    .await?;
    {
        let r = got.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(r.by_id.len(), notable, "the same ids");
        assert!(
            r.by_id.values().all(|(n, _)| *n == 2),
            "each delivered twice"
        );
    }

    // A receiver that refuses the payload stops the sink, with its answer.
    let (url, _) = receiver(vec![StatusCode::BAD_REQUEST; 100]).await?;
    let refused = unique("webhook-refused");
    let out = run_sink(
        &settings,
        &config(&refused),
        WebhookSink::new(&url)?,
        Arc::new(Counters::default()),
        std::future::pending(),
    )
    .await;
    let err = out.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("400"), "{err}");
    Ok(())
}
