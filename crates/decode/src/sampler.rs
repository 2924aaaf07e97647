//! Seeded sampling, apart from any steering: logits → candidate set (temperature, top-k, top-p)
//! → one draw per row from that row's own random stream.
//!
//! The candidate set is exposed on purpose: steering methods (SASA, RAD) re-weight exactly the
//! tokens that survive truncation before the draw.

use anyhow::{bail, Result};
use rand::RngExt;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// How the next token is chosen. `temperature == 0` means greedy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
}

impl Default for SamplingParams {
    /// The toxicity papers' protocol: nucleus sampling, top-p 0.9, temperature 1.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.9),
        }
    }
}

impl SamplingParams {
    pub const GREEDY: Self = Self {
        temperature: 0.0,
        top_k: None,
        top_p: None,
    };

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            );
        }
        if self.top_k == Some(0) {
            bail!("top_k must be at least 1");
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                bail!("top_p must be in (0, 1], got {p}");
            }
        }
        Ok(())
    }
}

/// FNV-1a, 64 bit: stable across Rust versions and platforms (std's hashers promise neither), so
/// seeds and fingerprints written to disk stay valid.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The random stream of one sample, derived from (run seed, prompt id, sample index) alone, so a
/// sample's draws do not depend on batch size, batch composition or resumption.
pub struct SampleRng(ChaCha8Rng);

impl SampleRng {
    pub fn new(seed: u64, prompt_id: &str, sample_index: u64) -> Self {
        // Length-prefixed, so no two (id, index) pairs share an encoding.
        let mut bytes = Vec::with_capacity(24 + prompt_id.len());
        bytes.extend_from_slice(&seed.to_le_bytes());
        bytes.extend_from_slice(&(prompt_id.len() as u64).to_le_bytes());
        bytes.extend_from_slice(prompt_id.as_bytes());
        bytes.extend_from_slice(&sample_index.to_le_bytes());
        Self(ChaCha8Rng::seed_from_u64(stable_hash(&bytes)))
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.0.random::<f64>()
    }
}

/// One row's truncated next-token distribution: token ids in descending logit order with their
/// (temperature-scaled, possibly steered) logits.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    pub ids: Vec<i64>,
    pub logits: Vec<f32>,
}

impl Candidates {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Draws one token with probability ∝ exp(logit) over the candidates.
    pub fn draw(&self, rng: &mut SampleRng) -> i64 {
        let max = self
            .logits
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = self
            .logits
            .iter()
            .map(|&z| f64::from(z - max).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut threshold = rng.uniform() * total;
        for (id, w) in self.ids.iter().zip(&weights) {
            threshold -= w;
            if threshold < 0.0 {
                return *id;
            }
        }
        // Rounding left a sliver past the last weight: the last candidate with weight takes it.
        let last = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
        self.ids[last]
    }
}

/// First guess at how many tokens top-p needs; doubled for rows whose mass is not yet covered.
const INITIAL_TOP_P_WIDTH: i64 = 64;

/// The candidate set of every row of `logits` `[batch, vocab]` (float32): temperature, then
/// top-k, then top-p (Hugging Face's order). Greedy parameters give the single argmax.
///
/// Top-p is exact without sorting the vocabulary: take the `k` largest logits, normalise with the
/// log-sum-exp of the whole row (or of the top-k set when top-k is on, as Hugging Face does), and
/// if their mass has not reached `p`, double `k` and repeat for those rows.
pub fn candidates(logits: &Tensor, params: &SamplingParams) -> Vec<Candidates> {
    let (batch, vocab) = (logits.size()[0], logits.size()[1]);
    if params.is_greedy() {
        let (values, ids) = logits.topk(1, -1, true, true);
        let values =
            Vec::<f32>::try_from(values.view([-1]).to_device(tch::Device::Cpu)).expect("values");
        let ids = Vec::<i64>::try_from(ids.view([-1]).to_device(tch::Device::Cpu)).expect("ids");
        return ids
            .into_iter()
            .zip(values)
            .map(|(id, z)| Candidates {
                ids: vec![id],
                logits: vec![z],
            })
            .collect();
    }
    let scaled = if params.temperature == 1.0 {
        logits.shallow_clone()
    } else {
        logits / params.temperature
    };
    let top_k = params.top_k.map(|k| (k as i64).min(vocab));
    // Normaliser of the distribution top-p sees.
    let limit = top_k.unwrap_or(vocab);
    let nucleus = params.top_p.is_some_and(|p| p < 1.0);
    let mut width = if nucleus {
        INITIAL_TOP_P_WIDTH.min(limit)
    } else {
        limit
    };
    let norm = match top_k {
        Some(k) => scaled
            .topk(k, -1, true, true)
            .0
            .logsumexp(&[-1i64][..], false),
        None => scaled.logsumexp(&[-1i64][..], false),
    };
    let norm = Vec::<f32>::try_from(norm.to_device(tch::Device::Cpu)).expect("normalisers");
    let mut rows: Vec<Option<Candidates>> = vec![None; batch as usize];
    let mut pending: Vec<i64> = (0..batch).collect();
    while !pending.is_empty() {
        let index = Tensor::from_slice(&pending).to_device(logits.device());
        let (values, ids) = scaled.index_select(0, &index).topk(width, -1, true, true);
        let values = Vec::<Vec<f32>>::try_from(values.to_device(tch::Device::Cpu)).expect("values");
        let ids = Vec::<Vec<i64>>::try_from(ids.to_device(tch::Device::Cpu)).expect("ids");
        let mut still = Vec::new();
        for ((&row, values), ids) in pending.iter().zip(values).zip(ids) {
            match keep_count(&values, norm[row as usize], params.top_p, width == limit) {
                Some(n) => {
                    rows[row as usize] = Some(Candidates {
                        ids: ids[..n].to_vec(),
                        logits: values[..n].to_vec(),
                    })
                }
                None => still.push(row),
            }
        }
        pending = still;
        width = (width * 2).min(limit);
    }
    rows.into_iter()
        .map(|r| r.expect("every row resolved"))
        .collect()
}

/// How many of the descending `values` survive top-p, or `None` if the mass seen so far is below
/// `p` and more tokens are needed (only possible when `complete` is false). A token is kept when
/// the mass strictly above it is below `p` — the smallest prefix whose mass reaches `p`.
fn keep_count(values: &[f32], log_norm: f32, top_p: Option<f64>, complete: bool) -> Option<usize> {
    let Some(p) = top_p.filter(|&p| p < 1.0) else {
        // Without top-p the whole top-k set (or vocabulary) is kept; the caller asked for it all.
        return complete.then_some(values.len());
    };
    let mut above = 0.0f64;
    for (i, &v) in values.iter().enumerate() {
        if above >= p {
            return Some(i.max(1));
        }
        above += f64::from(v - log_norm).exp();
    }
    if complete || above >= p {
        Some(values.len())
    } else {
        None
    }
}

/// Draws one token per row. `rngs[i]` belongs to row `i`.
pub fn draw_all(candidates: &[Candidates], rngs: &mut [SampleRng]) -> Vec<i64> {
    candidates
        .iter()
        .zip(rngs.iter_mut())
        .map(|(c, rng)| c.draw(rng))
        .collect()
}

/// Log-probabilities of `logits` `[.., vocab]` in float32 (for perplexity and diagnostics).
pub fn log_softmax(logits: &Tensor) -> Tensor {
    logits.log_softmax(-1, Kind::Float)
}
