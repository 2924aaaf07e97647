//! `generations.jsonl`: one [`GenerationLine`] per (prompt id, sample index), appended as samples
//! finish, so a killed run keeps every whole line.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// Why a sample stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token was drawn (it is not part of `token_ids`).
    Eos,
    /// `max_new_tokens` were generated.
    Length,
}

/// One line of a generations file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationLine {
    pub prompt_id: String,
    pub sample_index: u64,
    pub prompt: String,
    pub text: String,
    pub token_ids: Vec<i64>,
    pub finish_reason: FinishReason,
    /// Fingerprint of model and decoding settings; a file holds one setting only (empty in a
    /// file written by hand).
    #[serde(default)]
    pub settings: String,
    /// The prompt's group (BOLD) or category (AttaQ), when its source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Post-hoc word filtering: redraws this sample took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redraws: Option<u64>,
    /// Post-hoc word filtering: the listed word the kept draw still contains after the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub still_matched: Option<String>,
}

impl GenerationLine {
    /// The key every other file of the cell refers to this sample by.
    pub fn key(&self) -> (String, u64) {
        (self.prompt_id.clone(), self.sample_index)
    }
}

/// Reads a finished generations file, in file order. Errors name the file and line: a line that
/// is not a record, a (prompt id, sample index) written twice, a prompt id whose prompt text or
/// group changes, records with different settings fingerprints, an empty file.
pub fn read_generations(path: &Path) -> Result<Vec<GenerationLine>> {
    let mut records: Vec<GenerationLine> = Vec::new();
    let mut line_of: HashMap<(String, u64), usize> = HashMap::new();
    let mut first_of_prompt: HashMap<String, usize> = HashMap::new();
    data::jsonl::read_all(path, "generation record", |number, g: GenerationLine| {
        if let Some(first) = records.first() {
            if g.settings != first.settings {
                bail!(
                    "generation settings {:?} differ from the first record's {:?}; a file holds one setting",
                    g.settings,
                    first.settings
                );
            }
        }
        if let Some(line) = line_of.insert(g.key(), number) {
            bail!(
                "prompt {:?} sample {} appears twice (first on line {line})",
                g.prompt_id,
                g.sample_index
            );
        }
        if let Some(&i) = first_of_prompt.get(&g.prompt_id) {
            let first: &GenerationLine = &records[i];
            ensure!(
                first.prompt == g.prompt && first.group == g.group,
                "prompt {:?} has another prompt text or group than on line {}",
                g.prompt_id,
                line_of[&first.key()]
            );
        } else {
            first_of_prompt.insert(g.prompt_id.clone(), records.len());
        }
        records.push(g);
        Ok(())
    })?;
    ensure!(
        !records.is_empty(),
        "{}: no generation records",
        path.display()
    );
    Ok(records)
}
