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
        let mut latest: BTreeMap<(String, i64), Vec<Option<f64>>> = BTreeMap::new();
        for v in records {
            stats.records += 1;
            if !instruments.is_empty() && !instruments.contains(&v.instrument) {
                stats.other_instruments += 1;
                continue;
            }
            if as_of.is_some_and(|t| v.ts > t) {
                stats.after_as_of += 1;
                continue;
            }
            let mut values = vec![None; names.len()];
            for f in &v.values {
                let i = match names.iter().position(|n| *n == f.name) {
                    Some(i) => i,
                    None => {
                        names.push(f.name.clone());
                        values.push(None);
                        names.len() - 1
                    }
                };
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
            let mut keep = Vec::with_capacity(rows.len());
            for chunk in rows.chunk_by(|a, b| a.instrument == b.instrument) {
                let skip = chunk.len().saturating_sub(w);
                stats.outside_window += skip;
                keep.extend_from_slice(&chunk[skip..]);
            }
            rows = keep;
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
    }
}
