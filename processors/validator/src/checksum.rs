//! Content hash of a bar: what the dedupe compares.

use autotrain_schemas::Bar;
use sha2::{Digest, Sha256};

/// SHA-256 (hex) over instrument, timeframe, ts and the bit patterns of the
/// OHLCV values. Source, checksum and revision are not content.
pub fn checksum(bar: &Bar) -> String {
    let mut h = Sha256::new();
    for part in [
        bar.exchange.as_bytes(),
        bar.symbol.as_bytes(),
        bar.timeframe.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(bar.ts.to_le_bytes());
    for v in [bar.open, bar.high, bar.low, bar.close, bar.volume] {
        h.update(v.to_bits().to_le_bytes());
    }
    hex::encode(h.finalize())
}
