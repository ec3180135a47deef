//! A forecast's rows from a feature [`Table`]: the chosen columns (a
//! missing value stays NaN, which the trees route), the target of each
//! row computed within its instrument, and the purged time split per
//! instrument (each instrument's last `reference_fraction` is reference).

use crate::dataset::Table;

use super::target::{Split, Target};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrepareError {
    #[error("column {0:?} is not in the table (columns: {1})")]
    NoColumn(String, String),
    #[error("no row has a target ({0} rows)")]
    NoTarget(usize),
}

/// Row-major features and targets, training and reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub columns: Vec<String>,
    pub x_train: Vec<f64>,
    pub y_train: Vec<f64>,
    pub x_reference: Vec<f64>,
    pub y_reference: Vec<f64>,
    /// (instrument, ts) of each reference row.
    pub reference_rows: Vec<(String, i64)>,
}

impl Prepared {
    pub fn train_rows(&self) -> usize {
        self.y_train.len()
    }
}

fn index(table: &Table, name: &str) -> Result<usize, PrepareError> {
    table
        .names
        .iter()
        .position(|n| n == name)
        .ok_or_else(|| PrepareError::NoColumn(name.to_string(), table.names.join(", ")))
}

/// `columns` of `table` against `target` (from `return_column`, the bar's
/// log return), split per instrument.
pub fn prepare(
    table: &Table,
    columns: &[String],
    return_column: &str,
    target: Target,
    reference_fraction: f64,
) -> Result<Prepared, PrepareError> {
    let idx: Vec<usize> = columns
        .iter()
        .map(|c| index(table, c))
        .collect::<Result<_, _>>()?;
    let lr_at = index(table, return_column)?;
    let mut out = Prepared {
        columns: columns.to_vec(),
        x_train: Vec::new(),
        y_train: Vec::new(),
        x_reference: Vec::new(),
        y_reference: Vec::new(),
        reference_rows: Vec::new(),
    };
    let mut start = 0;
    while start < table.rows.len() {
        let instrument = &table.rows[start].instrument;
        let end = start
            + table.rows[start..]
                .iter()
                .take_while(|r| &r.instrument == instrument)
                .count();
        let rows = &table.rows[start..end];
        let lr: Vec<Option<f64>> = rows.iter().map(|r| r.values[lr_at]).collect();
        let y = target.values(&lr);
        let usable: Vec<usize> = (0..rows.len()).filter(|i| y[*i].is_some()).collect();
        let split = Split::purged(&usable, reference_fraction, target.horizon());
        let features = |i: usize| {
            idx.iter()
                .map(move |c| rows[i].values[*c].unwrap_or(f64::NAN))
        };
        for &i in &split.train {
            out.x_train.extend(features(i));
            out.y_train.extend(y[i]);
        }
        for &i in &split.reference {
            out.x_reference.extend(features(i));
            out.y_reference.extend(y[i]);
            out.reference_rows.push((instrument.clone(), rows[i].ts));
        }
        start = end;
    }
    if out.y_train.is_empty() && out.y_reference.is_empty() {
        return Err(PrepareError::NoTarget(table.rows.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Row;

    #[test]
    fn per_instrument_targets_and_splits() {
        let mut rows = Vec::new();
        for inst in ["a", "b"] {
            for t in 0..10 {
                rows.push(Row {
                    instrument: inst.into(),
                    ts: t,
                    values: vec![Some(t as f64 * 0.01), (t > 0).then_some(t as f64)],
                });
            }
        }
        let table = Table {
            names: vec!["lr".into(), "f".into()],
            rows,
        };
        let p = prepare(
            &table,
            &["f".into()],
            "lr",
            Target::AbsReturn { horizon: 1 },
            0.2,
        )
        .expect("prepare");
        // 9 rows with a target per instrument: 2 reference, 1 purged, 6 train.
        assert_eq!(p.train_rows(), 12);
        assert_eq!(p.y_reference.len(), 4);
        assert_eq!(p.reference_rows[0], ("a".to_string(), 7));
        assert!(p.x_train[0].is_nan(), "a missing feature stays NaN");
        assert!(
            (p.y_train[0] - 0.01).abs() < 1e-12,
            "row 0's target is bar 1's return"
        );
        assert_eq!(
            prepare(
                &table,
                &["g".into()],
                "lr",
                Target::AbsReturn { horizon: 1 },
                0.2
            ),
            Err(PrepareError::NoColumn("g".into(), "lr, f".into()))
        );
    }
}
