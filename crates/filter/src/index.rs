//! The multi-token ban rule (Hugging Face's `NoBadWords`) over an index of banned sequences.
//!
//! For a banned sequence `s` of length `L`, the token `s[L-1]` is banned at a step exactly when
//! the row's last `L-1` tokens (prompt and generated tokens together, so a prefix may start in
//! the prompt) equal `s[..L-1]`; a sequence of length 1 is banned at every step. The index maps
//! each prefix to the last tokens it bans, one map per prefix length, so a row costs one hash
//! lookup per distinct prefix length, however many sequences there are.

use std::collections::HashMap;

use anyhow::{bail, Result};

/// Banned sequences indexed by prefix.
#[derive(Debug, Clone, Default)]
pub struct BanIndex {
    /// Last tokens of the length-1 sequences: banned at every step.
    always: Vec<i64>,
    /// One group per prefix length (ascending, each non-empty).
    by_prefix_len: Vec<PrefixGroup>,
    /// The longest prefix of any sequence: how much of a row's context a lookup reads.
    longest_prefix: usize,
    max_token_id: Option<i64>,
}

#[derive(Debug, Clone)]
struct PrefixGroup {
    prefix_len: usize,
    /// Prefix → the last tokens of the sequences that start with it.
    last_tokens: HashMap<Vec<i64>, Vec<i64>>,
}

impl BanIndex {
    /// Indexes `sequences`; an empty sequence or a negative token id is an error (naming the
    /// sequence's position), duplicates are harmless.
    pub fn new<I>(sequences: I) -> Result<Self>
    where
        I: IntoIterator,
        I::Item: AsRef<[i64]>,
    {
        let mut always = Vec::new();
        let mut groups: HashMap<usize, HashMap<Vec<i64>, Vec<i64>>> = HashMap::new();
        let mut max_token_id: Option<i64> = None;
        for (position, sequence) in sequences.into_iter().enumerate() {
            let sequence = sequence.as_ref();
            let Some((&last, prefix)) = sequence.split_last() else {
                bail!("banned sequence {position} is empty");
            };
            if let Some(bad) = sequence.iter().find(|&&id| id < 0) {
                bail!("banned sequence {position} {sequence:?} has the negative token id {bad}");
            }
            max_token_id = max_token_id.max(sequence.iter().copied().max());
            if prefix.is_empty() {
                always.push(last);
            } else {
                groups
                    .entry(prefix.len())
                    .or_default()
                    .entry(prefix.to_vec())
                    .or_default()
                    .push(last);
            }
        }
        always.sort_unstable();
        always.dedup();
        let mut by_prefix_len: Vec<PrefixGroup> = groups
            .into_iter()
            .map(|(prefix_len, mut last_tokens)| {
                for tokens in last_tokens.values_mut() {
                    tokens.sort_unstable();
                    tokens.dedup();
                }
                PrefixGroup {
                    prefix_len,
                    last_tokens,
                }
            })
            .collect();
        by_prefix_len.sort_by_key(|g| g.prefix_len);
        let longest_prefix = by_prefix_len.last().map_or(0, |g| g.prefix_len);
        Ok(Self {
            always,
            by_prefix_len,
            longest_prefix,
            max_token_id,
        })
    }

    /// The largest token id in any sequence (to check against a model's vocabulary).
    pub fn max_token_id(&self) -> Option<i64> {
        self.max_token_id
    }

    /// Tokens banned at every step (the length-1 sequences), ascending.
    pub fn always_banned(&self) -> &[i64] {
        &self.always
    }

    /// Appends to `banned` the tokens banned after the context `prompt` followed by `generated`:
    /// [`BanIndex::always_banned`] and [`BanIndex::matched_after`].
    pub fn banned_after(
        &self,
        prompt: &[i64],
        generated: &[i64],
        tail: &mut Vec<i64>,
        banned: &mut Vec<i64>,
    ) {
        banned.extend_from_slice(&self.always);
        self.matched_after(prompt, generated, tail, banned);
    }

    /// Appends to `banned` the last tokens of the sequences of length 2 or more whose prefix the
    /// context `prompt` followed by `generated` ends with (may repeat a token that two sequences
    /// ban). `tail` is scratch space, so a caller looping over rows allocates once.
    pub fn matched_after(
        &self,
        prompt: &[i64],
        generated: &[i64],
        tail: &mut Vec<i64>,
        banned: &mut Vec<i64>,
    ) {
        if self.by_prefix_len.is_empty() {
            return;
        }
        // The last `longest_prefix` tokens of prompt ++ generated, contiguous for slicing.
        let from_generated = generated.len().min(self.longest_prefix);
        let from_prompt = (self.longest_prefix - from_generated).min(prompt.len());
        tail.clear();
        tail.extend_from_slice(&prompt[prompt.len() - from_prompt..]);
        tail.extend_from_slice(&generated[generated.len() - from_generated..]);
        for group in &self.by_prefix_len {
            if group.prefix_len > tail.len() {
                break;
            }
            if let Some(tokens) = group
                .last_tokens
                .get(&tail[tail.len() - group.prefix_len..])
            {
                banned.extend_from_slice(tokens);
            }
        }
    }

    /// [`BanIndex::banned_after`] as a sorted, duplicate-free vector (tests, one-off callers).
    pub fn banned_set(&self, prompt: &[i64], generated: &[i64]) -> Vec<i64> {
        let mut banned = Vec::new();
        self.banned_after(prompt, generated, &mut Vec::new(), &mut banned);
        banned.sort_unstable();
        banned.dedup();
        banned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(sequences: &[&[i64]]) -> BanIndex {
        BanIndex::new(sequences.iter().copied()).unwrap()
    }

    #[test]
    fn length_one_sequences_are_always_banned() {
        let index = index(&[&[7], &[3], &[7]]);
        assert_eq!(index.banned_set(&[1], &[]), [3, 7]);
        assert_eq!(index.banned_set(&[1, 2, 3], &[4, 5]), [3, 7]);
    }

    #[test]
    fn last_token_is_banned_only_after_its_prefix() {
        let index = index(&[&[10, 11, 12]]);
        assert_eq!(index.banned_set(&[1, 10], &[11]), [12]);
        // No false ban: the prefix is incomplete, in the wrong order, or interrupted.
        assert!(index.banned_set(&[1, 2], &[11]).is_empty());
        assert!(index.banned_set(&[11], &[10]).is_empty());
        assert!(index.banned_set(&[10, 11], &[5]).is_empty());
        assert!(index.banned_set(&[10], &[]).is_empty());
        // Once the sequence is complete, the next step bans nothing for it.
        assert!(index.banned_set(&[10, 11], &[12]).is_empty());
    }

    #[test]
    fn prefix_may_cross_the_prompt_generation_boundary() {
        let index = index(&[&[10, 11, 12, 13]]);
        // Whole prefix in the prompt, two in the prompt and one generated, all generated.
        assert_eq!(index.banned_set(&[10, 11, 12], &[]), [13]);
        assert_eq!(index.banned_set(&[5, 10, 11], &[12]), [13]);
        assert_eq!(index.banned_set(&[10], &[11, 12]), [13]);
        assert_eq!(index.banned_set(&[4], &[10, 11, 12]), [13]);
        // A context shorter than the prefix bans nothing.
        assert!(index.banned_set(&[11, 12], &[]).is_empty());
    }

    #[test]
    fn overlapping_entries_ban_together() {
        // " ass" (1 token), " ass hole" (a prefix of another), a sequence that is a suffix of
        // another, and two sequences sharing a prefix.
        let index = index(&[
            &[20],
            &[20, 21],
            &[20, 21, 22],
            &[21, 22],
            &[30, 31],
            &[30, 32],
        ]);
        assert_eq!(index.banned_set(&[1], &[]), [20]);
        assert_eq!(index.banned_set(&[1], &[20]), [20, 21]);
        // After [20, 21]: [20, 21, 22] bans 22 and so does [21, 22].
        assert_eq!(index.banned_set(&[20], &[21]), [20, 22]);
        assert_eq!(index.banned_set(&[5], &[21]), [20, 22]);
        assert_eq!(index.banned_set(&[], &[30]), [20, 31, 32]);
    }

    #[test]
    fn bad_sequences_are_errors() {
        let error = BanIndex::new([vec![1], vec![]]).unwrap_err().to_string();
        assert!(error.contains("sequence 1 is empty"), "{error}");
        let error = BanIndex::new([vec![1, -2]]).unwrap_err().to_string();
        assert!(error.contains("negative token id -2"), "{error}");
    }
}
