//! The schema of everything an experiment writes, shared by the writers (the `experiment`
//! pipeline, `spec`) and the readers (`report`, `detox compare`, resume): one type per file.
//!
//! ```text
//! <output>/<cell id>/
//!   cell.json               CellRecord        the resolved cell (written once)
//!   generations.jsonl       GenerationLine    one line per (prompt id, sample index)
//!   scores-<scorer>.jsonl   ScoreLine         one line per sample and scorer
//!   record.json             RunRecord         versions, device, wall time per stage, memory
//!   metrics.json            MetricsRecord     the evaluation, with counts next to every mean
//! ```
//!
//! **Versions.** `cell.json`, `record.json` and `metrics.json` carry `"schema": N`
//! ([`SCHEMA_VERSION`]); files written before the field existed read as version 1, which is what
//! they are. JSONL lines carry no version of their own (a field on every line would weigh on the
//! largest files): they belong to the cell beside them. A reader refuses a version newer than it
//! knows, naming the file, rather than misreading it.
//!
//! [`CellSamples`] is the one join of a cell's generations and score files: evaluation computes
//! the metrics from it and the report its per-prompt and agreement tables.

pub mod cell;
pub mod generation;
mod lengths;
pub mod metrics_record;
pub mod run_record;
pub mod samples;
pub mod score;

pub use cell::{format_strength, CellRecord, MethodRecord, ModelRecord, ScorerRef, StepRecord};
pub use generation::{read_generations, FinishReason, GenerationLine};
pub use metrics_record::{
    MetricsInputs, MetricsRecord, MetricsResults, PairAgreement, ScorerResults,
};
pub use run_record::{GitState, Host, PeakMemory, RunRecord, StageRecord, Versions};
pub use samples::{CellSamples, PromptRow, PromptSamples, ScorerColumn};
pub use score::{failure_kind, ScoreFailure, ScoreLine, ScoreResult};

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

pub const CELL_FILE: &str = "cell.json";
pub const GENERATIONS_FILE: &str = "generations.jsonl";
pub const METRICS_FILE: &str = "metrics.json";
pub const RECORD_FILE: &str = "record.json";
/// The experiment's score cache, beside its cell folders.
pub const SCORE_CACHE_FILE: &str = "score-cache.jsonl";

/// `scores-<name>.jsonl`, the score file of the scorer a spec names `spec_name` (characters other
/// than ASCII letters, digits and `-` become `_`, so `hf:/models/x#toxic` makes a file name).
pub fn score_file_name(spec_name: &str) -> String {
    let safe: String = spec_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("scores-{safe}.jsonl")
}

/// The `schema` of a file written before the field existed.
pub(crate) fn first_version() -> u32 {
    1
}

/// Reads a whole JSON record, checking its schema version; errors name the file.
pub fn read_json<T: DeserializeOwned + Versioned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let value: T = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a valid {what}", path.display()))?;
    anyhow::ensure!(
        value.schema() <= SCHEMA_VERSION,
        "{}: {what} of schema {} is newer than this build reads ({SCHEMA_VERSION}); update detox",
        path.display(),
        value.schema()
    );
    Ok(value)
}

/// Writes a JSON record whole: to `<path>.part`, then renamed over `path`, so a killed process
/// never leaves half a record.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomically(path, &text)
}

/// Writes `text` to `<path>.part` and renames it over `path`.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".part");
    let partial = std::path::PathBuf::from(partial);
    std::fs::write(&partial, text)
        .with_context(|| format!("{}: cannot write", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("{}: cannot write", path.display()))
}

/// A record with a schema version.
pub trait Versioned {
    fn schema(&self) -> u32;
}
