//! Population Stability Index of a recent window against a reference
//! distribution: PSI = Σᵢ (pᵢ − qᵢ)·ln(pᵢ / qᵢ) over the reference's bins
//! (q reference shares, p recent shares, both floored at 1e-4). The
//! reference comes from the prod model's manifest when there is one;
//! otherwise the first `reference_size` values define it (decile edges).

use std::collections::VecDeque;

use super::{Detection, Detector};

const FLOOR: f64 = 1e-4;

/// Bin edges (inner boundaries, ascending) and the reference share of
/// each of the `edges.len() + 1` bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

impl Reference {
    /// Equal-count bins of `values` (the same cut the trainer records in
    /// a model: `autotrain_trainer::Distribution`).
    pub fn from_values(values: &[f64], bins: usize) -> Option<Self> {
        autotrain_trainer::Distribution::of(values, bins).map(|d| Reference {
            edges: d.edges,
            shares: d.shares,
        })
    }
}

fn bin(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|e| *e <= x)
}

/// PSI between reference shares and recent counts.
pub fn psi(reference: &[f64], counts: &[usize], n: usize) -> f64 {
    reference
        .iter()
        .zip(counts)
        .map(|(q, c)| {
            let p = (*c as f64 / n as f64).max(FLOOR);
            let q = q.max(FLOOR);
            (p - q) * (p / q).ln()
        })
        .sum()
}

#[derive(Debug, Clone)]
pub struct Psi {
    /// Recent values compared.
    pub window: usize,
    /// PSI above this is a shift (0.25 is the usual "significant").
    pub threshold: f64,
    /// Values that define the reference when none is given.
    pub reference_size: usize,
    pub bins: usize,
    /// Recompute every this many values.
    pub every: usize,
    reference: Option<Reference>,
    collecting: Vec<f64>,
    recent: VecDeque<usize>,
    counts: Vec<usize>,
    ticks: usize,
}

impl Psi {
    pub fn new(window: usize, threshold: f64, reference: Option<Reference>) -> Self {
        let counts = reference
            .as_ref()
            .map_or(Vec::new(), |r| vec![0; r.shares.len()]);
        Psi {
            window,
            threshold,
            reference_size: 5 * window,
            bins: 10,
            every: (window / 10).max(1),
            reference,
            collecting: Vec::new(),
            recent: VecDeque::new(),
            counts,
            ticks: 0,
        }
    }
}

impl Detector for Psi {
    fn name(&self) -> &'static str {
        "psi"
    }

    fn update(&mut self, x: f64) -> Option<Detection> {
        if !x.is_finite() {
            return None;
        }
        let Some(reference) = &self.reference else {
            self.collecting.push(x);
            if self.collecting.len() >= self.reference_size {
                self.reference = Reference::from_values(&self.collecting, self.bins);
                self.collecting = Vec::new();
                if let Some(r) = &self.reference {
                    self.counts = vec![0; r.shares.len()];
                }
            }
            return None;
        };
        let b = bin(&reference.edges, x);
        self.recent.push_back(b);
        self.counts[b] += 1;
        if self.recent.len() > self.window {
            if let Some(old) = self.recent.pop_front() {
                self.counts[old] -= 1;
            }
        }
        self.ticks += 1;
        if self.recent.len() < self.window || !self.ticks.is_multiple_of(self.every) {
            return None;
        }
        let stat = psi(&reference.shares, &self.counts, self.recent.len());
        if stat > self.threshold {
            // The new regime becomes the reference.
            let detection = Detection {
                statistic: stat,
                threshold: self.threshold,
                window: self.window,
            };
            self.reference = None;
            self.recent.clear();
            self.ticks = 0;
            return Some(detection);
        }
        None
    }
}
