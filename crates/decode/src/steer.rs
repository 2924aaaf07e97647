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
    /// The model's cache, holding every token fed so far (prompt and generated). Fork it with
    /// [`KvCache::deep_clone`] or copy rows with `select_rows` on a clone; never change it.
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

/// The model already run on every candidate of every row: the loop takes the drawn candidate's
/// row from here instead of running the model on the drawn token.
pub struct Lookahead {
    /// One row per candidate, row `i`'s candidates at `offsets[i]..offsets[i + 1]` in candidate
    /// order, each holding the row's tokens followed by that candidate.
    pub cache: KvCache,
    /// Final-norm hidden state at each candidate, `[total candidates, hidden]`.
    pub hidden: Tensor,
    /// `rows + 1` offsets into the candidate rows.
    pub offsets: Vec<usize>,
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
}
