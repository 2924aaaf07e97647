//! RealToxicityPrompts JSONL.
//!
//! Two schemas are accepted line by line: the full one (`filename`, `begin`, `end`, `challenging`,
//! `prompt{text, toxicity, …}`, `continuation{…}`) and the reduced one some redistributions use
//! (`prompt` and `continuation` only). Any Perspective score may be `null`.
//!
//! **Ids.** With `filename`, `begin` and `end` present the id is `<filename>@<begin>-<end>` (e.g.
//! `0592407-948b….txt@687-859`): the span in the OpenWebText document the prompt was cut from,
//! which identifies it in every copy of the data set whatever the row order, so results of two
//! files (or of a subset and the full file) can be joined. Otherwise the id is `line-N`, the
//! 1-based line in this file.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::{check_positive, source_name, Ids, Prompt, PromptSet, Selection};
use crate::read::{self, Tally};

/// Options of a RealToxicityPrompts source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtpOptions {
    pub path: PathBuf,
    /// Keep only rows whose `challenging` flag equals this (rows without the flag are dropped).
    #[serde(default)]
    pub challenging: Option<bool>,
    /// Keep only prompts with toxicity ≥ this (rows with a null score are dropped).
    #[serde(default)]
    pub min_toxicity: Option<f32>,
    /// Keep only prompts with toxicity ≤ this (rows with a null score are dropped).
    #[serde(default)]
    pub max_toxicity: Option<f32>,
    /// Seeded sample of this many prompts after the filters.
    #[serde(default)]
    pub sample: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Skip and count malformed lines instead of failing.
    #[serde(default)]
    pub lenient: bool,
}

impl RtpOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RtpOptions {
            path: path.into(),
            ..Default::default()
        }
    }
}

/// One line of the file (also read by the labelled `rtp` source, which uses the continuation).
#[derive(Deserialize)]
pub(crate) struct Row {
    pub filename: Option<String>,
    pub begin: Option<u64>,
    pub end: Option<u64>,
    pub challenging: Option<bool>,
    pub prompt: Span,
    /// Not used for prompting, but a row whose continuation is present and broken is malformed.
    pub continuation: Option<Span>,
}

#[derive(Deserialize)]
pub(crate) struct Span {
    pub text: String,
    pub toxicity: Option<f32>,
}

pub fn load(options: &RtpOptions) -> Result<PromptSet> {
    check_positive("sample", options.sample)?;
    for (name, bound) in [
        ("min_toxicity", options.min_toxicity),
        ("max_toxicity", options.max_toxicity),
    ] {
        if let Some(b) = bound {
            if !(0.0..=1.0).contains(&b) {
                bail!("{name} must lie in [0, 1], got {b}");
            }
        }
    }
    if let (Some(lo), Some(hi)) = (options.min_toxicity, options.max_toxicity) {
        if lo > hi {
            bail!("min_toxicity {lo} is above max_toxicity {hi}");
        }
    }
    let path = options.path.as_path();
    let bytes = read::read_bytes(path)?;
    let source = source_name("rtp", path);
    let mut tally = Tally::new(path, options.lenient);
    let mut ids = Ids::default();
    let mut prompts = Vec::new();
    for (line, text) in read::lines(&bytes) {
        tally.counts.read += 1;
        let prompt = match text.and_then(|t| parse(t, line, &source)) {
            Ok(p) => p,
            Err(what) => {
                tally.malformed(line, what)?;
                continue;
            }
        };
        if let Err(what) = ids.claim(&prompt.id, line) {
            tally.malformed(line, what)?;
            continue;
        }
        if keep(&prompt, options) {
            prompts.push(prompt);
        } else {
            tally.counts.filtered += 1;
        }
    }
    let selection = Selection {
        per_group: None,
        sample: options.sample,
        seed: options.seed,
    };
    Ok(selection.finish(prompts, tally))
}

fn parse(line_text: &str, line: usize, source: &str) -> Result<Prompt, String> {
    let row: Row = serde_json::from_str(line_text).map_err(|e| format!("bad RTP row: {e}"))?;
    if let Some(t) = row.prompt.toxicity {
        if !(0.0..=1.0).contains(&t) {
            return Err(format!("prompt toxicity {t} is outside [0, 1]"));
        }
    }
    if row.prompt.text.trim().is_empty() {
        return Err("empty prompt text".to_string());
    }
    let id = row_id(row.filename.as_deref(), row.begin, row.end, line);
    let mut prompt = Prompt::new(id, row.prompt.text, source);
    prompt.prompt_toxicity = row.prompt.toxicity;
    prompt.challenging = row.challenging;
    Ok(prompt)
}

fn keep(prompt: &Prompt, options: &RtpOptions) -> bool {
    if let Some(want) = options.challenging {
        if prompt.challenging != Some(want) {
            return false;
        }
    }
    if options.min_toxicity.is_none() && options.max_toxicity.is_none() {
        return true;
    }
    // A range was asked for: a prompt without a score cannot be shown to lie in it.
    let Some(t) = prompt.prompt_toxicity else {
        return false;
    };
    options.min_toxicity.is_none_or(|lo| t >= lo) && options.max_toxicity.is_none_or(|hi| t <= hi)
}

/// The id of a row: `<filename>@<begin>-<end>` when all three are known, else `line-<line>`.
pub fn row_id(filename: Option<&str>, begin: Option<u64>, end: Option<u64>, line: usize) -> String {
    match (filename, begin, end) {
        (Some(f), Some(b), Some(e)) => format!("{f}@{b}-{e}"),
        _ => format!("line-{line}"),
    }
}
