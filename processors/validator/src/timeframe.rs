//! Bar lengths: `1m`, `30m`, `1h`, `1d`, … ⇒ milliseconds.

/// Milliseconds of a timeframe such as `30m`; `None` if it is not one.
pub fn parse_timeframe(tf: &str) -> Option<i64> {
    // The unit is the last character, which need not be one byte.
    let (last, _) = tf.char_indices().next_back()?;
    let (n, unit) = tf.split_at(last);
    let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeframes() {
        assert_eq!(parse_timeframe("30m"), Some(1_800_000));
        assert_eq!(parse_timeframe("1h"), Some(3_600_000));
        assert_eq!(parse_timeframe("0m"), None);
        assert_eq!(parse_timeframe("m"), None);
        assert_eq!(parse_timeframe("5x"), None);
        assert_eq!(
            parse_timeframe("¡"),
            None,
            "a multi-byte unit (found by tests/fuzz.rs)"
        );
        assert_eq!(parse_timeframe("3¡"), None);
        assert_eq!(parse_timeframe(""), None);
    }
}
