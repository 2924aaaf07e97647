//! Post-hoc word filtering: a finished sample whose text contains a listed word is rejected and
//! drawn again (`Request::attempt` 1, 2, …, each with its own seeded stream), up to a cap.
//!
//! Rejected samples are redrawn in batches: the samples a batch rejects go, together, into the
//! next batch, which is topped up with fresh requests so every batch stays full. A sample is
//! handed to the sink when it is final (clean, or still matching after the cap), so samples
//! arrive in batch order, not request order; each is keyed by (prompt id, sample index) as always.

use anyhow::{Context, Result};
use decode::{
    generate_steered, Candidates, Generation, GenerationStats, Lookahead, Request, Settings,
    Steering, Step,
};
use lm::{CausalLm, TextTokenizer};
use tch::Tensor;

use crate::matcher::WordMatcher;

/// Rejects samples that contain a listed word.
pub struct PosthocFilter {
    pub matcher: WordMatcher,
    /// Redraws allowed per sample; after that the last draw is kept and flagged.
    pub max_retries: u64,
}

/// One final sample.
#[derive(Debug, Clone, PartialEq)]
pub struct PosthocSample {
    /// The kept draw (`generation.attempt` is the number of redraws it took).
    pub generation: Generation,
    /// Its decoded text, as checked.
    pub text: String,
    /// Redraws this sample took: 0 when its first draw was clean.
    pub redraws: u64,
    /// The entry the kept draw still contains after `max_retries` redraws, if any.
    pub still_matched: Option<String>,
}

/// Counts over one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PosthocTotals {
    pub samples: usize,
    /// Samples whose first draw contained a listed word.
    pub rejected_first_draws: usize,
    /// Redraws over all samples.
    pub redraws: u64,
    /// Samples kept with a listed word because the cap was reached.
    pub still_matched: usize,
    /// Generation cost over all draws, redraws included.
    pub generation: GenerationStats,
}

/// [`decode::generate_steered`] with post-hoc rejection: every request yields one final sample
/// (through `sink`). `steering` (e.g. a decode-time [`crate::WordFilter`], SASA) applies to
/// every draw, redraws included; each method is prepared once. Texts are decoded with
/// `tokenizer` and checked without the prompt, as the continuation is what gets scored.
#[allow(clippy::too_many_arguments)]
pub fn generate_posthoc(
    model: &dyn CausalLm,
    eos_token_ids: &[i64],
    requests: &[Request],
    settings: &Settings,
    steering: &mut [Box<dyn Steering + '_>],
    filter: &PosthocFilter,
    tokenizer: &TextTokenizer,
    mut sink: impl FnMut(PosthocSample) -> Result<()>,
) -> Result<PosthocTotals> {
    anyhow::ensure!(settings.batch_size > 0, "batch size must be at least 1");
    {
        let _no_grad = tch::no_grad_guard();
        for method in steering.iter_mut() {
            let name = method.name().to_string();
            method
                .prepare(model)
                .with_context(|| format!("steering {name}: prepare"))?;
        }
    }
    let mut totals = PosthocTotals::default();
    let mut fresh = requests.iter();
    let mut redraws: Vec<Request> = Vec::new();
    loop {
        // Redraws first, so a rejected sample is final soon; fresh requests fill the rest.
        let take = redraws.len().min(settings.batch_size);
        let mut batch: Vec<Request> = redraws.drain(..take).collect();
        batch.extend(
            fresh
                .by_ref()
                .take(settings.batch_size - batch.len())
                .cloned(),
        );
        if batch.is_empty() {
            break;
        }
        let mut generations = Vec::with_capacity(batch.len());
        let stats = {
            let mut prepared: Vec<Box<dyn Steering + '_>> = steering
                .iter_mut()
                .map(|method| Box::new(AlreadyPrepared(method.as_mut())) as Box<dyn Steering>)
                .collect();
            generate_steered(model, eos_token_ids, &batch, settings, &mut prepared, |g| {
                generations.push(g);
                Ok(())
            })?
        };
        add_stats(&mut totals.generation, &stats);
        anyhow::ensure!(
            generations.len() == batch.len(),
            "the decoder returned {} samples for a batch of {}",
            generations.len(),
            batch.len()
        );
        for (request, generation) in batch.into_iter().zip(generations) {
            let text = tokenizer.decode(&generation.token_ids).with_context(|| {
                format!(
                    "prompt {:?}, sample {}",
                    generation.prompt_id, generation.sample_index
                )
            })?;
            let matched = filter
                .matcher
                .contains_listed_word(&text)
                .map(str::to_string);
            if matched.is_some() && request.attempt == 0 {
                totals.rejected_first_draws += 1;
            }
            if matched.is_some() && request.attempt < filter.max_retries {
                totals.redraws += 1;
                redraws.push(Request {
                    attempt: request.attempt + 1,
                    ..request
                });
                continue;
            }
            totals.samples += 1;
            if matched.is_some() {
                totals.still_matched += 1;
            }
            sink(PosthocSample {
                redraws: generation.attempt,
                generation,
                text,
                still_matched: matched,
            })?;
        }
    }
    Ok(totals)
}

fn add_stats(total: &mut GenerationStats, more: &GenerationStats) {
    total.samples += more.samples;
    total.prompt_tokens += more.prompt_tokens;
    total.new_tokens += more.new_tokens;
    total.prefill_seconds += more.prefill_seconds;
    total.decode_seconds += more.decode_seconds;
}

/// A method [`generate_posthoc`] already prepared: every hook but `prepare` passes through, so
/// the per-batch calls of the decoder loop do not prepare it again (a method may fit or load
/// something there).
struct AlreadyPrepared<'a, 'b>(&'a mut (dyn Steering + 'b));

impl Steering for AlreadyPrepared<'_, '_> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn prepare(&mut self, _model: &dyn CausalLm) -> Result<()> {
        Ok(())
    }
    fn begin(&mut self, rows: &[&Request]) -> Result<()> {
        self.0.begin(rows)
    }
    fn adjust_logits(&mut self, step: &Step, logits: &mut Tensor) -> Result<()> {
        self.0.adjust_logits(step, logits)
    }
    fn adjust_candidates(
        &mut self,
        step: &Step,
        candidates: &mut [Candidates],
    ) -> Result<Option<Lookahead>> {
        self.0.adjust_candidates(step, candidates)
    }
    fn observe(&mut self, step: &Step, tokens: &[i64]) -> Result<()> {
        self.0.observe(step, tokens)
    }
    fn retain_rows(&mut self, keep: &[usize]) -> Result<()> {
        self.0.retain_rows(keep)
    }
}
