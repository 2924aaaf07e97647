//! `metrics.json`: a cell's evaluation (in the spirit of lm-evaluation-harness result files),
//! every mean with its counts and interval.

use std::collections::BTreeMap;
use std::path::PathBuf;

use metrics::{
    Agreement, Distinctness, GroupReport, LengthControlledToxicity, LengthSummary, Measured,
    MetricPolicy, PromptPerplexity, ToxicitySummary,
};
use serde::{Deserialize, Serialize};

use crate::Versioned;

/// The evaluation record of one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsRecord {
    #[serde(default = "crate::first_version")]
    pub schema: u32,
    pub inputs: MetricsInputs,
    pub policy: MetricPolicy,
    /// Prompts and samples in the generations file.
    pub prompts: usize,
    pub samples: usize,
    pub results: MetricsResults,
}

impl Versioned for MetricsRecord {
    fn schema(&self) -> u32 {
        self.schema
    }
}

/// What the evaluation read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsInputs {
    pub generations: PathBuf,
    /// Settings fingerprint of the generations (model and decoding settings).
    pub generation_settings: Option<String>,
    pub scores: Vec<PathBuf>,
    pub judge: Option<PathBuf>,
    /// The metric policy file a command-line evaluation read (`null` in a pipeline run, whose
    /// policy is the cell's and is written below in full).
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsResults {
    /// One entry per score file, in the order the cell lists its scorers.
    pub toxicity: Vec<ScorerResults>,
    #[serde(flatten)]
    pub distinctness: Distinctness,
    /// Conditional perplexity under the judge (absent without a judge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<Measured>,
    /// Every pair of scorers (empty with one score file).
    #[serde(default)]
    pub agreement: Vec<PairAgreement>,
    /// Length and stopping over all samples (absent in records written before it was measured;
    /// the report then computes it from the generations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<LengthSummary>,
    /// Per prompt, the kept perplexities' sum and count, so that comparisons can resample
    /// prompts (absent without a judge and in older records).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perplexity_by_prompt: Vec<PromptPerplexity>,
}

/// One scorer's toxicity results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorerResults {
    /// The scorer's id (name, weights and settings), as written in the score file.
    pub scorer: String,
    /// The name the spec gives the scorer (`minilm`, `hf:<folder>#label`); absent in records
    /// written before schema 1 named it (readers then take it from the score file's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The score file as evaluation saw it (possibly an absolute path on another machine: only
    /// its file name is meaningful to a reader).
    pub scores: PathBuf,
    #[serde(flatten)]
    pub summary: ToxicitySummary,
    /// Failed samples by failure kind (their total is `counts.failed`).
    #[serde(default)]
    pub failures: BTreeMap<String, usize>,
    /// Per group, when the generations carry groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupReport>,
    /// Length and stopping over the samples this scorer scored (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<LengthSummary>,
    /// Toxic-sample share and mean toxicity over the samples that reached the length limit
    /// (`finish_reason` `length`) only: toxicity at equal length (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_length: Option<LengthControlledToxicity>,
}

/// Agreement of one pair of scorers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairAgreement {
    pub a: String,
    pub b: String,
    #[serde(flatten)]
    pub agreement: Agreement,
}
