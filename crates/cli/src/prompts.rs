//! Prompts for `detox generate`: from the command line, a text file (one per line) or JSONL with a
//! `text` field (and an optional `id`). Every prompt gets a stable id.

use std::path::Path;

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub id: String,
    pub text: String,
}

/// `--prompt` values, ids `arg-1`, `arg-2`, ….
pub fn from_args(texts: &[String]) -> Vec<Prompt> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| Prompt {
            id: format!("arg-{}", i + 1),
            text: t.clone(),
        })
        .collect()
}

/// A `.jsonl` file (objects with `text`, optional string `id`) or any other file as plain text,
/// one prompt per non-empty line with id `line-N` (N counts from 1 over all lines).
pub fn from_file(path: &Path) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read prompt file", path.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if !jsonl {
            prompts.push(Prompt {
                id: format!("line-{number}"),
                text: line.to_string(),
            });
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{number}: not a JSON object", path.display()))?;
        let text = value
            .get("text")
            .and_then(|t| t.as_str())
            .with_context(|| format!("{}:{number}: no string field \"text\"", path.display()))?;
        let id = match value.get("id") {
            None => format!("line-{number}"),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            Some(_) => bail!(
                "{}:{number}: \"id\" must be a string or number",
                path.display()
            ),
        };
        prompts.push(Prompt {
            id,
            text: text.to_string(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for p in &prompts {
        if !seen.insert(&p.id) {
            bail!("{}: prompt id {:?} appears twice", path.display(), p.id);
        }
    }
    if prompts.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(prompts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("detox-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_text_and_jsonl_with_stable_ids() {
        let txt = from_file(&write("a.txt", "first\n\nthird\n")).unwrap();
        assert_eq!(
            txt[1],
            Prompt {
                id: "line-3".into(),
                text: "third".into()
            }
        );
        let jsonl = from_file(&write(
            "b.jsonl",
            "{\"id\":\"x\",\"text\":\"hi\"}\n{\"text\":\"yo\"}\n",
        ))
        .unwrap();
        assert_eq!(jsonl[0].id, "x");
        assert_eq!(jsonl[1].id, "line-2");
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let err = from_file(&write("c.jsonl", "{\"text\":\"ok\"}\n{\"txt\":1}\n")).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("c.jsonl:2: no string field \"text\""),
            "{err}"
        );
        let err = from_file(&write(
            "d.jsonl",
            "{\"id\":1,\"text\":\"a\"}\n{\"id\":1,\"text\":\"b\"}\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }
}
