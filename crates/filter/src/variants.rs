//! From listed words to the token sequences a model would generate for them.
//!
//! A tokenizer spells " Word" (mid-sentence, capitalised) with other tokens than "word" (start
//! of text, as written), so each entry is banned in every spelling a model is likely to produce:
//! as written, lowercase, Capitalised, Title Case and UPPER, each with and without a leading
//! space. Each spelling is encoded alone, without special tokens.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use lm::TextTokenizer;

use crate::list::WordList;

/// The spellings of `entry` that are banned, each once, in a fixed order.
pub fn spelling_variants(entry: &str) -> Vec<String> {
    let cases = [
        entry.to_string(),
        entry.to_lowercase(),
        capitalise_first(entry),
        entry
            .split(' ')
            .map(capitalise_first)
            .collect::<Vec<_>>()
            .join(" "),
        entry.to_uppercase(),
    ];
    let mut variants: Vec<String> = Vec::with_capacity(cases.len() * 2);
    for case in cases {
        for text in [case.clone(), format!(" {case}")] {
            if !variants.contains(&text) {
                variants.push(text);
            }
        }
    }
    variants
}

/// `word` with its first character upper-cased and the rest as written.
fn capitalise_first(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Every spelling of every entry of `list` as token ids, sorted and without duplicates.
pub fn banned_sequences(list: &WordList, tokenizer: &TextTokenizer) -> Result<Vec<Vec<i64>>> {
    let mut sequences = BTreeSet::new();
    for entry in list.entries() {
        for variant in spelling_variants(entry) {
            let ids = tokenizer
                .encode(&variant)
                .with_context(|| format!("word list entry {entry:?}: spelling {variant:?}"))?;
            // Only a text that is all normalised away encodes to nothing; such a spelling cannot
            // be generated either.
            if !ids.is_empty() {
                sequences.insert(ids);
            }
        }
    }
    Ok(sequences.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_cover_case_and_leading_space() {
        assert_eq!(
            spelling_variants("blue waffle"),
            [
                "blue waffle",
                " blue waffle",
                "Blue waffle",
                " Blue waffle",
                "Blue Waffle",
                " Blue Waffle",
                "BLUE WAFFLE",
                " BLUE WAFFLE",
            ]
        );
        assert_eq!(
            spelling_variants("ass"),
            ["ass", " ass", "Ass", " Ass", "ASS", " ASS"]
        );
        // A symbol has no case: two spellings.
        assert_eq!(spelling_variants("🖕"), ["🖕", " 🖕"]);
    }
}
