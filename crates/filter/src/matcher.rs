//! Whether a text contains a listed word: case-insensitive, on word boundaries, multi-word
//! entries with any whitespace between their words.

use std::collections::HashMap;

use anyhow::{Context, Result};
use regex::Regex;

use crate::list::WordList;

/// A word boundary here is the edge of the text or a character that is neither alphabetic nor
/// numeric (Unicode classes, as Rust's `char::is_alphanumeric`, so "naïve" is one word). Only an entry's edge that is itself a letter
/// or number needs one: "s&m" must not follow a letter, "🖕" may stand anywhere — which regex's
/// `\b` cannot express.
const NOT_WORD_CHAR: &str = r"[^\p{Alphabetic}\p{N}]";

/// Finds listed words in text.
pub struct WordMatcher {
    /// One alternative per entry, each with the boundaries its edges need: one pass over the text
    /// for all entries.
    pattern: Regex,
    /// Entry by its normalised form (lower case, single spaces), to name what matched.
    by_normalised: HashMap<String, usize>,
    entries: Vec<String>,
}

impl WordMatcher {
    pub fn new(list: &WordList) -> Result<Self> {
        let mut alternatives: Vec<String> =
            list.entries().iter().map(|e| bounded_pattern(e)).collect();
        // Longer first, so the named entry is the longest one that matches at a position.
        alternatives.sort_by_key(|a| std::cmp::Reverse(a.len()));
        let pattern = format!("(?i){}", alternatives.join("|"));
        let pattern = regex::RegexBuilder::new(&pattern)
            // Hundreds of case-insensitive Unicode alternatives exceed the default 10 MB.
            .size_limit(64 << 20)
            .build()
            .with_context(|| format!("cannot compile a matcher for {} entries", list.len()))?;
        let by_normalised = list
            .entries()
            .iter()
            .enumerate()
            .map(|(i, e)| (normalise(e), i))
            .collect();
        Ok(Self {
            pattern,
            by_normalised,
            entries: list.entries().to_vec(),
        })
    }

    /// The listed entry `text` contains (the first in the text), or `None`.
    pub fn contains_listed_word(&self, text: &str) -> Option<&str> {
        let found = self.pattern.find(text)?;
        Some(self.entry_for(found.as_str()))
    }

    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// The entry a match stands for; the match may include one boundary character on each side.
    fn entry_for(&self, matched: &str) -> &str {
        let mut chars = matched.chars();
        let first_len = chars.next().map_or(0, char::len_utf8);
        let last_len = chars.next_back().map_or(0, char::len_utf8);
        let cores = [
            matched,
            &matched[first_len..],
            &matched[..matched.len() - last_len],
            matched
                .get(first_len..matched.len() - last_len)
                .unwrap_or(""),
        ];
        for core in cores {
            if let Some(&i) = self.by_normalised.get(&normalise(core)) {
                return &self.entries[i];
            }
        }
        // Case folding matched where lower-casing differs (e.g. 'ſ' ~ 's'): find it the slow way.
        self.entries
            .iter()
            .find(|e| {
                Regex::new(&format!("(?i)^(?:{})$", bounded_pattern(e)))
                    .is_ok_and(|r| r.is_match(matched))
            })
            .map(String::as_str)
            .expect("a match of the alternation is a whole match of one of its entries")
    }
}

/// An entry as a regex: its words escaped, any run of whitespace between them, and a word
/// boundary (start/end of text or a non-word character) at each edge that is a word character.
fn bounded_pattern(entry: &str) -> String {
    let core = entry
        .split_whitespace()
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(r"\s+");
    let is_word_char = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let left = if is_word_char(entry.chars().next()) {
        format!("(?:^|{NOT_WORD_CHAR})")
    } else {
        String::new()
    };
    let right = if is_word_char(entry.chars().next_back()) {
        format!("(?:$|{NOT_WORD_CHAR})")
    } else {
        String::new()
    };
    format!("{left}{core}{right}")
}

fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(entries: &[&str]) -> WordMatcher {
        WordMatcher::new(&WordList::from_entries(entries).unwrap()).unwrap()
    }

    #[test]
    fn matches_case_insensitively_on_word_boundaries() {
        let m = matcher(&["ass", "blue waffle", "s&m", "g-spot", "🖕"]);
        assert_eq!(m.contains_listed_word("what an ass."), Some("ass"));
        assert_eq!(m.contains_listed_word("ASS"), Some("ass"));
        assert_eq!(m.contains_listed_word("'Ass'"), Some("ass"));
        assert_eq!(m.contains_listed_word("a class act"), None);
        assert_eq!(m.contains_listed_word("assume"), None);
        assert_eq!(m.contains_listed_word("ass1"), None);
        assert_eq!(m.contains_listed_word("kickass"), None);
        assert_eq!(
            m.contains_listed_word("a Blue\n  Waffle!"),
            Some("blue waffle")
        );
        assert_eq!(m.contains_listed_word("blue waffles"), None);
        assert_eq!(m.contains_listed_word("into S&M, they said"), Some("s&m"));
        assert_eq!(m.contains_listed_word("the G-spot"), Some("g-spot"));
        assert_eq!(m.contains_listed_word("ok🖕ok"), Some("🖕"));
        assert_eq!(m.contains_listed_word("is(s&m)"), Some("s&m"));
        assert_eq!(m.contains_listed_word("gs&m"), None);
        assert_eq!(m.contains_listed_word("éass"), None);
    }

    #[test]
    fn longer_entries_are_named_and_shorter_still_found() {
        let m = matcher(&["ass", "asshole"]);
        assert_eq!(m.contains_listed_word("you asshole"), Some("asshole"));
        assert_eq!(m.contains_listed_word("you assholes"), None);
        assert_eq!(m.contains_listed_word("ass, asshole!"), Some("ass"));
    }
}
