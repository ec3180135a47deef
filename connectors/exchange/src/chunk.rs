//! [`Chunk`]: one fetched page made publishable, and its content address.
//!
//! Exchanges return pages in any order, repeat rows across page borders,
//! include the still-open current bar, and (some) ignore the requested
//! range. Normalising keeps exactly the closed bars inside the asked range,
//! in time order, once each; the SHA-256 over their content identifies the
//! chunk, so a chunk fetched twice is recognised and not published again.

use std::collections::BTreeMap;

use autotrain_schemas::Bar;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Closed bars in `[from, to)`, by time, one per ts.
    pub bars: Vec<Bar>,
    /// SHA-256 (hex) of the bars' time and values.
    pub sha256: String,
    /// Rows outside the asked range.
    pub outside: usize,
    /// Rows for a ts already in the page (the last copy is kept).
    pub repeated: usize,
    /// Bars not closed yet at fetch time.
    pub open: usize,
    /// The page did not come in time order.
    pub out_of_order: bool,
}

/// Normalises the rows of one page asked for `[from_ms, to_ms)` at `now_ms`.
pub fn normalize(rows: Vec<Bar>, from_ms: i64, to_ms: i64, now_ms: i64, step_ms: i64) -> Chunk {
    let out_of_order = rows.windows(2).any(|w| w[1].ts < w[0].ts);
    let (mut outside, mut repeated, mut open) = (0, 0, 0);
    let mut by_ts: BTreeMap<i64, Bar> = BTreeMap::new();
    for bar in rows {
        if bar.ts < from_ms || bar.ts >= to_ms {
            outside += 1;
        } else if bar.ts + step_ms > now_ms {
            open += 1;
        } else if by_ts.insert(bar.ts, bar).is_some() {
            repeated += 1;
        }
    }
    let bars: Vec<Bar> = by_ts.into_values().collect();
    Chunk {
        sha256: content_hash(&bars),
        bars,
        outside,
        repeated,
        open,
        out_of_order,
    }
}

/// SHA-256 over each bar's instrument, ts and values (bit patterns).
pub fn content_hash(bars: &[Bar]) -> String {
    let mut h = Sha256::new();
    for b in bars {
        h.update(b.exchange.as_bytes());
        h.update([0]);
        h.update(b.symbol.as_bytes());
        h.update([0]);
        h.update(b.timeframe.as_bytes());
        h.update(b.ts.to_be_bytes());
        for v in [b.open, b.high, b.low, b.close, b.volume] {
            h.update(v.to_bits().to_be_bytes());
        }
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(ts: i64, close: f64) -> Bar {
        Bar {
            exchange: "x".into(),
            symbol: "S".into(),
            timeframe: "1m".into(),
            ts,
            open: close,
            high: close,
            low: close,
            close,
            volume: 1.0,
            source: "t".into(),
            checksum: None,
            revision: 0,
        }
    }

    #[test]
    fn pages_are_sorted_deduplicated_and_cut_to_closed_bars_in_range() {
        let m = 60_000;
        let rows = vec![
            bar(3 * m, 3.0),
            bar(0, 0.0), // before the range
            bar(m, 1.0),
            bar(2 * m, 2.0),
            bar(m, 1.5),     // repeat: the later copy wins
            bar(4 * m, 4.0), // still open at now = 4.5m
            bar(9 * m, 9.0), // after the range
        ];
        let c = normalize(rows, m, 6 * m, 4 * m + m / 2, m);
        let ts: Vec<i64> = c.bars.iter().map(|b| b.ts / m).collect();
        assert_eq!(ts, vec![1, 2, 3]);
        assert_eq!(c.bars[0].close, 1.5);
        assert_eq!(
            (c.outside, c.repeated, c.open, c.out_of_order),
            (2, 1, 1, true)
        );
        // Same content in another order ⇒ same address; other content ⇒ other.
        let again = normalize(
            vec![bar(2 * m, 2.0), bar(m, 1.5), bar(3 * m, 3.0)],
            m,
            6 * m,
            10 * m,
            m,
        );
        assert_eq!(again.sha256, c.sha256);
        let other = normalize(
            vec![bar(m, 1.6), bar(2 * m, 2.0), bar(3 * m, 3.0)],
            m,
            6 * m,
            10 * m,
            m,
        );
        assert_ne!(other.sha256, c.sha256);
    }
}
