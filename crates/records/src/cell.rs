//! `cell.json`: the resolved cell, written once when a cell starts (`spec::Cell::record`) and
//! read by the report, `detox compare` and merge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use metrics::MetricPolicy;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Versioned;

/// The resolved cell: display names, absolute paths, every parameter with its default filled in,
/// and the identity its id hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    #[serde(default = "crate::first_version")]
    pub schema: u32,
    pub cell_id: String,
    /// The canonical identity (`spec::Cell::identity`) whose hash is `cell_id`.
    #[serde(default)]
    pub identity: Value,
    pub model: ModelRecord,
    pub method: MethodRecord,
    pub prompts: PromptSetRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationRecord>,
    pub seed: u64,
    #[serde(default)]
    pub scorers: Vec<ScorerRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<ModelRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<MetricPolicy>,
}

impl Versioned for CellRecord {
    fn schema(&self) -> u32 {
        self.schema
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    /// `hf` or `gguf`.
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub path: PathBuf,
    #[serde(default)]
    pub preset: Option<String>,
}

/// The method as tables and charts show it (`label`, `name` joined by `+` for a stack, the flat
/// parameters, the strength on the sweep axis) and its full stack of steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodRecord {
    pub label: String,
    pub name: String,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    #[serde(default)]
    pub strength: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// The label of the method entry this cell is compared with (same model, prompt set, seed
    /// and scorer): `none` by default when the spec has it; `None` for the baseline itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
}

/// One method of a stack, with every parameter filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    #[serde(default)]
    pub strength: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptSetRecord {
    pub name: String,
    /// The prompt source and its options (`data::spec::PromptSourceSpec`).
    #[serde(default)]
    pub source: Value,
}

/// Generation settings of the cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRecord {
    pub samples_per_prompt: Option<u64>,
    pub max_new_tokens: Option<u64>,
    /// End-of-sequence suppressed for the first this-many new tokens (0 or absent: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_new_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

/// A toxicity scorer as a spec names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScorerRef {
    Minilm,
    Profanity,
    Perspective,
    /// A Hugging Face classifier folder and the label to read (`None`: its toxic label).
    Hf {
        dir: PathBuf,
        #[serde(default)]
        label: Option<String>,
    },
}

impl ScorerRef {
    /// The short name tables and charts use: `minilm`, or `hf:<folder name>[#label]`.
    pub fn short_name(&self) -> String {
        match self {
            ScorerRef::Minilm => "minilm".into(),
            ScorerRef::Profanity => "profanity".into(),
            ScorerRef::Perspective => "perspective".into(),
            ScorerRef::Hf { dir, label } => {
                let folder = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| dir.display().to_string());
                match label {
                    Some(l) => format!("hf:{folder}#{l}"),
                    None => format!("hf:{folder}"),
                }
            }
        }
    }
}

impl CellRecord {
    /// `label@strength` (or the label alone without a strength): how charts and tables name a
    /// method setting.
    pub fn method_setting(&self) -> String {
        match self.method.strength {
            Some(s) => format!("{}@{}", self.method.label, format_strength(s)),
            None => self.method.label.clone(),
        }
    }

    /// The scorer whose score file is `file` (by the file name the pipeline gives it), if the
    /// cell lists one: how a record written before metrics named their scorers is read.
    pub fn scorer_for_file(&self, file: &Path) -> Option<&ScorerRef> {
        let name = file.file_name()?.to_str()?;
        self.scorers.iter().find(|s| s.matches_score_file(name))
    }
}

impl ScorerRef {
    /// Whether `file_name` is this scorer's score file. A spec writes an `hf` folder inside the
    /// project relative to it and one outside in full, so only the folder's last component (and
    /// the label) is compared at the end of the name.
    pub fn matches_score_file(&self, file_name: &str) -> bool {
        match self {
            ScorerRef::Hf { dir, label } => {
                let folder = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let tail = match label {
                    Some(l) => format!("/{folder}#{l}"),
                    None => format!("/{folder}"),
                };
                let tail = crate::score_file_name(&tail);
                let tail = tail.trim_start_matches("scores-");
                file_name.starts_with("scores-hf_") && file_name.ends_with(tail)
            }
            other => file_name == crate::score_file_name(&other.short_name()),
        }
    }
}

/// A strength as written in the spec: `2` rather than `2.0`, `0.25` as is.
pub fn format_strength(strength: f64) -> String {
    if strength.fract() == 0.0 && strength.abs() < 1e15 {
        format!("{strength:.0}")
    } else {
        format!("{strength}")
    }
}
