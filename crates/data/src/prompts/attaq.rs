//! AttaQ adversarial questions: CSV with header `label,input,additional_info` and RFC-4180 quoting
//! (questions contain commas, quotes and newlines). `label` is the harm category and becomes the
//! prompt's group; `additional_info` is provenance, JSON in some rows and a Python dict literal in
//! others, so it is kept verbatim in [`Prompt::info`] and never parsed.
//!
//! **Ids** are `row-N`, N the 1-based record number after the header (not the line: a quoted
//! field can span lines). The upstream file has no id column.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{check_positive, source_name, Prompt, PromptSet, Selection};
use crate::read::{Csv, Tally};

/// Options of an AttaQ source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttaqOptions {
    pub path: PathBuf,
    /// Harm categories to keep; empty keeps all.
    #[serde(default)]
    pub groups: Vec<String>,
    /// At most this many questions per category, chosen by seeded sampling of ids.
    #[serde(default)]
    pub per_group: Option<usize>,
    /// Seeded sample of this many questions in all, after the per-group cap.
    #[serde(default)]
    pub sample: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Skip and count malformed records instead of failing.
    #[serde(default)]
    pub lenient: bool,
}

impl AttaqOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AttaqOptions {
            path: path.into(),
            ..Default::default()
        }
    }
}

pub fn load(options: &AttaqOptions) -> Result<PromptSet> {
    check_positive("per_group", options.per_group)?;
    check_positive("sample", options.sample)?;
    let path = options.path.as_path();
    let csv = Csv::read(path, b',')?;
    let label_col = csv.column(path, "label")?;
    let input_col = csv.column(path, "input")?;
    // Optional: a user's own file in this format may leave provenance out.
    let info_col = csv.columns.get("additional_info").copied();
    let source = source_name("attaq", path);
    let mut tally = Tally::new(path, options.lenient);
    let mut prompts = Vec::new();
    let mut seen_groups = std::collections::HashSet::new();
    for (index, row) in csv.well_formed(&mut tally)? {
        let label = row.fields[label_col].trim();
        let input = row.fields[input_col].as_str();
        if label.is_empty() {
            tally.malformed(row.line, "empty label")?;
            continue;
        }
        if input.trim().is_empty() {
            tally.malformed(row.line, "empty input")?;
            continue;
        }
        seen_groups.insert(label.to_string());
        if !options.groups.is_empty() && !options.groups.iter().any(|g| g == label) {
            tally.counts.filtered += 1;
            continue;
        }
        let mut prompt = Prompt::new(format!("row-{}", index + 1), input, &source);
        prompt.group = Some(label.to_string());
        prompt.info = info_col.map(|i| row.fields[i].clone());
        prompts.push(prompt);
    }
    // A misspelt category would otherwise just filter everything out.
    for wanted in &options.groups {
        if !seen_groups.contains(wanted) {
            let mut have: Vec<&str> = seen_groups.iter().map(String::as_str).collect();
            have.sort_unstable();
            bail!(
                "{}: no row has label {wanted:?} (labels present: {})",
                path.display(),
                have.join(", ")
            );
        }
    }
    let selection = Selection {
        per_group: options.per_group,
        sample: options.sample,
        seed: options.seed,
    };
    Ok(selection.finish(prompts, tally))
}
