//! One ILP row per bar, flag, feature vector and regime posterior.

use autotrain_schemas::{Bar, FeatureVector, RegimePosterior, ValidationFlag};
use questdb::ingress::{Buffer, TimestampMicros, TimestampNanos};

pub const BARS_TABLE: &str = "market_bars";
pub const FLAGS_TABLE: &str = "market_flags";
pub const FEATURES_TABLE: &str = "features";
pub const REGIMES_TABLE: &str = "regimes";

fn nanos(ms: i64) -> TimestampNanos {
    TimestampNanos::new(ms.saturating_mul(1_000_000))
}

fn micros(ms: i64) -> TimestampMicros {
    TimestampMicros::new(ms.saturating_mul(1_000))
}

fn lower<T: std::fmt::Debug>(v: T) -> String {
    format!("{v:?}").to_lowercase()
}

/// `market_bars`: symbols exchange, symbol, timeframe (the upsert keys
/// with ts); values; designated timestamp = bar start.
pub fn write_bar(buf: &mut Buffer, bar: &Bar) -> questdb::Result<()> {
    buf.table(BARS_TABLE)?
        .symbol("exchange", &bar.exchange)?
        .symbol("symbol", &bar.symbol)?
        .symbol("timeframe", &bar.timeframe)?
        .column_f64("open", bar.open)?
        .column_f64("high", bar.high)?
        .column_f64("low", bar.low)?
        .column_f64("close", bar.close)?
        .column_f64("volume", bar.volume)?
        .column_i64("revision", i64::from(bar.revision))?
        .column_str("checksum", bar.checksum.as_deref().unwrap_or(""))?
        .column_str("source", &bar.source)?
        .at(nanos(bar.ts))
}

/// `market_flags`: one row per finding and per decision (state is part of
/// the upsert key, so a decision does not overwrite its finding).
pub fn write_flag(buf: &mut Buffer, f: &ValidationFlag) -> questdb::Result<()> {
    let row = buf
        .table(FLAGS_TABLE)?
        .symbol("instrument", &f.instrument)?
        .symbol("timeframe", &f.timeframe)?
        .symbol("kind", lower(f.kind))?
        .symbol("severity", lower(f.severity))?
        .symbol("state", lower(f.state))?
        .column_str("flag_id", &f.flag_id)?
        .column_str("detail", &f.detail)?;
    if let Some(t) = f.gap_start {
        row.column_ts("gap_start", micros(t))?;
    }
    if let Some(t) = f.gap_end {
        row.column_ts("gap_end", micros(t))?;
    }
    if let Some(n) = f.missing_bars {
        row.column_i64("missing_bars", i64::from(n))?;
    }
    if let Some(a) = &f.actor {
        row.column_str("actor", a)?;
    }
    if let Some(t) = f.decided_at {
        row.column_ts("decided_at", micros(t))?;
    }
    row.at(nanos(f.ts))
}

/// `features`: one row per bar, one DOUBLE column per feature of the
/// contract (named as the feature; a feature whose window is not yet full
/// is left null), so a panel queries `SELECT ts, lr, … FROM features`.
/// Upsert keys: ts, instrument, timeframe (a bar's correction replaces it).
pub fn write_features(buf: &mut Buffer, v: &FeatureVector) -> questdb::Result<()> {
    let row = buf
        .table(FEATURES_TABLE)?
        .symbol("instrument", &v.instrument)?
        .symbol("timeframe", &v.timeframe)?
        .symbol("contract_version", &v.contract_version)?
        .column_i64("bar_revision", i64::from(v.bar_revision))?;
    for f in &v.values {
        if let Some(x) = f.value {
            row.column_f64(f.name.as_str(), x)?;
        }
    }
    row.at(nanos(v.ts))
}

/// `regimes`: one row per posterior: the regime, its log-likelihood and
/// the state probabilities as `p0`, `p1`, … Upsert keys: ts, instrument,
/// timeframe, model_key (a newer version's posterior of the same bar
/// replaces the older one's).
pub fn write_regime(buf: &mut Buffer, p: &RegimePosterior) -> questdb::Result<()> {
    let row = buf
        .table(REGIMES_TABLE)?
        .symbol("instrument", &p.instrument)?
        .symbol("timeframe", &p.timeframe)?
        .symbol("model_key", &p.model_key)?
        .column_i64("model_version", i64::from(p.model_version))?
        .column_i64("regime", i64::from(p.regime))?
        .column_f64("loglik", p.loglik)?;
    for (k, x) in p.probabilities.iter().enumerate() {
        row.column_f64(format!("p{k}").as_str(), *x)?;
    }
    row.at(nanos(p.ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_schemas::{FlagKind, HitlState, Severity};
    use questdb::ingress::ProtocolVersion;

    #[test]
    fn a_bar_is_one_line_with_symbols_columns_and_its_timestamp() {
        let bar = Bar {
            exchange: "bitfinex".into(),
            symbol: "BTCUSD".into(),
            timeframe: "30m".into(),
            ts: 1_506_816_000_000,
            open: 4367.1,
            high: 4387.5,
            low: 4365.0,
            close: 4386.3,
            volume: 755.5,
            source: "data file".into(),
            checksum: Some("ab12".into()),
            revision: 1,
        };
        let mut buf = Buffer::new(ProtocolVersion::V1);
        write_bar(&mut buf, &bar).expect("row");
        let text = String::from_utf8(buf.as_bytes().to_vec()).expect("utf8");
        assert_eq!(
            text,
            "market_bars,exchange=bitfinex,symbol=BTCUSD,timeframe=30m \
             open=4367.1,high=4387.5,low=4365.0,close=4386.3,volume=755.5,revision=1i,\
             checksum=\"ab12\",source=\"data file\" 1506816000000000000\n"
        );
        assert_eq!(buf.row_count(), 1);
    }

    #[test]
    fn a_gap_flag_carries_its_hole() {
        let flag = ValidationFlag {
            flag_id: "gap:x:1".into(),
            instrument: "x:ABC".into(),
            timeframe: "30m".into(),
            kind: FlagKind::Gap,
            severity: Severity::Error,
            ts: 3_600_000,
            gap_start: Some(1_800_000),
            gap_end: Some(3_600_000),
            missing_bars: Some(1),
            detail: "1 bar(s) missing".into(),
            state: HitlState::Open,
            actor: None,
            decided_at: None,
        };
        let mut buf = Buffer::new(ProtocolVersion::V1);
        write_flag(&mut buf, &flag).expect("row");
        let text = String::from_utf8(buf.as_bytes().to_vec()).expect("utf8");
        assert_eq!(
            text,
            "market_flags,instrument=x:ABC,timeframe=30m,kind=gap,severity=error,state=open \
             flag_id=\"gap:x:1\",detail=\"1 bar(s) missing\",gap_start=1800000000t,gap_end=3600000000t,\
             missing_bars=1i 3600000000000\n"
        );
    }

    #[test]
    fn features_are_columns_named_after_the_contract_and_gaps_are_null() {
        use autotrain_schemas::FeatureValue;
        let v = FeatureVector {
            instrument: "bitfinex:BTCUSD".into(),
            timeframe: "30m".into(),
            ts: 3_600_000,
            contract_version: "v1".into(),
            bar_revision: 0,
            values: vec![
                FeatureValue {
                    name: "lr".into(),
                    value: Some(0.5),
                },
                FeatureValue {
                    name: "vol_20".into(),
                    value: None,
                },
            ],
        };
        let mut buf = Buffer::new(ProtocolVersion::V1);
        write_features(&mut buf, &v).expect("row");
        let text = String::from_utf8(buf.as_bytes().to_vec()).expect("utf8");
        assert_eq!(
            text,
            "features,instrument=bitfinex:BTCUSD,timeframe=30m,contract_version=v1 \
             bar_revision=0i,lr=0.5 3600000000000\n"
        );
    }

    #[test]
    fn a_posterior_has_its_probabilities_as_p_columns() {
        let p = RegimePosterior {
            instrument: "x:ABC".into(),
            timeframe: "1h".into(),
            ts: 7_200_000,
            model_key: "hmm/x:ABC".into(),
            model_version: 3,
            probabilities: vec![0.25, 0.75],
            regime: 1,
            loglik: -1.5,
            features: vec![],
        };
        let mut buf = Buffer::new(ProtocolVersion::V1);
        write_regime(&mut buf, &p).expect("row");
        let text = String::from_utf8(buf.as_bytes().to_vec()).expect("utf8");
        assert_eq!(
            text,
            "regimes,instrument=x:ABC,timeframe=1h,model_key=hmm/x:ABC \
             model_version=3i,regime=1i,loglik=-1.5,p0=0.25,p1=0.75 7200000000000\n"
        );
    }
}
