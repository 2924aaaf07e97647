//! `detox merge DIR`: joins the shares of a sweep split with `detox run --shard I/N` into one
//! experiment folder (the binary then rebuilds its report).
//!
//! Each share wrote whole cell folders (`DIR/shards/I-of-N/<cell id>/`); cells are disjoint
//! between shares, so joining is copying folders. Shares are copied, never moved, and a finished
//! cell already in DIR is never overwritten: merging twice, or after more shares arrive, is safe.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What a merge did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MergeSummary {
    pub copied: usize,
    pub already_present: usize,
    pub incomplete: usize,
    pub cache_lines_added: usize,
}

/// Joins the share folders `from` (default: every folder under `dir/shards/`) into `dir`.
pub fn merge(dir: &Path, from: &[PathBuf]) -> Result<MergeSummary> {
    let shares: Vec<PathBuf> = if from.is_empty() {
        let shards = dir.join("shards");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&shards)
            .with_context(|| {
                format!(
                    "{}: no shares to merge (give --from or run with --shard)",
                    shards.display()
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        found
    } else {
        from.to_vec()
    };
    if shares.is_empty() {
        bail!("{}: no share folders to merge", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut summary = MergeSummary::default();
    for share in &shares {
        for entry in
            std::fs::read_dir(share).with_context(|| format!("{}: cannot list", share.display()))?
        {
            let source = entry?.path();
            if !source.join("cell.json").is_file() {
                continue;
            }
            if !source.join("metrics.json").is_file() {
                summary.incomplete += 1;
                continue;
            }
            let name = source.file_name().expect("a folder entry has a name");
            let target = dir.join(name);
            if target.join("metrics.json").is_file() {
                summary.already_present += 1;
                continue;
            }
            if target.exists() {
                // An unfinished copy of the cell (a local run that stopped): kept beside, not lost.
                let aside = dir.join(format!(
                    "{}.unfinished-{}",
                    name.to_string_lossy(),
                    std::process::id()
                ));
                std::fs::rename(&target, &aside)
                    .with_context(|| format!("{}: cannot move aside", target.display()))?;
            }
            copy_folder(&source, &target)?;
            summary.copied += 1;
        }
        let cache = share.join("score-cache.jsonl");
        if cache.is_file() {
            summary.cache_lines_added += append_new_lines(&cache, &dir.join("score-cache.jsonl"))?;
        }
    }
    Ok(summary)
}

/// Copies a cell folder through a temporary name, so a killed merge leaves no half cell.
fn copy_folder(source: &Path, target: &Path) -> Result<()> {
    let partial = target.with_extension("merging");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("{}: cannot create", partial.display()))?;
    for entry in std::fs::read_dir(source)? {
        let path = entry?.path();
        if path.is_file() {
            let to = partial.join(path.file_name().expect("file name"));
            std::fs::copy(&path, &to)
                .with_context(|| format!("cannot copy {} to {}", path.display(), to.display()))?;
        }
    }
    std::fs::rename(&partial, target)
        .with_context(|| format!("{}: cannot write", target.display()))?;
    Ok(())
}

/// Appends to `into` the whole lines of `from` that `into` lacks; returns how many.
fn append_new_lines(from: &Path, into: &Path) -> Result<usize> {
    let read = |p: &Path| -> Result<Vec<String>> {
        if !p.exists() {
            return Ok(Vec::new());
        }
        let file =
            std::fs::File::open(p).with_context(|| format!("{}: cannot read", p.display()))?;
        let text = std::io::BufReader::new(file)
            .lines()
            .collect::<std::io::Result<Vec<String>>>()
            .with_context(|| format!("{}: cannot read", p.display()))?;
        Ok(text)
    };
    let present: HashSet<String> = read(into)?.into_iter().collect();
    let new: Vec<String> = read(from)?
        .into_iter()
        // A torn last line (a killed share) is not a record.
        .filter(|l| !l.is_empty() && serde_json::from_str::<serde_json::Value>(l).is_ok())
        .filter(|l| !present.contains(l))
        .collect();
    if !new.is_empty() {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(into)
            .with_context(|| format!("{}: cannot open", into.display()))?;
        let mut text = new.join("\n");
        text.push('\n');
        file.write_all(text.as_bytes())
            .with_context(|| format!("{}: cannot write", into.display()))?;
    }
    Ok(new.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(dir: &Path, id: &str, finished: bool) {
        let d = dir.join(id);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cell.json"), format!("{{\"cell_id\":\"{id}\"}}")).unwrap();
        std::fs::write(d.join("generations.jsonl"), "{}\n").unwrap();
        if finished {
            std::fs::write(d.join("metrics.json"), format!("{{\"from\":\"{id}\"}}")).unwrap();
        }
    }

    #[test]
    fn joins_shares_without_overwriting_and_twice_is_a_no_op() {
        let root = std::env::temp_dir().join(format!("merge-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (one, two) = (root.join("shards/1-of-2"), root.join("shards/2-of-2"));
        cell(&one, "aaa", true);
        cell(&one, "ccc", false);
        cell(&two, "bbb", true);
        std::fs::write(one.join("score-cache.jsonl"), "{\"k\":1}\n{\"k\":2}\n").unwrap();
        std::fs::write(
            two.join("score-cache.jsonl"),
            "{\"k\":2}\n{\"k\":3}\n{\"torn",
        )
        .unwrap();
        // A finished cell already in the experiment stays as it is.
        cell(&root, "bbb", true);
        std::fs::write(root.join("bbb/metrics.json"), "{\"local\":true}").unwrap();

        let s = merge(&root, &[]).unwrap();
        assert_eq!(
            s,
            MergeSummary {
                copied: 1,
                already_present: 1,
                incomplete: 1,
                cache_lines_added: 3
            }
        );
        assert!(root.join("aaa/metrics.json").is_file());
        assert!(!root.join("ccc").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("bbb/metrics.json")).unwrap(),
            "{\"local\":true}"
        );
        let again = merge(&root, &[]).unwrap();
        assert_eq!(again.copied, 0);
        assert_eq!(again.cache_lines_added, 0);
        assert_eq!(
            std::fs::read_to_string(root.join("score-cache.jsonl"))
                .unwrap()
                .lines()
                .count(),
            3
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_shares_is_a_clear_error() {
        let root = std::env::temp_dir().join(format!("merge-none-{}", std::process::id()));
        let e = merge(&root, &[]).unwrap_err();
        assert!(format!("{e:#}").contains("no shares to merge"), "{e:#}");
    }
}
