//! [`Computer`]: the contract's features for one instrument, one bar at a
//! time. Pure, and `Clone` so the engine can checkpoint it.
//!
//! Rolling statistics are recomputed over their window each bar (oldest to
//! newest, mean then squared deviations) rather than kept as running sums:
//! the result is then bit-identical to a from-scratch computation over the
//! same bars, which is what the incremental-equals-batch tests demand, and
//! there is no drift from adding and subtracting over millions of bars.
//! Each distinct window is computed once per bar however many features use
//! it, over a contiguous slice.

use crate::contract::{Contract, Kind};

/// Mean and sample standard deviation (ddof = 1) of `xs`, in order.
pub fn mean_std(xs: impl Iterator<Item = f64> + Clone, n: usize) -> (f64, f64) {
    let mean = xs.clone().sum::<f64>() / n as f64;
    let ss: f64 = xs.map(|x| (x - mean) * (x - mean)).sum();
    (mean, (ss / (n as f64 - 1.0)).sqrt())
}

/// [`mean_std`] over a slice.
pub fn slice_mean_std(xs: &[f64]) -> (f64, f64) {
    mean_std(xs.iter().copied(), xs.len())
}

/// RSI from smoothed gains and losses; `None` when both are zero.
pub fn rsi(avg_gain: f64, avg_loss: f64) -> Option<f64> {
    if avg_loss == 0.0 {
        return (avg_gain > 0.0).then_some(100.0);
    }
    Some(100.0 - 100.0 / (1.0 + avg_gain / avg_loss))
}

/// The last values of a series, contiguous: pushes append; once twice the
/// capacity is held, the older half is dropped (amortised O(1)).
#[derive(Debug, Clone, Default, PartialEq)]
struct Tail {
    cap: usize,
    values: Vec<f64>,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail {
            cap,
            values: Vec::with_capacity(2 * cap),
        }
    }

    fn push(&mut self, v: f64) {
        if self.cap == 0 {
            return;
        }
        if self.values.len() == 2 * self.cap {
            self.values.drain(..self.cap);
        }
        self.values.push(v);
    }

    /// The last `n` values, if there are that many.
    fn last(&self, n: usize) -> Option<&[f64]> {
        let len = self.values.len();
        (len >= n).then(|| &self.values[len - n..])
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct RsiState {
    avg_gain: f64,
    avg_loss: f64,
    diffs: usize,
}

/// How each feature is computed: which window statistics it reads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    LogReturn,
    Ema { alpha: f64 },
    ReturnStat { window: usize, kind: Kind },
    Rsi { n: usize },
    VolumeZ { window: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Computer {
    plan: Vec<Plan>,
    /// Distinct return / volume window lengths, and this bar's (mean, std)
    /// for each (`None` until the window is full).
    return_windows: Vec<usize>,
    volume_windows: Vec<usize>,
    return_stats: Vec<Option<(f64, f64)>>,
    volume_stats: Vec<Option<(f64, f64)>>,
    prev_close: Option<f64>,
    emas: Vec<Option<f64>>,
    rsis: Vec<RsiState>,
    returns: Tail,
    volumes: Tail,
}

impl Computer {
    pub fn new(contract: &Contract) -> Self {
        let mut return_windows: Vec<usize> = Vec::new();
        let mut volume_windows: Vec<usize> = Vec::new();
        let plan: Vec<Plan> = contract
            .features
            .iter()
            .map(|f| {
                let n = f.window.unwrap_or(0);
                match f.kind {
                    Kind::LogReturn => Plan::LogReturn,
                    Kind::Ema => Plan::Ema {
                        alpha: 2.0 / (n as f64 + 1.0),
                    },
                    Kind::RetMean | Kind::RetStd | Kind::Rvol => {
                        if !return_windows.contains(&n) {
                            return_windows.push(n);
                        }
                        Plan::ReturnStat {
                            window: return_windows.iter().position(|w| *w == n).unwrap_or(0),
                            kind: f.kind,
                        }
                    }
                    Kind::Rsi => Plan::Rsi { n },
                    Kind::VolumeZ => {
                        if !volume_windows.contains(&n) {
                            volume_windows.push(n);
                        }
                        Plan::VolumeZ {
                            window: volume_windows.iter().position(|w| *w == n).unwrap_or(0),
                        }
                    }
                }
            })
            .collect();
        Computer {
            returns: Tail::new(return_windows.iter().copied().max().unwrap_or(0)),
            volumes: Tail::new(volume_windows.iter().copied().max().unwrap_or(0)),
            return_stats: vec![None; return_windows.len()],
            volume_stats: vec![None; volume_windows.len()],
            return_windows,
            volume_windows,
            emas: vec![None; plan.len()],
            rsis: vec![RsiState::default(); plan.len()],
            plan,
            prev_close: None,
        }
    }

    /// Advances by one bar; writes the contract's values (in its order).
    pub fn step(&mut self, close: f64, volume: f64, out: &mut Vec<Option<f64>>) {
        out.clear();
        let lr = self.prev_close.map(|p| (close / p).ln());
        let diff = self.prev_close.map(|p| close - p);
        if let Some(r) = lr {
            self.returns.push(r);
        }
        self.volumes.push(volume);
        for (stat, n) in self.return_stats.iter_mut().zip(&self.return_windows) {
            *stat = self.returns.last(*n).map(slice_mean_std);
        }
        for (stat, n) in self.volume_stats.iter_mut().zip(&self.volume_windows) {
            *stat = self.volumes.last(*n).map(slice_mean_std);
        }
        for (i, plan) in self.plan.iter().enumerate() {
            let value = match *plan {
                Plan::LogReturn => lr,
                Plan::Ema { alpha } => {
                    let next = match self.emas[i] {
                        None => close,
                        Some(prev) => alpha * close + (1.0 - alpha) * prev,
                    };
                    self.emas[i] = Some(next);
                    Some(next)
                }
                Plan::ReturnStat { window, kind } => {
                    self.return_stats[window].map(|(mean, std)| match kind {
                        Kind::RetMean => mean,
                        Kind::RetStd => std,
                        _ => 100.0 * std,
                    })
                }
                Plan::Rsi { n } => diff.and_then(|d| {
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
                Plan::VolumeZ { window } => self.volume_stats[window]
                    .and_then(|(mean, std)| (std > 0.0).then(|| (volume - mean) / std)),
            };
            out.push(value);
        }
        self.prev_close = Some(close);
    }
}
