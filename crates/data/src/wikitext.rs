//! WikiText-2 as paragraphs: the utility side of regularized fine-tuning (part of the training
//! mix, and held-out perplexity). The files are WikiText's own tokenized text, one paragraph per
//! line, with ` = Title = ` headings and blank lines between; headings and blank lines are
//! dropped, the text is kept as it is (spaces around punctuation, `@-@`), so perplexities are
//! comparable with other WikiText numbers only in kind, not in value.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// The paragraphs of a WikiText file (`tokens/valid.txt`, `raw/wiki.test.raw`, …) with at least
/// `min_words` words, in file order.
pub fn paragraphs(path: &Path, min_words: usize) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not UTF-8 ({e})", path.display()))?;
    let out: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !is_heading(line))
        .filter(|line| line.split_whitespace().count() >= min_words)
        .map(str::to_string)
        .collect();
    if out.is_empty() {
        bail!(
            "{}: no paragraph of {min_words} words or more (is it a WikiText file?)",
            path.display()
        );
    }
    Ok(out)
}

/// ` = Title = `, ` = = Section = = `.
fn is_heading(line: &str) -> bool {
    line.starts_with('=') && line.ends_with('=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_and_blank_lines_are_dropped() {
        let dir = std::env::temp_dir().join(format!("wikitext-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.txt");
        std::fs::write(
            &path,
            " \r\n = Robert = \r\n \r\n Robert is an actor . He had a role .\r\n = = Career = = \r\n Short .\r\n",
        )
        .unwrap();
        assert_eq!(
            paragraphs(&path, 3).unwrap(),
            vec!["Robert is an actor . He had a role .".to_string()]
        );
        assert_eq!(paragraphs(&path, 1).unwrap().len(), 2);
        assert!(paragraphs(&path, 100)
            .unwrap_err()
            .to_string()
            .contains("w.txt"));
    }
}
