//! Garbage bytes, a truncated record, an unknown fingerprint and a record of
//! the wrong type each end in the dead-letter topic with a reason and their
//! source offset; the valid bars around them flow on.

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
