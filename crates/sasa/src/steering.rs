//! SASA as a [`Steering`] method: every step, each row's candidates are run through the model
//! on forks of the row's cache — one batched forward of one-token rows, ragged across rows — and
//! each candidate's exact next hidden state is scored with the subspace's margin. Then
//! z'_v = z_v + β·transform(m)_v, and the loop takes the drawn candidate's row as its next
//! state, so a step costs one forward over all candidates instead of one over the rows.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use decode::{Candidates, Lookahead, Request, Steering, Step};
use lm::CausalLm;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::subspace::Subspace;

/// How a row's candidate margins become the bonus added (times β) to their logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarginTransform {
    /// softmax over the row's candidates: p'(v) ∝ p(v)·exp(β·π(v)), π the softmax of the
    /// margins (the paper's closed form; the bonus is in [0, 1] whatever the margins' scale).
    #[default]
    Softmax,
    /// The margin itself: p'(v) ∝ p(v)·exp(β·m(v)); β then carries the margins' unit.
    Raw,
}

impl FromStr for MarginTransform {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "softmax" => Ok(Self::Softmax),
            "raw" => Ok(Self::Raw),
            other => bail!("unknown margin transform {other:?} (expected softmax or raw)"),
        }
    }
}

impl fmt::Display for MarginTransform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Softmax => "softmax",
            Self::Raw => "raw",
        })
    }
}

/// SASA's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SasaParams {
    /// Strength β ≥ 0. At 0 nothing is run and every logit is left as the sampler made it, so
    /// the draws are the base sampler's, bit for bit.
    pub beta: f64,
    #[serde(default)]
    pub margin_transform: MarginTransform,
    /// Run the model on at most this many candidates per row: the first ones, i.e. the most
    /// likely under the base model. The others stay drawable with their logits unchanged (the
    /// semantics of AISteer360's cap), so the candidate set is the sampler's at every β. `None`:
    /// every candidate top-k/top-p left, as the published method.
    #[serde(default)]
    pub max_candidates: Option<usize>,
    /// Whether end-of-sequence candidates take part in the bonus (the published method: yes,
    /// EOS is a candidate like any other). With `false` they keep their logits and the softmax
    /// runs over the other candidates, so the bonus cannot favour stopping.
    #[serde(default = "eos_bonus_default")]
    pub eos_bonus: bool,
}

fn eos_bonus_default() -> bool {
    true
}

impl SasaParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            bail!("sasa: beta must be a finite number >= 0, got {}", self.beta);
        }
        if self.max_candidates == Some(0) {
            bail!("sasa: max_candidates must be at least 1");
        }
        Ok(())
    }
}

/// What SASA did and what it cost, summed over the steps since the last
/// [`Sasa::take_stats`] (or since it was made).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SasaStats {
    /// Decoding steps.
    pub steps: usize,
    /// Active rows summed over steps (one new token each).
    pub row_steps: usize,
    /// One-token rows run through the model on forked caches: the cost of SASA.
    pub candidate_rows: usize,
    /// The most candidate rows of one step (the forked cache's size follows it).
    pub max_candidate_rows: usize,
    /// Candidates past `max_candidates`, not run (drawable, logits unchanged).
    pub capped_candidates: usize,
    /// Steps on which some row drew a candidate that was not run (only possible with a cap):
    /// the loop then ran the model on the drawn tokens as well.
    pub uncovered_steps: usize,
    /// Rows that drew an end-of-sequence token (at steps where the candidates were run).
    pub eos_draws: usize,
    /// Sum and number of the drawn tokens' margins (a drawn candidate that was run).
    pub drawn_margin_sum: f64,
    pub drawn_margins: usize,
    /// Wall seconds building the candidate rows and forking the cache …
    pub fork_seconds: f64,
    /// … in the forward over the candidate rows …
    pub forward_seconds: f64,
    /// … and computing margins (one matmul, one copy to the CPU) and re-weighting. On CUDA the
    /// forward runs asynchronously and its time shows up here, where the margins are copied.
    pub margin_seconds: f64,
}

impl SasaStats {
    /// Mean margin of the drawn tokens' states (positive: the non-toxic side).
    pub fn mean_drawn_margin(&self) -> Option<f64> {
        (self.drawn_margins > 0).then(|| self.drawn_margin_sum / self.drawn_margins as f64)
    }

    /// Candidate rows per row-step.
    pub fn mean_candidates(&self) -> f64 {
        self.candidate_rows as f64 / self.row_steps.max(1) as f64
    }
}

/// One row's scored candidates at one step, as [`Sasa::with_margin_log`] records them.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRow {
    pub prompt_id: String,
    pub sample_index: u64,
    /// The prompt's tokens followed by the tokens generated before this step.
    pub context: Vec<i64>,
    /// The candidates that were run, in candidate order.
    pub ids: Vec<i64>,
    /// Their margins, as used for the re-weighting.
    pub margins: Vec<f32>,
    /// The token drawn at this step.
    pub drawn: Option<i64>,
}

/// One step of the margin log.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedStep {
    /// 0 for the first new token.
    pub index: usize,
    pub rows: Vec<LoggedRow>,
}

/// The SASA steering method.
pub struct Sasa {
    subspace: Subspace,
    params: SasaParams,
    /// w as float32 on the model's device (set by `prepare`).
    w: Option<Tensor>,
    /// b as float32 on the model's device.
    b: Option<Tensor>,
    /// This step's run candidates per row (ids and margins), for `observe`.
    current: Vec<(Vec<i64>, Vec<f32>)>,
    stats: SasaStats,
    log: Option<Vec<LoggedStep>>,
    /// The model's end-of-sequence ids (for `eos_bonus: false` and the EOS-draw counter).
    eos_ids: Vec<i64>,
}

impl Sasa {
    pub fn new(subspace: Subspace, params: SasaParams) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            subspace,
            params,
            w: None,
            b: None,
            current: Vec::new(),
            stats: SasaStats::default(),
            log: None,
            eos_ids: Vec::new(),
        })
    }

    /// The model's end-of-sequence ids: kept out of the bonus when `eos_bonus` is false, and
    /// counted when drawn.
    pub fn with_eos_ids(mut self, ids: &[i64]) -> Self {
        self.eos_ids = ids.to_vec();
        self
    }

    /// Reads the subspace at `subspace_path`, checks that it was fitted on the checkpoint in
    /// `model_dir`, and makes the method.
    pub fn load(subspace_path: &Path, model_dir: &Path, params: SasaParams) -> Result<Self> {
        Self::new(Subspace::load_for_model(subspace_path, model_dir)?, params)
    }

    /// Also records every step's candidates and margins (diagnostics and tests; it grows with
    /// rows × steps × candidates). At β = 0 the candidates are then run for the log alone: the
    /// loop still takes its next state from its own forward, so the draws stay the base
    /// sampler's.
    pub fn with_margin_log(mut self) -> Self {
        self.log = Some(Vec::new());
        self
    }

    pub fn params(&self) -> &SasaParams {
        &self.params
    }

    pub fn subspace(&self) -> &Subspace {
        &self.subspace
    }

    pub fn stats(&self) -> &SasaStats {
        &self.stats
    }

    /// The counters so far, resetting them.
    pub fn take_stats(&mut self) -> SasaStats {
        std::mem::take(&mut self.stats)
    }

    /// The steps logged so far (empty unless [`Sasa::with_margin_log`]).
    pub fn margin_log(&self) -> &[LoggedStep] {
        self.log.as_deref().unwrap_or(&[])
    }

    /// The bonus of each of one row's run candidates before β: the transform of their margins
    /// over the candidates still drawable (finite logit) that take part (0 for the others).
    fn bonus(&self, ids: &[i64], margins: &[f32], logits: &[f32]) -> Vec<f64> {
        let excluded = |j: usize| !self.params.eos_bonus && self.eos_ids.contains(&ids[j]);
        match self.params.margin_transform {
            MarginTransform::Raw => (0..margins.len())
                .map(|j| {
                    if excluded(j) {
                        0.0
                    } else {
                        f64::from(margins[j])
                    }
                })
                .collect(),
            MarginTransform::Softmax => {
                let live = |j: usize| logits[j].is_finite() && !excluded(j);
                let max = (0..margins.len())
                    .filter(|&j| live(j))
                    .map(|j| f64::from(margins[j]))
                    .fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = (0..margins.len())
                    .map(|j| {
                        if live(j) {
                            (f64::from(margins[j]) - max).exp()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let total: f64 = weights.iter().sum();
                if total == 0.0 {
                    return vec![0.0; margins.len()];
                }
                weights.iter().map(|w| w / total).collect()
            }
        }
    }
}

impl Steering for Sasa {
    fn name(&self) -> &str {
        "sasa"
    }

    fn prepare(&mut self, model: &dyn CausalLm) -> Result<()> {
        let info = model.info();
        self.subspace.check_model(info)?;
        self.w = Some(Tensor::from_slice(&self.subspace.w).to_device(info.device));
        self.b = Some(Tensor::from_slice(&self.subspace.b).to_device(info.device));
        Ok(())
    }

    fn begin(&mut self, _rows: &[&Request]) -> Result<()> {
        self.current.clear();
        Ok(())
    }

    fn adjust_candidates(
        &mut self,
        step: &Step,
        candidates: &mut [Candidates],
    ) -> Result<Option<Lookahead>> {
        if step.lookahead.is_some() {
            bail!(
                "an earlier method already ran the model on the candidates this step; two \
                 lookahead methods cannot be stacked"
            );
        }
        let (w, b) = match (&self.w, &self.b) {
            (Some(w), Some(b)) => (w, b),
            _ => bail!("prepare was not called"),
        };
        let beta = self.params.beta;
        self.current.clear();
        if beta == 0.0 && self.log.is_none() {
            // The base sampler exactly: nothing to run, nothing changed.
            self.stats.steps += 1;
            self.stats.row_steps += candidates.len();
            return Ok(None);
        }
        let started = Instant::now();
        let cap = self.params.max_candidates.unwrap_or(usize::MAX);
        // Candidate rows: row i's first n_i candidates at offsets[i]..offsets[i + 1].
        let mut offsets = Vec::with_capacity(candidates.len() + 1);
        offsets.push(0);
        let mut parents: Vec<i64> = Vec::new();
        let mut ids: Vec<i64> = Vec::new();
        for (row, cand) in candidates.iter().enumerate() {
            let run = cand.len().min(cap);
            parents.extend(std::iter::repeat_n(row as i64, run));
            ids.extend_from_slice(&cand.ids[..run]);
            offsets.push(ids.len());
            self.stats.capped_candidates += cand.len() - run;
        }
        let device = step.model.info().device;
        let mut cache = step
            .cache
            .fork_rows(&Tensor::from_slice(&parents).to_device(device));
        let forked = Instant::now();

        let input = Tensor::from_slice(&ids).view([-1, 1]).to_device(device);
        let hidden = step
            .model
            .forward_hidden(&input, &input.ones_like(), &mut cache)
            .select(1, 0);
        let forwarded = Instant::now();

        let margins = (hidden.to_kind(Kind::Float) - b).matmul(w);
        let margins = Vec::<f32>::try_from(margins.to_device(Device::Cpu))
            .context("copying the margins to the CPU")?;
        for (row, cand) in candidates.iter_mut().enumerate() {
            let (start, end) = (offsets[row], offsets[row + 1]);
            let run = end - start;
            let row_margins = &margins[start..end];
            if beta > 0.0 {
                let bonus = self.bonus(&cand.ids[..run], row_margins, &cand.logits[..run]);
                for (z, bonus) in cand.logits[..run].iter_mut().zip(bonus) {
                    if z.is_finite() {
                        *z = (f64::from(*z) + beta * bonus) as f32;
                    }
                }
                // Candidates past the cap keep their logits: drawable, unscored.
            }
            self.current
                .push((cand.ids[..run].to_vec(), row_margins.to_vec()));
        }
        if let Some(log) = &mut self.log {
            log.push(LoggedStep {
                index: step.index,
                rows: step
                    .rows
                    .iter()
                    .zip(&self.current)
                    .map(|(row, (ids, margins))| LoggedRow {
                        prompt_id: row.request.prompt_id.clone(),
                        sample_index: row.request.sample_index,
                        context: row
                            .request
                            .prompt_ids
                            .iter()
                            .chain(row.generated)
                            .copied()
                            .collect(),
                        ids: ids.clone(),
                        margins: margins.clone(),
                        drawn: None,
                    })
                    .collect(),
            });
        }
        let done = Instant::now();

        self.stats.steps += 1;
        self.stats.row_steps += candidates.len();
        self.stats.candidate_rows += ids.len();
        self.stats.max_candidate_rows = self.stats.max_candidate_rows.max(ids.len());
        self.stats.fork_seconds += (forked - started).as_secs_f64();
        self.stats.forward_seconds += (forwarded - forked).as_secs_f64();
        self.stats.margin_seconds += (done - forwarded).as_secs_f64();
        if beta == 0.0 {
            // Run for the margin log only: the loop's own forward gives the next state, so the
            // next step's batch shape (and its float rounding) is the base sampler's.
            return Ok(None);
        }
        Ok(Some(Lookahead {
            cache,
            hidden,
            offsets,
        }))
    }

    fn counters(&self) -> Vec<(String, f64)> {
        let s = &self.stats;
        [
            ("row_steps", s.row_steps as f64),
            ("candidate_rows", s.candidate_rows as f64),
            ("capped_candidates", s.capped_candidates as f64),
            ("uncovered_steps", s.uncovered_steps as f64),
            ("eos_draws", s.eos_draws as f64),
            ("drawn_margin_sum", s.drawn_margin_sum),
            ("drawn_margins", s.drawn_margins as f64),
            ("fork_seconds", s.fork_seconds),
            ("forward_seconds", s.forward_seconds),
            ("margin_seconds", s.margin_seconds),
        ]
        .into_iter()
        .map(|(name, value)| (format!("sasa_{name}"), value))
        .collect()
    }

    fn observe(&mut self, _step: &Step, tokens: &[i64]) -> Result<()> {
        if self.current.is_empty() {
            // β = 0 without a log: nothing was run this step.
            return Ok(());
        }
        if tokens.len() != self.current.len() {
            bail!(
                "observed {} tokens for {} rows",
                tokens.len(),
                self.current.len()
            );
        }
        let mut uncovered = false;
        for (&token, (ids, margins)) in tokens.iter().zip(&self.current) {
            self.stats.eos_draws += usize::from(self.eos_ids.contains(&token));
            match ids.iter().position(|&id| id == token) {
                Some(j) => {
                    self.stats.drawn_margin_sum += f64::from(margins[j]);
                    self.stats.drawn_margins += 1;
                }
                None => uncovered = true,
            }
        }
        self.stats.uncovered_steps += usize::from(uncovered);
        if let Some(step) = self.log.as_mut().and_then(|log| log.last_mut()) {
            for (row, &token) in step.rows.iter_mut().zip(tokens) {
                row.drawn = Some(token);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_and_validate() {
        let p: SasaParams = serde_json::from_str(r#"{"beta": 10}"#).unwrap();
        assert_eq!(p.margin_transform, MarginTransform::Softmax);
        assert_eq!(p.max_candidates, None);
        let p: SasaParams = serde_json::from_str(
            r#"{"beta": 2.5, "margin_transform": "raw", "max_candidates": 20}"#,
        )
        .unwrap();
        assert_eq!(p.margin_transform, MarginTransform::Raw);
        assert_eq!(p.max_candidates, Some(20));
        assert!(serde_json::from_str::<SasaParams>(r#"{"beta": 1, "strength": 2}"#).is_err());
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let p = SasaParams {
                beta: bad,
                margin_transform: MarginTransform::Softmax,
                max_candidates: None,
                eos_bonus: true,
            };
            assert!(p.validate().is_err(), "beta {bad}");
        }
        assert!("Softmax".parse::<MarginTransform>().is_err());
        assert_eq!("raw".parse::<MarginTransform>().unwrap().to_string(), "raw");
    }
}
