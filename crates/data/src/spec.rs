//! Source descriptions an experiment spec embeds, tagged by `kind`:
//!
//! ```yaml
//! prompts:
//!   kind: rtp
//!   path: data/realtoxicityprompts/decodingtrust/nontoxic.jsonl
//!   max_toxicity: 0.5
//!   sample: 200
//!   seed: 1
//! ```
//!
//! Unknown keys are errors (each kind's options deny them), so a misspelt option cannot silently
//! fall back to a default. Relative paths are taken as they are; call
//! [`PromptSourceSpec::resolve_paths`] to anchor them at the spec file's folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::labelled::{self, FileOptions, JigsawOptions, LabelledSet, LinesOptions};
use crate::prompts::attaq::{self, AttaqOptions};
use crate::prompts::bold::{self, BoldOptions};
use crate::prompts::rtp::{self, RtpOptions};
use crate::prompts::toxigen::{self, ToxigenPromptOptions, ToxigenSentenceOptions};
use crate::prompts::user::{self, UserOptions};
use crate::prompts::PromptSet;

/// A prompt source and its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PromptSourceSpec {
    /// RealToxicityPrompts JSONL (full or reduced schema).
    Rtp(RtpOptions),
    /// A BOLD `*_prompt.json` domain file.
    Bold(BoldOptions),
    /// AttaQ CSV.
    Attaq(AttaqOptions),
    /// ToxiGen's `prompts/` folder of few-shot prompt files.
    ToxigenPrompts(ToxigenPromptOptions),
    /// ToxiGen's labelled seed sentences, one prompt each.
    ToxigenSentences(ToxigenSentenceOptions),
    /// A user's text or JSONL file.
    User(UserOptions),
}

/// Every prompt source `kind` with what it reads (for `detox list`).
pub const PROMPT_SOURCE_KINDS: &[(&str, &str)] = &[
    (
        "rtp",
        "RealToxicityPrompts JSONL (full or reduced schema); options challenging, min_toxicity, max_toxicity, sample",
    ),
    (
        "bold",
        "a BOLD *_prompt.json domain file; its categories (e.g. American_actors/actresses) are the groups",
    ),
    (
        "attaq",
        "AttaQ CSV (label,input,additional_info); the harm label is the group",
    ),
    (
        "toxigen_prompts",
        "ToxiGen's prompts/ folder of few-shot files; the target group is the group",
    ),
    (
        "toxigen_sentences",
        "ToxiGen's labelled seed sentences (TSV), one prompt each",
    ),
    (
        "user",
        "your own .txt (one prompt a line) or .jsonl (text, optional id and group)",
    ),
];

impl PromptSourceSpec {
    /// The file or folder the source reads.
    pub fn path(&self) -> &Path {
        match self {
            PromptSourceSpec::Rtp(o) => &o.path,
            PromptSourceSpec::Bold(o) => &o.path,
            PromptSourceSpec::Attaq(o) => &o.path,
            PromptSourceSpec::ToxigenPrompts(o) => &o.dir,
            PromptSourceSpec::ToxigenSentences(o) => &o.path,
            PromptSourceSpec::User(o) => &o.path,
        }
    }

    /// The file (or, for ToxiGen prompt files, the folder) the source reads.
    pub fn path_mut(&mut self) -> &mut PathBuf {
        match self {
            PromptSourceSpec::Rtp(o) => &mut o.path,
            PromptSourceSpec::Bold(o) => &mut o.path,
            PromptSourceSpec::Attaq(o) => &mut o.path,
            PromptSourceSpec::ToxigenPrompts(o) => &mut o.dir,
            PromptSourceSpec::ToxigenSentences(o) => &mut o.path,
            PromptSourceSpec::User(o) => &mut o.path,
        }
    }

    /// Makes a relative path relative to `base` (e.g. the folder of the spec file).
    pub fn resolve_paths(&mut self, base: &Path) {
        anchor(self.path_mut(), base);
    }
}

/// Loads the prompts a spec describes. Fails when nothing is left after filters and sampling: an
/// experiment over zero prompts is always a mistake in the spec.
pub fn load(spec: &PromptSourceSpec) -> Result<PromptSet> {
    let set = match spec {
        PromptSourceSpec::Rtp(o) => rtp::load(o)?,
        PromptSourceSpec::Bold(o) => bold::load(o)?,
        PromptSourceSpec::Attaq(o) => attaq::load(o)?,
        PromptSourceSpec::ToxigenPrompts(o) => toxigen::load_prompts(o)?,
        PromptSourceSpec::ToxigenSentences(o) => toxigen::load_sentences(o)?,
        PromptSourceSpec::User(o) => user::load(o)?,
    };
    if set.is_empty() {
        bail!(
            "{}: no prompts left ({})",
            spec.path().display(),
            set.counts
        );
    }
    Ok(set)
}

/// A labelled-text source and its options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LabelledSourceSpec {
    /// One sentence a line, one label for the file.
    Lines(LinesOptions),
    /// s-nlp's Jigsaw toxic / normal sentence files.
    Jigsaw(JigsawOptions),
    /// Davidson et al.'s `labeled_data.csv`.
    Davidson(FileOptions),
    /// ParaDetox `paradetox.tsv`.
    Paradetox(FileOptions),
    /// ToxiGen `toxigen_prompt_sentences.tsv`.
    Toxigen(FileOptions),
    /// conversationai `en_sentence_templates.csv`.
    Templates(FileOptions),
    /// RealToxicityPrompts JSONL: prompts and continuations with their Perspective toxicity.
    Rtp(FileOptions),
}

impl LabelledSourceSpec {
    /// Makes relative paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            LabelledSourceSpec::Lines(o) => anchor(&mut o.path, base),
            LabelledSourceSpec::Jigsaw(o) => {
                anchor(&mut o.toxic, base);
                anchor(&mut o.normal, base);
            }
            LabelledSourceSpec::Davidson(o)
            | LabelledSourceSpec::Paradetox(o)
            | LabelledSourceSpec::Toxigen(o)
            | LabelledSourceSpec::Templates(o)
            | LabelledSourceSpec::Rtp(o) => anchor(&mut o.path, base),
        }
    }
}

/// Loads the labelled texts a spec describes; fails when nothing is left.
pub fn load_labelled(spec: &LabelledSourceSpec) -> Result<LabelledSet> {
    let set = load_labelled_set(spec)?;
    if set.is_empty() {
        let path = match spec {
            LabelledSourceSpec::Lines(o) => &o.path,
            LabelledSourceSpec::Jigsaw(o) => &o.toxic,
            LabelledSourceSpec::Davidson(o)
            | LabelledSourceSpec::Paradetox(o)
            | LabelledSourceSpec::Toxigen(o)
            | LabelledSourceSpec::Templates(o)
            | LabelledSourceSpec::Rtp(o) => &o.path,
        };
        bail!("{}: no texts left ({})", path.display(), set.counts);
    }
    Ok(set)
}

/// Loads the labelled texts a spec describes, even none (the named-source registry reports
/// counts instead of failing).
pub fn load_labelled_set(spec: &LabelledSourceSpec) -> Result<LabelledSet> {
    match spec {
        LabelledSourceSpec::Lines(o) => labelled::load_lines(o),
        LabelledSourceSpec::Jigsaw(o) => labelled::load_jigsaw(o),
        LabelledSourceSpec::Davidson(o) => labelled::load_davidson(o),
        LabelledSourceSpec::Paradetox(o) => labelled::load_paradetox(o),
        LabelledSourceSpec::Toxigen(o) => labelled::load_toxigen(o),
        LabelledSourceSpec::Templates(o) => labelled::load_templates(o),
        LabelledSourceSpec::Rtp(o) => labelled::load_rtp(o),
    }
}

fn anchor(path: &mut PathBuf, base: &Path) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}
