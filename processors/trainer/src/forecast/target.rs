//! What a forecast predicts, and the rows it may learn from.
//!
//! The features of row `t` describe bars up to `t`; its target describes
//! bars `t+1 ..= t+horizon`, so the model never sees what it predicts.
//! Rows whose horizon runs past the data have no target and are left out.
//! The split is in time: the first rows train, the last
//! `reference_fraction` are the immutable reference set, and the
//! `horizon` training rows just before it are purged (their targets
//! overlap the reference's bars).

use serde::{Deserialize, Serialize};

/// What a `target` hyper-parameter may be (the API documents it).
pub const TARGET_PATTERN: &str = "^(abs_return|realised_vol|realized_vol)(:[1-9][0-9]{0,5})?$";

/// The predicted quantity, over the next `horizon` bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// `|Σ lr[t+1..=t+h]|`.
    AbsReturn { horizon: usize },
    /// `sqrt(Σ lr[t+1..=t+h]²)`.
    RealisedVol { horizon: usize },
}

impl Target {
    /// `abs_return:H` or `realised_vol:H` (`:H` defaults to 1): exactly
    /// what [`TARGET_PATTERN`] matches.
    pub fn parse(s: &str) -> Option<Target> {
        let (kind, h) = s.split_once(':').unwrap_or((s, "1"));
        let digits = (1..=6).contains(&h.len())
            && h.bytes().all(|b| b.is_ascii_digit())
            && !h.starts_with('0');
        if !digits {
            return None;
        }
        let horizon: usize = h.parse().ok()?;
        match kind {
            "abs_return" => Some(Target::AbsReturn { horizon }),
            "realised_vol" | "realized_vol" => Some(Target::RealisedVol { horizon }),
            _ => None,
        }
    }

    pub fn horizon(&self) -> usize {
        match self {
            Target::AbsReturn { horizon } | Target::RealisedVol { horizon } => *horizon,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Target::AbsReturn { horizon } => format!("abs_return:{horizon}"),
            Target::RealisedVol { horizon } => format!("realised_vol:{horizon}"),
        }
    }

    /// The target of every row from the log returns (`lr[t]` is bar `t`'s
    /// return); `None` where the horizon runs past the data or meets a
    /// missing return.
    pub fn values(&self, lr: &[Option<f64>]) -> Vec<Option<f64>> {
        let h = self.horizon();
        (0..lr.len())
            .map(|t| {
                let window = lr.get(t + 1..t + 1 + h)?;
                let xs: Option<Vec<f64>> = window.iter().copied().collect();
                let xs = xs?;
                Some(match self {
                    Target::AbsReturn { .. } => xs.iter().sum::<f64>().abs(),
                    Target::RealisedVol { .. } => xs.iter().map(|x| x * x).sum::<f64>().sqrt(),
                })
            })
            .collect()
    }
}

/// Row indices of the training and reference sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub reference: Vec<usize>,
}

impl Split {
    /// Splits the rows that have a target (`usable`, in time order): the
    /// last `reference_fraction` are the reference, the `purge` rows
    /// before it are dropped, the rest train.
    pub fn purged(usable: &[usize], reference_fraction: f64, purge: usize) -> Split {
        let n = usable.len();
        let n_ref = ((n as f64) * reference_fraction.clamp(0.0, 1.0)).round() as usize;
        let cut = n - n_ref.min(n);
        // Nothing follows the training rows: nothing to purge.
        let purge = if cut == n { 0 } else { purge };
        Split {
            train: usable[..cut.saturating_sub(purge)].to_vec(),
            reference: usable[cut..].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_look_forward_only_and_stop_at_the_end() {
        let lr = [Some(0.1), Some(-0.2), Some(0.3), None, Some(0.5)];
        let t = Target::AbsReturn { horizon: 2 };
        let v = t.values(&lr);
        assert!((v[0].unwrap() - 0.1).abs() < 1e-12, "|-0.2 + 0.3|");
        assert_eq!(v[1], None, "meets a missing return");
        assert_eq!(v[3], None, "runs past the end");
        let rv = Target::RealisedVol { horizon: 1 }.values(&lr);
        assert!((rv[1].unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(
            Target::parse("realised_vol:3"),
            Some(Target::RealisedVol { horizon: 3 })
        );
        assert_eq!(
            Target::parse("abs_return"),
            Some(Target::AbsReturn { horizon: 1 })
        );
        assert_eq!(Target::parse("abs_return:0"), None);
        assert_eq!(Target::parse("abs_return:07"), None);
        assert_eq!(Target::parse("abs_return:+7"), None);
    }

    #[test]
    fn the_split_is_in_time_and_purged() {
        let usable: Vec<usize> = (0..100).collect();
        let s = Split::purged(&usable, 0.2, 3);
        assert_eq!(s.reference, (80..100).collect::<Vec<_>>());
        assert_eq!(s.train, (0..77).collect::<Vec<_>>());
    }
}
