//! Point-in-time training sets: the feature table of some instruments over
//! a time range **as of** a given time. A feature value is visible only
//! from the time it was computed (the `features` record's timestamp), so a
//! correction published after the as-of time is not seen, and the table a
//! training run read can be rebuilt exactly later.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use autotrain_kafka::reader::log_starts;
use autotrain_kafka::{read_topic, ClientSettings, KafkaError};
use autotrain_schemas::{FeatureVector, InputRange};
use autotrain_topics::FEATURES;

/// A training set: per (instrument, ts) its feature vector.
pub type Table = BTreeMap<(String, i64), FeatureVector>;

/// A feature vector and when it was computed (epoch ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Computed {
    pub at: i64,
    pub vector: FeatureVector,
}

/// What a training set is cut from.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub instruments: BTreeSet<String>,
    /// Bar times `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    pub as_of_ms: i64,
}

/// Per (instrument, ts) the newest vector computed at or before `as_of`,
/// for bars in the range. Ties (same computed time) go to the later input.
pub fn as_of(
    rows: impl IntoIterator<Item = Computed>,
    q: &Query,
) -> BTreeMap<(String, i64), FeatureVector> {
    let mut table: BTreeMap<(String, i64), (i64, FeatureVector)> = BTreeMap::new();
    for Computed { at, vector } in rows {
        if at > q.as_of_ms
            || vector.ts < q.from_ms
            || vector.ts >= q.to_ms
            || !q.instruments.contains(&vector.instrument)
        {
            continue;
        }
        let key = (vector.instrument.clone(), vector.ts);
        match table.get(&key) {
            Some((known, _)) if *known > at => {}
            _ => {
                table.insert(key, (at, vector));
            }
        }
    }
    table.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

/// Reads `features` and cuts the training set (blocking). Fails if the
/// topic no longer starts at offset 0 (`features` is kept forever, so a
/// later start means records were lost and the set would be incomplete).
pub fn load(settings: &ClientSettings, q: &Query) -> Result<(Table, Vec<InputRange>), KafkaError> {
    for (partition, start) in log_starts(settings, FEATURES.name(), Duration::from_secs(30))? {
        if start > 0 {
            return Err(KafkaError::DataLoss {
                topic: settings.physical(FEATURES.name()),
                partition,
                needed: 0,
                log_start: start,
                hint: " (a training set needs every computed feature)",
            });
        }
    }
    let records = read_topic::<FeatureVector>(settings, FEATURES.name(), Duration::from_secs(60))?;
    let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for r in &records {
        let e = ranges
            .entry(r.partition)
            .or_insert((r.offset, r.offset + 1));
        e.0 = e.0.min(r.offset);
        e.1 = e.1.max(r.offset + 1);
    }
    let inputs = ranges
        .into_iter()
        .map(|(partition, (first_offset, next_offset))| InputRange {
            topic: FEATURES.name().to_string(),
            partition,
            first_offset,
            next_offset,
        })
        .collect();
    let rows = records.into_iter().filter_map(|r| {
        let vector = r.value.ok()?;
        Some(Computed {
            at: r.timestamp.unwrap_or(i64::MAX),
            vector,
        })
    });
    Ok((as_of(rows, q), inputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::FeatureValue;

    fn v(instrument: &str, ts: i64, x: f64) -> FeatureVector {
        FeatureVector {
            instrument: instrument.into(),
            timeframe: "1m".into(),
            ts,
            contract_version: "1".into(),
            bar_revision: 0,
            values: vec![FeatureValue {
                name: "lr".into(),
                value: Some(x),
            }],
        }
    }

    #[test]
    fn values_are_visible_from_when_they_were_computed() {
        let rows = vec![
            Computed {
                at: 100,
                vector: v("a", 1, 0.1),
            },
            Computed {
                at: 110,
                vector: v("a", 2, 0.2),
            },
            Computed {
                at: 120,
                vector: v("b", 1, 9.0),
            },
            // A correction of bar 1, computed later.
            Computed {
                at: 200,
                vector: v("a", 1, 0.15),
            },
            Computed {
                at: 210,
                vector: v("a", 3, 0.3),
            },
        ];
        let q = |as_of| Query {
            instruments: ["a".to_string()].into(),
            from_ms: 0,
            to_ms: 3,
            as_of_ms: as_of,
        };
        let early = as_of(rows.clone(), &q(150));
        assert_eq!(early.len(), 2);
        assert_eq!(
            early[&("a".to_string(), 1)].values[0].value,
            Some(0.1),
            "no look-ahead"
        );
        let late = as_of(rows.clone(), &q(250));
        assert_eq!(late[&("a".to_string(), 1)].values[0].value, Some(0.15));
        assert!(
            !late.contains_key(&("a".to_string(), 3)),
            "outside the range"
        );
        assert!(as_of(rows, &q(50)).is_empty());
    }
}
