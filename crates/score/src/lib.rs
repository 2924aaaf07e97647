//! Toxicity scorers. Every scorer returns, per text, a score in [0, 1] or a typed failure, so a
//! report can count failures instead of scoring them 0 or dropping them.

use serde::{Deserialize, Serialize};

/// Why a text got no score. Failures are counted in every report, never turned into numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum ScoreFailure {
    /// The text is empty or whitespace only: nothing to judge.
    #[error("empty text")]
    EmptyText,
    /// A remote service answered with an error status after all retries.
    #[error("http status {0}")]
    HttpStatus(u16),
    /// A remote service did not answer in time after all retries.
    #[error("timed out")]
    Timeout,
    /// A remote service answered something that is not a score.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// Anything else (connection refused, I/O), with its message.
    #[error("{0}")]
    Other(String),
}

pub type ScoreResult = Result<f32, ScoreFailure>;

/// A toxicity scorer.
pub trait ToxicityScorer {
    /// Stable identifier of the scorer *and its weights/settings*, e.g. `minilm-head:3f2a…`: the
    /// score cache is keyed by it, so it must change whenever scores would.
    fn id(&self) -> String;

    /// One result per text, in order.
    fn score_batch(&mut self, texts: &[&str]) -> Vec<ScoreResult>;
}

pub mod cache;
pub mod perspective;
pub mod profanity;
