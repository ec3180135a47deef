//! Synthetic bars: a seeded, regime-switching generator for load tests,
//! benchmarks and model checks (the true regime of every bar is known).
//!
//! Each instrument follows a Markov chain over [`Regime`]s (calm, trending,
//! turbulent by default); within a regime, log returns are Gaussian with
//! the regime's drift and volatility. Bars come out in time order,
//! instruments interleaved, and every bar is valid OHLC. Same config and
//! seed ⇒ the same bars, bit for bit, on any machine (ChaCha8 streams, one
//! per instrument).
//!
//! Where this sits: used by `autotrain generate` and the benchmarks; knows
//! nothing of Kafka.

use autotrain_schemas::Bar;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// One market regime: per-bar log-return drift and volatility.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regime {
    pub name: String,
    pub drift: f64,
    pub vol: f64,
    /// Mean volume per bar.
    pub volume: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyntheticConfig {
    pub seed: u64,
    pub exchange: String,
    /// Instruments `SYN000`, `SYN001`, …
    pub instruments: usize,
    pub timeframe: String,
    pub step_ms: i64,
    pub start_ms: i64,
    pub start_price: f64,
    pub regimes: Vec<Regime>,
    /// Row-stochastic regime transition matrix (per bar).
    pub transition: Vec<Vec<f64>>,
}

impl SyntheticConfig {
    /// Three regimes (calm, trending, turbulent) that last ~200 bars.
    pub fn new(seed: u64, instruments: usize, timeframe: &str, step_ms: i64) -> Self {
        let r = |name: &str, drift, vol, volume| Regime {
            name: name.into(),
            drift,
            vol,
            volume,
        };
        SyntheticConfig {
            seed,
            exchange: "synthetic".into(),
            instruments,
            timeframe: timeframe.into(),
            step_ms,
            start_ms: 1_577_836_800_000, // 2020-01-01
            start_price: 100.0,
            regimes: vec![
                r("calm", 0.0001, 0.002, 100.0),
                r("trending", 0.0008, 0.004, 180.0),
                r("turbulent", -0.0006, 0.012, 400.0),
            ],
            transition: vec![
                vec![0.995, 0.003, 0.002],
                vec![0.004, 0.994, 0.002],
                vec![0.006, 0.004, 0.990],
            ],
        }
    }

    pub fn symbol(i: usize) -> String {
        format!("SYN{i:03}")
    }
}

/// A bar and the regime that generated it.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub bar: Bar,
    pub regime: usize,
}

#[derive(Debug)]
struct Walk {
    rng: ChaCha8Rng,
    close: f64,
    regime: usize,
    symbol: String,
}

/// Iterator over bars: bar 0 of every instrument, then bar 1, …
#[derive(Debug)]
pub struct Generator {
    config: SyntheticConfig,
    walks: Vec<Walk>,
    bar: i64,
    next: usize,
    source: String,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; u1 in (0, 1] so the log is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Generator {
    pub fn new(config: SyntheticConfig) -> Self {
        let walks = (0..config.instruments)
            .map(|i| {
                let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
                rng.set_stream(i as u64);
                let regime = (rng.random::<f64>() * config.regimes.len() as f64) as usize;
                Walk {
                    rng,
                    close: config.start_price,
                    regime: regime.min(config.regimes.len().saturating_sub(1)),
                    symbol: SyntheticConfig::symbol(i),
                }
            })
            .collect();
        let source = format!("synthetic:seed={}", config.seed);
        Generator {
            config,
            walks,
            bar: 0,
            next: 0,
            source,
        }
    }

    pub fn config(&self) -> &SyntheticConfig {
        &self.config
    }
}

impl Iterator for Generator {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        if self.walks.is_empty() || self.config.regimes.is_empty() {
            return None;
        }
        let cfg = &self.config;
        let ts = cfg.start_ms + self.bar * cfg.step_ms;
        let walk = &mut self.walks[self.next];
        // Move the regime chain, then draw the bar.
        let u = walk.rng.random::<f64>();
        let row = &cfg.transition[walk.regime];
        let mut acc = 0.0;
        let mut to = row.len() - 1;
        for (j, p) in row.iter().enumerate() {
            acc += p;
            if u < acc {
                to = j;
                break;
            }
        }
        walk.regime = to;
        let regime = &cfg.regimes[to];
        let open = walk.close;
        let r = regime.drift + regime.vol * normal(&mut walk.rng);
        let close = open * r.exp();
        let wick_up = (regime.vol * 0.5 * normal(&mut walk.rng).abs()).exp();
        let wick_down = (-regime.vol * 0.5 * normal(&mut walk.rng).abs()).exp();
        let volume = regime.volume * (0.3 * normal(&mut walk.rng)).exp();
        walk.close = close;
        let bar = Bar {
            exchange: cfg.exchange.clone(),
            symbol: walk.symbol.clone(),
            timeframe: cfg.timeframe.clone(),
            ts,
            open,
            high: open.max(close) * wick_up,
            low: open.min(close) * wick_down,
            close,
            volume,
            source: self.source.clone(),
            checksum: None,
            revision: 0,
        };
        self.next += 1;
        if self.next == self.walks.len() {
            self.next = 0;
            self.bar += 1;
        }
        Some(Generated { bar, regime: to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use autotrain_validator::{Calendar, Validator, ValidatorConfig, Verdict};

    #[test]
    fn same_seed_same_bars_and_other_seed_other_bars() {
        let a: Vec<Generated> = Generator::new(SyntheticConfig::new(7, 3, "1m", 60_000))
            .take(3_000)
            .collect();
        let b: Vec<Generated> = Generator::new(SyntheticConfig::new(7, 3, "1m", 60_000))
            .take(3_000)
            .collect();
        assert_eq!(a, b);
        let c: Vec<Generated> = Generator::new(SyntheticConfig::new(8, 3, "1m", 60_000))
            .take(3_000)
            .collect();
        assert_ne!(a, c);
        // Instruments interleave in time order.
        assert_eq!(a[0].bar.ts, a[2].bar.ts);
        assert_eq!(a[3].bar.ts, a[0].bar.ts + 60_000);
        assert_eq!(a[4].bar.symbol, "SYN001");
    }

    #[test]
    fn regimes_switch_and_differ_in_volatility_and_bars_are_valid() {
        let bars: Vec<Generated> = Generator::new(SyntheticConfig::new(1, 2, "1m", 60_000))
            .take(60_000)
            .collect();
        let mut sums = [(0.0f64, 0usize); 3];
        let mut switches = 0;
        let mut validator = Validator::new(ValidatorConfig::new(60_000, Calendar::TwentyFourSeven));
        for pair in bars.windows(3) {
            let (prev, cur) = (&pair[0], &pair[2]);
            let r = (cur.bar.close / cur.bar.open).ln();
            sums[cur.regime].0 += r * r;
            sums[cur.regime].1 += 1;
            switches += usize::from(prev.regime != cur.regime);
        }
        // Valid OHLC throughout (regime switches may still look anomalous).
        for g in &bars {
            let ohlc = match validator.validate(&g.bar) {
                Verdict::Passed { flags, .. } | Verdict::Withheld { flags } => flags
                    .iter()
                    .any(|f| f.kind == autotrain_schemas::FlagKind::Ohlc),
                _ => false,
            };
            assert!(!ohlc, "{:?}", g.bar);
        }
        let rms: Vec<f64> = sums
            .iter()
            .map(|(s, n)| (s / *n.max(&1) as f64).sqrt())
            .collect();
        assert!(switches > 50, "{switches} switches");
        assert!(
            rms[2] > 2.0 * rms[0],
            "turbulent {} vs calm {}",
            rms[2],
            rms[0]
        );
    }
}
