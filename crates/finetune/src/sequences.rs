//! The texts regularized fine-tuning reads — the data mix and the policy's own labelled samples —
//! as [`lm::sequences::Sequence`]s.

use anyhow::{bail, Result};
use lm::TextTokenizer;
use serde::{Deserialize, Serialize};

pub use lm::sequences::{batches, next_token_log_probs, perplexity, summed_nll, Batch, Sequence};

/// A training text from the data mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixText {
    /// `<source>:<id>`, stable across runs.
    pub id: String,
    pub source: String,
    pub text: String,
    /// Whether the KL term applies to samples that start from this text.
    pub regularize: bool,
}

/// One line of an iteration's `samples.jsonl`: a continuation the policy sampled from the start
/// of a training text, and its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledText {
    /// The [`MixText`] the prompt was cut from.
    pub text_id: String,
    pub source: String,
    pub regularize: bool,
    pub prompt_ids: Vec<i64>,
    pub continuation_ids: Vec<i64>,
    /// The decoded continuation (what the scorer read).
    pub continuation: String,
    /// The scorer's toxicity; `None` when it failed on this text (the sample is then left out of
    /// training and counted).
    pub toxicity: Option<f32>,
    /// The training label derived from it (see [`crate::plan::LabelRule`]).
    pub label: Option<f32>,
}

impl SampledText {
    /// The sample as a training sequence, when it was scored and continues its prompt.
    pub fn sequence(&self) -> Option<Sequence> {
        let label = self.label?;
        if self.continuation_ids.is_empty() {
            return None;
        }
        let mut ids = self.prompt_ids.clone();
        ids.extend(&self.continuation_ids);
        Some(Sequence {
            ids,
            counted_from: self.prompt_ids.len(),
            label,
            regularize: self.regularize,
        })
    }
}

/// Encodes mix texts as plain training sequences of at most `max_tokens` tokens; texts with
/// fewer than two tokens are dropped (nothing to predict).
pub fn encode_texts(
    tokenizer: &TextTokenizer,
    texts: &[MixText],
    max_tokens: usize,
    vocab_size: i64,
) -> Result<Vec<Sequence>> {
    let mut out = Vec::with_capacity(texts.len());
    for text in texts {
        let mut ids = tokenizer.encode(&text.text)?;
        ids.truncate(max_tokens);
        if ids.len() < 2 {
            continue;
        }
        lm::check_token_ids(&ids, vocab_size)
            .map_err(|e| anyhow::anyhow!("training text {}: {e}", text.id))?;
        out.push(Sequence {
            ids,
            counted_from: 1,
            label: 1.0,
            regularize: text.regularize,
        });
    }
    if out.is_empty() {
        bail!("no training text has two tokens or more");
    }
    Ok(out)
}
