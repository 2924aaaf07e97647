//! The layout of the committed artifact files: objects indented, arrays on one line.

use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// Writes `value` to `path` with [`CompactArrays`] and a final newline, creating the folder;
/// `what` names the value in errors.
pub fn write_compact<T: Serialize>(value: &T, path: &Path, what: &str) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create the folder", parent.display()))?;
    }
    let bytes = compact_bytes(value)
        .with_context(|| format!("{}: cannot serialise the {what}", path.display()))?;
    std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

/// What [`write_compact`] writes for `value`: [`CompactArrays`] and a final newline.
pub fn compact_bytes<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut bytes, CompactArrays::default());
    value.serialize(&mut serializer)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Indented objects, arrays on one line: an artifact's metadata stays readable and its vectors
/// (a subspace's or reward head's `w` and `b`) take a line each instead of one per number.
#[derive(Default)]
pub struct CompactArrays {
    depth: usize,
    has_value: bool,
}

impl CompactArrays {
    fn indent<W: ?Sized + Write>(&self, writer: &mut W) -> io::Result<()> {
        for _ in 0..self.depth {
            writer.write_all(b"  ")?;
        }
        Ok(())
    }
}

impl serde_json::ser::Formatter for CompactArrays {
    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        writer.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            writer.write_all(b"\n")?;
            self.indent(writer)?;
        }
        writer.write_all(b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        writer.write_all(if first { b"\n" } else { b",\n" })?;
        self.indent(writer)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, _writer: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}
