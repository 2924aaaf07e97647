//! JSONL files the commands append to and read back: one record per line, one `write` per line,
//! so a killed run leaves whole lines plus at most one torn last line.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Reads the records of `path` (if it exists) before a resumed run appends to it: `each` gets the
/// 1-based line number and the record; its error is reported as `path:line: error`. A last line
/// without its newline (the writer was killed mid-line) is dropped, with a note on stderr, and cut
/// off the file so appending continues on a clean line. Any other line that is not a `what` is an
/// error naming the file and line.
pub fn read_resumable<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    mut each: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let file = File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0;
    let mut good_bytes = 0u64;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if read == 0 {
            break;
        }
        number += 1;
        if !line.ends_with('\n') {
            eprintln!(
                "{}:{number}: dropping an unfinished last line",
                path.display()
            );
            break;
        }
        good_bytes += read as u64;
        if line.trim().is_empty() {
            continue;
        }
        let record: T = serde_json::from_str(&line)
            .with_context(|| format!("{}:{number}: not a {what}", path.display()))?;
        each(number, record).with_context(|| format!("{}:{number}", path.display()))?;
    }
    let size = std::fs::metadata(path)
        .with_context(|| format!("{}: cannot read", path.display()))?
        .len();
    if good_bytes < size {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(good_bytes))
            .with_context(|| format!("{}: cannot cut the unfinished line", path.display()))?;
    }
    Ok(())
}

/// Reads every record of a finished file: `each` gets the 1-based line number and the record, and
/// its error is reported as `path:line: error`. Blank lines are skipped; a line that is not a
/// `what` (a torn last line included) is an error naming the file and line.
pub fn read_all<T: DeserializeOwned>(
    path: &Path,
    what: &str,
    mut each: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("{}:{number}: cannot read", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: T = serde_json::from_str(&line)
            .with_context(|| format!("{}:{number}: not a {what}", path.display()))?;
        each(number, record).with_context(|| format!("{}:{number}", path.display()))?;
    }
    Ok(())
}

/// Opens `path` for appending, creating it and its folder if needed.
pub fn open_append(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create folder", parent.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open for appending", path.display()))
}

/// Appends `records` as JSON lines in one `write`, so a kill tears at most the last line.
pub fn append<T: Serialize>(file: &mut File, path: &Path, records: &[T]) -> Result<()> {
    let mut bytes = Vec::new();
    for record in records {
        serde_json::to_writer(&mut bytes, record)?;
        bytes.push(b'\n');
    }
    file.write_all(&bytes)
        .with_context(|| format!("{}: write failed", path.display()))
}
