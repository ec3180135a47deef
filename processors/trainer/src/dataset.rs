//! Training data: the feature rows a run reads, the deterministic split
//! into training rows and the reference set, and the matrices the HMM
//! sees.
//!
//! A [`Table`] is built from `features` records in offset order (newest
//! record per instrument and bar wins, so late corrections overwrite).
//! The **reference set** of a split version is cut once — the last
//! `reference_fraction` of each instrument's rows in the run that creates
//! it — stored content-addressed, and from then on only read: every later
//! run of that split version evaluates on exactly those rows and trains on
//! none of the bars inside its time span.

use std::collections::BTreeMap;

use autotrain_schemas::FeatureVector;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatasetError {
    #[error("feature column {0:?} is not in the data (columns: {1})")]
    NoColumn(String, String),
}

/// One bar's features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub instrument: String,
    pub ts: i64,
    /// Aligned with [`Table::names`]; `None` while a window fills.
    pub values: Vec<Option<f64>>,
}

/// A bar's time and values, while a table is built.
type Bar = (i64, Vec<Option<f64>>);

impl BuildStats {
    /// Counts `v` and whether it enters a table: of a wanted instrument
    /// (every one when none is named) and at or before `as_of`.
    fn admit(&mut self, v: &FeatureVector, instruments: &[String], as_of: Option<i64>) -> bool {
        self.records += 1;
        if !instruments.is_empty() && !instruments.contains(&v.instrument) {
            self.other_instruments += 1;
            return false;
        }
        if as_of.is_some_and(|t| v.ts > t) {
            self.after_as_of += 1;
            return false;
        }
        true
    }
}

/// Feature rows sorted by (instrument, ts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub names: Vec<String>,
    pub rows: Vec<Row>,
}

/// What happened to the records a table was built from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuildStats {
    pub records: usize,
    /// Records of instruments the run does not train.
    pub other_instruments: usize,
    /// Records replaced by a later record of the same bar.
    pub superseded: usize,
    /// Rows left out by the sliding window.
    pub outside_window: usize,
    /// Bars after the as-of time.
    pub after_as_of: usize,
}

/// One instrument's rows with every column present, as a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub instrument: String,
    pub ts: Vec<i64>,
    /// Row-major, `columns` wide.
    pub x: Vec<f64>,
    /// Log return of each bar (`lr`), NaN where absent.
    pub ret: Vec<f64>,
}

impl Table {
    /// From feature vectors in offset order. `instruments` empty ⇒ all;
    /// `as_of` ⇒ only bars at or before it; `window` ⇒ only the newest
    /// `window` bars per instrument.
    pub fn build<'a>(
        records: impl IntoIterator<Item = &'a FeatureVector>,
        instruments: &[String],
        as_of: Option<i64>,
        window: Option<usize>,
    ) -> (Table, BuildStats) {
        let mut stats = BuildStats::default();
        let mut names: Vec<String> = Vec::new();
        // Per instrument, bars in time order: records come mostly in time
        // order, so a bar is appended; a correction replaces its bar, a
        // late bar is inserted in place.
        let mut bars: BTreeMap<&'a str, Vec<Bar>> = BTreeMap::new();
        // Column of each position of the previous record's values: records
        // of one contract list their features in the same order.
        let mut columns: Vec<usize> = Vec::new();
        for v in records {
            if !stats.admit(v, instruments, as_of) {
                continue;
            }
            columns.truncate(v.values.len());
            for (at, f) in v.values.iter().enumerate() {
                if columns.get(at).is_some_and(|&i| names[i] == f.name) {
                    continue;
                }
                let i = names.iter().position(|n| *n == f.name).unwrap_or_else(|| {
                    names.push(f.name.clone());
                    names.len() - 1
                });
                if at < columns.len() {
                    columns[at] = i;
                } else {
                    columns.push(i);
                }
            }
            let mut values = vec![None; names.len()];
            for (f, &i) in v.values.iter().zip(&columns) {
                values[i] = f.value;
            }
            let series = bars.entry(v.instrument.as_str()).or_default();
            match series.last() {
                Some((last, _)) if *last >= v.ts => {
                    match series.binary_search_by_key(&v.ts, |(ts, _)| *ts) {
                        Ok(i) => {
                            series[i].1 = values;
                            stats.superseded += 1;
                        }
                        Err(i) => series.insert(i, (v.ts, values)),
                    }
                }
                _ => series.push((v.ts, values)),
            }
        }
        let width = names.len();
        let total: usize = bars.values().map(|b| b.len()).sum();
        let mut rows: Vec<Row> =
            Vec::with_capacity(window.map_or(total, |w| total.min(w * bars.len())));
        for (instrument, series) in bars {
            let skip = window.map_or(0, |w| series.len().saturating_sub(w));
            stats.outside_window += skip;
            rows.extend(series.into_iter().skip(skip).map(|(ts, mut values)| {
                values.resize(width, None);
                Row {
                    instrument: instrument.to_string(),
                    ts,
                    values,
                }
            }));
        }
        (Table { names, rows }, stats)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn column(&self, name: &str) -> Result<usize, DatasetError> {
        self.names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| DatasetError::NoColumn(name.into(), self.names.join(",")))
    }

    /// Per instrument: first and last bar time.
    pub fn spans(&self) -> BTreeMap<String, (i64, i64)> {
        let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for r in &self.rows {
            let e = out.entry(r.instrument.clone()).or_insert((r.ts, r.ts));
            e.0 = e.0.min(r.ts);
            e.1 = e.1.max(r.ts);
        }
        out
    }

    /// Rows with every one of `columns`, one sequence per instrument.
    pub fn sequences(&self, columns: &[String]) -> Result<Vec<Sequence>, DatasetError> {
        let idx: Vec<usize> = columns
            .iter()
            .map(|c| self.column(c))
            .collect::<Result<_, _>>()?;
        let lr = self.names.iter().position(|n| n == "lr");
        let mut out: Vec<Sequence> = Vec::new();
        for chunk in self.rows.chunk_by(|a, b| a.instrument == b.instrument) {
            let mut s = Sequence {
                instrument: chunk[0].instrument.clone(),
                ts: Vec::new(),
                x: Vec::new(),
                ret: Vec::new(),
            };
            for r in chunk {
                let row: Option<Vec<f64>> = idx
                    .iter()
                    .map(|&i| r.values[i].filter(|v| v.is_finite()))
                    .collect();
                if let Some(row) = row {
                    s.ts.push(r.ts);
                    s.x.extend(row);
                    s.ret.push(lr.and_then(|i| r.values[i]).unwrap_or(f64::NAN));
                }
            }
            if !s.ts.is_empty() {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// SHA-256 of the canonical JSON (floats round-trip exactly): the
    /// address a reference set is stored under.
    pub fn content_hash(&self) -> String {
        hex::encode(Sha256::digest(self.to_bytes()))
    }

    /// SHA-256 of a canonical binary encoding of the table (names, then
    /// per row the instrument, the bar time and each value's bits; lengths
    /// prefixed, integers little-endian, an absent value as one zero byte):
    /// what a training set's `FeatureBuild` records as its output. A
    /// training set is not stored, so unlike a reference set (addressed by
    /// [`Table::content_hash`] of its stored JSON) it needs no text form,
    /// and this is a tenth of the time on twenty thousand rows.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        let text = |h: &mut Sha256, s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        h.update((self.names.len() as u64).to_le_bytes());
        for name in &self.names {
            text(&mut h, name);
        }
        h.update((self.rows.len() as u64).to_le_bytes());
        let mut buf = Vec::with_capacity(9 * self.names.len() + 8);
        for row in &self.rows {
            text(&mut h, &row.instrument);
            buf.clear();
            buf.extend_from_slice(&row.ts.to_le_bytes());
            buf.extend_from_slice(&(row.values.len() as u64).to_le_bytes());
            for v in &row.values {
                match v {
                    Some(v) => {
                        buf.push(1);
                        buf.extend_from_slice(&v.to_bits().to_le_bytes());
                    }
                    None => buf.push(0),
                }
            }
            h.update(&buf);
        }
        hex::encode(h.finalize())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Table, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Splits off the reference set: the last `fraction` of each
    /// instrument's rows (at least one). Returns (training rows, reference).
    pub fn carve_reference(&self, fraction: f64) -> (Table, Table) {
        let mut train = Table {
            names: self.names.clone(),
            rows: Vec::new(),
        };
        let mut reference = train.clone();
        for chunk in self.rows.chunk_by(|a, b| a.instrument == b.instrument) {
            let n_ref = ((chunk.len() as f64 * fraction).ceil() as usize).clamp(1, chunk.len());
            let cut = chunk.len() - n_ref;
            train.rows.extend_from_slice(&chunk[..cut]);
            reference.rows.extend_from_slice(&chunk[cut..]);
        }
        (train, reference)
    }

    /// This table without any bar inside the reference set's time span of
    /// its instrument (no training on the bars a model is judged on).
    pub fn without(&self, reference: &Table) -> (Table, usize) {
        let spans = reference.spans();
        let mut dropped = 0;
        let rows = self
            .rows
            .iter()
            .filter(|r| {
                let inside = spans
                    .get(&r.instrument)
                    .is_some_and(|(a, b)| r.ts >= *a && r.ts <= *b);
                dropped += usize::from(inside);
                !inside
            })
            .cloned()
            .collect();
        (
            Table {
                names: self.names.clone(),
                rows,
            },
            dropped,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::FeatureValue;

    pub fn vector(instrument: &str, ts: i64, lr: Option<f64>, other: f64) -> FeatureVector {
        FeatureVector {
            instrument: instrument.into(),
            timeframe: "30m".into(),
            ts,
            contract_version: "1".into(),
            bar_revision: 0,
            values: vec![
                FeatureValue {
                    name: "lr".into(),
                    value: lr,
                },
                FeatureValue {
                    name: "rvol_20".into(),
                    value: Some(other),
                },
            ],
        }
    }

    /// The build as first written: every row keyed by (instrument, bar)
    /// in one map, the window cut afterwards.
    fn reference_build(
        records: &[FeatureVector],
        instruments: &[String],
        as_of: Option<i64>,
        window: Option<usize>,
    ) -> (Table, BuildStats) {
        let mut stats = BuildStats::default();
        let mut names: Vec<String> = Vec::new();
        let mut latest: BTreeMap<(String, i64), Vec<Option<f64>>> = BTreeMap::new();
        for v in records {
            if !stats.admit(v, instruments, as_of) {
                continue;
            }
            let mut values = vec![None; names.len()];
            for f in &v.values {
                let i = names.iter().position(|n| *n == f.name).unwrap_or_else(|| {
                    names.push(f.name.clone());
                    values.push(None);
                    names.len() - 1
                });
                values[i] = f.value;
            }
            if latest
                .insert((v.instrument.clone(), v.ts), values)
                .is_some()
            {
                stats.superseded += 1;
            }
        }
        let width = names.len();
        let mut rows: Vec<Row> = latest
            .into_iter()
            .map(|((instrument, ts), mut values)| {
                values.resize(width, None);
                Row {
                    instrument,
                    ts,
                    values,
                }
            })
            .collect();
        if let Some(w) = window {
            let mut keep = Vec::new();
            for chunk in rows.chunk_by(|a, b| a.instrument == b.instrument) {
                let skip = chunk.len().saturating_sub(w);
                stats.outside_window += skip;
                keep.extend_from_slice(&chunk[skip..]);
            }
            rows = keep;
        }
        (Table { names, rows }, stats)
    }

    #[test]
    fn the_build_equals_a_from_scratch_build_on_random_records() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let features = ["lr", "rvol_20", "ema_gap", "range"];
        for case in 0..300 {
            let mut records = Vec::new();
            let mut clock = [0i64; 3];
            for _ in 0..rng.random_range(0..120) {
                let which = rng.random_range(0..3);
                // Mostly forward in time; some corrections and late bars.
                let ts = match rng.random_range(0..10) {
                    0 => rng.random_range(0..=clock[which].max(1)),
                    _ => {
                        clock[which] += rng.random_range(1..4);
                        clock[which]
                    }
                };
                // A contract's features in a fixed order, sometimes another
                // order or a subset (a new contract version).
                let mut names: Vec<&str> = features.to_vec();
                if rng.random_range(0..8) == 0 {
                    names.rotate_left(rng.random_range(0..4));
                    names.truncate(rng.random_range(1..=4));
                }
                records.push(FeatureVector {
                    instrument: ["a", "b", "c"][which].into(),
                    timeframe: "1h".into(),
                    ts,
                    contract_version: "1".into(),
                    bar_revision: 0,
                    values: names
                        .iter()
                        .map(|n| FeatureValue {
                            name: (*n).into(),
                            value: (rng.random_range(0..6) > 0).then(|| rng.random::<f64>()),
                        })
                        .collect(),
                });
            }
            let instruments: Vec<String> = match case % 3 {
                0 => Vec::new(),
                1 => vec!["a".into()],
                _ => vec!["c".into(), "b".into()],
            };
            let as_of = (case % 2 == 0).then(|| rng.random_range(0..200));
            let window = (case % 4 < 2).then(|| rng.random_range(1..30));
            assert_eq!(
                Table::build(&records, &instruments, as_of, window),
                reference_build(&records, &instruments, as_of, window),
                "case {case}"
            );
        }
    }

    #[test]
    fn newest_record_per_bar_wins_and_windows_cut_per_instrument() {
        let records = vec![
            vector("b", 2, Some(0.1), 1.0),
            vector("a", 1, None, 1.0),
            vector("a", 2, Some(0.2), 1.0),
            vector("a", 3, Some(0.3), 1.0),
            vector("a", 2, Some(-0.2), 2.0),
            vector("c", 1, Some(0.0), 1.0),
        ];
        let (t, stats) = Table::build(&records, &["a".into(), "b".into()], None, Some(2));
        assert_eq!(
            stats,
            BuildStats {
                records: 6,
                other_instruments: 1,
                superseded: 1,
                outside_window: 1,
                after_as_of: 0,
            }
        );
        let (cut, stats) = Table::build(&records, &["a".into()], Some(2), None);
        assert_eq!((cut.len(), stats.after_as_of), (2, 1));
        let keys: Vec<(&str, i64)> = t
            .rows
            .iter()
            .map(|r| (r.instrument.as_str(), r.ts))
            .collect();
        assert_eq!(keys, [("a", 2), ("a", 3), ("b", 2)]);
        assert_eq!(t.rows[0].values, [Some(-0.2), Some(2.0)], "the correction");
        let seqs = t
            .sequences(&["lr".into(), "rvol_20".into()])
            .expect("columns");
        assert_eq!(seqs.len(), 2);
        assert_eq!(seqs[0].x, [-0.2, 2.0, 0.3, 1.0]);
        assert!(matches!(
            t.sequences(&["nope".into()]),
            Err(DatasetError::NoColumn(..))
        ));
    }

    #[test]
    fn reference_is_each_instruments_tail_and_later_runs_skip_its_span() {
        let records: Vec<FeatureVector> = (0..10)
            .map(|t| vector("a", t, Some(t as f64), 1.0))
            .chain((0..5).map(|t| vector("b", t, Some(0.0), 1.0)))
            .collect();
        let (t, _) = Table::build(&records, &[], None, None);
        let (train, reference) = t.carve_reference(0.2);
        assert_eq!(
            reference
                .rows
                .iter()
                .map(|r| (r.instrument.as_str(), r.ts))
                .collect::<Vec<_>>(),
            [("a", 8), ("a", 9), ("b", 4)]
        );
        assert_eq!(train.len(), 12);
        let (again, dropped) = t.without(&reference);
        assert_eq!((again.len(), dropped), (12, 3));
        let bytes = reference.to_bytes();
        assert_eq!(Table::from_bytes(&bytes).expect("json"), reference);
        assert_eq!(reference.content_hash(), reference.clone().content_hash());
        assert_ne!(reference.content_hash(), train.content_hash());
        assert_eq!(reference.fingerprint(), reference.clone().fingerprint());
        assert_ne!(reference.fingerprint(), train.fingerprint());
    }
}
