//! ADWIN (Bifet & Gavaldà, "Learning from time-changing data with adaptive
//! windowing", SDM 2007), the ADWIN2 variant with an exponential histogram
//! of buckets and the variance-based cut test of MOA and River: every
//! `clock` values, for each split of the window into an older part W₀ and a
//! newer W₁ (at bucket boundaries),
//!
//!   |μ₀ − μ₁| > ε,  ε = √(2·m·σ²_W·d) + ⅔·d·m,
//!   m = 1/(n₀ − ℓ + 1) + 1/(n₁ − ℓ + 1),  d = ln(2·ln(n) / δ)
//!
//! (ℓ the minimum sub-window length) drops W₀. A change is reported when
//! the window shrank.

use std::collections::VecDeque;

use super::{Detection, Detector};

#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    total: f64,
    /// Sum of squared deviations from the bucket mean.
    variance: f64,
}

#[derive(Debug, Clone)]
pub struct Adwin {
    pub delta: f64,
    /// Cut checks every `clock` values.
    pub clock: usize,
    /// Buckets per row before two merge (M).
    pub max_buckets: usize,
    /// Minimum length of each sub-window (ℓ).
    pub min_window: usize,
    /// Rows of buckets; row i holds buckets of 2^i values, oldest first.
    rows: Vec<VecDeque<Bucket>>,
    width: usize,
    total: f64,
    /// total / width, kept so an insert divides once.
    mean: f64,
    variance: f64,
    ticks: usize,
    /// |μ₀ − μ₁| and ε of the last cut.
    last_cut: (f64, f64),
}

impl Adwin {
    pub fn new(delta: f64) -> Self {
        Adwin {
            delta,
            clock: 32,
            max_buckets: 5,
            min_window: 5,
            rows: Vec::new(),
            width: 0,
            total: 0.0,
            mean: 0.0,
            variance: 0.0,
            ticks: 0,
            last_cut: (0.0, 0.0),
        }
    }

    /// Values in the current window.
    pub fn width(&self) -> usize {
        self.width
    }

    pub fn mean(&self) -> f64 {
        if self.width == 0 {
            0.0
        } else {
            self.total / self.width as f64
        }
    }

    fn insert(&mut self, x: f64) {
        // Welford: one division per value.
        let delta = x - self.mean;
        self.width += 1;
        self.total += x;
        self.mean += delta / self.width as f64;
        self.variance += delta * (x - self.mean);
        if self.rows.is_empty() {
            self.rows.push(VecDeque::new());
        }
        self.rows[0].push_back(Bucket {
            total: x,
            variance: 0.0,
        });
        // Compress: a row with more than M buckets merges its two oldest
        // into one bucket of the next row.
        let mut i = 0;
        while i < self.rows.len() && self.rows[i].len() > self.max_buckets {
            let (Some(a), Some(b)) = (self.rows[i].pop_front(), self.rows[i].pop_front()) else {
                break;
            };
            // Two buckets of 2^i values: the between-bucket term is
            // (Σa − Σb)² / 2^(i+1), the divisor a power of two.
            let half_inverse = f64::from_bits((1023 - (i as u64 + 1)) << 52);
            let gap = a.total - b.total;
            let merged = Bucket {
                total: a.total + b.total,
                variance: a.variance + b.variance + gap * gap * half_inverse,
            };
            if i + 1 == self.rows.len() {
                self.rows.push(VecDeque::new());
            }
            self.rows[i + 1].push_back(merged);
            i += 1;
        }
    }

    /// Drops the oldest bucket.
    fn drop_oldest(&mut self) {
        let Some(row) = self.rows.iter().rposition(|r| !r.is_empty()) else {
            return;
        };
        let size = 1usize << row;
        if let Some(b) = self.rows[row].pop_front() {
            let n1 = (self.width - size) as f64;
            let n0 = size as f64;
            self.width -= size;
            let mean0 = b.total / n0;
            let rest_total = self.total - b.total;
            let mean1 = if n1 > 0.0 { rest_total / n1 } else { 0.0 };
            self.variance -= b.variance + n0 * n1 * (mean0 - mean1) * (mean0 - mean1) / (n0 + n1);
            self.variance = self.variance.max(0.0);
            self.total = rest_total;
            self.mean = mean1;
        }
        while self.rows.last().is_some_and(VecDeque::is_empty) {
            self.rows.pop();
        }
    }

    /// One pass of cut checks from the oldest bucket; true if it cut.
    fn cut(&mut self) -> bool {
        let mut shrunk = false;
        'again: loop {
            if self.width < 2 * self.min_window {
                return shrunk;
            }
            let n = self.width as f64;
            let var = self.variance / n;
            let d = (2.0 * n.ln() / self.delta).ln();
            // |μ₀ − μ₁| > √(A·m) + B·m, with μ₀ − μ₁ = num / den and
            // m = s / p, is tested without division or root:
            // t = num·p − B·s·den > 0 and t² > A·s·p·den².
            let (a_coef, b_coef) = (2.0 * var * d, 2.0 / 3.0 * d);
            let (mut n0, mut u0) = (0usize, 0.0f64);
            let l = self.min_window;
            // Oldest buckets are in the highest rows, each row oldest first.
            for row in (0..self.rows.len()).rev() {
                let size = 1usize << row;
                for b in &self.rows[row] {
                    n0 += size;
                    u0 += b.total;
                    let n1 = self.width - n0;
                    if n1 < l {
                        return shrunk;
                    }
                    if n0 < l {
                        continue;
                    }
                    let (f0, f1) = (n0 as f64, n1 as f64);
                    let u1 = self.total - u0;
                    let num = (u0 * f1 - u1 * f0).abs();
                    let den = f0 * f1;
                    let (ka, kb) = ((n0 - l + 1) as f64, (n1 - l + 1) as f64);
                    let (sum, prod) = (ka + kb, ka * kb);
                    let t = num * prod - b_coef * sum * den;
                    if t > 0.0 && t * t > a_coef * sum * prod * den * den {
                        let m = sum / prod;
                        self.last_cut = (num / den, (a_coef * m).sqrt() + b_coef * m);
                        self.drop_oldest();
                        shrunk = true;
                        continue 'again;
                    }
                }
            }
            return shrunk;
        }
    }
}

impl Detector for Adwin {
    fn name(&self) -> &'static str {
        "adwin"
    }

    fn update(&mut self, x: f64) -> Option<Detection> {
        if !x.is_finite() {
            return None;
        }
        self.insert(x);
        self.ticks += 1;
        if !self.ticks.is_multiple_of(self.clock) {
            return None;
        }
        if self.cut() {
            return Some(Detection {
                statistic: self.last_cut.0,
                threshold: self.last_cut.1,
                window: self.width,
            });
        }
        None
    }
}
