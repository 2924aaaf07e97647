//! File reading shared by the loaders: line splitting that survives bad bytes, CSV/TSV with RFC-4180
//! quoting, and the strict-or-lenient bookkeeping of malformed rows.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::Counts;

/// How many messages about skipped rows a lenient load keeps, so a report can show examples
/// without holding thousands of strings.
pub(crate) const MAX_EXAMPLES: usize = 5;

/// Reads a whole file; the error names the path (missing file, permissions).
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

/// The non-blank lines of a file with their 1-based line numbers, `\r\n` or `\n` ended. A line
/// that is not UTF-8 comes back as an error so that only that line is malformed, not the file.
pub(crate) fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, Result<&str, String>)> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(number, line)| {
            let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8 ({e})"));
            (number, text)
        })
}

/// Counts rows and decides what a malformed one does: an error `path:line: what` when strict, a
/// skip counted in `counts.malformed` when lenient.
pub(crate) struct Tally<'a> {
    path: &'a Path,
    lenient: bool,
    pub counts: Counts,
    pub examples: Vec<String>,
}

impl<'a> Tally<'a> {
    pub fn new(path: &'a Path, lenient: bool) -> Self {
        Tally {
            path,
            lenient,
            counts: Counts::default(),
            examples: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.path
    }

    /// A malformed row at `line` (1-based). `Ok` means: skip it and go on.
    pub fn malformed(&mut self, line: usize, what: impl Display) -> Result<()> {
        self.malformed_at(&line.to_string(), what)
    }

    /// Like [`Tally::malformed`] for formats without lines, `at` being e.g. a JSON path.
    pub fn malformed_at(&mut self, at: &str, what: impl Display) -> Result<()> {
        let message = format!("{}:{at}: {what}", self.path.display());
        if !self.lenient {
            bail!(message);
        }
        self.counts.malformed += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(message);
        }
        Ok(())
    }
}

/// One CSV/TSV record as UTF-8 fields, with the line it starts on.
pub(crate) struct CsvRow {
    pub line: usize,
    pub fields: Vec<String>,
}

/// A delimited file with a header row. Quoting follows RFC 4180 (fields may hold the delimiter,
/// doubled quotes and newlines), which the Davidson, ParaDetox and ToxiGen files rely on.
pub(crate) struct Csv {
    pub columns: HashMap<String, usize>,
    pub width: usize,
    pub rows: Vec<Result<CsvRow, (usize, String)>>,
}

impl Csv {
    /// The rows of the expected width with their 0-based index, in order. Each row counts as
    /// read; a malformed one goes to `tally` (an error naming file:line unless lenient).
    pub fn well_formed(self, tally: &mut Tally) -> Result<Vec<(usize, CsvRow)>> {
        let width = self.width;
        let mut rows = Vec::with_capacity(self.rows.len());
        for (index, row) in self.rows.into_iter().enumerate() {
            tally.counts.read += 1;
            let row = match row {
                Ok(row) => row,
                Err((line, what)) => {
                    tally.malformed(line, what)?;
                    continue;
                }
            };
            if let Err(what) = row.check_width(width) {
                tally.malformed(row.line, what)?;
                continue;
            }
            rows.push((index, row));
        }
        Ok(rows)
    }

    pub fn read(path: &Path, delimiter: u8) -> Result<Csv> {
        let bytes = read_bytes(path)?;
        // Flexible: a row with the wrong number of fields is reported by the caller with its line
        // (and skipped when lenient) instead of ending the whole read.
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(true)
            .from_reader(bytes.as_slice());
        let header = reader
            .byte_headers()
            .with_context(|| format!("{}: cannot read the header", path.display()))?
            .clone();
        if header.is_empty() {
            bail!("{}: empty file, expected a header row", path.display());
        }
        let mut columns = HashMap::new();
        for (i, name) in header.iter().enumerate() {
            let name = String::from_utf8_lossy(name);
            // A UTF-8 byte-order mark would otherwise glue itself to the first column name.
            let name = name.trim_start_matches('\u{feff}').trim().to_string();
            columns.entry(name).or_insert(i);
        }
        let mut rows = Vec::new();
        let mut record = csv::ByteRecord::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => bail!("{}: {e}", path.display()),
            }
            let line = record.position().map_or(0, |p| p.line() as usize);
            let fields: Result<Vec<String>, String> = record
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    String::from_utf8(f.to_vec())
                        .map_err(|e| format!("field {} is not UTF-8 ({})", i + 1, e.utf8_error()))
                })
                .collect();
            rows.push(match fields {
                Ok(fields) => Ok(CsvRow { line, fields }),
                Err(what) => Err((line, what)),
            });
        }
        Ok(Csv {
            columns,
            width: header.len(),
            rows,
        })
    }

    /// The index of a column the format requires; the error lists what the header has.
    pub fn column(&self, path: &Path, name: &str) -> Result<usize> {
        match self.columns.get(name) {
            Some(&i) => Ok(i),
            None => {
                let mut found: Vec<&str> = self.columns.keys().map(String::as_str).collect();
                found.sort_unstable();
                bail!(
                    "{}: header has no column {name:?} (found: {})",
                    path.display(),
                    found.join(", ")
                )
            }
        }
    }
}

impl CsvRow {
    /// Checks the field count against the header's.
    pub fn check_width(&self, width: usize) -> Result<(), String> {
        if self.fields.len() == width {
            Ok(())
        } else {
            Err(format!(
                "expected {width} fields as in the header, found {}",
                self.fields.len()
            ))
        }
    }
}
