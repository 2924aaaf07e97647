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

#[cfg(test)]
mod tests {
    use super::*;

    /// Hugging Face's top-k → top-p filter by sorting the whole row: the reference the fast path
    /// must reproduce exactly (same ids, same order).
    fn reference(row: &[f32], params: &SamplingParams) -> Vec<i64> {
        // Scaled in f32 like the tensor path, so both see the same values.
        let scaled: Vec<f64> = row
            .iter()
            .map(|&z| f64::from(z / params.temperature as f32))
            .collect();
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| scaled[b].partial_cmp(&scaled[a]).unwrap());
        if let Some(k) = params.top_k {
            order.truncate(k);
        }
        let max = scaled[order[0]];
        let total: f64 = order.iter().map(|&i| (scaled[i] - max).exp()).sum();
        let p = params.top_p.unwrap_or(1.0);
        let mut above = 0.0;
        let mut kept = Vec::new();
        for &i in &order {
            if above >= p {
                break;
            }
            kept.push(i as i64);
            above += (scaled[i] - max).exp() / total;
        }
        kept
    }

    fn random_logits(batch: i64, vocab: i64, spread: f64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([batch, vocab], (Kind::Float, tch::Device::Cpu)) * spread
    }

    #[test]
    fn fast_top_p_equals_full_sort() {
        // Flat rows need many doublings of the window; peaked rows need one.
        for (spread, seed) in [(0.3, 1), (1.0, 2), (4.0, 3), (12.0, 4)] {
            let logits = random_logits(6, 3000, spread, seed);
            let rows = Vec::<Vec<f32>>::try_from(&logits).unwrap();
            for params in [
                SamplingParams {
                    temperature: 1.0,
                    top_k: None,
                    top_p: Some(0.9),
                },
                SamplingParams {
                    temperature: 0.7,
                    top_k: None,
                    top_p: Some(0.5),
                },
                SamplingParams {
                    temperature: 1.3,
                    top_k: Some(40),
                    top_p: Some(0.95),
                },
                SamplingParams {
                    temperature: 1.0,
                    top_k: Some(200),
                    top_p: None,
                },
                SamplingParams {
                    temperature: 1.0,
                    top_k: Some(5000),
                    top_p: Some(0.99),
                },
            ] {
                let fast = candidates(&logits, &params);
                for (row, cand) in rows.iter().zip(&fast) {
                    // Same set; the order of exactly tied logits may differ from a stable sort.
                    let mut got = cand.ids.clone();
                    let mut want = reference(row, &params);
                    got.sort_unstable();
                    want.sort_unstable();
                    assert_eq!(got, want, "spread {spread}, {params:?}");
                    assert!(
                        cand.logits.windows(2).all(|w| w[0] >= w[1]),
                        "descending order"
                    );
                    for (&id, &z) in cand.ids.iter().zip(&cand.logits) {
                        let expected = row[id as usize] / params.temperature as f32;
                        assert!((z - expected).abs() < 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn greedy_and_no_truncation() {
        let logits = Tensor::from_slice(&[0.1f32, 3.0, -1.0, 2.9, 0.0, 0.5]).view([2, 3]);
        let greedy = candidates(&logits, &SamplingParams::GREEDY);
        assert_eq!(greedy[0].ids, vec![1]);
        assert_eq!(greedy[1].ids, vec![0]);
        let all = candidates(
            &logits,
            &SamplingParams {
                temperature: 1.0,
                top_k: None,
                top_p: None,
            },
        );
        assert_eq!(all[0].ids, vec![1, 0, 2]);
        assert_eq!(all[1].ids, vec![0, 2, 1]);
    }

    #[test]
    fn draws_follow_the_distribution_and_streams_are_independent() {
        let cand = Candidates {
            ids: vec![7, 8, 9],
            logits: vec![0.0, (2.0f32).ln(), (5.0f32).ln()],
        };
        let mut rng = SampleRng::new(42, "p", 0);
        let mut counts = [0usize; 3];
        let n = 40_000;
        for _ in 0..n {
            counts[(cand.draw(&mut rng) - 7) as usize] += 1;
        }
        for (count, p) in counts.iter().zip([0.125, 0.25, 0.625]) {
            let share = *count as f64 / n as f64;
            assert!((share - p).abs() < 0.01, "share {share} vs {p}");
        }
        let seq = |seed, id: &str, idx| {
            let mut r = SampleRng::new(seed, id, idx);
            (0..4).map(|_| r.uniform()).collect::<Vec<_>>()
        };
        assert_eq!(seq(1, "a", 0), seq(1, "a", 0));
        assert_ne!(seq(1, "a", 0), seq(1, "a", 1));
        assert_ne!(seq(1, "a", 0), seq(2, "a", 0));
        // Length-prefixing keeps ("a1", 0) and ("a", 10)-like pairs apart.
        assert_ne!(seq(1, "a1", 0), seq(1, "a", 1));
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(SamplingParams {
            temperature: -1.0,
            top_k: None,
            top_p: None
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            temperature: 1.0,
            top_k: Some(0),
            top_p: None
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: Some(1.5)
        }
        .validate()
        .is_err());
        assert!(SamplingParams::default().validate().is_ok());
    }
}
