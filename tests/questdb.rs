//! The QuestDB sink on a real Apache Kafka into a real QuestDB server
//! (`scripts/questdb`): the sink creates its tables (`tables.sql`, upsert
//! keys), bars, flags, feature vectors and regime posteriors become rows
//! whose counts and values equal the topics; QuestDB killed mid-stream and
//! restarted loses nothing; a crash before a flush and a whole second
//! delivery (a fresh group) duplicate nothing; an undecodable record is
//! dead-lettered.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_connector_questdb::{create_tables, QuestDbSink, INPUTS};
use autotrain_integration_tests::questdb::QuestDb;
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run_sink, OutRecord, Producer, SinkConfig};
use autotrain_schemas::{
    Bar, FeatureValue, FeatureVector, FlagKind, HitlState, RegimePosterior, Severity,
    ValidationFlag,
};
use autotrain_topics::{FEATURES, MARKET_BARS, MARKET_FLAGS, REGIMES};

fn features_of(bars: &[Bar]) -> Vec<FeatureVector> {
    bars.windows(2)
        .map(|w| FeatureVector {
            instrument: "bitfinex:LTCUSD".into(),
            timeframe: "30m".into(),
            ts: w[1].ts,
            contract_version: "test-1".into(),
            bar_revision: 0,
            values: vec![
                FeatureValue {
                    name: "lr".into(),
                    value: Some((w[1].close / w[0].close).ln()),
                },
                FeatureValue {
                    name: "vol_20".into(),
                    value: None,
                },
            ],
        })
        .collect()
}

fn posteriors_of(bars: &[Bar]) -> Vec<RegimePosterior> {
    bars.iter()
        .enumerate()
        .map(|(i, b)| {
            let p = (i % 10) as f64 / 10.0;
            RegimePosterior {
                instrument: "bitfinex:LTCUSD".into(),
                timeframe: "30m".into(),
                ts: b.ts,
                model_key: "hmm/bitfinex:LTCUSD".into(),
                model_version: 1,
                probabilities: vec![p, 1.0 - p],
                regime: i32::from(p < 0.5),
                loglik: -(i as f64),
                features: vec![],
            }
        })
        .collect()
}

/// Rows per table, once each reaches what is expected (or a minute).
async fn counts(
    db: &QuestDb,
    expected: &[(&'static str, i64)],
) -> Result<Vec<(&'static str, i64)>> {
    let mut out = Vec::new();
    for (table, want) in expected {
        out.push((
            *table,
            db.count_reaching(table, *want, Duration::from_secs(60))
                .await?,
        ));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_reach_a_real_questdb_through_its_restart_a_crash_and_a_replay() -> Result<()> {
    let broker = TestBroker::kafka();
    let settings = broker.fresh_topics("questdb").await?;
    let input: Vec<Bar> = bars("bitfinex_LTCUSD_30m.csv", 3_000)
        .into_iter()
        .map(|b| Bar {
            checksum: Some(format!("{:016x}", b.ts)),
            ..b
        })
        .collect();
    publish_bars(&settings, MARKET_BARS, &input).await?;
    let features = features_of(&input[..501]);
    publish(&settings, FEATURES, "bitfinex:LTCUSD", &features).await?;
    let posteriors = posteriors_of(&input[..200]);
    publish(&settings, REGIMES, "bitfinex:LTCUSD", &posteriors).await?;
    let flag = ValidationFlag {
        flag_id: "gap:bitfinex:ltcusd:1".into(),
        instrument: "bitfinex:LTCUSD".into(),
        timeframe: "30m".into(),
        kind: FlagKind::Gap,
        severity: Severity::Error,
        ts: input[10].ts,
        gap_start: Some(input[9].ts),
        gap_end: Some(input[10].ts),
        missing_bars: Some(1),
        detail: "1 bar(s) missing".into(),
        state: HitlState::Open,
        actor: None,
        decided_at: None,
    };
    Producer::new(&settings)?
        .enqueue(&OutRecord::from_content(
            MARKET_FLAGS,
            &flag.instrument,
            &flag,
        )?)
        .await?
        .confirm()
        .await?;
    produce_raw(
        &settings,
        "market.bars",
        "bitfinex:LTCUSD",
        b"not avro".to_vec(),
    )
    .await?;
    // Rows: every bar, vector and posterior, and the flag.
    let rows_in = input.len() + features.len() + posteriors.len() + 1;

    let mut db = QuestDb::start()?;
    assert_eq!(create_tables(&db.conf(), Duration::from_secs(60)).await?, 4);
    let group = unique("questdb-sink");
    let mut config = SinkConfig::new(&group, INPUTS);
    config.max_rows = 500;
    config.max_age = Duration::from_millis(200);
    // Enough retries to outlast QuestDB's restart (a JVM start, up to a
    // minute on two busy cores): about 150 s at the 500 ms ceiling.
    config.retry_attempts = 300;
    config.retry_min_delay = Duration::from_millis(100);
    config.retry_max_delay = Duration::from_millis(500);

    // Phase 1: a crash (no final flush) once 1,000 rows went out.
    let c1 = Arc::new(Counters::default());
    tokio::select! {
        r = run_sink(&settings, &config, QuestDbSink::new(&db.conf())?, c1.clone(), std::future::pending()) => { r?; }
        _ = stop_when(c1.clone(), Duration::from_secs(120), |s| s.outputs >= 1_000) => {}
    }
    let phase1 = c1.snapshot();

    // Phase 2: QuestDB is killed; a new sink starts from the committed
    // offsets, its flushes fail and are retried; QuestDB comes back.
    db.kill()?;
    let c2 = Arc::new(Counters::default());
    let done = stop_when_caught_up(
        settings.clone(),
        group.clone(),
        INPUTS.to_vec(),
        Duration::from_secs(180),
    );
    let sink = run_sink(
        &settings,
        &config,
        QuestDbSink::new(&db.conf())?,
        c2.clone(),
        done,
    );
    let restart = async {
        stop_when(c2.clone(), Duration::from_secs(60), |s| s.retries >= 3).await;
        tokio::task::block_in_place(|| db.restart())
    };
    let (phase2, restarted) = tokio::join!(sink, restart);
    restarted?;
    let (sink, phase2) = phase2?;
    eprintln!("phase 1 {phase1:?}\nphase 2 {phase2:?}\n{sink:?}");
    assert!(
        phase2.retries >= 3,
        "flushes failed while QuestDB was down: {phase2:?}"
    );

    let expected = [
        ("market_bars", input.len() as i64),
        ("market_flags", 1),
        ("features", features.len() as i64),
        ("regimes", posteriors.len() as i64),
    ];
    assert_eq!(
        counts(&db, &expected).await?,
        expected,
        "rows per table after the restart"
    );

    // Values: every bar's close and volume at its time, every feature.
    let rows = db
        .rows("SELECT cast(ts AS LONG), close, volume, checksum FROM market_bars ORDER BY ts")
        .await?;
    assert_eq!(rows.len(), input.len());
    for (row, bar) in rows.iter().zip(&input) {
        assert_eq!(row[0].as_i64(), Some(bar.ts * 1_000), "{row:?}");
        assert_eq!(row[1].as_f64(), Some(bar.close), "{row:?}");
        assert_eq!(row[2].as_f64(), Some(bar.volume), "{row:?}");
        assert_eq!(row[3].as_str(), bar.checksum.as_deref(), "{row:?}");
    }
    let rows = db
        .rows("SELECT cast(ts AS LONG), lr FROM features ORDER BY ts")
        .await?;
    for (row, f) in rows.iter().zip(&features) {
        assert_eq!(row[0].as_i64(), Some(f.ts * 1_000), "{row:?}");
        assert_eq!(row[1].as_f64(), f.values[0].value, "{row:?}");
    }
    let rows = db
        .rows("SELECT regime, p0, p1, loglik FROM regimes ORDER BY ts")
        .await?;
    for (row, p) in rows.iter().zip(&posteriors) {
        assert_eq!(row[0].as_i64(), Some(i64::from(p.regime)), "{row:?}");
        assert_eq!(row[1].as_f64(), Some(p.probabilities[0]), "{row:?}");
        assert_eq!(row[2].as_f64(), Some(p.probabilities[1]), "{row:?}");
        assert_eq!(row[3].as_f64(), Some(p.loglik), "{row:?}");
    }
    let rows = db
        .rows("SELECT flag_id, kind, state, missing_bars FROM market_flags")
        .await?;
    assert_eq!(
        rows,
        vec![vec![
            serde_json::json!(flag.flag_id),
            serde_json::json!("gap"),
            serde_json::json!("open"),
            serde_json::json!(1)
        ]]
    );

    // Phase 3: everything delivered again (a fresh group from the start):
    // the upsert keys absorb it.
    let (_, phase3) = sink_until_caught_up(
        &settings,
        &SinkConfig {
            group_id: unique("questdb-sink-again"),
            ..config.clone()
        },
        INPUTS,
        QuestDbSink::new(&db.conf())?,
        Duration::from_secs(180),
    )
    .await?;
    assert_eq!(phase3.outputs, rows_in as u64, "{phase3:?}");
    // Let the WAL apply what was re-sent before counting again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        counts(&db, &expected).await?,
        expected,
        "rows per table after a replay"
    );

    let dlq = read_topic(&settings, "market.bars.dlq", 2, Duration::from_secs(10))?;
    let letters: HashSet<_> = dlq.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(
        letters.len(),
        1,
        "the undecodable record is dead-lettered (under one id, by both groups)"
    );
    Ok(())
}
