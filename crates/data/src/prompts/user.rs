//! Users' own prompt files: plain text, one prompt per non-empty line, or JSONL objects with a
//! `text` field and optional `id` (string or number) and `group` (string).
//!
//! **Ids**: a JSONL row's own `id`, else `line-N` with N the 1-based line in the file counting blank
//! lines too (the convention of `detox generate`), so editing one line leaves the others' ids alone.
//! A repeated id is a malformed row.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_positive, source_name, Ids, Prompt, PromptSet, Selection};
use crate::read::{self, Tally};

/// How to read a user file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserFormat {
    /// `.jsonl` / `.ndjson` as JSONL, anything else as plain text.
    #[default]
    Auto,
    Text,
    Jsonl,
}

/// Options of a user prompt file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserOptions {
    pub path: PathBuf,
    #[serde(default)]
    pub format: UserFormat,
    /// Groups to keep (JSONL `group`); empty keeps all, including prompts without a group.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub per_group: Option<usize>,
    #[serde(default)]
    pub sample: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub lenient: bool,
}

impl UserOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UserOptions {
            path: path.into(),
            ..Default::default()
        }
    }
}

pub fn load(options: &UserOptions) -> Result<PromptSet> {
    check_positive("per_group", options.per_group)?;
    check_positive("sample", options.sample)?;
    let path = options.path.as_path();
    let jsonl = match options.format {
        UserFormat::Jsonl => true,
        UserFormat::Text => false,
        UserFormat::Auto => path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson")),
    };
    let bytes = read::read_bytes(path)?;
    let source = source_name("user", path);
    let mut tally = Tally::new(path, options.lenient);
    let mut ids = Ids::default();
    let mut prompts = Vec::new();
    for (line, text) in read::lines(&bytes) {
        tally.counts.read += 1;
        let parsed = text.and_then(|t| {
            if jsonl {
                parse_json(t, line, &source)
            } else {
                Ok(Prompt::new(format!("line-{line}"), t, &source))
            }
        });
        let prompt = match parsed {
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
        let wanted = options.groups.is_empty()
            || prompt
                .group
                .as_ref()
                .is_some_and(|g| options.groups.contains(g));
        if wanted {
            prompts.push(prompt);
        } else {
            tally.counts.filtered += 1;
        }
    }
    let selection = Selection {
        per_group: options.per_group,
        sample: options.sample,
        seed: options.seed,
    };
    Ok(selection.finish(prompts, tally))
}

fn parse_json(text: &str, line: usize, source: &str) -> Result<Prompt, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(object) = value else {
        return Err("expected a JSON object".to_string());
    };
    let text = match object.get("text") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return Err("empty \"text\"".to_string()),
        _ => return Err("no string field \"text\"".to_string()),
    };
    let id = match object.get("id") {
        None | Some(Value::Null) => format!("line-{line}"),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err("\"id\" must be a non-empty string or a number".to_string()),
    };
    let group = match object.get("group") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("\"group\" must be a string".to_string()),
    };
    let mut prompt = Prompt::new(id, text, source);
    prompt.group = group;
    Ok(prompt)
}
