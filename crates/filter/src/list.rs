//! Word lists: plain text files, one entry per line, and the named reference lists.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// File name of the list RealToxicityPrompts used for its banned-word baseline (378 entries,
/// allenai/real-toxicity-prompts, Apache-2.0), in `shared/data/badwords/`.
pub const RTP_FILE: &str = "rtp_list_of_naughty_and_bad_words.txt";

/// File name of the English LDNOOBW list (403 entries, CC-BY-4.0), in `shared/data/badwords/`
/// and, where set-up fetched it, in `.detox/wordlists/`.
pub const LDNOOBW_FILE: &str = "ldnoobw_en.txt";

/// Banned entries, in the order first read, each unique.
///
/// File format: one entry per line; an entry may hold several words ("blue waffle"). Lines are
/// trimmed; blank lines and lines starting with `#` are skipped; runs of whitespace inside an
/// entry become one space (so "blue  waffle" and "blue waffle" are one entry); exact duplicates
/// are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordList {
    entries: Vec<String>,
    sources: Vec<PathBuf>,
}

impl WordList {
    /// Reads one list file. Errors name the file and, for a bad line, the line number.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_files(&[path.to_path_buf()])
    }

    /// The union of several list files, duplicates across files dropped.
    pub fn from_files(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            bail!("no word list files given");
        }
        let mut list = Self {
            entries: Vec::new(),
            sources: Vec::new(),
        };
        let mut seen = HashSet::new();
        for path in paths {
            let bytes = std::fs::read(path)
                .with_context(|| format!("{}: cannot read word list", path.display()))?;
            let mut has_entries = false;
            for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
                let line_number = index + 1;
                let line = std::str::from_utf8(line).map_err(|e| {
                    anyhow::anyhow!("{}:{line_number}: not valid UTF-8 ({e})", path.display())
                })?;
                // A byte-order mark would otherwise become part of the first entry.
                let line = if index == 0 {
                    line.trim_start_matches('\u{feff}')
                } else {
                    line
                };
                let Some(entry) = parse_line(line)
                    .with_context(|| format!("{}:{line_number}", path.display()))?
                else {
                    continue;
                };
                has_entries = true;
                if seen.insert(entry.clone()) {
                    list.entries.push(entry);
                }
            }
            // A file of only blanks and comments is almost certainly the wrong file.
            if !has_entries {
                bail!("{}: word list has no entries", path.display());
            }
            list.sources.push(path.clone());
        }
        Ok(list)
    }

    /// A list from entries given in code (tests, callers with inline lists): the same trimming,
    /// whitespace and duplicate rules as files; blank entries are skipped.
    pub fn from_entries<I, S>(entries: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Self {
            entries: Vec::new(),
            sources: Vec::new(),
        };
        let mut seen = HashSet::new();
        for (index, entry) in entries.into_iter().enumerate() {
            let text = entry.as_ref();
            if text.trim().is_empty() {
                continue;
            }
            let entry = normalise_entry(text).with_context(|| format!("entry {index} {text:?}"))?;
            if seen.insert(entry.clone()) {
                list.entries.push(entry);
            }
        }
        if list.entries.is_empty() {
            bail!("word list has no entries");
        }
        Ok(list)
    }

    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// The files read, in order (empty for [`WordList::from_entries`]).
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The entry on one line, or `None` for a blank or comment line.
fn parse_line(line: &str) -> Result<Option<String>> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    normalise_entry(trimmed).map(Some)
}

/// Trims, joins the words with single spaces, and rejects control characters (a stray one would
/// make an entry no text can ever match).
fn normalise_entry(text: &str) -> Result<String> {
    if let Some(c) = text.chars().find(|c| c.is_control() && !c.is_whitespace()) {
        bail!(
            "entry {:?} contains the control character U+{:04X}",
            text.trim(),
            u32::from(c)
        );
    }
    Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Which list to read: a named reference list or a file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ListRef {
    /// RealToxicityPrompts' banned-word list (the default; only in `shared/data/badwords/`).
    #[default]
    Rtp,
    /// LDNOOBW English: `shared/data/badwords/`, else what set-up fetched into `.detox/wordlists/`.
    Ldnoobw,
    /// Any list file (relative paths are taken from the current directory).
    File(PathBuf),
}

impl ListRef {
    /// `rtp` and `ldnoobw` name the reference lists; anything else is a file path.
    pub fn parse(text: &str) -> Self {
        match text.trim() {
            "rtp" => Self::Rtp,
            "ldnoobw" => Self::Ldnoobw,
            other => Self::File(PathBuf::from(other)),
        }
    }

    /// The name as a spec would write it.
    pub fn name(&self) -> String {
        match self {
            Self::Rtp => "rtp".to_string(),
            Self::Ldnoobw => "ldnoobw".to_string(),
            Self::File(path) => path.display().to_string(),
        }
    }

    /// The file to read, checked to exist; the error says where the list was looked for and how
    /// to get it.
    pub fn resolve(&self) -> Result<PathBuf> {
        let shared = paths::data_dir("badwords");
        match self {
            Self::Rtp => {
                let path = shared.join(RTP_FILE);
                if path.is_file() {
                    return Ok(path);
                }
                bail!(
                    "word list rtp: {} does not exist (it comes with shared/data, or set {}; \
                     the original is bad-words.txt in allenai/real-toxicity-prompts; \
                     `lists: [ldnoobw]` works after scripts/setup.sh)",
                    path.display(),
                    paths::SHARED_ENV
                )
            }
            Self::Ldnoobw => {
                let shared_path = shared.join(LDNOOBW_FILE);
                let fetched = paths::wordlist_dir().join(LDNOOBW_FILE);
                for path in [&shared_path, &fetched] {
                    if path.is_file() {
                        return Ok(path.clone());
                    }
                }
                bail!(
                    "word list ldnoobw: neither {} nor {} exists (run scripts/setup.sh, which \
                     fetches it from the npm package naughty-words)",
                    shared_path.display(),
                    fetched.display()
                )
            }
            Self::File(path) => {
                if path.is_file() {
                    return Ok(path.clone());
                }
                bail!(
                    "word list {}: file does not exist (named lists are `rtp` and `ldnoobw`)",
                    path.display()
                )
            }
        }
    }
}

/// Reads and merges the lists named by `refs`.
pub fn load_lists(refs: &[ListRef]) -> Result<WordList> {
    let files = refs
        .iter()
        .map(ListRef::resolve)
        .collect::<Result<Vec<_>>>()?;
    WordList::from_files(&files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("filter-list-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn parses_entries_comments_blanks_and_duplicates() {
        let path = write(
            "basic.txt",
            b"\xef\xbb\xbf# a comment\n  ass \n\nblue   waffle\r\nass\n  # indented comment\nS&M\n",
        );
        let list = WordList::from_file(&path).unwrap();
        assert_eq!(list.entries(), ["ass", "blue waffle", "S&M"]);
        assert_eq!(list.sources(), [path]);
    }

    #[test]
    fn merges_files_without_duplicates() {
        let a = write("a.txt", b"one\ntwo\n");
        let b = write("b.txt", b"two\nthree\n");
        let list = WordList::from_files(&[a, b]).unwrap();
        assert_eq!(list.entries(), ["one", "two", "three"]);
    }

    #[test]
    fn errors_name_file_and_line() {
        let path = write("bad-utf8.txt", b"fine\nalso fine\nbro\xffken\n");
        let error = format!("{:#}", WordList::from_file(&path).unwrap_err());
        assert!(error.contains("bad-utf8.txt:3"), "{error}");

        let path = write("control.txt", b"fine\nbell\x07word\n");
        let error = format!("{:#}", WordList::from_file(&path).unwrap_err());
        assert!(error.contains("control.txt:2"), "{error}");
        assert!(error.contains("U+0007"), "{error}");

        let path = write("empty.txt", b"# only a comment\n\n");
        let error = format!("{:#}", WordList::from_file(&path).unwrap_err());
        assert!(
            error.contains("empty.txt: word list has no entries"),
            "{error}"
        );

        let missing = std::env::temp_dir().join("filter-no-such-list.txt");
        let error = format!("{:#}", WordList::from_file(&missing).unwrap_err());
        assert!(error.contains("filter-no-such-list.txt"), "{error}");
    }

    #[test]
    fn list_refs_parse_names_and_paths() {
        assert_eq!(ListRef::parse("rtp"), ListRef::Rtp);
        assert_eq!(ListRef::parse("ldnoobw"), ListRef::Ldnoobw);
        assert_eq!(
            ListRef::parse("lists/mine.txt"),
            ListRef::File(PathBuf::from("lists/mine.txt"))
        );
        let error = format!(
            "{:#}",
            ListRef::parse("no/such/list.txt").resolve().unwrap_err()
        );
        assert!(error.contains("no/such/list.txt"), "{error}");
    }

    #[test]
    fn reference_lists_load() {
        let rtp = load_lists(&[ListRef::Rtp]).unwrap();
        assert_eq!(rtp.len(), 378);
        assert!(rtp.entries().iter().any(|e| e == "blue waffle"));
        let both = load_lists(&[ListRef::Rtp, ListRef::Ldnoobw]).unwrap();
        assert!(both.len() >= 403, "{}", both.len());
        assert_eq!(both.sources().len(), 2);
    }
}
