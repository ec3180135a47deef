//! Streaming CSV bar reader.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use autotrain_schemas::Bar;
use chrono::{DateTime, NaiveDateTime};
use thiserror::Error;

use crate::instrument::InstrumentId;

/// The file as a whole cannot be read.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: header must start with ts,open,high,low,close,volume; found {found:?}")]
    Header { path: PathBuf, found: Vec<String> },
    #[error("{path}: {source}")]
    Csv { path: PathBuf, source: csv::Error },
}

/// One row cannot be used; the reader continues with the next.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("line {line}: {reason} (row: {raw:?})")]
pub struct RowError {
    pub line: u64,
    pub reason: String,
    pub raw: String,
}

const HEADER: [&str; 6] = ["ts", "open", "high", "low", "close", "volume"];

/// Iterator over a CSV file's bars.
pub struct BarReader<R: Read> {
    rows: csv::StringRecordsIntoIter<R>,
    id: InstrumentId,
    source: String,
}

impl<R: Read> std::fmt::Debug for BarReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BarReader({}, {})", self.source, self.id.key())
    }
}

impl BarReader<File> {
    pub fn open(path: &Path, id: InstrumentId) -> Result<Self, FileError> {
        let file = File::open(path).map_err(|source| FileError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(file, path, id)
    }
}

impl<R: Read> BarReader<R> {
    pub fn new(input: R, path: &Path, id: InstrumentId) -> Result<Self, FileError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(input);
        let header: Vec<String> = reader
            .headers()
            .map_err(|source| FileError::Csv {
                path: path.to_path_buf(),
                source,
            })?
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if header.len() < 6 || header[..6] != HEADER {
            return Err(FileError::Header {
                path: path.to_path_buf(),
                found: header,
            });
        }
        Ok(BarReader {
            rows: reader.into_records(),
            id,
            source: path.display().to_string(),
        })
    }

    fn bar(&self, row: &csv::StringRecord) -> Result<Bar, String> {
        if row.len() < 6 {
            return Err(format!("{} fields, expected 6", row.len()));
        }
        let num = |i: usize| -> Result<f64, String> {
            row[i]
                .parse::<f64>()
                .map_err(|_| format!("{} is not a number: {:?}", HEADER[i], &row[i]))
        };
        Ok(Bar {
            exchange: self.id.exchange.clone(),
            symbol: self.id.symbol.clone(),
            timeframe: self.id.timeframe.clone(),
            ts: parse_ts(&row[0])?,
            open: num(1)?,
            high: num(2)?,
            low: num(3)?,
            close: num(4)?,
            volume: num(5)?,
            source: self.source.clone(),
            checksum: None,
            revision: 0,
        })
    }
}

impl<R: Read> Iterator for BarReader<R> {
    type Item = Result<Bar, RowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = self.rows.next()?;
        Some(match row {
            Ok(row) => {
                let line = row.position().map_or(0, |p| p.line());
                self.bar(&row).map_err(|reason| RowError {
                    line,
                    reason,
                    raw: row.iter().collect::<Vec<_>>().join(","),
                })
            }
            Err(e) => Err(RowError {
                line: e.position().map_or(0, |p| p.line()),
                reason: e.to_string(),
                raw: String::new(),
            }),
        })
    }
}

/// Epoch millis from ISO-8601 (`2017-10-01T00:00:00Z`, offsets, or naive =
/// UTC) or an integer epoch (seconds, or milliseconds when ≥ 10^11).
pub fn parse_ts(text: &str) -> Result<i64, String> {
    if let Ok(n) = text.parse::<i64>() {
        return Ok(if n.abs() >= 100_000_000_000 {
            n
        } else {
            n * 1000
        });
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Ok(dt.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(text, fmt) {
            return Ok(dt.and_utc().timestamp_millis());
        }
    }
    Err(format!("ts is neither ISO-8601 nor an epoch: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> InstrumentId {
        InstrumentId::parse("test:ABC", "1h").expect("id")
    }

    #[test]
    fn timestamps_in_every_accepted_form() {
        let want = 1_506_816_000_000;
        for text in [
            "2017-10-01T00:00:00Z",
            "2017-10-01T02:00:00+02:00",
            "2017-10-01 00:00:00",
            "1506816000",
            "1506816000000",
        ] {
            assert_eq!(parse_ts(text), Ok(want), "{text}");
        }
        assert!(parse_ts("yesterday").is_err());
    }

    #[test]
    fn bad_rows_are_reported_and_reading_continues() {
        let text = "ts,open,high,low,close,volume\n\
                    2017-10-01T00:00:00Z,1,2,0.5,1.5,10\n\
                    2017-10-01T01:00:00Z,x,2,0.5,1.5,10\n\
                    2017-10-01T02:00:00Z,1,2\n\
                    nope,1,2,0.5,1.5,10\n\
                    2017-10-01T03:00:00Z,1,2,0.5,1.5,10\n";
        let rows: Vec<_> = BarReader::new(text.as_bytes(), Path::new("t.csv"), id())
            .expect("header")
            .collect();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].as_ref().map(|b| b.close).ok(), Some(1.5));
        let errs: Vec<&RowError> = rows.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(
            errs.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert!(
            errs[0].reason.contains("open is not a number"),
            "{}",
            errs[0]
        );
        assert!(rows[4].is_ok());
    }

    #[test]
    fn wrong_header_is_a_file_error() {
        let err = BarReader::new("date,o,h\n".as_bytes(), Path::new("t.csv"), id()).unwrap_err();
        assert!(matches!(err, FileError::Header { .. }), "{err}");
    }

    #[test]
    fn the_bundled_btc_file_reads_completely() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/bitfinex_BTCUSD_30m.csv"
        ));
        let id = crate::infer_instrument(path).expect("name");
        let bars: Vec<Bar> = BarReader::open(path, id)
            .expect("open")
            .collect::<Result<_, _>>()
            .expect("all rows valid");
        assert_eq!(bars.len(), 35_019);
        assert_eq!(bars[0].ts, 1_506_816_000_000);
        assert!(bars.windows(2).all(|w| w[0].ts < w[1].ts));
    }
}
