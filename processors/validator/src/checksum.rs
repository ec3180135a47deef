//! Content hash of a bar: what the dedupe compares and what `market.bars`
//! carries as `checksum`.

use autotrain_schemas::Bar;
use sha2::{Digest, Sha256};

/// SHA-256 over the ts and the bit patterns of the OHLCV values (48 bytes:
/// one compression). Identity (instrument, timeframe) is the key the
/// checksum is kept under, so it is not hashed; source, checksum and
/// revision are not content.
pub fn digest(bar: &Bar) -> [u8; 32] {
    let mut block = [0u8; 48];
    block[..8].copy_from_slice(&bar.ts.to_le_bytes());
    for (i, v) in [bar.open, bar.high, bar.low, bar.close, bar.volume]
        .into_iter()
        .enumerate()
    {
        block[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_bits().to_le_bytes());
    }
    Sha256::digest(block).into()
}

/// [`digest`] as 64 hex digits.
pub fn checksum(bar: &Bar) -> String {
    const_hex::encode(digest(bar))
}

/// The first 64 bits of a digest: what the validator keeps per bar (it only
/// ever compares two versions of one bar, so a false match is a 2⁻⁶⁴ event).
pub fn short(digest: &[u8; 32]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(head)
}
