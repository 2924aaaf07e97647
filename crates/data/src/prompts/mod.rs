//! Prompts for generation, each with a stable id and its group kept.
//!
//! Ids are stable across runs and machines: they come from the record itself where the format has
//! a natural key (RealToxicityPrompts' `filename`+`begin`+`end`, BOLD's category/name/index, a
//! user's `id`), else from its position (`line-N` for line formats, `row-N` for CSV records, both
//! 1-based). Ids are unique within one source; across sources the pair (`source`, `id`) is.

pub mod attaq;
pub mod bold;
pub mod rtp;
pub mod toxigen;
pub mod user;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::read::Tally;
use crate::Counts;

/// One prompt. Fields a format does not have stay `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    /// Stable and unique within `source`.
    pub id: String,
    /// What the model is given, with real newlines.
    pub text: String,
    /// The category results are grouped by: BOLD category, AttaQ label, ToxiGen target group, a
    /// user's `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Which loader and file: `rtp:toxic`, `bold:gender_prompt`, `attaq:attaq`,
    /// `toxigen:prompts`, `toxigen_sentences:toxigen_prompt_sentences`, `user:my_prompts`
    /// (kind, then the file stem or, for a folder, its name).
    pub source: String,
    /// BOLD: the person (Wikipedia title, `_` for spaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// ToxiGen: `hate` or `neutral`, the kind of sentences the prompt is made of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// RealToxicityPrompts: the prompt's Perspective toxicity, when the file has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_toxicity: Option<f32>,
    /// RealToxicityPrompts: the `challenging` flag, when the file has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenging: Option<bool>,
    /// AttaQ: `additional_info`, kept verbatim (JSON in some rows, a Python dict literal in others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

impl Prompt {
    /// A prompt with only the required fields set.
    pub fn new(id: impl Into<String>, text: impl Into<String>, source: impl Into<String>) -> Self {
        Prompt {
            id: id.into(),
            text: text.into(),
            group: None,
            source: source.into(),
            name: None,
            label: None,
            prompt_toxicity: None,
            challenging: None,
            info: None,
        }
    }
}

/// The prompts of one source and what happened to its rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptSet {
    pub prompts: Vec<Prompt>,
    pub counts: Counts,
    /// Up to five messages about rows skipped by a lenient load, `file:line: what`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub malformed_examples: Vec<String>,
}

impl PromptSet {
    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// Prompt count per group (`None` for prompts without one), sorted by group.
    pub fn group_sizes(&self) -> Vec<(Option<String>, usize)> {
        let mut sizes: HashMap<Option<&str>, usize> = HashMap::new();
        for p in &self.prompts {
            *sizes.entry(p.group.as_deref()).or_default() += 1;
        }
        let mut sizes: Vec<(Option<String>, usize)> = sizes
            .into_iter()
            .map(|(g, n)| (g.map(str::to_string), n))
            .collect();
        sizes.sort();
        sizes
    }
}

/// Where the prompts that passed the filters go next: seeded sampling and caps. Shared by loaders
/// so that every source counts the same way.
pub(crate) struct Selection {
    /// At most this many per group.
    pub per_group: Option<usize>,
    /// At most this many in all (after the per-group cap).
    pub sample: Option<usize>,
    pub seed: u64,
}

impl Selection {
    /// Applies caps and sampling to `prompts` (all of which passed the filters) and finishes the
    /// counts: `tally.counts` must already hold `read`, `malformed` and `filtered`.
    pub fn finish(self, prompts: Vec<Prompt>, tally: Tally<'_>) -> PromptSet {
        let mut counts = tally.counts;
        let mut prompts = prompts;
        if let Some(cap) = self.per_group {
            let (kept, out) = crate::sample::cap_per_group(
                prompts,
                cap,
                self.seed,
                |p| p.group.as_deref().unwrap_or(""),
                |p| &p.id,
            );
            prompts = kept;
            counts.sampled_out += out;
        }
        if let Some(n) = self.sample {
            let (kept, out) = crate::sample::sample(prompts, n, self.seed, |p| &p.id);
            prompts = kept;
            counts.sampled_out += out;
        }
        counts.kept = prompts.len();
        debug_assert!(counts.is_consistent(), "{counts:?}");
        PromptSet {
            prompts,
            counts,
            malformed_examples: tally.examples,
        }
    }
}

/// Guards id uniqueness inside a source: a repeated id is a malformed row (the later one).
#[derive(Default)]
pub(crate) struct Ids {
    first_line: HashMap<String, usize>,
}

impl Ids {
    /// `Err(message)` when `id` was already seen.
    pub fn claim(&mut self, id: &str, line: usize) -> Result<(), String> {
        match self.first_line.get(id) {
            Some(first) => Err(format!("id {id:?} already used on line {first}")),
            None => {
                self.first_line.insert(id.to_string(), line);
                Ok(())
            }
        }
    }
}

/// `kind:stem` for [`Prompt::source`].
pub(crate) fn source_name(kind: &str, path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{kind}:{stem}")
}

/// Options' `sample`/`per_group` of 0 would silently produce nothing: refuse them.
pub(crate) fn check_positive(name: &str, value: Option<usize>) -> anyhow::Result<()> {
    if value == Some(0) {
        anyhow::bail!("{name} must be at least 1 (leave it out to keep everything)");
    }
    Ok(())
}

fn default_true() -> bool {
    true
}
