//! Steering: what a detoxification method may do inside the one decoder loop.
//!
//! The loop owns the model's KV cache, the seeded sampler and the list of active rows; a method
//! only sees them through [`Step`] and changes scores, never the draw itself. Per step the loop
//! calls, for every method in the order the spec lists them:
//!
//! 1. [`Steering::adjust_logits`] on the full next-token logits (word filtering bans tokens here,
//!    before truncation, so a banned token can never enter the candidate set);
//! 2. truncation (temperature, top-k, top-p) into one candidate set per row;
//! 3. [`Steering::adjust_candidates`] on those candidate sets (SASA and RAD score each candidate
//!    and add β·score to its logit);
//! 4. one seeded draw per row;
//! 5. [`Steering::observe`] with the drawn tokens, so a method can advance its own state.
//!
//! Candidate ids are fixed once truncation has run: a method may lower a candidate's logit to
//! −∞ to remove it, but never reorder, add or drop entries. That is what lets a method that has
//! already run the model on every candidate (SASA) hand the loop a [`Lookahead`], so the loop
//! takes the drawn candidate's row instead of running the model on it a second time.

use anyhow::Result;
use lm::{CausalLm, KvCache};
use tch::Tensor;

use crate::generate::Request;
use crate::sampler::{Candidates, SamplingParams};

/// One active row as a method sees it.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub request: &'a Request,
    /// Tokens generated so far for this row (the prompt is in `request.prompt_ids`).
    pub generated: &'a [i64],
}

/// The loop's state at one step, for the active rows only (row `i` of every tensor is `rows[i]`).
pub struct Step<'a> {
    pub model: &'a dyn CausalLm,
    /// The model's cache, holding every token fed so far (prompt and generated). Fork rows of it
    /// with [`KvCache::fork_rows`] (or [`KvCache::deep_clone`]); never change it.
    pub cache: &'a KvCache,
    /// Final-norm hidden state of each row's last fed token, `[rows, hidden]`.
    pub hidden: &'a Tensor,
    pub rows: &'a [Row<'a>],
    /// 0 for the first new token.
    pub index: usize,
    pub sampling: &'a SamplingParams,
    /// A lookahead an earlier method in the list produced this step, if any.
    pub lookahead: Option<&'a Lookahead>,
}

/// The model already run on the candidates of every row: the loop takes the drawn candidate's
/// row from here instead of running the model on the drawn token.
///
/// A lookahead may cover only a prefix of each row's candidates: row `i`'s first
/// `offsets[i + 1] - offsets[i]` candidates (at least none, at most all). A method that caps the
/// candidates it runs (SASA's `max_candidates`) normally sets the rest to −∞, so they cannot be
/// drawn. If one is drawn all the same (SASA at β = 0 leaves every logit alone), the loop ignores
/// the lookahead for that step and runs the model on the drawn tokens, as without one.
pub struct Lookahead {
    /// One row per covered candidate, row `i`'s at `offsets[i]..offsets[i + 1]` in candidate
    /// order, each holding the row's tokens followed by that candidate.
    pub cache: KvCache,
    /// Final-norm hidden state at each covered candidate, `[covered candidates, hidden]`.
    pub hidden: Tensor,
    /// `rows + 1` non-decreasing offsets into the candidate rows, from 0 to their number.
    pub offsets: Vec<usize>,
}

impl Lookahead {
    /// Checks the offsets against the step's candidate sets and the hidden states.
    pub fn check(&self, candidates: &[Candidates]) -> Result<()> {
        if self.offsets.len() != candidates.len() + 1 || self.offsets.first() != Some(&0) {
            anyhow::bail!(
                "lookahead has {} offsets for {} rows (expected rows + 1, starting at 0)",
                self.offsets.len(),
                candidates.len()
            );
        }
        for (row, (pair, cand)) in self.offsets.windows(2).zip(candidates).enumerate() {
            if pair[1] < pair[0] || pair[1] - pair[0] > cand.len() {
                anyhow::bail!(
                    "lookahead covers {}..{} for row {row}, which has {} candidates",
                    pair[0],
                    pair[1],
                    cand.len()
                );
            }
        }
        let covered = *self.offsets.last().expect("offsets are not empty") as i64;
        let rows = self.hidden.size().first().copied().unwrap_or(-1);
        if rows != covered || self.cache.batch_size().unwrap_or(rows) != covered {
            anyhow::bail!(
                "lookahead offsets cover {covered} candidate rows but its hidden states have {rows} \
                 and its cache {:?}",
                self.cache.batch_size()
            );
        }
        Ok(())
    }

    /// The lookahead row of each row's drawn token, or `None` when some row drew a candidate the
    /// lookahead does not cover.
    pub fn rows_of(&self, tokens: &[i64], candidates: &[Candidates]) -> Result<Option<Vec<i64>>> {
        let mut rows = Vec::with_capacity(tokens.len());
        for (slot, (token, cand)) in tokens.iter().zip(candidates).enumerate() {
            let j = cand.ids.iter().position(|id| id == token).ok_or_else(|| {
                anyhow::anyhow!("drawn token {token} is not among the candidates")
            })?;
            if self.offsets[slot] + j >= self.offsets[slot + 1] {
                return Ok(None);
            }
            rows.push((self.offsets[slot] + j) as i64);
        }
        Ok(Some(rows))
    }
}

/// A decoding-time detoxification method. Every hook has a no-op default, so a method writes
/// only the ones it needs. Methods keep per-row state in the order of `Step::rows`; rows leave
/// that list only through [`Steering::retain_rows`].
pub trait Steering {
    /// A short name for errors and progress lines.
    fn name(&self) -> &str;

    /// Once, before the first batch: check the model matches (vocabulary, device) and move
    /// tensors where they need to be.
    fn prepare(&mut self, _model: &dyn CausalLm) -> Result<()> {
        Ok(())
    }

    /// A new batch starts; `rows` are its requests in row order.
    fn begin(&mut self, _rows: &[&Request]) -> Result<()> {
        Ok(())
    }

    /// Changes the full next-token logits `[rows, vocab]` (float32) before truncation.
    fn adjust_logits(&mut self, _step: &Step, _logits: &mut Tensor) -> Result<()> {
        Ok(())
    }

    /// Changes candidate logits after truncation (see the module notes for what may change).
    /// May return a [`Lookahead`] when it ran the model on every candidate.
    fn adjust_candidates(
        &mut self,
        _step: &Step,
        _candidates: &mut [Candidates],
    ) -> Result<Option<Lookahead>> {
        Ok(None)
    }

    /// The token drawn for each row of `step` (an end-of-sequence token included).
    fn observe(&mut self, _step: &Step, _tokens: &[i64]) -> Result<()> {
        Ok(())
    }

    /// Rows leave: keep only `keep` (indices into the current rows, ascending).
    fn retain_rows(&mut self, _keep: &[usize]) -> Result<()> {
        Ok(())
    }

    /// What the method did so far, as named totals (candidate rows run, margin sums …) that a
    /// run record adds up across resumed runs; means are left to the reader, who has the counts.
    fn counters(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

/// A method lent for one run, so the caller can read its state (counters, redraws) afterwards.
impl<S: Steering + ?Sized> Steering for &mut S {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn prepare(&mut self, model: &dyn CausalLm) -> Result<()> {
        (**self).prepare(model)
    }
    fn begin(&mut self, rows: &[&Request]) -> Result<()> {
        (**self).begin(rows)
    }
    fn adjust_logits(&mut self, step: &Step, logits: &mut Tensor) -> Result<()> {
        (**self).adjust_logits(step, logits)
    }
    fn adjust_candidates(
        &mut self,
        step: &Step,
        candidates: &mut [Candidates],
    ) -> Result<Option<Lookahead>> {
        (**self).adjust_candidates(step, candidates)
    }
    fn observe(&mut self, step: &Step, tokens: &[i64]) -> Result<()> {
        (**self).observe(step, tokens)
    }
    fn retain_rows(&mut self, keep: &[usize]) -> Result<()> {
        (**self).retain_rows(keep)
    }
    fn counters(&self) -> Vec<(String, f64)> {
        (**self).counters()
    }
}
