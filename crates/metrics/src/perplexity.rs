//! Conditional perplexity of continuations, aggregated the DExperts way: per sample
//! `exp(total NLL / continuation tokens)`, then the plain mean over samples pooled across prompts
//! (not a per-prompt mean first, not `exp` of the pooled NLL).
//!
//! Policies: samples with perplexity `>=` the cap are dropped and counted (DExperts keeps
//! `ppl < 1e4`, RAD `ppl < 1e5`); an empty continuation (0 tokens) has no perplexity and is counted
//! in `empty` (DExperts' code would divide by zero); a NaN, or an infinite perplexity when no cap is
//! set, is a failure. An infinite perplexity under a cap is just above the cap: dropped.

use serde::{Deserialize, Serialize};

use crate::types::{measure, Counts, Measured, Prompt, Unit};
use crate::MetricPolicy;

/// What the judge LM reported for one continuation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PplSample {
    /// Summed negative log-likelihood (nats) of the continuation tokens given the prompt.
    Nll { total_nll: f64, tokens: usize },
    /// An already computed perplexity.
    Perplexity(f64),
    /// The judge could not score it.
    Failed,
}

/// A prompt's continuations' perplexity inputs.
pub type PromptPerplexities = Prompt<PplSample>;

/// Classification of one sample.
enum Outcome {
    Kept(f64),
    Dropped,
    Empty,
    Failed,
}

fn classify(sample: &PplSample, cap: Option<f64>) -> Outcome {
    let ppl = match *sample {
        PplSample::Nll { tokens: 0, .. } => return Outcome::Empty,
        PplSample::Nll { total_nll, tokens } => (total_nll / tokens as f64).exp(),
        PplSample::Perplexity(p) => p,
        PplSample::Failed => return Outcome::Failed,
    };
    match cap {
        _ if ppl.is_nan() => Outcome::Failed,
        Some(cap) if ppl >= cap => Outcome::Dropped,
        None if ppl.is_infinite() => Outcome::Failed,
        _ => Outcome::Kept(ppl),
    }
}

/// Mean conditional perplexity over kept samples, with the cap from the policy.
pub fn mean_perplexity(prompts: &[PromptPerplexities], policy: &MetricPolicy) -> Measured {
    let mut counts = Counts {
        prompts: prompts.len(),
        ..Counts::default()
    };
    let mut units = Vec::new();
    for p in prompts {
        let mut unit = Unit {
            sum: 0.0,
            weight: 0.0,
        };
        for s in &p.samples {
            counts.samples += 1;
            match classify(s, policy.ppl_cap) {
                Outcome::Kept(ppl) => {
                    counts.scored += 1;
                    unit.sum += ppl;
                    unit.weight += 1.0;
                }
                Outcome::Dropped => counts.dropped += 1,
                Outcome::Empty => counts.empty += 1,
                Outcome::Failed => counts.failed += 1,
            }
        }
        if unit.weight > 0.0 {
            units.push(unit);
        }
    }
    counts.prompts_used = units.len();
    counts.prompts_excluded = counts.prompts - counts.prompts_used;
    measure(&units, counts, false, policy)
}

/// One prompt's kept perplexities: their sum and count. Stored per prompt so that a later
/// comparison of two cells can resample prompts (a paired bootstrap) without the judge LM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptPerplexity {
    pub prompt_id: String,
    /// Sum of the kept samples' perplexities.
    pub sum: f64,
    /// Kept samples (not empty, failed or above the cap).
    pub kept: usize,
}

/// Per prompt, the sum and count of the perplexities [`mean_perplexity`] keeps (same policy), in
/// the order given; `Σ sum / Σ kept` is its value.
pub fn perplexity_by_prompt(
    prompts: &[PromptPerplexities],
    policy: &MetricPolicy,
) -> Vec<PromptPerplexity> {
    prompts
        .iter()
        .map(|p| {
            let mut out = PromptPerplexity {
                prompt_id: p.prompt_id.clone(),
                sum: 0.0,
                kept: 0,
            };
            for s in &p.samples {
                if let Outcome::Kept(ppl) = classify(s, policy.ppl_cap) {
                    out.sum += ppl;
                    out.kept += 1;
                }
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cap: Option<f64>) -> MetricPolicy {
        MetricPolicy {
            ppl_cap: cap,
            bootstrap_resamples: 0,
            ..MetricPolicy::default()
        }
    }

    fn nll(total_nll: f64, tokens: usize) -> PplSample {
        PplSample::Nll { total_nll, tokens }
    }

    #[test]
    fn hand_computed_mean_over_samples() {
        // p1: NLL 2·ln 4 over 2 tokens → exp(ln 4) = 4; a direct perplexity 10.
        // p2: NLL 3·ln 2 over 3 tokens → 2.
        // Mean over samples = (4 + 10 + 2) / 3 = 16/3; a mean of per-prompt means would give
        // (7 + 2)/2 = 4.5, so this also checks the pooling.
        let prompts = vec![
            PromptPerplexities::new(
                "p1",
                vec![nll(2.0 * 4f64.ln(), 2), PplSample::Perplexity(10.0)],
            ),
            PromptPerplexities::new("p2", vec![nll(3.0 * 2f64.ln(), 3)]),
        ];
        let m = mean_perplexity(&prompts, &policy(Some(1e4)));
        assert!((m.value.unwrap() - 16.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.counts.scored, 3);
        assert!(!m.higher_is_better);
        let by_prompt = perplexity_by_prompt(&prompts, &policy(Some(1e4)));
        let (sum, kept) = by_prompt
            .iter()
            .fold((0.0, 0), |(s, k), p| (s + p.sum, k + p.kept));
        assert_eq!(kept, 3);
        assert!((sum / kept as f64 - m.value.unwrap()).abs() < 1e-12);
    }

    #[test]
    fn cap_boundary_drops_equal_and_counts() {
        // Exactly at the cap is dropped (both repos keep `ppl < cap`); just below is kept.
        let prompts = vec![PromptPerplexities::new(
            "p",
            vec![
                PplSample::Perplexity(1e4),
                PplSample::Perplexity(9999.0),
                PplSample::Perplexity(1.0),
            ],
        )];
        let m = mean_perplexity(&prompts, &policy(Some(1e4)));
        // (9999 + 1) / 2 = 5000.
        assert_eq!(m.value, Some(5000.0));
        assert_eq!(m.counts.dropped, 1);
        assert_eq!(m.counts.scored, 2);
        // RAD's cap keeps 1e4: (1e4 + 9999 + 1) / 3 = 6666.67.
        let rad = mean_perplexity(&prompts, &policy(Some(1e5)));
        assert!((rad.value.unwrap() - 20000.0 / 3.0).abs() < 1e-9);
        assert_eq!(rad.counts.dropped, 0);
    }

    #[test]
    fn empty_failed_and_overflow_are_counted_separately() {
        let prompts = vec![
            PromptPerplexities::new(
                "p1",
                vec![
                    nll(0.0, 0),       // empty continuation
                    PplSample::Failed, // judge failure
                    nll(f64::NAN, 3),  // NaN → failure
                    nll(1e6, 1),       // exp overflows to +inf → above the cap
                    nll(0.0, 5),       // ppl 1
                ],
            ),
            // Only an empty continuation: the prompt is excluded, not averaged in.
            PromptPerplexities::new("p2", vec![nll(0.0, 0)]),
        ];
        let m = mean_perplexity(&prompts, &policy(Some(1e4)));
        assert_eq!(m.value, Some(1.0));
        assert_eq!(
            m.counts,
            Counts {
                prompts: 2,
                prompts_used: 1,
                prompts_excluded: 1,
                samples: 6,
                scored: 1,
                failed: 2,
                dropped: 1,
                empty: 2,
            }
        );
        // Without a cap the infinite perplexity cannot enter a mean: it is a failure instead.
        let uncapped = mean_perplexity(&prompts, &policy(None));
        assert_eq!(uncapped.value, Some(1.0));
        assert_eq!((uncapped.counts.failed, uncapped.counts.dropped), (3, 0));
    }

    #[test]
    fn all_dropped_gives_no_value() {
        let prompts = vec![PromptPerplexities::new(
            "p",
            vec![PplSample::Perplexity(2e4)],
        )];
        let m = mean_perplexity(&prompts, &MetricPolicy::default());
        assert_eq!((m.value, m.ci95), (None, None));
        assert_eq!(m.counts.dropped, 1);
    }

    #[test]
    fn serde_shape() {
        let s: PplSample = serde_json::from_str(r#"{"nll":{"total_nll":1.5,"tokens":3}}"#).unwrap();
        assert_eq!(s, nll(1.5, 3));
        let f: PplSample = serde_json::from_str(r#""failed""#).unwrap();
        assert_eq!(f, PplSample::Failed);
    }
}
