//! A second language model that reads along with the decoder loop: fed each row's prompt, then
//! every drawn token, on its own KV cache. Fusion methods (calibration-model fusion, DExperts)
//! read their extra hidden states or logits from one, so each sees the whole context at every
//! step — not just the newest token, as the calibration-fusion release does.

use anyhow::{bail, Context, Result};
use lm::{CausalLm, KvCache};
use tch::Tensor;

use crate::generate::{prefill, Request};

pub struct Follower {
    cache: KvCache,
    /// Final-norm hidden state after each active row's last token, `[rows, hidden]`.
    hidden: Tensor,
}

impl Follower {
    /// Runs each distinct prompt once and gives every row its prompt's cache row.
    pub fn begin(model: &dyn CausalLm, prompts: &[&[i64]]) -> Result<Self> {
        if prompts.iter().any(|p| p.is_empty()) {
            bail!("a prompt with no tokens");
        }
        let _no_grad = tch::no_grad_guard();
        let mut prefilled = prefill(model, prompts);
        prefilled.cache.select_rows(&prefilled.rows);
        Ok(Self {
            hidden: prefilled.hidden.index_select(0, &prefilled.rows),
            cache: prefilled.cache,
        })
    }

    /// Final-norm hidden state after each active row's text so far, `[rows, hidden]`.
    pub fn hidden(&self) -> &Tensor {
        &self.hidden
    }

    /// Appends one drawn token per active row.
    pub fn advance(&mut self, model: &dyn CausalLm, tokens: &[i64]) -> Result<()> {
        let rows = self.hidden.size()[0];
        if tokens.len() as i64 != rows {
            bail!("{} tokens for {rows} rows", tokens.len());
        }
        lm::check_token_ids(tokens, model.info().vocab_size)?;
        let _no_grad = tch::no_grad_guard();
        let device = model.info().device;
        let ids = Tensor::from_slice(tokens).view([rows, 1]).to_device(device);
        let hidden = model.forward_hidden(&ids, &ids.ones_like(), &mut self.cache);
        self.hidden = hidden.select(1, -1);
        Ok(())
    }

    /// Keeps the rows `keep` (indices into the active rows, ascending).
    pub fn retain(&mut self, keep: &[usize]) {
        let index: Vec<i64> = keep.iter().map(|&i| i as i64).collect();
        let index = Tensor::from_slice(&index).to_device(self.hidden.device());
        self.cache.select_rows(&index);
        self.hidden = self.hidden.index_select(0, &index);
    }
}

/// What every steering method with an extra model keeps across batches: the [`Follower`] of the
/// current batch (none before the first) and the seconds spent keeping it up to date.
#[derive(Default)]
pub struct ReadAlong {
    follower: Option<Follower>,
    seconds: f64,
}

impl ReadAlong {
    /// A new batch: `model` reads every row's prompt.
    pub fn begin(&mut self, model: &dyn CausalLm, rows: &[&Request]) -> Result<()> {
        let started = std::time::Instant::now();
        let prompts: Vec<&[i64]> = rows.iter().map(|r| r.prompt_ids.as_slice()).collect();
        self.follower = Some(Follower::begin(model, &prompts)?);
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// The extra model's final-norm hidden state after each active row's text so far.
    pub fn hidden(&self) -> Result<&Tensor> {
        Ok(self
            .follower
            .as_ref()
            .context("begin was not called")?
            .hidden())
    }

    /// Appends one drawn token per active row.
    pub fn advance(&mut self, model: &dyn CausalLm, tokens: &[i64]) -> Result<()> {
        let started = std::time::Instant::now();
        self.follower
            .as_mut()
            .context("begin was not called")?
            .advance(model, tokens)?;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Keeps the rows `keep` (indices into the active rows, ascending).
    pub fn retain(&mut self, keep: &[usize]) {
        if let Some(follower) = &mut self.follower {
            follower.retain(keep);
        }
    }

    /// Seconds spent in `begin` and `advance` so far.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }
}
