//! Length and stopping of a cell's samples ([`metrics::length_summary`]) and toxicity at the
//! length limit ([`metrics::length_controlled_toxicity`]), from the join of generations and
//! scores: what evaluation writes into `metrics.json` and what the report computes itself for a
//! record written before these existed.

use anyhow::{anyhow, Result};
use metrics::{LengthControlledToxicity, LengthSummary, MetricPolicy, SampleLength, Stop};

use crate::generation::FinishReason;
use crate::samples::CellSamples;

impl From<FinishReason> for Stop {
    fn from(reason: FinishReason) -> Self {
        match reason {
            FinishReason::Eos => Stop::Eos,
            FinishReason::Length => Stop::Length,
        }
    }
}

impl CellSamples {
    /// Every generation's length, in file order.
    pub fn sample_lengths(&self) -> Vec<SampleLength> {
        self.generations
            .iter()
            .map(|g| SampleLength::of(g.token_ids.len(), &g.text, g.finish_reason.into()))
            .collect()
    }

    /// Length and stopping over all samples.
    pub fn length_summary(&self) -> LengthSummary {
        metrics::length_summary(&self.sample_lengths())
    }

    /// Length and stopping over the samples score column `column` scored.
    pub fn scored_length_summary(&self, column: usize) -> Result<LengthSummary> {
        let scores = &self.column(column)?.scores;
        let lengths = self.sample_lengths();
        Ok(metrics::length_summary(
            lengths
                .iter()
                .zip(scores)
                .filter(|(_, s)| s.is_some())
                .map(|(l, _)| l),
        ))
    }

    /// Toxicity of score column `column` over the samples that reached the length limit.
    pub fn length_controlled_toxicity(
        &self,
        column: usize,
        policy: &MetricPolicy,
    ) -> Result<LengthControlledToxicity> {
        let scores = &self.column(column)?.scores;
        let prompts =
            self.per_prompt(|i| (scores[i], Stop::from(self.generations[i].finish_reason)));
        Ok(metrics::length_controlled_toxicity(&prompts, policy))
    }

    fn column(&self, column: usize) -> Result<&crate::ScorerColumn> {
        self.scorers
            .get(column)
            .ok_or_else(|| anyhow!("no score column {column}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GenerationLine;

    fn line(prompt: &str, index: u64, tokens: usize, text: &str, eos: bool) -> GenerationLine {
        GenerationLine {
            prompt_id: prompt.into(),
            sample_index: index,
            prompt: format!("text of {prompt}"),
            text: text.into(),
            token_ids: vec![7; tokens],
            finish_reason: if eos {
                FinishReason::Eos
            } else {
                FinishReason::Length
            },
            settings: "s".into(),
            group: None,
            redraws: None,
            still_matched: None,
        }
    }

    /// A hand-made cell: a/0 "x y z" 3 tokens EOS, a/1 "" 0 tokens EOS, b/0 "one two three four"
    /// 5 tokens at the limit, b/1 "five" 5 tokens at the limit; one scorer that failed on a/1.
    #[test]
    fn lengths_of_a_hand_made_cell() {
        let mut samples = CellSamples::new(vec![
            line("a", 0, 3, "x y z", true),
            line("a", 1, 0, "", true),
            line("b", 0, 5, "one two three four", false),
            line("b", 1, 5, "five", false),
        ]);
        samples.scorers.push(crate::ScorerColumn {
            path: "s.jsonl".into(),
            scorer: "s".into(),
            scores: vec![Some(0.9), None, Some(0.6), Some(0.1)],
            failures: Default::default(),
        });
        let all = samples.length_summary();
        // Tokens (3 + 0 + 5 + 5) / 4, words (3 + 0 + 4 + 1) / 4.
        assert_eq!(all.mean_tokens, Some(13.0 / 4.0));
        assert_eq!(all.mean_words, Some(8.0 / 4.0));
        assert_eq!((all.eos, all.empty, all.at_limit), (2, 1, 2));
        assert_eq!(
            (all.eos_share, all.empty_share, all.at_limit_share),
            (Some(0.5), Some(0.25), Some(0.5))
        );
        let scored = samples.scored_length_summary(0).unwrap();
        // Without the failed empty sample: tokens (3 + 5 + 5) / 3, words (3 + 4 + 1) / 3.
        assert_eq!(scored.samples, 3);
        assert_eq!(scored.mean_tokens, Some(13.0 / 3.0));
        assert_eq!(scored.mean_words, Some(8.0 / 3.0));
        assert_eq!((scored.eos, scored.empty, scored.at_limit), (1, 0, 2));
        let policy = MetricPolicy {
            bootstrap_resamples: 0,
            ..MetricPolicy::default()
        };
        let full = samples.length_controlled_toxicity(0, &policy).unwrap();
        // At the limit: 0.6 (toxic) and 0.1: share 1/2, mean 0.35; the EOS 0.9 is left out.
        assert_eq!(full.toxic_sample_fraction.value, Some(0.5));
        assert!((full.mean_toxicity.value.unwrap() - 0.35).abs() < 1e-12);
        assert_eq!(full.toxic_sample_fraction.counts.samples, 2);
    }
}
