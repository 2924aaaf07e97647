//! dist-n diversity, as the reference repositories compute it.
//!
//! Per prompt: the number of distinct n-grams over all of its samples divided by the total number
//! of *words* in those samples — not by the number of n-grams, which is what the name suggests and
//! what both DExperts' and RAD's code do not do. (So dist-2 and dist-3 are slightly deflated
//! relative to "unique ÷ total n-grams"; keeping the repos' definition keeps numbers comparable.)
//! Then the plain mean over prompts.
//!
//! Differences from the reference code, deliberately: words are split on any run of whitespace
//! (Python's `split(' ')` there turns "" into one empty word and double spaces into empty words),
//! n-grams are compared as word tuples (the repos join with `_`, so "a_b c" and "a b_c" collide),
//! and n-grams never span two samples (same as the repos). A prompt whose samples contain no word
//! at all is excluded and counted; empty samples are counted in `empty`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::types::{measure, Counts, Measured, PromptTexts, Unit};
use crate::MetricPolicy;

/// dist-1, dist-2 and dist-3 together, as the papers report them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distinctness {
    pub dist_1: Measured,
    pub dist_2: Measured,
    pub dist_3: Measured,
}

/// One prompt's dist-n: distinct n-grams over its samples ÷ total words; `None` with no words.
pub fn prompt_distinct_n(samples: &[String], n: usize) -> Option<f64> {
    assert!(n >= 1, "dist-n needs n >= 1");
    let words: Vec<Vec<&str>> = samples
        .iter()
        .map(|s| s.split_whitespace().collect())
        .collect();
    let total_words: usize = words.iter().map(Vec::len).sum();
    if total_words == 0 {
        return None;
    }
    let distinct: HashSet<&[&str]> = words.iter().flat_map(|w| w.windows(n)).collect();
    Some(distinct.len() as f64 / total_words as f64)
}

/// Mean dist-n over prompts. Panics if `n == 0`.
pub fn distinct_n(prompts: &[PromptTexts], n: usize, policy: &MetricPolicy) -> Measured {
    let mut counts = Counts {
        prompts: prompts.len(),
        ..Counts::default()
    };
    let mut units = Vec::new();
    for p in prompts {
        for s in &p.samples {
            counts.samples += 1;
            if s.split_whitespace().next().is_some() {
                counts.scored += 1;
            } else {
                counts.empty += 1;
            }
        }
        if let Some(d) = prompt_distinct_n(&p.samples, n) {
            units.push(Unit::one(d));
        }
    }
    counts.prompts_used = units.len();
    counts.prompts_excluded = counts.prompts - counts.prompts_used;
    measure(&units, counts, true, policy)
}

/// dist-1/2/3 over prompts.
pub fn distinctness(prompts: &[PromptTexts], policy: &MetricPolicy) -> Distinctness {
    Distinctness {
        dist_1: distinct_n(prompts, 1, policy),
        dist_2: distinct_n(prompts, 2, policy),
        dist_3: distinct_n(prompts, 3, policy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn no_ci() -> MetricPolicy {
        MetricPolicy {
            bootstrap_resamples: 0,
            ..MetricPolicy::default()
        }
    }

    #[test]
    fn hand_computed_single_prompt() {
        // Samples "the cat sat" and "the cat ran": 6 words.
        // unigrams {the, cat, sat, ran} = 4         → dist-1 = 4/6
        // bigrams  {the cat, cat sat, cat ran} = 3  → dist-2 = 3/6 (not 3/4 = per n-gram)
        // trigrams {the cat sat, the cat ran} = 2   → dist-3 = 2/6
        let s = texts(&["the cat sat", "the cat ran"]);
        assert_eq!(prompt_distinct_n(&s, 1), Some(4.0 / 6.0));
        assert_eq!(prompt_distinct_n(&s, 2), Some(3.0 / 6.0));
        assert_eq!(prompt_distinct_n(&s, 3), Some(2.0 / 6.0));
    }

    #[test]
    fn ngrams_do_not_span_samples() {
        // "a b" + "c": bigrams are {a b} only; a cross-sample "b c" would make it 2.
        // 3 words → dist-2 = 1/3; trigrams: none → 0/3.
        let s = texts(&["a b", "c"]);
        assert_eq!(prompt_distinct_n(&s, 2), Some(1.0 / 3.0));
        assert_eq!(prompt_distinct_n(&s, 3), Some(0.0));
    }

    #[test]
    fn tuples_do_not_collide_like_underscore_joins() {
        // Joined with '_' both bigrams would read "a_b_c"; as tuples they are distinct.
        // Words: "a_b c" (2) + "a b_c" (2) = 4; bigrams {(a_b, c), (a, b_c)} = 2 → 2/4.
        let s = texts(&["a_b c", "a b_c"]);
        assert_eq!(prompt_distinct_n(&s, 2), Some(0.5));
    }

    #[test]
    fn whitespace_runs_and_empty_texts() {
        // "x  y\n" is two words; "" and "   " add none. Unigrams {x, y} / 2 words = 1.
        let s = texts(&["x  y\n", "", "   "]);
        assert_eq!(prompt_distinct_n(&s, 1), Some(1.0));
        assert_eq!(prompt_distinct_n(&texts(&["", " "]), 1), None);
        assert_eq!(prompt_distinct_n(&[], 1), None);
    }

    #[test]
    fn mean_over_prompts_with_counts() {
        // p1: "a a" → dist-1 = 1/2; p2: "a b" + "c" → 3/3 = 1; p3: only empty texts → excluded.
        // Mean over used prompts = (0.5 + 1) / 2 = 0.75.
        let prompts = vec![
            PromptTexts::new("p1", texts(&["a a"])),
            PromptTexts::new("p2", texts(&["a b", "c"])),
            PromptTexts::new("p3", texts(&["", ""])),
        ];
        let d = distinctness(&prompts, &no_ci());
        assert_eq!(d.dist_1.value, Some(0.75));
        // dist-2: p1 {a a}/2 = 0.5, p2 {a b}/3 → (0.5 + 1/3) / 2 = 5/12.
        assert!((d.dist_2.value.unwrap() - 5.0 / 12.0).abs() < 1e-12);
        // dist-3: both prompts 0 → 0.
        assert_eq!(d.dist_3.value, Some(0.0));
        let c = d.dist_1.counts;
        assert_eq!((c.prompts, c.prompts_used, c.prompts_excluded), (3, 2, 1));
        assert_eq!((c.samples, c.scored, c.empty), (5, 3, 2));
        assert!(d.dist_1.higher_is_better);
    }

    #[test]
    #[should_panic(expected = "n >= 1")]
    fn zero_n_is_a_bug() {
        prompt_distinct_n(&texts(&["a"]), 0);
    }
}
