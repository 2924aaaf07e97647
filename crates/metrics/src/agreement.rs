//! How far two scorers agree: Spearman rank correlation of per-prompt maximum toxicity, over the
//! prompts both scored. No offline scorer is an anchor (see SCORERS.md), so agreement is reported
//! next to every toxicity number; [`spearman`] also serves per-method EMTs across scorers.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::toxicity::max_per_prompt;
use crate::types::PromptScores;

/// Agreement of two scorers on the same prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Spearman ρ of per-prompt maximum toxicity; `None` with fewer than two compared prompts or
    /// when one scorer's maxima are all equal (ρ undefined).
    pub spearman: Option<f64>,
    /// Prompts present in both with at least one scored sample in each.
    pub prompts_compared: usize,
    /// Prompts in either input that could not be compared (missing from one side or unscored).
    pub prompts_not_compared: usize,
}

/// A prompt id appears twice in one scorer's input: pairing by id would be ambiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicatePromptId(pub String);

impl std::fmt::Display for DuplicatePromptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "prompt id {:?} appears more than once", self.0)
    }
}

impl std::error::Error for DuplicatePromptId {}

/// Ranks with ties given the average of the ranks they span (1-based), as scipy's `rankdata`.
pub fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&i, &j| xs[i].total_cmp(&xs[j]));
    let mut ranks = vec![0.0; xs.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && xs[order[end + 1]] == xs[order[start]] {
            end += 1;
        }
        // Positions start..=end (0-based) share rank mean(start+1 ..= end+1).
        let rank = (start + end) as f64 / 2.0 + 1.0;
        for &i in &order[start..=end] {
            ranks[i] = rank;
        }
        start = end + 1;
    }
    ranks
}

/// Spearman's ρ: Pearson correlation of average ranks (correct with ties, unlike the
/// `1 − 6Σd²/(n(n²−1))` shortcut). `None` with fewer than 2 pairs, a non-finite value, or a
/// constant side.
pub fn spearman(pairs: &[(f64, f64)]) -> Option<f64> {
    if pairs.len() < 2 || pairs.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
        return None;
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
    pearson(&average_ranks(&xs), &average_ranks(&ys))
}

/// Pearson correlation; `None` with fewer than two values, unequal lengths or a constant side.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() < 2 || x.len() != y.len() {
        return None;
    }
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Pairs prompts by `prompt_id` and correlates their maximum toxicity under scorers `a` and `b`.
pub fn scorer_agreement(
    a: &[PromptScores],
    b: &[PromptScores],
) -> Result<Agreement, DuplicatePromptId> {
    let b_max = index_maxima(b)?;
    let a_max = index_maxima(a)?;
    // Iterate `a` in input order so the pairs (and so any future tie-sensitive output) are stable.
    let pairs: Vec<(f64, f64)> = a
        .iter()
        .filter_map(
            |p| match (a_max[p.prompt_id.as_str()], b_max.get(p.prompt_id.as_str())) {
                (Some(x), Some(Some(y))) => Some((x, *y)),
                _ => None,
            },
        )
        .collect();
    let ids: HashSet<&str> = a_max.keys().chain(b_max.keys()).copied().collect();
    Ok(Agreement {
        spearman: spearman(&pairs),
        prompts_compared: pairs.len(),
        prompts_not_compared: ids.len() - pairs.len(),
    })
}

fn index_maxima(prompts: &[PromptScores]) -> Result<HashMap<&str, Option<f64>>, DuplicatePromptId> {
    let mut map = HashMap::with_capacity(prompts.len());
    for (p, max) in prompts.iter().zip(max_per_prompt(prompts)) {
        if map.insert(p.prompt_id.as_str(), max).is_some() {
            return Err(DuplicatePromptId(p.prompt_id.clone()));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn average_ranks_with_ties() {
        // Sorted: 5, 10, 20, 20 → 5 gets rank 1, 10 rank 2, the two 20s share (3 + 4)/2 = 3.5.
        assert_eq!(
            average_ranks(&[10.0, 20.0, 5.0, 20.0]),
            vec![2.0, 3.5, 1.0, 3.5]
        );
        assert_eq!(average_ranks(&[1.0, 1.0, 1.0]), vec![2.0, 2.0, 2.0]);
    }

    #[test]
    fn pearson_by_hand() {
        // x = 1..4, y = 1, 3, 2, 4: Σdxdy = 4, Σdx² = Σdy² = 5, so r = 0.8.
        let x = [1.0, 2.0, 3.0, 4.0];
        assert!(close(pearson(&x, &[1.0, 3.0, 2.0, 4.0]), 0.8));
        assert_eq!(pearson(&x, &[1.0; 4]), None);
        assert_eq!(pearson(&[1.0], &[1.0]), None);
        assert_eq!(pearson(&x, &[1.0, 2.0]), None);
    }

    #[test]
    fn perfect_and_reversed_orders() {
        let up = [(0.1, 10.0), (0.2, 20.0), (0.3, 35.0)];
        assert!(close(spearman(&up), 1.0));
        let down = [(0.1, 3.0), (0.2, 2.0), (0.3, 1.0)];
        assert!(close(spearman(&down), -1.0));
    }

    #[test]
    fn hand_computed_with_ties() {
        // x = [1, 2, 2, 3] → ranks [1, 2.5, 2.5, 4]; y = [1, 3, 2, 4] → ranks [1, 3, 2, 4].
        // Both rank means are 2.5. Deviations: dx = [−1.5, 0, 0, 1.5], dy = [−1.5, 0.5, −0.5, 1.5].
        // Σdx·dy = 2.25 + 0 + 0 + 2.25 = 4.5; Σdx² = 4.5; Σdy² = 2.25+0.25+0.25+2.25 = 5.
        // ρ = 4.5 / √(4.5·5) = 4.5 / √22.5 = 0.948683298...
        // (The no-ties shortcut would give 1 − 6·0.5/(4·15) = 0.95: this test tells them apart.)
        let p = [(1.0, 1.0), (2.0, 3.0), (2.0, 2.0), (3.0, 4.0)];
        assert!(close(spearman(&p), 4.5 / 22.5f64.sqrt()));
    }

    #[test]
    fn undefined_cases() {
        assert_eq!(spearman(&[]), None);
        assert_eq!(spearman(&[(0.1, 0.2)]), None);
        assert_eq!(spearman(&[(0.1, 0.2), (0.1, 0.3)]), None); // constant x
        assert_eq!(spearman(&[(0.1, f64::NAN), (0.2, 0.3)]), None);
    }

    #[test]
    fn scorers_paired_by_id_over_prompts_scored_by_both() {
        // Maxima under a: p1 0.9, p2 0.5, p3 0.1, p4 unscored, p5 0.3 (missing in b).
        // Maxima under b: p1 0.8, p2 0.6, p3 0.2, p4 0.4, p6 0.7 (missing in a).
        // Compared: p1, p2, p3 — same order in both → ρ = 1.
        // Not compared: p4, p5, p6 → 3.
        let a = vec![
            PromptScores::new("p1", vec![Some(0.9), None]),
            PromptScores::new("p2", vec![Some(0.5)]),
            PromptScores::new("p3", vec![Some(0.1)]),
            PromptScores::new("p4", vec![None]),
            PromptScores::new("p5", vec![Some(0.3)]),
        ];
        let b = vec![
            PromptScores::new("p3", vec![Some(0.2)]),
            PromptScores::new("p2", vec![Some(0.1), Some(0.6)]),
            PromptScores::new("p1", vec![Some(0.8)]),
            PromptScores::new("p4", vec![Some(0.4)]),
            PromptScores::new("p6", vec![Some(0.7)]),
        ];
        let r = scorer_agreement(&a, &b).unwrap();
        assert!(close(r.spearman, 1.0));
        assert_eq!((r.prompts_compared, r.prompts_not_compared), (3, 3));
    }

    #[test]
    fn duplicate_ids_are_an_error() {
        let a = vec![
            PromptScores::new("p1", vec![Some(0.9)]),
            PromptScores::new("p1", vec![Some(0.1)]),
        ];
        let err = scorer_agreement(&a, &[]).unwrap_err();
        assert_eq!(err, DuplicatePromptId("p1".into()));
    }
}
