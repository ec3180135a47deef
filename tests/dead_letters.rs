//! Garbage bytes, a truncated record, an unknown fingerprint and a record of
//! the wrong type each end in the dead-letter topic with a reason and their
//! source offset; the valid bars around them flow on (embedded broker and
//! Apache Kafka). On Kafka, through the validator exactly-once, bars that
//! are no market observation (NaN or negative prices, a start a year ahead,
//! a 1 MB string) are dead-lettered with the reason too.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use autotrain_integration_tests::*;
use autotrain_kafka::runner::Counters;
use autotrain_kafka::{run, RunnerConfig};
use autotrain_schemas::{decode, encode, Bar, DeadLetter, ErrorKind, TradeOutcome};

async fn poison(tb: TestBroker) -> Result<()> {
    let settings = tb.fresh_topics("dlq").await?;
    let good = bars("bitfinex_ETHUSD_30m.csv", 6);
    let key = good[0].instrument();
    let valid = encode(&good[0])?;
    let mut unknown = valid.clone();
    unknown[2..10].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    let outcome = TradeOutcome {
        trade_id: "x".into(),
        strategy: "s".into(),
        instrument: key.clone(),
        config_id: "c".into(),
        preset_id: "p".into(),
        reward: 1.0,
        context: vec![],
        ts: 0,
        baseline_reward: None,
        flat: false,
    };
    let bad: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        ("garbage", b"this is not avro".to_vec(), ErrorKind::BadMagic),
        (
            "truncated",
            valid[..valid.len() - 4].to_vec(),
            ErrorKind::Truncated,
        ),
        ("unknown", unknown, ErrorKind::UnknownSchema),
        ("wrong type", encode(&outcome)?, ErrorKind::WrongType),
    ];
    // Interleave: good, bad, good, bad, ... good, good (one partition key).
    for (i, (_, bytes, _)) in bad.iter().enumerate() {
        produce_bars(&settings, &good[i..=i]).await?;
        produce_raw(&settings, "market.bars.raw", &key, bytes.clone()).await?;
    }
    produce_bars(&settings, &good[4..]).await?;

    let mut config = RunnerConfig::new(unique("dlq"), &["market.bars.raw"]);
    config.strict_log_start = tb.broker().is_embedded();
    let counters = Arc::new(Counters::default());
    let stop = stop_when(counters.clone(), Duration::from_secs(60), |s| {
        s.received >= 10
    });
    let (fwd, stats) = run(&settings, &config, Forward::default(), counters, stop).await?;
    assert_eq!(stats.dead_lettered, 4, "{stats:?}");
    assert_eq!(stats.processed, 6, "{stats:?}");
    assert_eq!(fwd.seen, good, "valid bars around the poison all processed");

    let letters = read_topic(&settings, "market.bars.dlq", 4, Duration::from_secs(20))?;
    assert_eq!(letters.len(), 4);
    let letters: Vec<DeadLetter> = letters
        .iter()
        .map(|(_, _, b)| decode(b))
        .collect::<Result<_, _>>()?;
    for (letter, (what, bytes, kind)) in letters.iter().zip(&bad) {
        assert_eq!(letter.error_kind, *kind, "{what}: {}", letter.error);
        assert!(!letter.error.is_empty(), "{what} has a reason");
        assert_eq!(letter.source_topic, "market.bars.raw");
        assert_eq!(letter.processor, "forward");
        assert_eq!(
            letter.payload.as_deref(),
            Some(&bytes[..]),
            "{what}: bytes kept whole"
        );
        assert_eq!(letter.key.as_deref(), Some(key.as_bytes()));
    }
    let offsets: Vec<i64> = letters.iter().map(|l| l.source_offset).collect();
    assert_eq!(
        offsets,
        vec![1, 3, 5, 7],
        "source offsets of the poison records"
    );
    let forwarded = read_topic(&settings, "market.bars", 6, Duration::from_secs(20))?;
    let forwarded: Vec<Bar> = forwarded
        .iter()
        .map(|(_, _, b)| decode(b))
        .collect::<Result<_, _>>()?;
    assert_eq!(forwarded, good);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_poison_records_go_to_the_dead_letter_topic() -> Result<()> {
    poison(TestBroker::embedded()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_poison_records_go_to_the_dead_letter_topic() -> Result<()> {
    poison(TestBroker::kafka()).await
}

/// An outside producer that reuses one event id for 20 different bars: the
/// first is processed, each of the other 19 is dead-lettered as an id
/// conflict (none vanishes as a "duplicate"), and a true re-send of the
/// first (same id, same bytes) is still dropped as the repeat it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_a_reused_event_id_is_a_conflict_not_a_duplicate() -> Result<()> {
    use autotrain_kafka::{EventId, OutRecord, Producer};
    let tb = TestBroker::kafka();
    let settings = tb.fresh_topics("reused-id").await?;
    let good = bars("bitfinex_ETHUSD_30m.csv", 20);
    let key = good[0].instrument();
    let shared = EventId(0x5eed);
    let producer = Producer::new(&settings)?;
    let mut sent = good.clone();
    sent.push(good[0].clone());
    for bar in &sent {
        producer
            .send(&OutRecord {
                topic: "market.bars.raw".into(),
                key: key.as_bytes().to_vec(),
                payload: encode(bar)?,
                event_id: shared,
                progress: None,
            })
            .await?;
    }
    let config = RunnerConfig::new(unique("reused-id"), &["market.bars.raw"]);
    let counters = Arc::new(Counters::default());
    let stop = stop_when(counters.clone(), Duration::from_secs(60), |s| {
        s.received >= 21
    });
    let (fwd, stats) = run(&settings, &config, Forward::default(), counters, stop).await?;
    assert_eq!(
        (stats.processed, stats.dead_lettered, stats.duplicates),
        (1, 19, 1),
        "{stats:?}"
    );
    assert_eq!(fwd.seen, good[..1]);
    let letters = read_topic(&settings, "market.bars.dlq", 19, Duration::from_secs(20))?;
    let letters: Vec<DeadLetter> = letters
        .iter()
        .map(|(_, _, b)| decode(b))
        .collect::<Result<_, _>>()?;
    assert_eq!(letters.len(), 19);
    for (letter, bar) in letters.iter().zip(&good[1..]) {
        assert!(letter.error.contains("already used"), "{}", letter.error);
        assert_eq!(letter.payload.as_deref(), Some(&encode(bar)?[..]));
    }
    Ok(())
}

/// On Apache Kafka, through the validator, exactly-once: garbage bytes,
/// truncated Avro, an unknown fingerprint, a NaN and a negative price, a bar
/// starting a year after it was published and a 1 MB string each land in
/// the dead-letter topic with the reason; the real bars around them are
/// validated and published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_validator_dead_letters_hostile_input_and_goes_on() -> Result<()> {
    use autotrain_validator::ValidatorProcessor;
    let tb = TestBroker::kafka();
    let settings = tb.fresh_topics("hostile").await?;
    let good = bars("bitfinex_ETHUSD_30m.csv", 20);
    let key = good[0].instrument();
    let valid = encode(&good[0])?;
    let mut unknown = valid.clone();
    unknown[2..10].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    let variant = |i: i64, change: &dyn Fn(&mut Bar)| -> Result<Vec<u8>> {
        let mut b = good[0].clone();
        b.ts = good[19].ts + (i + 1) * 1_800_000;
        change(&mut b);
        Ok(encode(&b)?)
    };
    let year_ahead = now_ms() + 365 * 86_400_000;
    let bad: Vec<(&str, Vec<u8>, ErrorKind, &str)> = vec![
        (
            "garbage",
            b"this is not avro".to_vec(),
            ErrorKind::BadMagic,
            "",
        ),
        (
            "truncated",
            valid[..valid.len() - 4].to_vec(),
            ErrorKind::Truncated,
            "",
        ),
        ("unknown fingerprint", unknown, ErrorKind::UnknownSchema, ""),
        (
            "NaN close",
            variant(0, &|b| b.close = f64::NAN)?,
            ErrorKind::Invalid,
            "close = NaN",
        ),
        (
            "negative low",
            variant(1, &|b| b.low = -3.0)?,
            ErrorKind::Invalid,
            "low = -3",
        ),
        (
            "far future",
            variant(2, &|b| b.ts = year_ahead)?,
            ErrorKind::Invalid,
            "clock or unit error",
        ),
        (
            "1 MB string",
            variant(3, &|b| b.source = "x".repeat(1_000_000))?,
            ErrorKind::Invalid,
            "source is 1000000 bytes",
        ),
    ];
    let mut big = settings.clone();
    big.properties
        .insert("message.max.bytes".into(), "1048576".into());
    for (i, (_, bytes, _, _)) in bad.iter().enumerate() {
        produce_bars(&settings, &good[i..=i]).await?;
        produce_raw(&big, "market.bars.raw", &key, bytes.clone()).await?;
    }
    produce_bars(&settings, &good[bad.len()..]).await?;

    let mut config = RunnerConfig::new(unique("hostile"), &["market.bars.raw"]);
    config.exactly_once = Some(autotrain_kafka::ExactlyOnce::new(unique("hostile-txn")));
    let counters = Arc::new(Counters::default());
    let total = (good.len() + bad.len()) as u64;
    let stop = stop_when(counters.clone(), Duration::from_secs(90), move |s| {
        s.acknowledged >= total
    });
    let (_, stats) = run(
        &settings,
        &config,
        ValidatorProcessor::default(),
        counters,
        stop,
    )
    .await?;
    assert_eq!(stats.dead_lettered, bad.len() as u64, "{stats:?}");

    let letters = read_topic(
        &settings,
        "market.bars.dlq",
        bad.len(),
        Duration::from_secs(30),
    )?;
    let letters: Vec<DeadLetter> = letters
        .iter()
        .map(|(_, _, b)| decode(b))
        .collect::<Result<_, _>>()?;
    assert_eq!(letters.len(), bad.len());
    for (letter, (what, bytes, kind, reason)) in letters.iter().zip(&bad) {
        assert_eq!(letter.error_kind, *kind, "{what}: {}", letter.error);
        assert!(letter.error.contains(reason), "{what}: {}", letter.error);
        assert_eq!(letter.processor, "validator");
        let kept = letter.payload.as_deref().unwrap_or_default();
        if bytes.len() > autotrain_kafka::record::DEAD_LETTER_KEEP {
            assert_eq!(
                kept,
                &bytes[..autotrain_kafka::record::DEAD_LETTER_KEEP],
                "{what}"
            );
            assert!(
                letter.error.contains("cut to its first"),
                "{}",
                letter.error
            );
        } else {
            assert_eq!(kept, &bytes[..], "{what}: bytes kept whole");
        }
    }
    let published: Vec<Bar> = read_topic(
        &settings,
        "market.bars",
        good.len(),
        Duration::from_secs(30),
    )?
    .iter()
    .map(|(_, _, b)| decode(b))
    .collect::<Result<_, _>>()?;
    let ts: Vec<i64> = published.iter().map(|b| b.ts).collect();
    assert_eq!(
        ts,
        good.iter().map(|b| b.ts).collect::<Vec<_>>(),
        "every real bar published once"
    );
    Ok(())
}
