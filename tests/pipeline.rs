//! Bars through a real broker and the runner: 10,000 real BTC/USD bars are
//! produced, forwarded by a processor, and collected by a downstream
//! consumer. The forwarding processor crashes midway (no final commit) and
//! 500 bars are re-sent by the producer; every bar must arrive exactly once
//! after dedupe by event id, field for field. Also: the embedded broker's
//! truncation is detected, and Apache Kafka keeps every acknowledged bar
//! through a SIGKILL and restart of its process.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run, RunnerConfig};
use autotrain_schemas::{decode, Bar};

const N: usize = 10_000;
const RESENT: usize = 500;

async fn forward_with_crash(settings: autotrain_kafka::ClientSettings, strict: bool) -> Result<()> {
    let input = bars("bitfinex_BTCUSD_30m.csv", N);
    produce_bars(&settings, &input).await?;

    let mut fwd = RunnerConfig::new(unique("forward"), &["market.bars.raw"]);
    fwd.strict_log_start = strict;
    // Repeats lie within 500 records of their originals (and the crash
    // re-delivers at most what was not committed): 2,000 ids is plenty and
    // keeps the re-read after a restart short.
    fwd.dedupe_window = 2_000;
    let mut sink = RunnerConfig::new(unique("sink"), &["market.bars"]);
    sink.strict_log_start = strict;

    // Phase 1: forward until 4,000 bars are processed and acknowledged, then
    // crash: the run future is dropped, no final commit.
    let c1 = Arc::new(Counters::default());
    let crash = stop_when(c1.clone(), Duration::from_secs(120), |s| {
        s.acknowledged >= 4_000
    });
    tokio::select! {
        r = run(&settings, &fwd, Forward::default(), c1.clone(), std::future::pending()) => { r?; }
        _ = crash => {}
    }
    let phase1 = c1.snapshot();
    assert!(phase1.processed >= 4_000, "phase 1 processed {phase1:?}");

    // The producer re-sends its last 500 bars, as one does that restarts
    // without knowing what was acknowledged (same content ⇒ same ids).
    produce_bars(&settings, &input[N - RESENT..]).await?;

    // Phase 2: the forwarder restarts and runs until it has seen the re-sent
    // bars (the end of its input).
    let c2 = Arc::new(Counters::default());
    let resent = RESENT as u64;
    let stop_fwd = stop_when(c2.clone(), Duration::from_secs(240), move |s| {
        s.duplicates >= resent
    });
    let fwd_result = run(&settings, &fwd, Forward::default(), c2.clone(), stop_fwd).await;
    let (_, phase2) = fwd_result?;

    // Phase 3: a downstream consumer collects market.bars.
    let cs = Arc::new(Counters::default());
    let total = N as u64;
    let stop_sink = stop_when(cs.clone(), Duration::from_secs(240), move |s| {
        s.received >= total && s.processed >= total
    });
    let (collected, sink_stats) = run(
        &settings,
        &sink,
        Collect::<Bar>::default(),
        cs.clone(),
        async {
            stop_sink.await;
            // Linger: any extra copy on the wire would show up as a duplicate.
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
    )
    .await?;

    // The re-sent bars were recognised at the forwarder's input.
    assert!(
        phase2.duplicates >= RESENT as u64,
        "forwarder dropped {} duplicates: {phase2:?}",
        phase2.duplicates
    );

    // Downstream saw every bar exactly once, identical field by field.
    assert_eq!(collected.records.len(), N, "collector: {sink_stats:?}");
    let by_ts: BTreeMap<i64, &Bar> = collected.records.iter().map(|(_, b)| (b.ts, b)).collect();
    assert_eq!(by_ts.len(), N, "no bar twice");
    for want in &input {
        assert_same_bar(by_ts.get(&want.ts).expect("bar arrived"), want);
    }

    // On the wire there may be repeats from the crash, but never a bar
    // under two ids: distinct ids == distinct bars == N.
    let wire = read_topic(&settings, "market.bars", N, Duration::from_secs(30))?;
    let ids: HashSet<_> = wire
        .iter()
        .map(|(id, _, _)| id.expect("every output has an event id"))
        .collect();
    assert_eq!(
        ids.len(),
        N,
        "{} records on the wire, {} distinct ids",
        wire.len(),
        ids.len()
    );
    let mut ts_per_id = std::collections::HashMap::new();
    for (id, _, bytes) in &wire {
        let bar: Bar = decode(bytes)?;
        let prev = ts_per_id.insert(id.expect("id"), bar.ts);
        assert!(prev.is_none() || prev == Some(bar.ts), "one id, two bars");
    }
    eprintln!(
        "phase1 {phase1:?}\nphase2 {phase2:?}\nsink {sink_stats:?}\non the wire: {} records, {} distinct",
        wire.len(),
        ids.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_forward_10k_bars_with_crash_and_resend() -> Result<()> {
    let tb = TestBroker::embedded();
    let settings = tb.fresh_topics("fwd").await?;
    forward_with_crash(settings, true).await
}

/// The embedded broker keeps only the newest ~5 MiB per partition. A
/// consumer that needs older records must fail loudly, not skip them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_truncation_is_detected_not_skipped() -> Result<()> {
    let tb = TestBroker::embedded();
    let settings = tb.broker().settings(&format!("{}.", unique("trunc")));
    let mut spec = autotrain_topics::catalogue()
        .get("market.bars.raw")
        .expect("spec")
        .clone();
    spec.partitions = 1;
    autotrain_kafka::create_topics(tb.broker(), &settings, &[spec], 1).await?;
    // ~100 bytes a bar: 80,000 bars is ~8 MiB, beyond the bound.
    let many: Vec<Bar> = (0..80_000)
        .map(|i| Bar {
            ts: i64::from(i) * 60_000,
            ..bars("bitfinex_BTCUSD_30m.csv", 1)[0].clone()
        })
        .collect();
    produce_bars(&settings, &many).await?;
    let mut config = RunnerConfig::new(unique("late"), &["market.bars.raw"]);
    config.strict_log_start = true;
    expect_loss_from_the_start(&settings, &config, "embedded broker keeps only").await
}

/// A new group over `market.bars.raw` must stop with `DataLoss` at offset 0
/// (the hint in its message) before processing anything.
async fn expect_loss_from_the_start(
    settings: &autotrain_kafka::ClientSettings,
    config: &RunnerConfig,
    hint: &str,
) -> Result<()> {
    let counters = Arc::new(Counters::default());
    let stop = stop_when(counters.clone(), Duration::from_secs(30), |s| {
        s.received > 0
    });
    let result = run(
        settings,
        config,
        Forward::default(),
        counters.clone(),
        async {
            stop.await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
    )
    .await;
    let err = result.expect_err("a group starting after lost records must fail");
    let text = err.to_string();
    assert!(
        matches!(err, autotrain_kafka::KafkaError::DataLoss { needed: 0, .. }),
        "{text}"
    );
    assert!(text.contains(hint), "{text}");
    assert_eq!(
        counters.snapshot().processed,
        0,
        "nothing processed past the hole"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_forward_10k_bars_with_crash_and_resend() -> Result<()> {
    let tb = TestBroker::kafka();
    let settings = tb.fresh_topics("fwd").await?;
    forward_with_crash(settings, false).await
}

/// Apache Kafka killed with SIGKILL mid-stream and restarted on the same
/// data directory: every acknowledged bar is still there, in order, and
/// producing resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_killed_and_restarted_midway_keeps_every_acknowledged_bar() -> Result<()> {
    let mut kafka = Kafka::start()?;
    let settings = kafka.fresh_topics("kill").await?;
    let input = bars("bitfinex_BTCUSD_30m.csv", N);
    produce_bars(&settings, &input[..N / 2]).await?;
    kafka.kill()?;
    kafka.restart()?;
    produce_bars(&settings, &input[N / 2..]).await?;
    let wire = read_topic(&settings, "market.bars.raw", N, Duration::from_secs(120))?;
    assert_eq!(wire.len(), N, "every acknowledged bar survived the kill");
    for ((_, _, bytes), want) in wire.iter().zip(&input) {
        assert_same_bar(&decode::<Bar>(bytes)?, want);
    }
    Ok(())
}

/// A replay over a stretch of a partition that holds only an aborted
/// transaction (and nothing after it) ends at once with no records: the
/// state rebuild of a processor whose upstream crashed mid-transaction
/// must not wait for records that never become visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_replay_over_an_aborted_transaction_ends() -> Result<()> {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
    let tb = TestBroker::kafka();
    let settings = tb.fresh_topics("aborted").await?;
    let topic = settings.physical("market.bars");
    let producer: FutureProducer = settings
        .producer_config()
        .set("transactional.id", unique("aborted-txn"))
        .set("message.timeout.ms", "60000")
        .create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    let send = |n: usize| {
        let producer = producer.clone();
        let topic = topic.clone();
        async move {
            for i in 0..n {
                let payload = format!("{i}");
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .partition(0)
                            .key("k")
                            .payload(&payload),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e)?;
            }
            Ok::<(), rdkafka::error::KafkaError>(())
        }
    };
    producer.begin_transaction()?;
    send(10).await?;
    producer.commit_transaction(Duration::from_secs(30))?;
    producer.begin_transaction()?;
    send(10).await?;
    producer.abort_transaction(Duration::from_secs(30))?;
    // 0..10 committed, 10 its marker, 11..21 aborted, 21 the abort marker.
    let config = settings.reader_config();
    let started = std::time::Instant::now();
    let (t, c) = (topic.clone(), config.clone());
    let committed = tokio::task::spawn_blocking(move || {
        autotrain_kafka::reader::read_range(&c, &t, 0, 0, 22, Duration::from_secs(30))
    })
    .await??;
    assert_eq!(committed.len(), 10);
    let aborted = tokio::task::spawn_blocking(move || {
        autotrain_kafka::reader::read_range(&config, &topic, 0, 11, 22, Duration::from_secs(30))
    })
    .await??;
    assert!(aborted.is_empty(), "{} aborted records read", aborted.len());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// On Apache Kafka, a new consumer group on an event log whose oldest
/// records retention already deleted (a misconfigured cluster) fails loudly,
/// naming the gap, instead of starting quietly at the log start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_group_starting_after_retention_deleted_records_fails_loudly() -> Result<()> {
    let kafka = Kafka::start_with(&["log.retention.check.interval.ms=300"])?;
    let settings = kafka.fresh_topics("retention").await?;
    let topic = settings.physical("market.bars.raw");
    set_topic_configs(
        &kafka.bootstrap(),
        &topic,
        &[
            ("cleanup.policy", "delete"),
            ("retention.ms", "1000"),
            ("segment.ms", "100"),
        ],
    )
    .await?;
    let input = bars("bitfinex_BTCUSD_30m.csv", 200);
    produce_bars(&settings, &input[..100]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    produce_bars(&settings, &input[100..]).await?;
    // Wait until retention deleted the first segment of the bars' partition.
    let reader: rdkafka::consumer::BaseConsumer = settings.reader_config().create()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut low = 0;
        for p in 0..8 {
            low = low.max(
                rdkafka::consumer::Consumer::fetch_watermarks(
                    &reader,
                    &topic,
                    p,
                    Duration::from_secs(5),
                )?
                .0,
            );
        }
        if low > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention never deleted a segment"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // New bars keep arriving after the deletion.
    let more = bars("bitfinex_ETHUSD_30m.csv", 10)
        .into_iter()
        .map(|mut b| {
            b.symbol = input[0].symbol.clone();
            b.exchange = input[0].exchange.clone();
            b.ts += 1;
            b
        })
        .collect::<Vec<_>>();
    produce_bars(&settings, &more).await?;
    let config = RunnerConfig::new(unique("late"), &["market.bars.raw"]);
    expect_loss_from_the_start(
        &settings,
        &config,
        "deleted them before this group read them",
    )
    .await
}

/// A new group on a topic that is not an event log, whose oldest records
/// were deleted before anyone in the group read them, stops with
/// `DataLoss` naming the gap; told to accept it (`accept_log_start`), it
/// starts at the log start and reads exactly what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_new_group_after_deleted_records_fails_unless_told_to_accept() -> Result<()> {
    use autotrain_schemas::{DeadLetter, ErrorKind};
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let tb = TestBroker::kafka();
    let settings = tb.fresh_topics("acceptstart").await?;
    let letters: Vec<DeadLetter> = (0..20)
        .map(|i| DeadLetter {
            processor: "test".into(),
            source_topic: "market.bars.raw".into(),
            source_partition: 0,
            source_offset: i,
            key: None,
            payload: None,
            error_kind: ErrorKind::Invalid,
            error: format!("letter {i}"),
            source_timestamp: None,
        })
        .collect();
    publish(
        &settings,
        autotrain_topics::MARKET_BARS_DLQ,
        "one-key",
        &letters,
    )
    .await?;
    let topic = settings.physical("market.bars.dlq");
    let reader: BaseConsumer = settings.reader_config().create()?;
    let metadata = reader.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut deletions = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = reader.fetch_watermarks(&topic, p, Duration::from_secs(5))?;
        if high > 0 {
            deletions.add_partition_offset(&topic, p, Offset::Offset(high / 2))?;
        }
    }
    let admin: AdminClient<DefaultClientContext> = settings.reader_config().create()?;
    admin
        .delete_records(&deletions, &AdminOptions::new())
        .await?;

    let config = RunnerConfig::new(unique("strict"), &["market.bars.dlq"]);
    let counters = Arc::new(Counters::default());
    let stop = stop_when(counters.clone(), Duration::from_secs(30), |s| {
        s.received > 0
    });
    let err = run(
        &settings,
        &config,
        Collect::<DeadLetter>::default(),
        counters.clone(),
        async {
            stop.await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
    )
    .await
    .expect_err("a new group after deleted records must fail");
    assert!(
        matches!(
            err,
            autotrain_kafka::KafkaError::DataLoss {
                needed: 0,
                log_start: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("accept_log_start"), "{err}");
    assert_eq!(counters.snapshot().processed, 0);

    let mut config = RunnerConfig::new(unique("accepting"), &["market.bars.dlq"]);
    config.accept_log_start = true;
    let counters = Arc::new(Counters::default());
    let stop = stop_when(counters.clone(), Duration::from_secs(60), |s| {
        s.processed >= 10
    });
    run(
        &settings,
        &config,
        Collect::<DeadLetter>::default(),
        counters.clone(),
        stop,
    )
    .await?;
    assert_eq!(
        counters.snapshot().processed,
        10,
        "exactly the 10 records left"
    );
    Ok(())
}
