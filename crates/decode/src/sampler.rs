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

/// The random stream of one sample, derived from (run seed, prompt id, sample index) alone, so a
/// sample's draws do not depend on batch size, batch composition or resumption.
pub struct SampleRng(ChaCha8Rng);

impl SampleRng {
    pub fn new(seed: u64, prompt_id: &str, sample_index: u64) -> Self {
        Self::for_attempt(seed, prompt_id, sample_index, 0)
    }

    /// The stream of a redraw: attempt 0 is the sample's first draw ([`SampleRng::new`]); a
    /// post-hoc filter that rejects a finished sample draws it again with attempt 1, 2, …
    pub fn for_attempt(seed: u64, prompt_id: &str, sample_index: u64, attempt: u64) -> Self {
        // Length-prefixed, so no two (id, index) pairs share an encoding.
        let mut bytes = Vec::with_capacity(32 + prompt_id.len());
        bytes.extend_from_slice(&seed.to_le_bytes());
        bytes.extend_from_slice(&(prompt_id.len() as u64).to_le_bytes());
        bytes.extend_from_slice(prompt_id.as_bytes());
        bytes.extend_from_slice(&sample_index.to_le_bytes());
        // Attempt 0 hashes exactly the bytes first draws always hashed, so seeds stay stable.
        if attempt > 0 {
            bytes.extend_from_slice(&attempt.to_le_bytes());
        }
        Self(ChaCha8Rng::seed_from_u64(paths::stable_hash(&bytes)))
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

/// Probability floor of the first pass of top-p: tokens below it are ignored unless the tokens
/// above it carry less than `p` (then the floor drops and the row is scanned again).
const FIRST_FLOOR: f32 = 1e-4;

/// The candidate set of every row of `logits` `[batch, vocab]` (float32): temperature, then
/// top-k, then top-p (Hugging Face's order). Greedy parameters give the single argmax.
///
/// Top-p is exact without sorting the vocabulary: the nucleus (the shortest most-probable prefix
/// with mass ≥ p) lies inside the set of tokens with probability ≥ some floor whenever that set's
/// mass reaches p. So only the tokens above a floor are sorted — typically tens to hundreds —
/// and the floor is lowered in the rare row where they do not carry p. The log-sum-exp over the
/// vocabulary runs in libtorch; the per-row filtering is a single comparison pass in Rust.
pub fn candidates(logits: &Tensor, params: &SamplingParams) -> Vec<Candidates> {
    let vocab = logits.size()[1] as usize;
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
    let scaled = scaled
        .to_kind(Kind::Float)
        .to_device(tch::Device::Cpu)
        .contiguous();
    let top_k = params.top_k.filter(|&k| k < vocab);
    // With top-k on, top-p normalises over the top-k set (as Hugging Face does), computed per row
    // below; otherwise over the whole row.
    let row_norms = match top_k {
        Some(_) => None,
        None => {
            Some(Vec::<f32>::try_from(scaled.logsumexp(&[-1i64][..], false)).expect("normalisers"))
        }
    };
    let flat = Vec::<f32>::try_from(scaled.view([-1])).expect("logits");
    let top_p = params.top_p.filter(|&p| p < 1.0);
    flat.chunks(vocab)
        .enumerate()
        .map(|(row, values)| match top_k {
            Some(k) => top_k_candidates(values, k, top_p),
            None => nucleus_candidates(values, row_norms.as_ref().expect("norms")[row], top_p),
        })
        .collect()
}

/// Candidates sorted by descending logit, ties by ascending id (deterministic).
fn sorted(values: &[f32], mut ids: Vec<u32>) -> Vec<(u32, f32)> {
    let mut pairs: Vec<(u32, f32)> = ids.drain(..).map(|i| (i, values[i as usize])).collect();
    pairs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    pairs
}

/// The shortest prefix of `pairs` (descending) whose mass under normaliser `log_norm` reaches
/// `p`, or `None` if the whole list falls short. A token is kept while the mass strictly above it
/// is below `p`.
fn nucleus_prefix(pairs: &[(u32, f32)], log_norm: f32, p: f64) -> Option<usize> {
    let mut above = 0.0f64;
    for (i, &(_, z)) in pairs.iter().enumerate() {
        if above >= p {
            return Some(i);
        }
        above += f64::from(z - log_norm).exp();
    }
    (above >= p).then_some(pairs.len())
}

fn into_candidates(pairs: &[(u32, f32)]) -> Candidates {
    Candidates {
        ids: pairs.iter().map(|&(i, _)| i64::from(i)).collect(),
        logits: pairs.iter().map(|&(_, z)| z).collect(),
    }
}

fn top_k_candidates(values: &[f32], k: usize, top_p: Option<f64>) -> Candidates {
    let mut ids: Vec<u32> = (0..values.len() as u32).collect();
    ids.select_nth_unstable_by(k - 1, |&a, &b| {
        values[b as usize]
            .total_cmp(&values[a as usize])
            .then(a.cmp(&b))
    });
    ids.truncate(k);
    let pairs = sorted(values, ids);
    let n = match top_p {
        None => pairs.len(),
        Some(p) => {
            let max = pairs[0].1;
            let log_norm = max
                + pairs
                    .iter()
                    .map(|&(_, z)| (z - max).exp())
                    .sum::<f32>()
                    .ln();
            nucleus_prefix(&pairs, log_norm, p).unwrap_or(pairs.len())
        }
    };
    into_candidates(&pairs[..n])
}

fn nucleus_candidates(values: &[f32], log_norm: f32, top_p: Option<f64>) -> Candidates {
    let Some(p) = top_p else {
        let all = sorted(values, (0..values.len() as u32).collect());
        return into_candidates(&all);
    };
    let mut floor = FIRST_FLOOR;
    loop {
        // Below about 1e-30 every finite logit passes: this round is the whole row.
        let cut = if floor < 1e-30 {
            f32::NEG_INFINITY
        } else {
            log_norm + floor.ln()
        };
        let above: Vec<u32> = values
            .iter()
            .enumerate()
            .filter(|(_, &z)| z >= cut)
            .map(|(i, _)| i as u32)
            .collect();
        let pairs = sorted(values, above);
        match nucleus_prefix(&pairs, log_norm, p) {
            Some(n) => return into_candidates(&pairs[..n]),
            // Rounding can leave the full row a hair under p: then the whole row is the nucleus.
            None if cut == f32::NEG_INFINITY => return into_candidates(&pairs),
            None => floor *= 1e-4,
        }
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
    fn flat_rows_lower_the_probability_floor() {
        // Every token is below the first floor (1/20000 < 1e-4): the first pass finds nothing.
        let logits = random_logits(2, 20_000, 0.05, 9);
        let rows = Vec::<Vec<f32>>::try_from(&logits).unwrap();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.9),
        };
        for (row, cand) in rows.iter().zip(candidates(&logits, &params)) {
            let mut want = reference(row, &params);
            let mut got = cand.ids.clone();
            assert!(got.len() > 17_000, "kept {}", got.len());
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want);
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
