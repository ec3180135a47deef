//! [`Engine`]: one instrument's features, maintained incrementally.
//!
//! Bars arrive in any order, repeated, and corrected (a higher revision of
//! a bar already seen). An in-order bar costs one [`Computer`] step. A late
//! or corrected bar restarts the computation from the last checkpoint
//! before it (one every [`CHECKPOINT_EVERY`] bars) and re-publishes the
//! corrected bar's row and the later rows whose values changed — never a
//! row before it. A repeat (same revision), or an older revision arriving
//! late, changes nothing.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::FxHasher;

use crate::compute::Computer;
use crate::contract::Contract;

/// Bars between two saved computer states.
pub const CHECKPOINT_EVERY: usize = 64;

/// The part of a bar the features need.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub ts: i64,
    pub close: f64,
    pub volume: f64,
    pub revision: i32,
}

/// One published feature row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub ts: i64,
    pub revision: i32,
    /// Contract order; `None` while a window is not full.
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone)]
pub struct Engine {
    contract: Arc<Contract>,
    points: Vec<Point>,
    /// Hash of the values last published for each point.
    published: Vec<u64>,
    /// `checkpoints[k]`: the computer before point `k * CHECKPOINT_EVERY`.
    checkpoints: Vec<Computer>,
    /// The computer after the last point.
    tip: Computer,
    scratch: Vec<Option<f64>>,
}

fn hash_values(values: &[Option<f64>]) -> u64 {
    let mut h = FxHasher::default();
    for v in values {
        v.map(f64::to_bits).hash(&mut h);
    }
    h.finish()
}

impl Engine {
    pub fn new(contract: Arc<Contract>) -> Self {
        let start = Computer::new(&contract);
        Engine {
            contract,
            points: Vec::new(),
            published: Vec::new(),
            checkpoints: vec![start.clone()],
            tip: start,
            scratch: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The bars as the engine holds them (sorted, latest revision).
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// Rough heap bytes held (for the benchmark's memory figure).
    pub fn heap_bytes(&self) -> usize {
        let computer = 200 + 8 * self.contract.features.len() * 4;
        self.points.capacity() * std::mem::size_of::<Point>()
            + self.published.capacity() * 8
            + self.checkpoints.len() * computer
    }

    /// Applies one bar; appends the rows to publish to `out`.
    pub fn upsert(&mut self, p: Point, out: &mut Vec<Row>) {
        self.upsert_with(p, |ts, revision, values| {
            out.push(Row {
                ts,
                revision,
                values: values.to_vec(),
            })
        });
    }

    /// Applies one bar; calls `emit(ts, revision, values)` for each row to
    /// publish (no allocation per row).
    pub fn upsert_with(&mut self, p: Point, mut emit: impl FnMut(i64, i32, &[Option<f64>])) {
        let out = &mut emit;
        // The common case, a bar after the last one, needs no search.
        if self.points.last().is_none_or(|last| last.ts < p.ts) {
            return self.append(p, out);
        }
        match self.points.binary_search_by_key(&p.ts, |q| q.ts) {
            Err(j) if j == self.points.len() => self.append(p, out),
            Err(j) => {
                self.points.insert(j, p);
                self.published.insert(j, 0);
                self.recompute_from(j, out);
            }
            Ok(j) => {
                // A repeat (same revision) or an older revision arriving
                // late changes nothing; a newer revision replaces the bar.
                if p.revision <= self.points[j].revision {
                    return;
                }
                self.points[j] = p;
                self.recompute_from(j, out);
            }
        }
    }

    fn append(&mut self, p: Point, out: &mut impl FnMut(i64, i32, &[Option<f64>])) {
        let i = self.points.len();
        if i > 0 && i.is_multiple_of(CHECKPOINT_EVERY) {
            self.checkpoints.push(self.tip.clone());
        }
        self.tip.step(p.close, p.volume, &mut self.scratch);
        self.points.push(p);
        self.published.push(hash_values(&self.scratch));
        out(p.ts, p.revision, &self.scratch);
    }

    /// Recomputes points `j..` from the checkpoint before `j`; publishes
    /// point `j` and every later point whose values changed.
    fn recompute_from(&mut self, j: usize, out: &mut impl FnMut(i64, i32, &[Option<f64>])) {
        let k = j / CHECKPOINT_EVERY;
        self.checkpoints.truncate(k + 1);
        let mut state = self.checkpoints[k].clone();
        for i in k * CHECKPOINT_EVERY..self.points.len() {
            if i > k * CHECKPOINT_EVERY && i % CHECKPOINT_EVERY == 0 {
                self.checkpoints.push(state.clone());
            }
            let p = self.points[i];
            state.step(p.close, p.volume, &mut self.scratch);
            let h = hash_values(&self.scratch);
            if i == j || (i > j && h != self.published[i]) {
                self.published[i] = h;
                out(p.ts, p.revision, &self.scratch);
            }
        }
        self.tip = state;
    }
}
