//! RAD as a [`Steering`] method. Each step, per row: the top-k of the loop's candidates by logit
//! are scored by the reward model on the row's text followed by the candidate, their logits get
//! β·(1 − clamp(r, 0, 1)), and every other candidate is removed (−∞). The rewards are used as they
//! come (no min-max normalisation over the candidates: RAD's own code has none).
//!
//! **Candidates.** The loop has already truncated the logits with the spec's top-k/top-p, and a
//! method can only lower logits, so RAD's top-k is taken *within* that set: with top-p 1 (and no
//! top-k) it is RAD's protocol exactly; with top-p 0.9 a row whose nucleus is smaller than k is
//! scored on its nucleus only. Stacked after another candidate method, the top-k is by the
//! logits as that method left them, among those still drawable.
//!
//! **Cached path** (reward model with the LM's vocabulary): the reward model keeps its own KV
//! cache. `begin` runs each distinct prompt once; each step forks the cache row of every row's
//! current text to its k candidate rows, runs the one new token on each, and reads the head; the
//! drawn candidate's forked row is the row's next state, so a step costs one forward of k
//! one-token rows per row and one k-fold copy of their history (plus a copy of the drawn rows).
//!
//! **Re-tokenizing path** (another vocabulary): each candidate's text — the LM tokenizer's decoding
//! of prompt, generated tokens and candidate — is encoded by the reward tokenizer and scored from
//! scratch. Correct for any pair of tokenizers, and slow (every step reruns every candidate's
//! whole text).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use decode::{Candidates, Lookahead, Request, Steering, Step};
use lm::{CausalLm, KvCache, TextTokenizer};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::reward::RewardModel;

/// RAD's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadParams {
    /// Strength β ≥ 0.
    pub beta: f64,
    /// Candidates scored per row; the rest are removed. 20 in RAD's experiments.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn default_top_k() -> usize {
    20
}

impl RadParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            bail!("rad: beta must be a finite number >= 0, got {}", self.beta);
        }
        if self.top_k == 0 {
            bail!("rad: top_k must be at least 1");
        }
        Ok(())
    }
}

/// How candidates reach the reward model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardPath {
    /// Same vocabulary: the LM's token ids go straight to the reward model's cached rows.
    Cached,
    /// Another vocabulary: decode, re-encode, score each candidate's whole text from scratch.
    Retokenize,
}

/// What RAD did and what it cost, summed since the last [`Rad::take_stats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RadStats {
    pub steps: usize,
    /// Active rows summed over steps.
    pub row_steps: usize,
    /// Candidates scored by the reward model: RAD's cost.
    pub candidate_rows: usize,
    pub max_candidate_rows: usize,
    /// Tokens the re-tokenizing path ran (0 on the cached path, whose runs are one token per
    /// candidate row).
    pub retokenized_tokens: usize,
    /// Drawable candidates past the top-k, removed.
    pub removed_candidates: usize,
    /// Sum and number of the drawn candidates' rewards.
    pub drawn_reward_sum: f64,
    pub drawn_rewards: usize,
    /// Wall seconds in the reward model's prefills …
    pub prefill_seconds: f64,
    /// … choosing candidates and forking its cache (or re-tokenizing) …
    pub fork_seconds: f64,
    /// … in its forward over the candidate rows …
    pub forward_seconds: f64,
    /// … and in the head, the copy to the CPU and the re-weighting. On CUDA the forward runs
    /// asynchronously and its time shows up here.
    pub reward_seconds: f64,
}

impl RadStats {
    /// Mean reward (toxicity estimate) of the drawn candidates.
    pub fn mean_drawn_reward(&self) -> Option<f64> {
        (self.drawn_rewards > 0).then(|| self.drawn_reward_sum / self.drawn_rewards as f64)
    }

    pub fn mean_candidates(&self) -> f64 {
        self.candidate_rows as f64 / self.row_steps.max(1) as f64
    }
}

/// One row's scored candidates at one step, as [`Rad::with_reward_log`] records them.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardLogRow {
    pub prompt_id: String,
    pub sample_index: u64,
    /// The LM's tokens: prompt, then what was generated before this step.
    pub context: Vec<i64>,
    /// The scored candidates (the top-k by logit, highest first).
    pub ids: Vec<i64>,
    /// Their rewards, as used for the re-weighting.
    pub rewards: Vec<f32>,
    pub drawn: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RewardLogStep {
    /// 0 for the first new token.
    pub index: usize,
    pub rows: Vec<RewardLogRow>,
}

/// The reward model's cache and which of its rows holds each active row's text.
struct RewardState {
    cache: KvCache,
    /// Cache row of each active row (rows of finished samples, and after `begin` the samples of
    /// one prompt sharing its row, are resolved here: a fork copies only the rows it names).
    rows: Vec<i64>,
}

/// This step's scored candidates, for `observe`.
struct Scored {
    /// Per row: candidate ids and rewards.
    rows: Vec<(Vec<i64>, Vec<f32>)>,
    /// Cached path: the forked cache (one row per scored candidate, row i's at
    /// offsets[i]..offsets[i + 1]) after the candidates ran.
    fork: Option<(KvCache, Vec<usize>)>,
}

/// The RAD steering method.
pub struct Rad {
    reward: RewardModel,
    /// The decoding LM's tokenizer: compared with the reward model's, and used to decode
    /// candidates on the re-tokenizing path.
    lm_tokenizer: TextTokenizer,
    params: RadParams,
    same_vocabulary: bool,
    path: Option<RewardPath>,
    state: Option<RewardState>,
    scored: Option<Scored>,
    stats: RadStats,
    log: Option<Vec<RewardLogStep>>,
}

impl Rad {
    /// RAD with `reward` for an LM whose tokenizer is `lm_tokenizer`.
    pub fn new(
        reward: RewardModel,
        lm_tokenizer: &TextTokenizer,
        params: RadParams,
    ) -> Result<Self> {
        params.validate()?;
        // Same token ↔ id map: the LM's ids mean the same tokens to the reward model.
        let same_vocabulary =
            lm_tokenizer.inner().get_vocab(true) == reward.tokenizer().inner().get_vocab(true);
        Ok(Self {
            reward,
            lm_tokenizer: lm_tokenizer.clone(),
            params,
            same_vocabulary,
            path: None,
            state: None,
            scored: None,
            stats: RadStats::default(),
            log: None,
        })
    }

    /// Also records every step's candidates and rewards (tests, diagnostics).
    pub fn with_reward_log(mut self) -> Self {
        self.log = Some(Vec::new());
        self
    }

    pub fn params(&self) -> &RadParams {
        &self.params
    }

    pub fn reward_model(&self) -> &RewardModel {
        &self.reward
    }

    /// The path `prepare` chose (`None` before it ran).
    pub fn path(&self) -> Option<RewardPath> {
        self.path
    }

    pub fn stats(&self) -> &RadStats {
        &self.stats
    }

    pub fn take_stats(&mut self) -> RadStats {
        std::mem::take(&mut self.stats)
    }

    pub fn reward_log(&self) -> &[RewardLogStep] {
        self.log.as_deref().unwrap_or(&[])
    }

    /// Indices of the candidates RAD scores: the `top_k` highest finite logits, highest first
    /// (ties: earlier candidate first).
    fn top_k(&self, cand: &Candidates) -> Vec<usize> {
        let mut live: Vec<usize> = (0..cand.len())
            .filter(|&j| cand.logits[j].is_finite())
            .collect();
        live.sort_by(|&a, &b| cand.logits[b].total_cmp(&cand.logits[a]).then(a.cmp(&b)));
        live.truncate(self.params.top_k);
        live
    }

    /// Cached path: forks each row's cache row to its candidates and runs them. Returns the
    /// rewards in candidate-row order and the fork.
    fn score_cached(&mut self, ids: &[i64], parents: &[i64]) -> Result<(Vec<f32>, KvCache)> {
        let state = self.state.as_ref().context("begin was not called")?;
        let started = Instant::now();
        let device = self.reward.model().info().device;
        let mut fork = state
            .cache
            .fork_rows(&Tensor::from_slice(parents).to_device(device));
        let input = Tensor::from_slice(ids).view([-1, 1]).to_device(device);
        let forked = Instant::now();
        let hidden = self
            .reward
            .model()
            .forward_hidden(&input, &input.ones_like(), &mut fork)
            .select(1, 0);
        let forwarded = Instant::now();
        let rewards = Vec::<f32>::try_from(self.reward.rewards(&hidden).to_device(Device::Cpu))
            .context("copying the rewards to the CPU")?;
        self.stats.fork_seconds += (forked - started).as_secs_f64();
        self.stats.forward_seconds += (forwarded - forked).as_secs_f64();
        self.stats.reward_seconds += forwarded.elapsed().as_secs_f64();
        Ok((rewards, fork))
    }

    /// Re-tokenizing path: every candidate's whole text, encoded by the reward tokenizer.
    fn score_retokenized(
        &mut self,
        contexts: &[Vec<i64>],
        ids: &[i64],
        parents: &[i64],
    ) -> Result<Vec<f32>> {
        let started = Instant::now();
        let mut sequences = Vec::with_capacity(ids.len());
        for (&id, &parent) in ids.iter().zip(parents) {
            let mut lm_ids = contexts[parent as usize].clone();
            lm_ids.push(id);
            let text = self.lm_tokenizer.decode(&lm_ids)?;
            let encoded = self.reward.tokenizer().encode(&text)?;
            if encoded.is_empty() {
                bail!("candidate text {text:?} has no tokens under the reward tokenizer");
            }
            sequences.push(encoded);
        }
        let forked = Instant::now();
        self.stats.retokenized_tokens += sequences.iter().map(Vec::len).sum::<usize>();
        let rows: Vec<&[i64]> = sequences.iter().map(Vec::as_slice).collect();
        let rewards = self.reward.score_sequences(&rows)?;
        self.stats.fork_seconds += (forked - started).as_secs_f64();
        self.stats.forward_seconds += forked.elapsed().as_secs_f64();
        Ok(rewards)
    }
}

impl Steering for Rad {
    fn name(&self) -> &str {
        "rad"
    }

    fn prepare(&mut self, model: &dyn CausalLm) -> Result<()> {
        let lm = model.info();
        let reward = self.reward.model().info();
        if lm.device != reward.device {
            bail!(
                "the reward model is on {:?} but the LM on {:?}",
                reward.device,
                lm.device
            );
        }
        // The cached path feeds the LM's ids to the reward model, so every LM id must exist there.
        self.path = Some(
            if self.same_vocabulary && reward.vocab_size >= lm.vocab_size {
                RewardPath::Cached
            } else {
                RewardPath::Retokenize
            },
        );
        Ok(())
    }

    fn begin(&mut self, rows: &[&Request]) -> Result<()> {
        self.scored = None;
        self.state = None;
        if self.path != Some(RewardPath::Cached) {
            return Ok(());
        }
        let started = Instant::now();
        let prompts: Vec<&[i64]> = rows.iter().map(|r| r.prompt_ids.as_slice()).collect();
        let prefill = decode::prefill(self.reward.model(), &prompts);
        self.state = Some(RewardState {
            cache: prefill.cache,
            rows: Vec::<i64>::try_from(prefill.rows.to_device(Device::Cpu))?,
        });
        self.stats.prefill_seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn adjust_candidates(
        &mut self,
        step: &Step,
        candidates: &mut [Candidates],
    ) -> Result<Option<Lookahead>> {
        let path = self.path.context("prepare was not called")?;
        // Scored candidate rows: row i's at offsets[i]..offsets[i + 1], highest logit first.
        let mut chosen = Vec::with_capacity(candidates.len());
        let mut offsets = vec![0];
        let (mut ids, mut parents) = (Vec::new(), Vec::new());
        for (row, cand) in candidates.iter().enumerate() {
            let top = self.top_k(cand);
            if top.is_empty() {
                bail!("row {row}: every candidate was removed before RAD");
            }
            let parent = match (&self.state, path) {
                (Some(state), RewardPath::Cached) => state.rows[row],
                _ => row as i64,
            };
            for &j in &top {
                ids.push(cand.ids[j]);
                parents.push(parent);
            }
            self.stats.removed_candidates +=
                cand.logits.iter().filter(|z| z.is_finite()).count() - top.len();
            offsets.push(ids.len());
            chosen.push(top);
        }
        let (rewards, fork) = match path {
            RewardPath::Cached => {
                let (rewards, fork) = self.score_cached(&ids, &parents)?;
                (rewards, Some((fork, offsets.clone())))
            }
            RewardPath::Retokenize => {
                let contexts: Vec<Vec<i64>> = step
                    .rows
                    .iter()
                    .map(|r| [r.request.prompt_ids.as_slice(), r.generated].concat())
                    .collect();
                (self.score_retokenized(&contexts, &ids, &parents)?, None)
            }
        };
        if let Some(bad) = rewards.iter().find(|r| !r.is_finite()) {
            bail!("the reward model gave a non-finite reward ({bad})");
        }
        let started = Instant::now();
        let beta = self.params.beta;
        let mut scored_rows = Vec::with_capacity(candidates.len());
        for ((cand, top), span) in candidates.iter_mut().zip(&chosen).zip(offsets.windows(2)) {
            let row_rewards = &rewards[span[0]..span[1]];
            let mut adjusted = vec![f32::NEG_INFINITY; cand.len()];
            for (&j, &r) in top.iter().zip(row_rewards) {
                // β·(1 − clamp(r, 0, 1)): r estimates toxicity, so the bonus favours low r.
                let bonus = beta * (1.0 - f64::from(r).clamp(0.0, 1.0));
                adjusted[j] = (f64::from(cand.logits[j]) + bonus) as f32;
            }
            cand.logits = adjusted;
            let ids: Vec<i64> = top.iter().map(|&j| cand.ids[j]).collect();
            scored_rows.push((ids, row_rewards.to_vec()));
        }
        if let Some(log) = &mut self.log {
            log.push(RewardLogStep {
                index: step.index,
                rows: step
                    .rows
                    .iter()
                    .zip(&scored_rows)
                    .map(|(row, (ids, rewards))| RewardLogRow {
                        prompt_id: row.request.prompt_id.clone(),
                        sample_index: row.request.sample_index,
                        context: [row.request.prompt_ids.as_slice(), row.generated].concat(),
                        ids: ids.clone(),
                        rewards: rewards.clone(),
                        drawn: None,
                    })
                    .collect(),
            });
        }
        self.scored = Some(Scored {
            rows: scored_rows,
            fork,
        });
        self.stats.steps += 1;
        self.stats.row_steps += candidates.len();
        self.stats.candidate_rows += ids.len();
        self.stats.max_candidate_rows = self.stats.max_candidate_rows.max(ids.len());
        self.stats.reward_seconds += started.elapsed().as_secs_f64();
        // The forward ran the reward model, not the LM: nothing the loop could reuse.
        Ok(None)
    }

    fn observe(&mut self, _step: &Step, tokens: &[i64]) -> Result<()> {
        let scored = self
            .scored
            .take()
            .context("observe before adjust_candidates")?;
        if tokens.len() != scored.rows.len() {
            bail!(
                "observed {} tokens for {} rows",
                tokens.len(),
                scored.rows.len()
            );
        }
        let mut next_rows = Vec::with_capacity(tokens.len());
        for (row, (&token, (ids, rewards))) in tokens.iter().zip(&scored.rows).enumerate() {
            let j = ids.iter().position(|&id| id == token).with_context(|| {
                format!(
                    "row {row}: drawn token {token} is not one RAD scored (a later method \
                     cannot bring back a removed candidate)"
                )
            })?;
            self.stats.drawn_reward_sum += f64::from(rewards[j]);
            self.stats.drawn_rewards += 1;
            if let Some((_, offsets)) = &scored.fork {
                next_rows.push((offsets[row] + j) as i64);
            }
        }
        if let Some((mut cache, _)) = scored.fork {
            // The drawn candidates' forked rows hold each row's text so far: the next state.
            // Keeping only them (a copy of one row per row) frees the k-fold fork before the
            // next step forks again, so two k-fold caches never coexist.
            let device = self.reward.model().info().device;
            cache.select_rows(&Tensor::from_slice(&next_rows).to_device(device));
            self.state = Some(RewardState {
                cache,
                rows: (0..next_rows.len() as i64).collect(),
            });
        }
        if let Some(step) = self.log.as_mut().and_then(|log| log.last_mut()) {
            for (row, &token) in step.rows.iter_mut().zip(tokens) {
                row.drawn = Some(token);
            }
        }
        Ok(())
    }

    fn counters(&self) -> Vec<(String, f64)> {
        let s = &self.stats;
        [
            ("row_steps", s.row_steps as f64),
            ("candidate_rows", s.candidate_rows as f64),
            ("removed_candidates", s.removed_candidates as f64),
            ("retokenized_tokens", s.retokenized_tokens as f64),
            ("drawn_reward_sum", s.drawn_reward_sum),
            ("drawn_rewards", s.drawn_rewards as f64),
            ("prefill_seconds", s.prefill_seconds),
            ("fork_seconds", s.fork_seconds),
            ("forward_seconds", s.forward_seconds),
            ("reward_seconds", s.reward_seconds),
        ]
        .into_iter()
        .map(|(name, value)| (format!("rad_{name}"), value))
        .collect()
    }

    fn retain_rows(&mut self, keep: &[usize]) -> Result<()> {
        if let Some(state) = &mut self.state {
            state.rows = keep.iter().map(|&k| state.rows[k]).collect();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_and_validate() {
        let p: RadParams = serde_json::from_str(r#"{"beta": 10}"#).unwrap();
        assert_eq!(p.top_k, 20);
        let p: RadParams = serde_json::from_str(r#"{"beta": 50, "top_k": 5}"#).unwrap();
        assert_eq!(p.top_k, 5);
        assert!(serde_json::from_str::<RadParams>(r#"{"beta": 1, "k": 2}"#).is_err());
        for (beta, top_k) in [(-1.0, 20), (f64::NAN, 20), (f64::INFINITY, 20), (1.0, 0)] {
            assert!(
                RadParams { beta, top_k }.validate().is_err(),
                "{beta} {top_k}"
            );
        }
    }
}
