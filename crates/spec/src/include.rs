//! Reading a spec file and the fragments it includes.
//!
//! Merge rule: a file's `include:` list is merged first, in order (a later fragment overrides an
//! earlier one), then the file's own keys on top, so **the including file wins**. Maps merge
//! recursively key by key; lists and scalars are replaced whole (a fragment's `methods:` list is not
//! appended to). Include paths are relative to the file that names them. A file that includes itself,
//! directly or through others, is an error naming the chain. Every top-level key remembers the file
//! that set it last; relative paths under that key resolve against that file's folder, and errors
//! under it name that file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use crate::error::SpecError;

/// The merged document and where each top-level key came from.
#[derive(Debug, Clone)]
pub struct Merged {
    pub doc: Mapping,
    pub origin: BTreeMap<String, PathBuf>,
    /// The root file's text, when it included nothing (so line numbers of type errors are real).
    pub root_text: Option<String>,
}

/// Converts a serde_yaml error (from text) into a [`SpecError`], splitting serde_yaml's
/// `path: message at line L column C` form.
pub fn yaml_error(file: &Path, e: &serde_yaml::Error, keep_location: bool) -> SpecError {
    let mut msg = e.to_string();
    let location = e.location().map(|l| (l.line(), l.column()));
    if let Some(i) = msg.rfind(" at line ") {
        if location.is_some() {
            msg.truncate(i);
        }
    }
    let (path, reason) = match msg.split_once(": ") {
        Some((p, r)) if !p.contains(' ') && !p.is_empty() => (p.to_string(), r.to_string()),
        _ => (String::new(), msg),
    };
    let mut err = SpecError::new(file, path, reason);
    if keep_location {
        err.location = location;
    }
    err
}

/// Reads `path`, merges its includes, and reports where every top-level key came from.
pub fn load_merged(path: &Path) -> Result<Merged, SpecError> {
    let mut stack = Vec::new();
    let (doc, origin, included) = load_rec(path, &mut stack)?;
    let root_text = if included {
        None
    } else {
        std::fs::read_to_string(path).ok()
    };
    Ok(Merged {
        doc,
        origin,
        root_text,
    })
}

/// Reads one YAML file into a mapping (an empty file is an empty mapping).
pub fn read_mapping(path: &Path) -> Result<Mapping, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new(path, "", format!("cannot read: {e}")))?;
    let value: Value = serde_yaml::from_str(&text).map_err(|e| yaml_error(path, &e, true))?;
    match value {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        other => Err(SpecError::new(
            path,
            "",
            format!(
                "expected a map of settings at the top level, found {}",
                kind_of(&other)
            ),
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

type Loaded = (Mapping, BTreeMap<String, PathBuf>, bool);

fn load_rec(path: &Path, stack: &mut Vec<PathBuf>) -> Result<Loaded, SpecError> {
    let canonical = path
        .canonicalize()
        .map_err(|e| SpecError::new(path, "", format!("cannot read: {e}")))?;
    let mut own = read_mapping(path)?;
    let includes = match own.remove("include") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Sequence(items)) => {
            let mut out = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s),
                    other => {
                        return Err(SpecError::new(
                            path,
                            format!("include[{i}]"),
                            format!("expected a relative path, found {}", kind_of(&other)),
                        ))
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(SpecError::new(
                path,
                "include",
                format!("expected a list of paths, found {}", kind_of(&other)),
            ))
        }
    };

    stack.push(canonical);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut doc = Mapping::new();
    let mut origin = BTreeMap::new();
    for (i, inc) in includes.iter().enumerate() {
        let inc_path = base.join(inc);
        let Ok(inc_canonical) = inc_path.canonicalize() else {
            return Err(SpecError::new(
                path,
                format!("include[{i}]"),
                format!("included file {} not found", inc_path.display()),
            ));
        };
        if let Some(pos) = stack.iter().position(|p| *p == inc_canonical) {
            let chain: Vec<String> = stack[pos..]
                .iter()
                .chain(std::iter::once(&inc_canonical))
                .map(|p| p.display().to_string())
                .collect();
            return Err(SpecError::new(
                path,
                format!("include[{i}]"),
                format!("include cycle: {}", chain.join(" -> ")),
            ));
        }
        let (frag, frag_origin, _) = load_rec(&inc_path, stack)?;
        merge_top(&mut doc, &mut origin, frag, &frag_origin);
    }
    stack.pop();

    let own_origin: BTreeMap<String, PathBuf> = own
        .keys()
        .filter_map(|k| k.as_str())
        .map(|k| (k.to_string(), path.to_path_buf()))
        .collect();
    merge_top(&mut doc, &mut origin, own, &own_origin);
    Ok((doc, origin, !includes.is_empty()))
}

fn merge_top(
    doc: &mut Mapping,
    origin: &mut BTreeMap<String, PathBuf>,
    over: Mapping,
    over_origin: &BTreeMap<String, PathBuf>,
) {
    for (k, v) in over {
        if let Some(name) = k.as_str() {
            if let Some(file) = over_origin.get(name) {
                origin.insert(name.to_string(), file.clone());
            }
        }
        match doc.get_mut(&k) {
            Some(existing) => merge_value(existing, v),
            None => {
                doc.insert(k, v);
            }
        }
    }
}

/// Maps merge key by key (recursively); anything else is replaced by `over`.
pub fn merge_value(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge_value(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}
