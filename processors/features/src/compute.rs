//! [`Computer`]: the contract's features for one instrument, one bar at a
//! time. Pure, and `Clone` so the engine can checkpoint it.
//!
//! Rolling statistics are recomputed over their window each bar (oldest to
//! newest, mean then squared deviations) rather than kept as running sums:
//! the result is then bit-identical to a from-scratch computation over the
//! same bars, which is what the incremental-equals-batch tests demand, and
//! there is no drift from adding and subtracting over millions of bars.

use std::collections::VecDeque;

use crate::contract::{Contract, Kind};

/// Mean and sample standard deviation (ddof = 1) of `xs`, in order.
pub fn mean_std(xs: impl Iterator<Item = f64> + Clone, n: usize) -> (f64, f64) {
    let mean = xs.clone().sum::<f64>() / n as f64;
    let ss: f64 = xs.map(|x| (x - mean) * (x - mean)).sum();
    (mean, (ss / (n as f64 - 1.0)).sqrt())
}

/// RSI from smoothed gains and losses; `None` when both are zero.
pub fn rsi(avg_gain: f64, avg_loss: f64) -> Option<f64> {
    if avg_loss == 0.0 {
        return (avg_gain > 0.0).then_some(100.0);
    }
    Some(100.0 - 100.0 / (1.0 + avg_gain / avg_loss))
}

#[derive(Debug, Clone, Default, PartialEq)]
struct RsiState {
    avg_gain: f64,
    avg_loss: f64,
    diffs: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Computer {
    prev_close: Option<f64>,
    /// One per feature (only EMA features use theirs).
    emas: Vec<Option<f64>>,
    rsis: Vec<RsiState>,
    returns: VecDeque<f64>,
    volumes: VecDeque<f64>,
    return_cap: usize,
    volume_cap: usize,
}

impl Computer {
    pub fn new(contract: &Contract) -> Self {
        let cap = |kinds: &[Kind]| {
            contract
                .features
                .iter()
                .filter(|f| kinds.contains(&f.kind))
                .filter_map(|f| f.window)
                .max()
                .unwrap_or(0)
        };
        Computer {
            prev_close: None,
            emas: vec![None; contract.features.len()],
            rsis: vec![RsiState::default(); contract.features.len()],
            returns: VecDeque::new(),
            volumes: VecDeque::new(),
            return_cap: cap(&[Kind::RetMean, Kind::RetStd, Kind::Rvol]),
            volume_cap: cap(&[Kind::VolumeZ]),
        }
    }

    /// Advances by one bar; writes the contract's values (in its order).
    pub fn step(
        &mut self,
        contract: &Contract,
        close: f64,
        volume: f64,
        out: &mut Vec<Option<f64>>,
    ) {
        out.clear();
        let lr = self.prev_close.map(|p| (close / p).ln());
        let diff = self.prev_close.map(|p| close - p);
        if let Some(r) = lr {
            if self.return_cap > 0 {
                if self.returns.len() == self.return_cap {
                    self.returns.pop_front();
                }
                self.returns.push_back(r);
            }
        }
        if self.volume_cap > 0 {
            if self.volumes.len() == self.volume_cap {
                self.volumes.pop_front();
            }
            self.volumes.push_back(volume);
        }
        for (i, f) in contract.features.iter().enumerate() {
            let n = f.window.unwrap_or(0);
            let value = match f.kind {
                Kind::LogReturn => lr,
                Kind::Ema => {
                    let alpha = 2.0 / (n as f64 + 1.0);
                    let next = match self.emas[i] {
                        None => close,
                        Some(prev) => alpha * close + (1.0 - alpha) * prev,
                    };
                    self.emas[i] = Some(next);
                    Some(next)
                }
                Kind::RetMean | Kind::RetStd | Kind::Rvol => {
                    let len = self.returns.len();
                    (len >= n).then(|| {
                        let (mean, std) = mean_std(self.returns.range(len - n..).copied(), n);
                        match f.kind {
                            Kind::RetMean => mean,
                            Kind::RetStd => std,
                            _ => 100.0 * std,
                        }
                    })
                }
                Kind::Rsi => diff.and_then(|d| {
                    let s = &mut self.rsis[i];
                    let (gain, loss) = (d.max(0.0), (-d).max(0.0));
                    let alpha = 1.0 / n as f64;
                    if s.diffs == 0 {
                        s.avg_gain = gain;
                        s.avg_loss = loss;
                    } else {
                        s.avg_gain = alpha * gain + (1.0 - alpha) * s.avg_gain;
                        s.avg_loss = alpha * loss + (1.0 - alpha) * s.avg_loss;
                    }
                    s.diffs += 1;
                    if s.diffs >= n {
                        rsi(s.avg_gain, s.avg_loss)
                    } else {
                        None
                    }
                }),
                Kind::VolumeZ => {
                    let len = self.volumes.len();
                    if len >= n {
                        let (mean, std) = mean_std(self.volumes.range(len - n..).copied(), n);
                        (std > 0.0).then(|| (volume - mean) / std)
                    } else {
                        None
                    }
                }
            };
            out.push(value);
        }
        self.prev_close = Some(close);
    }
}
