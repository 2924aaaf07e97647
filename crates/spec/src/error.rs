//! Errors that name the file, the field path and the reason.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SpecError {
    /// The file the offending value came from (the spec, a fragment it includes, or a preset).
    pub file: PathBuf,
    /// Field path such as `methods[2].strength[1]`; empty for the whole document.
    pub path: String,
    /// What is wrong.
    pub reason: String,
    /// 1-based line and column, when known (YAML syntax errors; type errors in a spec without includes).
    pub location: Option<(usize, usize)>,
    /// The closest valid name, for a typo.
    pub suggestion: Option<String>,
}

impl SpecError {
    pub fn new(file: &Path, path: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError {
            file: file.to_path_buf(),
            path: path.into(),
            reason: reason.into(),
            location: None,
            suggestion: None,
        }
    }

    pub fn suggest(mut self, suggestion: Option<String>) -> Self {
        self.suggestion = suggestion;
        self
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.location {
            write!(f, ":{line}:{col}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.reason)?;
        } else {
            write!(f, ": {}: {}", self.path, self.reason)?;
        }
        if let Some(s) = &self.suggestion {
            write!(f, "; did you mean \"{s}\"?")?;
        }
        Ok(())
    }
}

/// Every problem found; validation keeps going after the first so one run lists them all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SpecErrors(pub Vec<SpecError>);

impl SpecErrors {
    pub fn errors(&self) -> &[SpecError] {
        &self.0
    }
}

impl From<SpecError> for SpecErrors {
    fn from(e: SpecError) -> Self {
        SpecErrors(vec![e])
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} problems in the spec:", all.len())?;
                for e in all {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `name`, if it is close enough to be a plausible typo (distance at most
/// 2, or a third of the name's length for long names). Ties go to the earlier candidate.
pub fn closest<'a, I, S>(name: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str> + 'a,
{
    let limit = (name.chars().count() / 3).max(2);
    let mut best: Option<(usize, String)> = None;
    for c in candidates {
        let c = c.as_ref();
        let d = edit_distance(&name.to_lowercase(), &c.to_lowercase());
        if d <= limit && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, c.to_string()));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("sasaa", "sasa"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn closest_name() {
        assert_eq!(
            closest("sasaa", ["none", "sasa", "rad"]),
            Some("sasa".into())
        );
        assert_eq!(closest("zzzzzzz", ["none", "sasa"]), None);
    }
}
