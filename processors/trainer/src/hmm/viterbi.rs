//! Viterbi in the log domain.

use super::GaussianHmm;

pub fn viterbi(m: &GaussianHmm, log_b: &[f64], n: usize) -> (f64, Vec<usize>) {
    let k = m.k;
    let ln = |p: f64| if p > 0.0 { p.ln() } else { f64::NEG_INFINITY };
    let log_trans: Vec<f64> = m.trans.iter().map(|p| ln(*p)).collect();
    let mut delta: Vec<f64> = (0..k).map(|s| ln(m.start[s]) + log_b[s]).collect();
    let mut back = vec![0usize; n * k];
    let mut next = vec![0.0; k];
    for t in 1..n {
        for j in 0..k {
            let (best, arg) = (0..k).map(|i| (delta[i] + log_trans[i * k + j], i)).fold(
                (f64::NEG_INFINITY, 0),
                |acc, v| if v.0 > acc.0 { v } else { acc },
            );
            next[j] = best + log_b[t * k + j];
            back[t * k + j] = arg;
        }
        std::mem::swap(&mut delta, &mut next);
    }
    let (best, mut s) = (0..k)
        .map(|i| (delta[i], i))
        .fold(
            (f64::NEG_INFINITY, 0),
            |acc, v| if v.0 > acc.0 { v } else { acc },
        );
    let mut path = vec![0usize; n];
    for t in (0..n).rev() {
        path[t] = s;
        s = back[t * k + s];
    }
    (best, path)
}
