//! What the validator → features pipeline must publish for a set of raw
//! bars, computed offline by the same pure cores (no broker, no crashes):
//! every output record by topic and event id. Streaming runs through Kafka
//! — killed, restarted, scaled out — are compared with it record for
//! record.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};
use autotrain_features::{Contract, FeaturesProcessor};
use autotrain_kafka::{EventId, Incoming, OutRecord, Outputs, Processor};
use autotrain_schemas::{decode, Bar};
use autotrain_topics::MARKET_BARS_RAW;
use autotrain_validator::{ValidatorInput, ValidatorProcessor};

/// Output payloads by topic (catalogue name) and event id.
pub type ByTopic = BTreeMap<String, BTreeMap<EventId, Vec<u8>>>;

fn feed<P: Processor>(
    core: &mut P,
    topic: &str,
    id: EventId,
    value: P::Input,
    into: &mut ByTopic,
) -> Result<Vec<OutRecord>> {
    let input = Incoming {
        topic: topic.to_string(),
        partition: 0,
        offset: 0,
        key: None,
        timestamp: None,
        event_id: id,
        value,
    };
    let mut out = Outputs::new(core.name(), id);
    if let Err(e) = core.process(&input, &mut out) {
        bail!("{} refused {topic} record {id:?}: {e}", core.name());
    }
    let records = out.into_records();
    for r in &records {
        if into
            .entry(r.topic.clone())
            .or_default()
            .insert(r.event_id, r.payload.clone())
            .is_some()
        {
            bail!("two outputs with one id {:?} on {}", r.event_id, r.topic);
        }
    }
    Ok(records)
}

/// Runs `raw` (as `produce_bars` publishes it: content-derived ids) through
/// the validator and its `market.bars` through the features core.
pub fn validator_then_features(raw: &[Bar]) -> Result<ByTopic> {
    let mut expected = ByTopic::new();
    let mut validator = ValidatorProcessor::new(HashMap::new());
    let mut features = FeaturesProcessor::new(Contract::bundled()?);
    for bar in raw {
        let id = OutRecord::from_content(MARKET_BARS_RAW, &bar.instrument(), bar)?.event_id;
        let outs = feed(
            &mut validator,
            MARKET_BARS_RAW.name(),
            id,
            ValidatorInput::Bar(bar.clone()),
            &mut expected,
        )?;
        for r in outs.iter().filter(|r| r.topic == "market.bars") {
            let bar: Bar = decode(&r.payload)?;
            feed(&mut features, "market.bars", r.event_id, bar, &mut expected)?;
        }
    }
    Ok(expected)
}

/// Compares what a topic holds (read_committed) with the expected records:
/// no event id twice, none missing, none extra, payloads equal.
pub fn same_records(
    topic: &str,
    got: &[crate::WireRecord],
    want: &BTreeMap<EventId, Vec<u8>>,
) -> Result<()> {
    let mut seen: BTreeMap<EventId, &Vec<u8>> = BTreeMap::new();
    let mut duplicates = 0usize;
    for (id, _, payload) in got {
        let Some(id) = id else {
            bail!("{topic}: a record without an event id");
        };
        if seen.insert(*id, payload).is_some() {
            duplicates += 1;
        }
    }
    let missing = want.keys().filter(|id| !seen.contains_key(id)).count();
    let extra = seen.keys().filter(|id| !want.contains_key(id)).count();
    let differ = want
        .iter()
        .filter(|(id, p)| seen.get(id).is_some_and(|g| g != p))
        .count();
    if duplicates + missing + extra + differ > 0 {
        bail!(
            "{topic}: {} records read, {} expected: {duplicates} duplicate(s), {missing} missing, {extra} unexpected, {differ} with other content",
            got.len(),
            want.len()
        );
    }
    Ok(())
}
