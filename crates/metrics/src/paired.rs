//! Paired bootstrap of a difference between two cells measured on the same prompts (a method and
//! its baseline).
//!
//! The two cells share their prompts, so their per-prompt results are correlated (a hard prompt
//! is hard for both). Resampling each cell on its own would ignore that and give intervals that
//! are too wide; here one resample of prompt positions is drawn and applied to *both* cells, each
//! statistic is recomputed on both and their difference kept. A cell compared with itself
//! therefore gets exactly 0 for the value and both bounds.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::bootstrap::percentile_interval;

/// One prompt's contribution to a statistic written as `Σ sum / Σ weight` over prompts: weight 1
/// for a mean over prompts (EMT, toxic rate), the sample count for a pooled mean over samples
/// (toxic-sample share, perplexity, length). Weight 0: the prompt contributes nothing (no usable
/// sample).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatioTerm {
    pub sum: f64,
    pub weight: f64,
}

impl RatioTerm {
    /// A prompt-level value (weight 1).
    pub fn one(value: f64) -> Self {
        Self {
            sum: value,
            weight: 1.0,
        }
    }

    /// A prompt without a usable sample.
    pub const NONE: RatioTerm = RatioTerm {
        sum: 0.0,
        weight: 0.0,
    };
}

/// `method − baseline` of one statistic, with its paired 95 % interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// `None` when either side has no usable prompt.
    pub value: Option<f64>,
    /// `None` without a value, with resampling disabled, or with a non-finite term.
    pub ci95: Option<(f64, f64)>,
    /// Prompts the two sides were joined on.
    pub prompts: usize,
}

impl PairedDifference {
    /// Whether the interval lies entirely above or below 0.
    pub fn excludes_zero(&self) -> bool {
        self.ci95.is_some_and(|(lo, hi)| lo > 0.0 || hi < 0.0)
    }
}

fn ratio(terms: impl Iterator<Item = RatioTerm>) -> Option<f64> {
    let (s, w) = terms.fold((0.0, 0.0), |(s, w), t| (s + t.sum, w + t.weight));
    (w > 0.0).then(|| s / w)
}

/// The paired difference of `Σ sum / Σ weight` between `method` and `baseline`, whose entries
/// are aligned by prompt (entry `i` of both is the same prompt). Each of `resamples` resamples
/// draws prompt positions with replacement (ChaCha8 seeded with `seed`) and takes the difference
/// of both ratios over the same positions; a resample in which either side has no weight is
/// skipped. Panics when the slices differ in length (the caller joins prompts first).
pub fn paired_difference(
    method: &[RatioTerm],
    baseline: &[RatioTerm],
    resamples: usize,
    seed: u64,
) -> PairedDifference {
    assert_eq!(
        method.len(),
        baseline.len(),
        "terms must be aligned by prompt"
    );
    let n = method.len();
    let value = match (
        ratio(method.iter().copied()),
        ratio(baseline.iter().copied()),
    ) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let finite = |t: &RatioTerm| t.sum.is_finite() && t.weight.is_finite() && t.weight >= 0.0;
    let usable = value.is_some()
        && resamples > 0
        && method.iter().all(finite)
        && baseline.iter().all(finite);
    let ci95 = usable
        .then(|| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut stats = Vec::with_capacity(resamples);
            let mut picks = vec![0usize; n];
            for _ in 0..resamples {
                for p in picks.iter_mut() {
                    *p = rng.random_range(0..n);
                }
                let a = ratio(picks.iter().map(|&i| method[i]));
                let b = ratio(picks.iter().map(|&i| baseline[i]));
                if let (Some(a), Some(b)) = (a, b) {
                    stats.push(a - b);
                }
            }
            (!stats.is_empty()).then(|| percentile_interval(stats))
        })
        .flatten();
    PairedDifference {
        value,
        ci95,
        prompts: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(values: &[(f64, f64)]) -> Vec<RatioTerm> {
        values
            .iter()
            .map(|&(sum, weight)| RatioTerm { sum, weight })
            .collect()
    }

    #[test]
    fn a_cell_against_itself_is_exactly_zero() {
        let a = terms(&[(1.0, 2.0), (0.3, 1.0), (5.0, 5.0), (0.0, 0.0), (2.5, 3.0)]);
        let d = paired_difference(&a, &a, 500, 11);
        assert_eq!(d.value, Some(0.0));
        assert_eq!(d.ci95, Some((0.0, 0.0)));
        assert!(!d.excludes_zero());
    }

    #[test]
    fn a_constant_shift_on_every_prompt_is_recovered_with_a_narrow_interval() {
        let base: Vec<RatioTerm> = (0..40)
            .map(|i| RatioTerm::one((i % 7) as f64 / 10.0))
            .collect();
        let shifted: Vec<RatioTerm> = base.iter().map(|t| RatioTerm::one(t.sum + 0.2)).collect();
        let d = paired_difference(&shifted, &base, 300, 1);
        assert!((d.value.unwrap() - 0.2).abs() < 1e-12);
        let (lo, hi) = d.ci95.unwrap();
        // Paired: every resample sees the same +0.2 on every prompt.
        assert!(
            (lo - 0.2).abs() < 1e-9 && (hi - 0.2).abs() < 1e-9,
            "({lo}, {hi})"
        );
        assert!(d.excludes_zero());
    }

    #[test]
    fn no_usable_prompt_gives_no_value() {
        let empty = terms(&[(0.0, 0.0)]);
        let some = terms(&[(1.0, 1.0)]);
        let d = paired_difference(&empty, &some, 100, 0);
        assert_eq!((d.value, d.ci95), (None, None));
        let d = paired_difference(&some, &some, 0, 0);
        assert_eq!((d.value, d.ci95), (Some(0.0), None));
    }
}
