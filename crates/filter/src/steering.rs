//! Decode-time word filtering: a [`decode::Steering`] that bans, at every step, the tokens that
//! would complete a banned token sequence ([`crate::index`]) or, with the text rule, spell out a
//! listed word in any other way ([`crate::text_rule`]).

use anyhow::{bail, Context, Result};
use decode::{Row, Steering, Step};
use lm::{CausalLm, TextTokenizer};
use tch::Tensor;

use crate::index::BanIndex;
use crate::list::WordList;
use crate::text_rule::TextRule;
use crate::variants::banned_sequences;

/// Sets the logit of every banned token to −∞ before truncation, so a banned token never enters
/// the candidate set. Two rules, both reading each row's tokens from the step (no per-row
/// state): the multi-token rule over the listed words' token sequences ([`crate::index`]), and,
/// when built with [`WordFilter::from_list`], the text rule ([`crate::text_rule`]) for words
/// spelled with other tokens.
pub struct WordFilter {
    index: BanIndex,
    sequences: Vec<Vec<i64>>,
    text_rule: Option<TextRule>,
    /// Tokens banned at every step by either rule, ascending.
    always: Vec<i64>,
    /// Row-step pairs in which a multi-token prefix matched (the length-1 bans apply always and
    /// are not counted): how often the multi-token rule did something.
    prefix_matches: u64,
    /// Row-step pairs in which the text rule banned a token the sequence rule did not (its
    /// every-step bans not counted). Most are spellings the model would not have drawn anyway
    /// (after " a", the token "ss"), so this says how often the rule acted, not what it caught.
    text_rule_steps: u64,
    tail: Vec<i64>,
    matched: Vec<i64>,
    text_matched: Vec<i64>,
}

impl WordFilter {
    /// Both rules for `list`: every spelling of every entry (see [`crate::variants`]) as
    /// tokenized by `tokenizer`, and the text rule. `tokenizer` must be the steered model's.
    pub fn from_list(list: &WordList, tokenizer: &TextTokenizer) -> Result<Self> {
        Ok(Self::sequences_only(list, tokenizer)?.with_text_rule(TextRule::new(list, tokenizer)?))
    }

    /// The multi-token rule alone, as in RealToxicityPrompts' baseline: only the token sequences
    /// of the listed spellings are banned.
    pub fn sequences_only(list: &WordList, tokenizer: &TextTokenizer) -> Result<Self> {
        Self::from_sequences(banned_sequences(list, tokenizer)?)
    }

    /// Bans the given token sequences as they are (multi-token rule only).
    pub fn from_sequences(sequences: Vec<Vec<i64>>) -> Result<Self> {
        let index = BanIndex::new(&sequences)?;
        Ok(Self {
            always: index.always_banned().to_vec(),
            index,
            sequences,
            text_rule: None,
            prefix_matches: 0,
            text_rule_steps: 0,
            tail: Vec::new(),
            matched: Vec::new(),
            text_matched: Vec::new(),
        })
    }

    /// Adds the text rule (e.g. to sequences given by hand, or alone with no sequences).
    pub fn with_text_rule(mut self, rule: TextRule) -> Self {
        self.always.extend_from_slice(rule.always_banned());
        self.always.sort_unstable();
        self.always.dedup();
        self.text_rule = Some(rule);
        self
    }

    /// Whether the text rule is on.
    pub fn checks_text(&self) -> bool {
        self.text_rule.is_some()
    }

    /// Row-steps in which the text rule banned a token the sequence rule did not (see the field).
    pub fn text_rule_steps(&self) -> u64 {
        self.text_rule_steps
    }

    /// The banned token sequences.
    pub fn sequences(&self) -> &[Vec<i64>] {
        &self.sequences
    }

    pub fn index(&self) -> &BanIndex {
        &self.index
    }

    /// Row-steps in which a multi-token prefix matched since this filter was built.
    pub fn prefix_matches(&self) -> u64 {
        self.prefix_matches
    }

    /// The (row, token) pairs to ban for `rows`, with `vocab` the width of the logits. An error
    /// when a row would have no token left.
    pub fn ban_positions(&mut self, rows: &[Row], vocab: i64) -> Result<(Vec<i64>, Vec<i64>)> {
        let mut row_ids = Vec::new();
        let mut token_ids = Vec::new();
        if let Some(&outside) = self.always.last().filter(|&&id| id >= vocab) {
            bail!("banned token id {outside} is outside the logits' {vocab} columns");
        }
        for (slot, row) in rows.iter().enumerate() {
            // Bans that depend on the row, on top of `always`.
            self.matched.clear();
            self.index.matched_after(
                &row.request.prompt_ids,
                row.generated,
                &mut self.tail,
                &mut self.matched,
            );
            if !self.matched.is_empty() {
                self.prefix_matches += 1;
            }
            if let Some(rule) = &self.text_rule {
                self.text_matched.clear();
                rule.banned_after(row.generated, &mut self.text_matched)
                    .with_context(|| {
                        format!(
                            "prompt {:?}, sample {}",
                            row.request.prompt_id, row.request.sample_index
                        )
                    })?;
                let (always, matched) = (&self.always, &self.matched);
                if self
                    .text_matched
                    .iter()
                    .any(|t| always.binary_search(t).is_err() && !matched.contains(t))
                {
                    self.text_rule_steps += 1;
                }
                self.matched.extend_from_slice(&self.text_matched);
            }
            self.matched.sort_unstable();
            self.matched.dedup();
            let always = &self.always;
            self.matched.retain(|t| always.binary_search(t).is_err());
            if let Some(&outside) = self.matched.last().filter(|&&id| id >= vocab) {
                bail!("banned token id {outside} is outside the logits' {vocab} columns");
            }
            let banned = self.always.len() + self.matched.len();
            if banned as i64 >= vocab {
                bail!(
                    "prompt {:?}, sample {}: the word filter would ban all {vocab} tokens after \
                     {} generated tokens; the word list bans too much for this model",
                    row.request.prompt_id,
                    row.request.sample_index,
                    row.generated.len()
                );
            }
            row_ids.extend(std::iter::repeat_n(slot as i64, banned));
            token_ids.extend_from_slice(&self.always);
            token_ids.extend_from_slice(&self.matched);
        }
        Ok((row_ids, token_ids))
    }
}

/// Sets `logits[rows[i], tokens[i]]` to −∞ for every i, in one indexed write on the logits'
/// device (the index tensors are built on the CPU and moved once).
pub fn ban_in_place(logits: &mut Tensor, rows: &[i64], tokens: &[i64]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let device = logits.device();
    let rows = Tensor::from_slice(rows).to_device(device);
    let tokens = Tensor::from_slice(tokens).to_device(device);
    let minus_infinity = Tensor::from(f64::NEG_INFINITY)
        .to_kind(logits.kind())
        .to_device(device);
    // The returned tensor is `logits` itself, written in place.
    let _ = logits
        .f_index_put_(&[Some(rows), Some(tokens)], &minus_infinity, false)
        .context("cannot set banned logits")?;
    Ok(())
}

impl Steering for WordFilter {
    fn name(&self) -> &str {
        "word_filter"
    }

    fn prepare(&mut self, model: &dyn CausalLm) -> Result<()> {
        let vocab = model.info().vocab_size;
        if let Some(max) = self.index.max_token_id().max(self.always.last().copied()) {
            if max >= vocab {
                bail!(
                    "banned token id {max} is outside the model's vocabulary of {vocab}: the word \
                     list was tokenized with another model's tokenizer"
                );
            }
        }
        Ok(())
    }

    fn adjust_logits(&mut self, step: &Step, logits: &mut Tensor) -> Result<()> {
        let vocab = logits.size()[1];
        let (rows, tokens) = self.ban_positions(step.rows, vocab)?;
        ban_in_place(logits, &rows, &tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use decode::Request;

    fn request(prompt: &[i64]) -> Request {
        Request {
            prompt_id: "p".into(),
            prompt_ids: prompt.to_vec(),
            sample_index: 0,
            attempt: 0,
        }
    }

    #[test]
    fn bans_land_in_the_right_rows_and_columns() {
        let mut filter = WordFilter::from_sequences(vec![vec![1], vec![2, 3], vec![4, 2, 5]])
            .expect("valid sequences");
        let requests = [request(&[9, 2]), request(&[9, 4]), request(&[9])];
        let generated: [&[i64]; 3] = [&[], &[2], &[7]];
        let rows: Vec<Row> = requests
            .iter()
            .zip(generated)
            .map(|(request, generated)| Row { request, generated })
            .collect();
        let (row_ids, token_ids) = filter.ban_positions(&rows, 8).unwrap();
        assert_eq!(row_ids, [0, 0, 1, 1, 1, 2]);
        assert_eq!(token_ids, [1, 3, 1, 3, 5, 1]);
        assert_eq!(filter.prefix_matches(), 2);

        let mut logits = Tensor::zeros([3, 8], (tch::Kind::Float, tch::Device::Cpu));
        ban_in_place(&mut logits, &row_ids, &token_ids).unwrap();
        let values = Vec::<f32>::try_from(logits.view([-1])).unwrap();
        for (row, chunk) in values.chunks(8).enumerate() {
            for (token, &value) in chunk.iter().enumerate() {
                let banned = row_ids
                    .iter()
                    .zip(&token_ids)
                    .any(|(&r, &t)| r == row as i64 && t == token as i64);
                assert_eq!(
                    value == f32::NEG_INFINITY,
                    banned,
                    "row {row} token {token}"
                );
            }
        }
    }

    #[test]
    fn banning_every_token_is_an_error_naming_the_prompt() {
        let mut filter =
            WordFilter::from_sequences(vec![vec![0], vec![1], vec![2, 2], vec![3]]).unwrap();
        let requests = [request(&[5, 2])];
        let rows = [Row {
            request: &requests[0],
            generated: &[],
        }];
        let error = filter.ban_positions(&rows, 4).unwrap_err().to_string();
        assert!(error.contains("prompt \"p\""), "{error}");
        assert!(error.contains("all 4 tokens"), "{error}");
        // One token left is fine.
        assert!(filter.ban_positions(&rows, 5).is_ok());
    }
}
