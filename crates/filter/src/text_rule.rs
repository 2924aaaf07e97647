//! The text rule: bans any token that would make the continuation's text end with a listed word
//! starting at a word boundary, however the word is tokenized.
//!
//! The multi-token rule knows only the token sequences of the spellings it was given. A model can
//! spell a word with other tokens: a segmentation the tokenizer would never produce ("s" + "hit"),
//! or one a pre-tokenizer produces only in some contexts (GPT-2-style pre-tokenizers split
//! `'dick'` after a non-space into "'d" + "ick", because "'d" is a contraction). Those pass the
//! sequence bans but not the post-hoc check, which reads text. This rule reads text too, at
//! decode time, and stays cheap: per row and step it decodes the last few generated tokens and
//! does one hash lookup per word start among the last characters.
//!
//! At a step, with `T` the continuation's text so far (lower case, whitespace runs as one
//! space), a token with text `U` is banned when, for some entry `E` split as `E = P + S`:
//! `T` ends with `P` and `P` starts at a word boundary (the start of the continuation or after a
//! character that is neither alphabetic nor numeric), and `U` is `S` or `S` followed by a
//! non-word character. A token holding a whole entry after a word boundary inside itself (" dick",
//! "(dick") is banned at every step. Like the sequence rule, it bans a word's spelling when the
//! word ends, whatever follows ("dick" + "ens" is caught at "dick").

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, Result};
use lm::TextTokenizer;

use crate::list::WordList;

/// A character that ends a word (see [`crate::matcher`]: neither alphabetic nor numeric).
fn is_boundary(c: char) -> bool {
    !c.is_alphanumeric()
}

/// Lower case, every run of whitespace one space: the form texts and entries are compared in.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.extend(c.to_lowercase());
            in_space = false;
        }
    }
    out
}

pub struct TextRule {
    /// Decodes the continuation's tail each step (an owned copy of the model's tokenizer).
    tokenizer: tokenizers::Tokenizer,
    /// Entry prefix (possibly empty) → the suffixes that complete it into an entry.
    completions: HashMap<String, Vec<String>>,
    /// Entry suffix → tokens whose text is that suffix, or that suffix and then a non-word
    /// character.
    tokens_completing: HashMap<String, Vec<i64>>,
    /// Tokens that hold a whole entry after a word boundary inside themselves.
    always: Vec<i64>,
    /// The longest entry prefix in bytes: how far back a word start can lie.
    longest_prefix_bytes: usize,
    /// Tokens decoded per row and step; enough bytes for the longest prefix and the character
    /// before it (every token is at least one byte).
    window_tokens: usize,
}

impl TextRule {
    pub fn new(list: &WordList, tokenizer: &TextTokenizer) -> Result<Self> {
        let entries: Vec<String> = list.entries().iter().map(|e| normalise(e)).collect();
        let mut completions: HashMap<String, Vec<String>> = HashMap::new();
        let mut suffixes: HashSet<String> = HashSet::new();
        for entry in &entries {
            for (split, _) in entry.char_indices() {
                let (prefix, suffix) = entry.split_at(split);
                completions
                    .entry(prefix.to_string())
                    .or_default()
                    .push(suffix.to_string());
                suffixes.insert(suffix.to_string());
            }
        }
        for list in completions.values_mut() {
            list.sort();
            list.dedup();
        }
        let whole: HashSet<&str> = entries.iter().map(String::as_str).collect();
        let longest_prefix_bytes = entries.iter().map(String::len).max().unwrap_or(0);

        let texts = token_texts(tokenizer)?;
        let mut tokens_completing: HashMap<String, Vec<i64>> = HashMap::new();
        let mut always = Vec::new();
        for (id, text) in texts.iter().enumerate() {
            let text = normalise(text);
            // Where a match inside this token may end: before a non-word character, or at the end.
            let ends: Vec<usize> = text
                .char_indices()
                .filter(|&(_, c)| is_boundary(c))
                .map(|(i, _)| i)
                .chain([text.len()])
                .filter(|&i| i > 0)
                .collect();
            for &end in &ends {
                if suffixes.contains(&text[..end]) {
                    tokens_completing
                        .entry(text[..end].to_string())
                        .or_default()
                        .push(id as i64);
                }
            }
            // A whole entry after a boundary inside the token.
            let mut starts = text
                .char_indices()
                .filter(|&(_, c)| is_boundary(c))
                .map(|(i, c)| i + c.len_utf8());
            let inside = starts.any(|start| {
                ends.iter()
                    .any(|&end| end > start && whole.contains(&text[start..end]))
            });
            if inside {
                always.push(id as i64);
            }
        }
        Ok(Self {
            tokenizer: tokenizer.inner().clone(),
            completions,
            tokens_completing,
            always,
            longest_prefix_bytes,
            window_tokens: longest_prefix_bytes + 5,
        })
    }

    /// Tokens banned at every step by this rule.
    pub fn always_banned(&self) -> &[i64] {
        &self.always
    }

    /// Appends to `banned` the tokens that would complete a listed word after `generated`,
    /// besides [`TextRule::always_banned`].
    pub fn banned_after(&self, generated: &[i64], banned: &mut Vec<i64>) -> Result<()> {
        let window = &generated[generated.len().saturating_sub(self.window_tokens)..];
        // Only a window that reaches back to the continuation's start begins at a word boundary.
        let whole_continuation = window.len() == generated.len();
        let ids: Vec<u32> = window.iter().map(|&id| id as u32).collect();
        let tail = self
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| anyhow!("cannot decode the generated tokens: {e}"))?;
        let tail = normalise(&tail);
        let mut earliest = tail.len().saturating_sub(self.longest_prefix_bytes);
        while !tail.is_char_boundary(earliest) {
            earliest -= 1;
        }
        let mut previous: Option<char> = tail[..earliest].chars().next_back();
        let starts = tail[earliest..]
            .char_indices()
            .map(|(i, c)| (earliest + i, Some(c)))
            .chain([(tail.len(), None)]);
        for (start, here) in starts {
            let at_word_start = match previous {
                Some(c) => is_boundary(c),
                None => start == 0 && whole_continuation,
            };
            if at_word_start {
                let prefix = &tail[start..];
                if let Some(suffixes) = self.completions.get(prefix) {
                    for suffix in suffixes {
                        if let Some(tokens) = self.tokens_completing.get(suffix) {
                            banned.extend_from_slice(tokens);
                        }
                        // "blue " + " waffle" reads "blue waffle" once whitespace runs merge.
                        if prefix.ends_with(' ') {
                            if let Some(tokens) = self.tokens_completing.get(&format!(" {suffix}"))
                            {
                                banned.extend_from_slice(tokens);
                            }
                        }
                    }
                }
            }
            previous = here;
        }
        Ok(())
    }
}

/// The text each token adds when it follows other text. Decoding a token alone is not enough:
/// SentencePiece-style decoders drop the leading space of a text's first token, so each token is
/// decoded after an anchor token and the anchor's text is cut off.
fn token_texts(tokenizer: &TextTokenizer) -> Result<Vec<String>> {
    let vocab = tokenizer.vocab_size();
    let inner = tokenizer.inner();
    let anchor = match tokenizer.encode("x")?.as_slice() {
        [only] => Some(*only as u32),
        _ => None,
    };
    let anchor_text = match anchor {
        Some(id) => inner
            .decode(&[id], true)
            .map_err(|e| anyhow!("cannot decode the anchor token: {e}"))?,
        None => String::new(),
    };
    let sequences: Vec<Vec<u32>> = (0..vocab as u32)
        .map(|id| anchor.into_iter().chain([id]).collect())
        .collect();
    let refs: Vec<&[u32]> = sequences.iter().map(Vec::as_slice).collect();
    let decoded = inner
        .decode_batch(&refs, true)
        .map_err(|e| anyhow!("cannot decode the vocabulary: {e}"))?;
    Ok(decoded
        .into_iter()
        .map(|text| match text.strip_prefix(&anchor_text) {
            Some(rest) => rest.to_string(),
            None => text,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn normalise_lowercases_and_merges_whitespace() {
        assert_eq!(normalise(" Blue \n\tWAFFLE "), " blue waffle ");
    }
}
