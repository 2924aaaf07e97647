//! Toxicity scorers. Every scorer returns, per text, a score in [0, 1] or a typed failure, so a
//! report can count failures instead of scoring them 0 or dropping them.

/// Why a text got no score, and a score or that reason: the types a score line carries.
pub use records::{ScoreFailure, ScoreResult};

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
