//! The decoder loop: batched, left-padded, KV-cached generation of n samples per prompt.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use lm::{check_token_ids, left_pad, CausalLm, KvCache};
use tch::{Kind, Tensor};

use crate::sampler::{candidates, SampleRng, SamplingParams};
use crate::steer::{Lookahead, Row, Steering, Step};

/// One sample to generate: which prompt, its token ids, and which of its samples this is.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt_id: String,
    pub prompt_ids: Vec<i64>,
    pub sample_index: u64,
    /// 0 for a sample's first draw; a post-hoc filter's redraws count up from 1.
    pub attempt: u64,
}

impl Request {
    /// `n` requests (sample indices 0..n) for one prompt.
    pub fn samples(prompt_id: &str, prompt_ids: &[i64], n: u64) -> Vec<Request> {
        (0..n)
            .map(|i| Request {
                prompt_id: prompt_id.to_string(),
                prompt_ids: prompt_ids.to_vec(),
                sample_index: i,
                attempt: 0,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub max_new_tokens: usize,
    /// End-of-sequence tokens get logit −∞ for the first this-many new tokens, before any method
    /// sees the logits (Hugging Face's min-new-tokens processor), and are kept out of the draw
    /// again after every method, so every method is held to the same length floor. 0: never.
    pub min_new_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    /// Rows decoded together (samples, not prompts).
    pub batch_size: usize,
    pub stop_at_eos: bool,
}

/// Why a sample stopped: the type its generations-file line carries.
pub use records::FinishReason;

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub prompt_id: String,
    pub sample_index: u64,
    /// The request's attempt (0 unless a post-hoc filter redrew the sample).
    pub attempt: u64,
    pub token_ids: Vec<i64>,
    pub finish_reason: FinishReason,
}

/// What a call cost, for progress lines and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationStats {
    pub samples: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

impl GenerationStats {
    /// New tokens per second over the whole call (prefill included).
    pub fn tokens_per_second(&self) -> f64 {
        self.new_tokens as f64 / (self.prefill_seconds + self.decode_seconds).max(1e-12)
    }
}

/// Generates every request, `settings.batch_size` rows at a time, and hands each finished batch's
/// samples to `sink` in request order. Rows that share a prompt inside a batch share one prefill:
/// the prompt is run once and its cache row repeated.
pub fn generate(
    model: &dyn CausalLm,
    eos_token_ids: &[i64],
    requests: &[Request],
    settings: &Settings,
    sink: impl FnMut(Generation) -> Result<()>,
) -> Result<GenerationStats> {
    generate_steered(model, eos_token_ids, requests, settings, &mut [], sink)
}

/// Every generation of `requests` in one vector, in the order they finished, with `steering`
/// applied (none: plain sampling): for callers that keep everything in memory, such as tests.
pub fn generate_all(
    model: &dyn CausalLm,
    eos_token_ids: &[i64],
    requests: &[Request],
    settings: &Settings,
    steering: &mut [Box<dyn Steering + '_>],
) -> Result<Vec<Generation>> {
    let mut out = Vec::with_capacity(requests.len());
    generate_steered(model, eos_token_ids, requests, settings, steering, |g| {
        out.push(g);
        Ok(())
    })?;
    Ok(out)
}

/// [`generate`] with steering methods applied in the order given (see [`crate::steer`]).
pub fn generate_steered(
    model: &dyn CausalLm,
    eos_token_ids: &[i64],
    requests: &[Request],
    settings: &Settings,
    steering: &mut [Box<dyn Steering + '_>],
    mut sink: impl FnMut(Generation) -> Result<()>,
) -> Result<GenerationStats> {
    settings.sampling.validate()?;
    if settings.batch_size == 0 {
        bail!("batch size must be at least 1");
    }
    if settings.min_new_tokens > settings.max_new_tokens {
        bail!(
            "min_new_tokens ({}) is above max_new_tokens ({})",
            settings.min_new_tokens,
            settings.max_new_tokens
        );
    }
    let info = model.info();
    for r in requests {
        if r.prompt_ids.is_empty() {
            bail!("prompt {:?} has no tokens", r.prompt_id);
        }
        check_token_ids(&r.prompt_ids, info.vocab_size)
            .map_err(|e| anyhow::anyhow!("prompt {:?}: {e}", r.prompt_id))?;
        if let Some(max) = info.max_positions {
            let needed = (r.prompt_ids.len() + settings.max_new_tokens) as i64;
            if needed > max {
                bail!(
                    "prompt {:?}: {} prompt tokens + {} new tokens exceed the model's {max} positions",
                    r.prompt_id,
                    r.prompt_ids.len(),
                    settings.max_new_tokens
                );
            }
        }
    }
    let _no_grad = tch::no_grad_guard();
    for method in steering.iter_mut() {
        let name = method.name().to_string();
        method
            .prepare(model)
            .with_context(|| format!("steering {name}: prepare"))?;
    }
    let mut stats = GenerationStats::default();
    for chunk in requests.chunks(settings.batch_size) {
        for generation in
            generate_batch(model, eos_token_ids, chunk, settings, steering, &mut stats)?
        {
            sink(generation)?;
        }
    }
    Ok(stats)
}

/// The prompts of a batch run through a model, each distinct prompt once.
pub struct Prefill {
    /// One row per distinct prompt, left-padded.
    pub cache: KvCache,
    /// Final-norm hidden state of each distinct prompt's last token, `[distinct, hidden]`.
    pub hidden: Tensor,
    /// For each input row, its distinct prompt's row in `cache` and `hidden` (int64, on the
    /// model's device): select these to get one row per input row.
    pub rows: Tensor,
    /// Tokens run (the distinct prompts' lengths summed).
    pub tokens: usize,
}

/// Runs each distinct prompt of `prompts` once (samples of one prompt share a prefill). The
/// decoder loop does this for the model; a steering method with a model of its own (RAD's reward
/// model) does the same for its cache.
pub fn prefill(model: &dyn CausalLm, prompts: &[&[i64]]) -> Prefill {
    let mut distinct: Vec<&[i64]> = Vec::new();
    let mut row_to_prompt: Vec<i64> = Vec::with_capacity(prompts.len());
    for &prompt in prompts {
        let slot = match distinct.iter().position(|p| *p == prompt) {
            Some(slot) => slot,
            None => {
                distinct.push(prompt);
                distinct.len() - 1
            }
        };
        row_to_prompt.push(slot as i64);
    }
    let device = model.info().device;
    let (ids, mask) = left_pad(&distinct, device);
    let mut cache = model.new_cache();
    let hidden = model.forward_hidden(&ids, &mask, &mut cache);
    Prefill {
        cache,
        hidden: hidden.select(1, -1),
        rows: Tensor::from_slice(&row_to_prompt).to_device(device),
        tokens: distinct.iter().map(|p| p.len()).sum(),
    }
}

fn generate_batch(
    model: &dyn CausalLm,
    eos_token_ids: &[i64],
    rows: &[Request],
    settings: &Settings,
    steering: &mut [Box<dyn Steering + '_>],
    stats: &mut GenerationStats,
) -> Result<Vec<Generation>> {
    let started = Instant::now();

    let prompts: Vec<&[i64]> = rows.iter().map(|r| r.prompt_ids.as_slice()).collect();
    let prefill = prefill(model, &prompts);
    let mut cache = prefill.cache;
    cache.select_rows(&prefill.rows);
    let mut hidden = prefill.hidden.index_select(0, &prefill.rows);
    stats.prompt_tokens += prefill.tokens;
    stats.prefill_seconds += started.elapsed().as_secs_f64();

    let started = Instant::now();
    let row_refs: Vec<&Request> = rows.iter().collect();
    for method in steering.iter_mut() {
        let name = method.name().to_string();
        method
            .begin(&row_refs)
            .with_context(|| format!("steering {name}: begin"))?;
    }
    let mut rngs: Vec<SampleRng> = rows
        .iter()
        .map(|r| SampleRng::for_attempt(settings.seed, &r.prompt_id, r.sample_index, r.attempt))
        .collect();
    let mut outputs: Vec<Vec<i64>> = vec![Vec::with_capacity(settings.max_new_tokens); rows.len()];
    let mut finish = vec![FinishReason::Length; rows.len()];
    // Rows still decoding, as indices into `rows`; row i of the cache and of `hidden` is active[i].
    let mut active: Vec<usize> = (0..rows.len()).collect();
    for step_index in 0..settings.max_new_tokens {
        let mut logits = model.logits(&hidden);
        let too_short = step_index < settings.min_new_tokens;
        if too_short {
            suppress_eos(&mut logits, eos_token_ids);
        }
        let step_rows: Vec<Row> = active
            .iter()
            .map(|&r| Row {
                request: &rows[r],
                generated: &outputs[r],
            })
            .collect();
        let step = Step {
            model,
            cache: &cache,
            hidden: &hidden,
            rows: &step_rows,
            index: step_index,
            sampling: &settings.sampling,
            lookahead: None,
        };
        let no_eos = if too_short { eos_token_ids } else { &[] };
        let drawn = steer_and_draw(&step, steering, &mut logits, &active, &mut rngs, no_eos)?;
        let tokens = drawn.tokens;
        drop(step_rows);
        let mut next = Vec::with_capacity(active.len());
        let mut keep = Vec::with_capacity(active.len());
        for (slot, (&row, &token)) in active.iter().zip(&tokens).enumerate() {
            if settings.stop_at_eos && eos_token_ids.contains(&token) {
                finish[row] = FinishReason::Eos;
            } else {
                outputs[row].push(token);
                next.push(token);
                keep.push(slot);
            }
        }
        if step_index + 1 == settings.max_new_tokens || keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            for method in steering.iter_mut() {
                method
                    .retain_rows(&keep)
                    .with_context(|| format!("steering {}: retain rows", method.name()))?;
            }
        }
        (cache, hidden) = advance(model, cache, drawn.lookahead, &keep, active.len(), &next)?;
        if keep.len() < active.len() {
            active = keep.iter().map(|&slot| active[slot]).collect();
        }
    }
    stats.decode_seconds += started.elapsed().as_secs_f64();
    stats.samples += rows.len();
    stats.new_tokens += outputs.iter().map(Vec::len).sum::<usize>();

    Ok(rows
        .iter()
        .zip(outputs)
        .zip(finish)
        .map(|((r, token_ids), finish_reason)| Generation {
            prompt_id: r.prompt_id.clone(),
            sample_index: r.sample_index,
            attempt: r.attempt,
            token_ids,
            finish_reason,
        })
        .collect())
}

/// Sets the end-of-sequence tokens' logits to −∞ in every row.
fn suppress_eos(logits: &mut Tensor, eos_token_ids: &[i64]) {
    let vocab = logits.size()[1];
    let ids: Vec<i64> = eos_token_ids
        .iter()
        .copied()
        .filter(|&id| (0..vocab).contains(&id))
        .collect();
    if ids.is_empty() {
        return;
    }
    let index = Tensor::from_slice(&ids).to_device(logits.device());
    let _ = logits.index_fill_(1, &index, f64::NEG_INFINITY);
}

/// What one step drew.
struct Drawn {
    /// One token per active row.
    tokens: Vec<i64>,
    /// The lookahead a method produced this step, with the lookahead row of each row's drawn
    /// token (`None`: a drawn token lies past what it covers).
    lookahead: Option<(Lookahead, Option<Vec<i64>>)>,
}

/// `step` with the lookahead produced so far this step: a fresh, shorter borrow for each hook.
fn with_lookahead<'a>(step: &Step<'a>, lookahead: Option<&'a Lookahead>) -> Step<'a> {
    Step { lookahead, ..*step }
}

/// One step of the steering methods around the draw: every method adjusts the full logits, the
/// sampler truncates them to candidates, every method adjusts the candidates (one may run the
/// model on them all: the lookahead), each active row draws from its own stream, and every
/// method observes the drawn tokens. `no_eos`: ids that may not be drawn this step (the
/// min-new-tokens rule, enforced again after every method, whatever a method did to them).
fn steer_and_draw(
    step: &Step<'_>,
    steering: &mut [Box<dyn Steering + '_>],
    logits: &mut Tensor,
    active: &[usize],
    rngs: &mut [SampleRng],
    no_eos: &[i64],
) -> Result<Drawn> {
    for method in steering.iter_mut() {
        method
            .adjust_logits(step, logits)
            .with_context(|| format!("steering {}: adjust logits", method.name()))?;
    }
    let mut cands = candidates(logits, step.sampling);
    let mut lookahead: Option<Lookahead> = None;
    for method in steering.iter_mut() {
        let produced = method
            .adjust_candidates(&with_lookahead(step, lookahead.as_ref()), &mut cands)
            .with_context(|| format!("steering {}: adjust candidates", method.name()))?;
        if let Some(produced) = produced {
            if lookahead.is_some() {
                bail!(
                    "steering {}: a lookahead was already produced this step",
                    method.name()
                );
            }
            produced
                .check(&cands)
                .with_context(|| format!("steering {}", method.name()))?;
            lookahead = Some(produced);
        }
    }
    if !no_eos.is_empty() {
        for cand in &mut cands {
            for (id, z) in cand.ids.iter().zip(cand.logits.iter_mut()) {
                if no_eos.contains(id) {
                    *z = f32::NEG_INFINITY;
                }
            }
            if !cand.logits.iter().any(|z| z.is_finite()) {
                bail!(
                    "step {}: a steering method left only end-of-sequence candidates before \
                     min_new_tokens",
                    step.index
                );
            }
        }
    }
    let tokens: Vec<i64> = active
        .iter()
        .zip(&cands)
        .map(|(&row, cand)| cand.draw(&mut rngs[row]))
        .collect();
    for method in steering.iter_mut() {
        method
            .observe(&with_lookahead(step, lookahead.as_ref()), &tokens)
            .with_context(|| format!("steering {}: observe", method.name()))?;
    }
    let lookahead = match lookahead {
        // Where each drawn token sits among the lookahead's candidate rows.
        Some(ahead) => {
            let rows = ahead.rows_of(&tokens, &cands)?;
            Some((ahead, rows))
        }
        None => None,
    };
    Ok(Drawn { tokens, lookahead })
}

/// The cache and last hidden states of the rows that go on (`keep`, slots among `active_rows`),
/// after they took the `next` tokens: the drawn candidates' rows of a lookahead that covers them,
/// else one forward pass on the drawn tokens.
fn advance(
    model: &dyn CausalLm,
    mut cache: KvCache,
    lookahead: Option<(Lookahead, Option<Vec<i64>>)>,
    keep: &[usize],
    active_rows: usize,
    next: &[i64],
) -> Result<(KvCache, Tensor)> {
    let device = model.info().device;
    if let Some((ahead, Some(picked))) = lookahead {
        // The model already ran on every candidate: take the drawn ones' rows.
        let chosen: Vec<i64> = keep.iter().map(|&slot| picked[slot]).collect();
        let chosen = Tensor::from_slice(&chosen).to_device(device);
        let mut cache = ahead.cache;
        cache.select_rows(&chosen);
        return Ok((cache, ahead.hidden.index_select(0, &chosen)));
    }
    if keep.len() < active_rows {
        let keep_index: Vec<i64> = keep.iter().map(|&s| s as i64).collect();
        cache.select_rows(&Tensor::from_slice(&keep_index).to_device(device));
    }
    let input = Tensor::from_slice(next).view([-1, 1]).to_device(device);
    let hidden = model
        .forward_hidden(&input, &input.ones_like().to_kind(Kind::Int64), &mut cache)
        .select(1, -1);
    Ok((cache, hidden))
}
