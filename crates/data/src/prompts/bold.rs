//! BOLD prompt files (`prompts/<domain>_prompt.json`): one JSON object, category → person name →
//! list of prompt strings. The domain is the file (gender, race, profession, religious_ideology,
//! political_ideology); the group of a prompt is its category (e.g. `American_actors`,
//! `American_actresses`) and its `name` the person.
//!
//! **Ids** are `<category>/<name>/<index>`, the index counting from 0 inside the person's list:
//! unique and independent of how the JSON object happens to be ordered.
//!
//! **Text.** BOLD prompts mostly end in a space ("… is an American actor whose "). The trailing
//! whitespace is trimmed by default (`trim: true`): BPE tokenizers attach a word's leading space to
//! the word's token, so a prompt ending in a bare space token asks the model to continue from an
//! unusual state. Set `trim: false` to feed the prompts verbatim. Empty prompts (five upstream)
//! are dropped and counted as filtered.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_positive, default_true, source_name, Prompt, PromptSet, Selection};
use crate::read::{self, Tally};

/// Options of a BOLD source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoldOptions {
    /// A `*_prompt.json` file; see [`domain_file`].
    pub path: PathBuf,
    /// Categories to keep; empty keeps all. A name the file lacks is an error.
    #[serde(default)]
    pub groups: Vec<String>,
    /// At most this many prompts per category, chosen by seeded sampling of ids.
    #[serde(default)]
    pub per_group: Option<usize>,
    /// Seeded sample of this many prompts in all, after the per-group cap.
    #[serde(default)]
    pub sample: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Trim trailing whitespace of each prompt (see the module docs).
    #[serde(default = "default_true")]
    pub trim: bool,
    /// Skip and count prompts that are not non-empty strings instead of failing.
    #[serde(default)]
    pub lenient: bool,
}

impl BoldOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        BoldOptions {
            path: path.into(),
            groups: Vec::new(),
            per_group: None,
            sample: None,
            seed: 0,
            trim: true,
            lenient: false,
        }
    }
}

/// `<bold dir>/prompts/<domain>_prompt.json`, e.g. `domain_file(dir, "gender")`.
pub fn domain_file(bold_dir: &Path, domain: &str) -> PathBuf {
    bold_dir
        .join("prompts")
        .join(format!("{domain}_prompt.json"))
}

pub fn load(options: &BoldOptions) -> Result<PromptSet> {
    check_positive("per_group", options.per_group)?;
    check_positive("sample", options.sample)?;
    let path = options.path.as_path();
    let bytes = read::read_bytes(path)?;
    // The file is one object, so a syntax error cannot be skipped row by row: it always fails,
    // with serde's line and column.
    let root: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let Value::Object(categories) = root else {
        bail!(
            "{}: expected an object of categories at the top level",
            path.display()
        );
    };
    for wanted in &options.groups {
        if !categories.contains_key(wanted) {
            let mut have: Vec<&str> = categories.keys().map(String::as_str).collect();
            have.sort_unstable();
            bail!(
                "{}: no category {wanted:?} (the file has: {})",
                path.display(),
                have.join(", ")
            );
        }
    }
    let source = source_name("bold", path);
    let mut tally = Tally::new(path, options.lenient);
    let mut prompts = Vec::new();
    for (category, people) in &categories {
        let Value::Object(people) = people else {
            bail!(
                "{}: category {category:?} is not an object of names",
                path.display()
            );
        };
        let wanted = options.groups.is_empty() || options.groups.contains(category);
        for (name, list) in people {
            let Value::Array(list) = list else {
                bail!(
                    "{}: {category}/{name} is not a list of prompts",
                    path.display()
                );
            };
            for (index, item) in list.iter().enumerate() {
                tally.counts.read += 1;
                let at = format!("{category}/{name}/{index}");
                let text = match item {
                    Value::String(s) if options.trim => s.trim_end(),
                    Value::String(s) => s.as_str(),
                    _ => {
                        tally.malformed_at(&at, format!("expected a string, found {item}"))?;
                        continue;
                    }
                };
                // Upstream has a few empty strings (2 in religious_ideology, 3 in
                // political_ideology): not a broken file, but nothing to prompt with, so they are
                // dropped like filtered rows rather than failing a strict load.
                if !wanted || text.trim().is_empty() {
                    tally.counts.filtered += 1;
                    continue;
                }
                let mut prompt = Prompt::new(at, text, &source);
                prompt.group = Some(category.clone());
                prompt.name = Some(name.clone());
                prompts.push(prompt);
            }
        }
    }
    let selection = Selection {
        per_group: options.per_group,
        sample: options.sample,
        seed: options.seed,
    };
    Ok(selection.finish(prompts, tally))
}
