//! The reference: every feature of every bar computed from scratch over
//! the final, sorted bars, with plain loops over slices. The incremental
//! engine must publish exactly these values (tests compare bit for bit).

use crate::compute::{mean_std, rsi};
use crate::contract::{Contract, Kind};

/// Values per bar (contract order) for bars given as (close, volume),
/// sorted by time.
pub fn compute(contract: &Contract, bars: &[(f64, f64)]) -> Vec<Vec<Option<f64>>> {
    let closes: Vec<f64> = bars.iter().map(|b| b.0).collect();
    let volumes: Vec<f64> = bars.iter().map(|b| b.1).collect();
    // returns[t] is the log return into bar t (t ≥ 1).
    let returns: Vec<f64> = (1..closes.len())
        .map(|t| (closes[t] / closes[t - 1]).ln())
        .collect();
    let mut rows = vec![Vec::with_capacity(contract.features.len()); bars.len()];
    for f in &contract.features {
        let n = f.window.unwrap_or(0);
        let column: Vec<Option<f64>> = match f.kind {
            Kind::LogReturn => (0..bars.len())
                .map(|t| (t >= 1).then(|| returns[t - 1]))
                .collect(),
            Kind::Ema => {
                let alpha = 2.0 / (n as f64 + 1.0);
                let mut ema: Option<f64> = None;
                closes
                    .iter()
                    .map(|&c| {
                        let next = ema.map_or(c, |p| alpha * c + (1.0 - alpha) * p);
                        ema = Some(next);
                        Some(next)
                    })
                    .collect()
            }
            Kind::RetMean | Kind::RetStd | Kind::Rvol => (0..bars.len())
                .map(|t| {
                    // Returns into bars 1..=t are returns[0..t].
                    (t >= n).then(|| {
                        let window = &returns[t - n..t];
                        let (mean, std) = mean_std(window.iter().copied(), n);
                        match f.kind {
                            Kind::RetMean => mean,
                            Kind::RetStd => std,
                            _ => 100.0 * std,
                        }
                    })
                })
                .collect(),
            Kind::Rsi => {
                let alpha = 1.0 / n as f64;
                let (mut g, mut l) = (0.0, 0.0);
                (0..bars.len())
                    .map(|t| {
                        if t == 0 {
                            return None;
                        }
                        let d = closes[t] - closes[t - 1];
                        let (gain, loss) = (d.max(0.0), (-d).max(0.0));
                        if t == 1 {
                            (g, l) = (gain, loss);
                        } else {
                            g = alpha * gain + (1.0 - alpha) * g;
                            l = alpha * loss + (1.0 - alpha) * l;
                        }
                        if t >= n {
                            rsi(g, l)
                        } else {
                            None
                        }
                    })
                    .collect()
            }
            Kind::VolumeZ => (0..bars.len())
                .map(|t| {
                    if t + 1 < n {
                        return None;
                    }
                    let window = &volumes[t + 1 - n..=t];
                    let (mean, std) = mean_std(window.iter().copied(), n);
                    (std > 0.0).then(|| (volumes[t] - mean) / std)
                })
                .collect(),
        };
        for (row, v) in rows.iter_mut().zip(column) {
            row.push(v);
        }
    }
    rows
}
