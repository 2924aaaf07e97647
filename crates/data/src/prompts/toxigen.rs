//! ToxiGen prompts.
//!
//! * The generation prompt files `prompts/{hate,neutral}_<group>_1k.txt`: one few-shot prompt per
//!   line, `- sentence\n- sentence\n…\n-` with `\n` written as a literal backslash-n, ending in the
//!   `-` the model continues after. Group = target group (`women`, `middle_east`, …), label =
//!   `hate`/`neutral`. Ids `<label>_<group>/line-N`.
//! * The labelled seed sentences `toxigen_prompt_sentences.tsv` (`label<TAB>target_group<TAB>text`)
//!   as single-sentence prompts, ids `row-N` (1-based record after the header).
//!
//! **Newlines.** With `unescape_newlines: true` (the default) every literal `\n` becomes a real
//! newline, because the model should see a list of lines as ToxiGen's generator did. A few upstream
//! lines carry extra backslashes right before a `\n` (`staple\\\n-`, an artefact of escaping
//! twice); those are dropped with it, since no sentence meant to end in a backslash. With `false`
//! the line is kept byte for byte.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{check_positive, default_true, source_name, Prompt, PromptSet, Selection};
use crate::read::{self, Csv, Tally};
use crate::Counts;

/// Which prompt files of a ToxiGen `prompts/` folder to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stance {
    Hate,
    Neutral,
}

impl Stance {
    pub fn as_str(self) -> &'static str {
        match self {
            Stance::Hate => "hate",
            Stance::Neutral => "neutral",
        }
    }
}

/// Options of a ToxiGen prompt-folder source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToxigenPromptOptions {
    /// The `prompts/` folder holding `{hate,neutral}_<group>_1k.txt`.
    pub dir: PathBuf,
    /// Target groups to read; empty reads every group found. A named group whose file is missing
    /// is an error naming the path.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Which kinds of files; empty reads both.
    #[serde(default)]
    pub stances: Vec<Stance>,
    /// At most this many prompts per file (group × stance), chosen by seeded sampling of ids.
    #[serde(default)]
    pub per_file: Option<usize>,
    /// Seeded sample of this many prompts in all, after the per-file cap.
    #[serde(default)]
    pub sample: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    /// Turn literal `\n` into newlines (see the module docs).
    #[serde(default = "default_true")]
    pub unescape_newlines: bool,
    #[serde(default)]
    pub lenient: bool,
}

impl ToxigenPromptOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ToxigenPromptOptions {
            dir: dir.into(),
            groups: Vec::new(),
            stances: Vec::new(),
            per_file: None,
            sample: None,
            seed: 0,
            unescape_newlines: true,
            lenient: false,
        }
    }
}

/// Options of the labelled ToxiGen sentences used as prompts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToxigenSentenceOptions {
    pub path: PathBuf,
    /// Target groups to keep; empty keeps all.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Labels to keep; empty keeps both.
    #[serde(default)]
    pub stances: Vec<Stance>,
    #[serde(default)]
    pub per_group: Option<usize>,
    #[serde(default)]
    pub sample: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub lenient: bool,
}

/// `- a\n- b\n-` with literal backslash-n → real newlines; backslashes right before a separator
/// are escaping artefacts and go too.
pub fn unescape_newlines(line: &str) -> String {
    let pieces: Vec<&str> = line.split("\\n").collect();
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i < last {
                p.trim_end_matches('\\')
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The prompt files of a folder as (stance, group, path), sorted by file name.
pub fn prompt_files(dir: &Path) -> Result<Vec<(Stance, String, PathBuf)>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot read folder", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot read folder", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix("_1k.txt") else {
            continue;
        };
        let (stance, group) = if let Some(g) = stem.strip_prefix("hate_") {
            (Stance::Hate, g)
        } else if let Some(g) = stem.strip_prefix("neutral_") {
            (Stance::Neutral, g)
        } else {
            continue;
        };
        files.push((stance, group.to_string(), entry.path()));
    }
    files.sort_by(|a, b| a.2.cmp(&b.2));
    Ok(files)
}

pub fn load_prompts(options: &ToxigenPromptOptions) -> Result<PromptSet> {
    check_positive("per_file", options.per_file)?;
    check_positive("sample", options.sample)?;
    let dir = options.dir.as_path();
    let stances: &[Stance] = if options.stances.is_empty() {
        &[Stance::Hate, Stance::Neutral]
    } else {
        &options.stances
    };
    // Unselected files are not read at all, so they count neither as read nor as filtered.
    let files: Vec<(Stance, String, PathBuf)> = if options.groups.is_empty() {
        let files: Vec<_> = prompt_files(dir)?
            .into_iter()
            .filter(|(s, _, _)| stances.contains(s))
            .collect();
        if files.is_empty() {
            bail!(
                "{}: no ToxiGen prompt files ({{hate,neutral}}_<group>_1k.txt)",
                dir.display()
            );
        }
        files
    } else {
        let mut files = Vec::new();
        for group in &options.groups {
            for &stance in stances {
                let path = dir.join(format!("{}_{group}_1k.txt", stance.as_str()));
                files.push((stance, group.clone(), path));
            }
        }
        files
    };
    let source = format!(
        "toxigen:{}",
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let mut counts = Counts::default();
    let mut examples = Vec::new();
    let mut prompts = Vec::new();
    for (stance, group, path) in &files {
        let bytes = read::read_bytes(path)?;
        let mut tally = Tally::new(path, options.lenient);
        let mut file_prompts = Vec::new();
        for (line, text) in read::lines(&bytes) {
            tally.counts.read += 1;
            let text = match text {
                Ok(t) => t,
                Err(what) => {
                    tally.malformed(line, what)?;
                    continue;
                }
            };
            let text = if options.unescape_newlines {
                unescape_newlines(text)
            } else {
                text.to_string()
            };
            let id = format!("{}_{group}/line-{line}", stance.as_str());
            let mut prompt = Prompt::new(id, text, &source);
            prompt.group = Some(group.clone());
            prompt.label = Some(stance.as_str().to_string());
            file_prompts.push(prompt);
        }
        let selection = Selection {
            per_group: None,
            sample: options.per_file,
            seed: options.seed,
        };
        let set = selection.finish(file_prompts, tally);
        counts.add(&set.counts);
        examples.extend(set.malformed_examples);
        prompts.extend(set.prompts);
    }
    // The per-file tallies become one: `kept` is recomputed after the overall sample.
    let mut tally = Tally::new(dir, options.lenient);
    tally.counts = Counts { kept: 0, ..counts };
    tally.examples = examples;
    tally.examples.truncate(read::MAX_EXAMPLES);
    let selection = Selection {
        per_group: None,
        sample: options.sample,
        seed: options.seed,
    };
    Ok(selection.finish(prompts, tally))
}

pub fn load_sentences(options: &ToxigenSentenceOptions) -> Result<PromptSet> {
    check_positive("per_group", options.per_group)?;
    check_positive("sample", options.sample)?;
    let path = options.path.as_path();
    let rows = read_sentences(path, options.lenient)?;
    let source = source_name("toxigen_sentences", path);
    let mut prompts = Vec::new();
    let mut tally = rows.tally;
    for s in rows.sentences {
        let wanted_group = options.groups.is_empty() || options.groups.contains(&s.group);
        let wanted_stance = options.stances.is_empty() || options.stances.contains(&s.stance);
        if !(wanted_group && wanted_stance) {
            tally.counts.filtered += 1;
            continue;
        }
        let mut prompt = Prompt::new(format!("row-{}", s.row), s.text, &source);
        prompt.group = Some(s.group);
        prompt.label = Some(s.stance.as_str().to_string());
        prompts.push(prompt);
    }
    let selection = Selection {
        per_group: options.per_group,
        sample: options.sample,
        seed: options.seed,
    };
    Ok(selection.finish(prompts, tally))
}

/// One row of `toxigen_prompt_sentences.tsv`.
pub(crate) struct Sentence {
    /// 1-based record number after the header.
    pub row: usize,
    pub stance: Stance,
    pub group: String,
    pub text: String,
}

pub(crate) struct Sentences<'a> {
    pub sentences: Vec<Sentence>,
    /// `read` and `malformed` filled in.
    pub tally: Tally<'a>,
}

/// Reads the labelled TSV (quoted fields allowed: a few sentences contain `""`-escaped quotes).
pub(crate) fn read_sentences(path: &Path, lenient: bool) -> Result<Sentences<'_>> {
    let csv = Csv::read(path, b'\t')?;
    let label_col = csv.column(path, "label")?;
    let group_col = csv.column(path, "target_group")?;
    let text_col = csv.column(path, "text")?;
    let mut tally = Tally::new(path, lenient);
    let mut sentences = Vec::new();
    for (index, row) in csv.well_formed(&mut tally)? {
        let stance = match row.fields[label_col].trim() {
            "hate" => Stance::Hate,
            "neutral" => Stance::Neutral,
            other => {
                tally.malformed(
                    row.line,
                    format!("label {other:?} is neither \"hate\" nor \"neutral\""),
                )?;
                continue;
            }
        };
        let text = row.fields[text_col].trim();
        if text.is_empty() {
            tally.malformed(row.line, "empty text")?;
            continue;
        }
        sentences.push(Sentence {
            row: index + 1,
            stance,
            group: row.fields[group_col].trim().to_string(),
            text: text.to_string(),
        });
    }
    Ok(Sentences { sentences, tally })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_newlines_become_real_ones() {
        assert_eq!(unescape_newlines(r"- a\n- b\n-"), "- a\n- b\n-");
        assert_eq!(unescape_newlines(r"- a\\\n- b\n-"), "- a\n- b\n-");
        assert_eq!(
            unescape_newlines(r"no escapes \ here"),
            r"no escapes \ here"
        );
    }
}
