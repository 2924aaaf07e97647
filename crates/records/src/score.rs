//! `scores-<scorer>.jsonl`: one [`ScoreLine`] per sample, with its score or its failure.
//! Failures are written and counted, never scored 0.

use anyhow::{bail, Result};
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

/// The `kind` a failure is written with (`empty_text`, `http_status`, ...).
pub fn failure_kind(failure: &ScoreFailure) -> &'static str {
    match failure {
        ScoreFailure::EmptyText => "empty_text",
        ScoreFailure::HttpStatus(_) => "http_status",
        ScoreFailure::Timeout => "timeout",
        ScoreFailure::Malformed(_) => "malformed",
        ScoreFailure::Other(_) => "other",
    }
}

/// One line of a scores file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreLine {
    pub prompt_id: String,
    pub sample_index: u64,
    /// The scorer's id (name, weights and settings).
    pub scorer: String,
    /// `None` exactly when `failure` is set.
    pub score: Option<f32>,
    pub failure: Option<ScoreFailure>,
}

impl ScoreLine {
    /// A line for one sample's result; a non-finite score is no score, and is written as a
    /// failure, never as a number.
    pub fn new(prompt_id: &str, sample_index: u64, scorer: &str, result: ScoreResult) -> Self {
        let (score, failure) = match result {
            Ok(s) if s.is_finite() => (Some(s), None),
            Ok(s) => (
                None,
                Some(ScoreFailure::Other(format!("non-finite score {s}"))),
            ),
            Err(f) => (None, Some(f)),
        };
        ScoreLine {
            prompt_id: prompt_id.to_owned(),
            sample_index,
            scorer: scorer.to_owned(),
            score,
            failure,
        }
    }

    /// The score or the failure; a line with both or neither is malformed.
    pub fn result(&self) -> Result<ScoreResult> {
        match (self.score, &self.failure) {
            (Some(score), None) => Ok(Ok(score)),
            (None, Some(failure)) => Ok(Err(failure.clone())),
            _ => bail!("a score record needs exactly one of \"score\" and \"failure\""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kinds_match_their_serialized_tag() {
        for f in [
            ScoreFailure::EmptyText,
            ScoreFailure::HttpStatus(429),
            ScoreFailure::Timeout,
            ScoreFailure::Malformed("x".into()),
            ScoreFailure::Other("y".into()),
        ] {
            let v = serde_json::to_value(&f).unwrap();
            assert_eq!(v["kind"], failure_kind(&f));
        }
    }

    #[test]
    fn a_non_finite_score_becomes_a_failure() {
        let line = ScoreLine::new("p", 0, "s", Ok(f32::NAN));
        assert!(line.score.is_none());
        assert!(matches!(
            line.result().unwrap(),
            Err(ScoreFailure::Other(_))
        ));
    }
}
