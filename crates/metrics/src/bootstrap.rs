//! Percentile bootstrap over prompts.
//!
//! Prompts are the sampling unit (a prompt's 25 samples are not independent of each other), so
//! each resample draws prompts with replacement and recomputes the statistic. ChaCha8 with a seed
//! from the policy makes intervals reproducible across runs and platforms.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::types::Unit;

/// Lower and upper percentile of a 95 % interval.
const LOWER: f64 = 0.025;
const UPPER: f64 = 0.975;

/// `Σ sum / Σ weight`, or `None` with no units.
pub(crate) fn ratio(units: &[Unit]) -> Option<f64> {
    let (s, w) = units
        .iter()
        .fold((0.0, 0.0), |(s, w), u| (s + u.sum, w + u.weight));
    (!units.is_empty() && w > 0.0).then(|| s / w)
}

/// Draws one resample of `units` (same size, with replacement) and returns its ratio.
fn resample_ratio(units: &[Unit], rng: &mut ChaCha8Rng) -> f64 {
    let n = units.len();
    let (mut s, mut w) = (0.0, 0.0);
    for _ in 0..n {
        let u = units[rng.random_range(0..n)];
        s += u.sum;
        w += u.weight;
    }
    // Every weight is positive (checked by callers), so `w > 0`.
    s / w
}

/// Checks that a bootstrap can run: some units, some resamples, positive finite weights.
fn usable(units: &[Unit], resamples: usize) -> bool {
    resamples > 0
        && !units.is_empty()
        && units
            .iter()
            .all(|u| u.sum.is_finite() && u.weight.is_finite() && u.weight > 0.0)
}

/// 95 % percentile interval of `Σ sum / Σ weight` over prompts.
pub(crate) fn ratio_ci(units: &[Unit], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if !usable(units, resamples) {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let stats = (0..resamples)
        .map(|_| resample_ratio(units, &mut rng))
        .collect();
    Some(percentile_interval(stats))
}

/// 95 % interval of `ratio(a) − ratio(b)`, resampling each side separately (stratified: the
/// groups' sizes are fixed by the data set, not random).
pub(crate) fn diff_ci(a: &[Unit], b: &[Unit], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if !usable(a, resamples) || !usable(b, resamples) {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let stats = (0..resamples)
        .map(|_| resample_ratio(a, &mut rng) - resample_ratio(b, &mut rng))
        .collect();
    Some(percentile_interval(stats))
}

/// 95 % percentile-bootstrap interval of the mean of `values` (one value per prompt), for callers
/// with their own per-prompt statistic. `None` when `values` is empty, `resamples` is 0 or a value
/// is not finite.
pub fn bootstrap_mean_ci(values: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    let units: Vec<Unit> = values.iter().copied().map(Unit::one).collect();
    ratio_ci(&units, resamples, seed)
}

pub(crate) fn percentile_interval(mut stats: Vec<f64>) -> (f64, f64) {
    stats.sort_by(f64::total_cmp);
    (quantile(&stats, LOWER), quantile(&stats, UPPER))
}

/// Quantile of sorted data with linear interpolation between order statistics (numpy's default,
/// "type 7"), so intervals match what a Python re-analysis of the same resamples would give.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_numpy() {
        // np.quantile([1,2,3,4,5], 0.025) = 1 + 0.1·(2−1) = 1.1 (pos = 0.025·4 = 0.1)
        // np.quantile([1,2,3,4,5], 0.975) = 4 + 0.9·(5−4) = 4.9 (pos = 3.9)
        let s = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((quantile(&s, LOWER) - 1.1).abs() < 1e-12);
        assert!((quantile(&s, UPPER) - 4.9).abs() < 1e-12);
        assert_eq!(quantile(&[7.0], 0.5), 7.0);
    }

    #[test]
    fn ratio_pools_weights() {
        // (1 + 5) / (1 + 3) = 1.5, not the mean of ratios (1 + 5/3)/2.
        let u = [
            Unit {
                sum: 1.0,
                weight: 1.0,
            },
            Unit {
                sum: 5.0,
                weight: 3.0,
            },
        ];
        assert_eq!(ratio(&u), Some(1.5));
        assert_eq!(ratio(&[]), None);
    }

    #[test]
    fn deterministic_for_a_seed_and_sensitive_to_it() {
        let v: Vec<f64> = (0..50).map(|i| ((i * 37) % 11) as f64 / 10.0).collect();
        let a = bootstrap_mean_ci(&v, 500, 7).unwrap();
        let b = bootstrap_mean_ci(&v, 500, 7).unwrap();
        let c = bootstrap_mean_ci(&v, 500, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn interval_contains_point_estimate_and_is_within_range() {
        // 20 zeros and 20 ones: mean 0.5; resampled means lie in [0, 1] and straddle 0.5.
        let v: Vec<f64> = (0..40).map(|i| (i % 2) as f64).collect();
        let (lo, hi) = bootstrap_mean_ci(&v, 1000, 1).unwrap();
        assert!(
            (0.0..0.5).contains(&lo) && hi > 0.5 && hi <= 1.0,
            "({lo}, {hi})"
        );
        // Standard error √(0.25/40) ≈ 0.079, so the half-width should be about 1.96·0.079 ≈ 0.155.
        assert!((hi - lo) > 0.2 && (hi - lo) < 0.4, "({lo}, {hi})");
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(bootstrap_mean_ci(&[], 100, 0), None);
        assert_eq!(bootstrap_mean_ci(&[0.3, 0.4], 0, 0), None);
        assert_eq!(bootstrap_mean_ci(&[0.3, f64::NAN], 100, 0), None);
        // One prompt: every resample is that prompt.
        assert_eq!(bootstrap_mean_ci(&[0.3], 100, 0), Some((0.3, 0.3)));
        // Constant data: zero-width interval at the value.
        assert_eq!(bootstrap_mean_ci(&[0.25; 10], 100, 0), Some((0.25, 0.25)));
    }

    #[test]
    fn diff_interval_of_separated_groups_excludes_zero() {
        let a: Vec<Unit> = (0..30)
            .map(|i| Unit::one(0.8 + (i % 3) as f64 * 0.05))
            .collect();
        let b: Vec<Unit> = (0..30)
            .map(|i| Unit::one(0.1 + (i % 3) as f64 * 0.05))
            .collect();
        let (lo, hi) = diff_ci(&a, &b, 300, 3).unwrap();
        // Point difference is 0.7 exactly (the same offsets on both sides).
        assert!(
            lo > 0.6 && hi < 0.8 && lo <= 0.7 && 0.7 <= hi,
            "({lo}, {hi})"
        );
    }
}
