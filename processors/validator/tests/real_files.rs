//! The validator on the bundled real files.

use std::path::Path;

use autotrain_connector_file::{infer_instrument, BarReader};
use autotrain_validator::{parse_timeframe, Calendar, Summary, Validator, ValidatorConfig};

fn run(file: &str, calendar: Calendar) -> Summary {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data")
        .join(file);
    let id = infer_instrument(&path).expect("instrument");
    let step = parse_timeframe(&id.timeframe).expect("timeframe");
    let mut v = Validator::new(ValidatorConfig::new(step, calendar));
    let mut summary = Summary::default();
    for bar in BarReader::open(&path, id).expect("open") {
        summary.add(&v.validate(&bar.expect("valid row")));
    }
    summary
}

#[test]
fn btc_file_has_nine_gaps_of_twenty_two_bars() {
    let s = run("bitfinex_BTCUSD_30m.csv", Calendar::TwentyFourSeven);
    assert_eq!(s.bars, 35_019);
    assert_eq!(s.flags["gap"], 9, "{:?}", s.gaps);
    assert_eq!(s.gaps.iter().map(|g| g.missing_bars).sum::<i64>(), 22);
    assert_eq!(s.flags["ohlc"], 0);
    assert!(
        s.gaps.iter().all(|g| (1..=6).contains(&g.missing_bars)),
        "1 to 3 hours each"
    );
}

#[test]
fn eurusd_under_the_fx_calendar_has_no_weekend_gaps() {
    let fx = run("dukascopy_EURUSD_1h_ask.csv", Calendar::Fx);
    let naive = run("dukascopy_EURUSD_1h_ask.csv", Calendar::TwentyFourSeven);
    // Without a calendar every weekend is a "gap"; with it, none is.
    assert!(naive.flags["gap"] >= 50, "{}", naive.flags["gap"]);
    assert!(fx.flags["gap"] < naive.flags["gap"] / 2, "{:?}", fx.gaps);
    // Weekend opens are judged against the pair's own weekend opens, not
    // the hourly σ: the calendar holds fewer bars for review, not more.
    eprintln!(
        "EUR/USD anomalies held: fx {}, 24x7 {}",
        fx.flags["anomaly"], naive.flags["anomaly"]
    );
    assert!(fx.flags["anomaly"] <= naive.flags["anomaly"]);
    for g in &fx.gaps {
        // Any remaining hole is inside the trading week (holidays, outages).
        assert!(
            Calendar::Fx.is_open(g.start),
            "gap starting at {} ms",
            g.start
        );
    }
}
