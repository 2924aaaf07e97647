//! `detox generate`: sample continuations and append them to a JSONL file. A rerun with the same
//! settings skips the (prompt id, sample index) pairs already written, so a killed run resumes.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use decode::{FinishReason, Generation, GenerationStats, Request, SamplingParams, Settings};
use serde::{Deserialize, Serialize};

use crate::jsonl;
use crate::methods::{Decoding, Method};
use crate::ModelArgs;
use data::prompts::user::{self, UserOptions};
use data::Prompt;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A prompt (repeatable).
    #[arg(long, conflicts_with = "prompts")]
    pub prompt: Vec<String>,
    /// Prompt file: plain text, one prompt per line (ids `line-N`), or .jsonl with "text" and
    /// optional "id" and "group" (BOLD-style groups are kept in the output for per-group metrics).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Samples per prompt.
    #[arg(long, default_value_t = 1)]
    pub n: u64,
    #[arg(long, default_value_t = 20)]
    pub max_new_tokens: usize,
    /// Nucleus mass; 1 disables top-p.
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sample rows decoded together.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Keep generating after an end-of-sequence token (up to --max-new-tokens).
    #[arg(long)]
    pub ignore_eos: bool,
    /// JSONL output; appended to, and samples already in it are skipped.
    #[arg(long)]
    pub out: PathBuf,
}

/// One line of the output file.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    prompt_id: String,
    sample_index: u64,
    prompt: String,
    text: String,
    token_ids: Vec<i64>,
    finish_reason: FinishReason,
    /// Fingerprint of model and decoding settings; a file holds one setting only.
    settings: String,
    /// The prompt's group (BOLD) or category (AttaQ), when its source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// Post-hoc word filtering: redraws this sample took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redraws: Option<u64>,
    /// Post-hoc word filtering: the listed word the kept draw still contains after the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    still_matched: Option<String>,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let prompts: Vec<Prompt> = match &args.prompts {
        Some(path) => user::load(&UserOptions::new(path))?.prompts,
        // Command-line prompts are numbered `arg-1`, `arg-2`, … in the order given.
        None if !args.prompt.is_empty() => args
            .prompt
            .iter()
            .enumerate()
            .map(|(i, text)| Prompt::new(format!("arg-{}", i + 1), text.clone(), "command line"))
            .collect(),
        None => bail!("give prompts with --prompt TEXT or --prompts FILE"),
    };
    run_prompts(args, &prompts, &Method::none())?;
    Ok(())
}

/// What one `run_prompts` call generated.
pub struct GenerateOutcome {
    pub stats: GenerationStats,
    /// Post-hoc filtering's counts (redraws, samples rejected at their first draw, samples still
    /// matching at the cap), when the method filters post hoc.
    pub posthoc: Option<filter::PosthocTotals>,
    /// The steering methods' own totals ([`decode::Steering::counters`]).
    pub counters: Vec<(String, f64)>,
}

/// Generates `args.n` samples of each prompt (any source) into `args.out` with `method`,
/// resuming it. Returns what this call generated (`None`: everything was already there).
pub fn run_prompts(
    args: &GenerateArgs,
    prompts: &[Prompt],
    method: &Method,
) -> Result<Option<GenerateOutcome>> {
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: (args.top_p < 1.0).then_some(args.top_p),
    };
    sampling.validate()?;
    let settings = Settings {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: args.seed,
        batch_size: args.batch_size,
        stop_at_eos: !args.ignore_eos,
    };
    // A fine-tuned variant decodes with its own checkpoint.
    let weights = method.weights();
    let model_dir = weights.clone().unwrap_or_else(|| args.model.model_dir());
    let fingerprint = settings_fingerprint(&model_dir, &settings, method);
    let done = read_finished(&args.out, &fingerprint)?;

    let loaded = match &weights {
        Some(dir) => args.model.load_dir(dir)?,
        None => args.model.load()?,
    };
    let mut requests = Vec::new();
    let mut by_id = std::collections::HashMap::new();
    for prompt in prompts {
        let (id, text) = (&prompt.id, &prompt.text);
        let ids = loaded.tokenizer.encode(text)?;
        by_id.insert(id.clone(), prompt);
        requests.extend(
            Request::samples(id, &ids, args.n)
                .into_iter()
                .filter(|r| !done.contains(&(r.prompt_id.clone(), r.sample_index))),
        );
    }
    let total = prompts.len() as u64 * args.n;
    if requests.is_empty() {
        note!(
            "{}: all {total} samples already present",
            args.out.display()
        );
        return Ok(None);
    }
    let Decoding {
        mut steering,
        posthoc,
    } = method.decoding(&loaded)?;
    let mut file = jsonl::open_append(&args.out)?;

    let progress = crate::progress::bar(
        total,
        "generating [{bar:30}] {pos}/{len} samples, {msg}, eta {eta}",
    );
    progress.set_position(total - requests.len() as u64);
    let started = std::time::Instant::now();
    let mut new_tokens = 0usize;
    // One write per line, flushed: a killed run leaves whole lines (a torn last line is detected
    // and dropped on resume).
    let mut write = |g: Generation, text: String, redraws, still_matched| -> Result<()> {
        new_tokens += g.token_ids.len();
        let record = Record {
            text,
            prompt: by_id[&g.prompt_id].text.clone(),
            group: by_id[&g.prompt_id].group.clone(),
            prompt_id: g.prompt_id,
            sample_index: g.sample_index,
            token_ids: g.token_ids,
            finish_reason: g.finish_reason,
            settings: fingerprint.clone(),
            redraws,
            still_matched,
        };
        let mut line = serde_json::to_string(&record)?;
        line.push('\n');
        file.write_all(line.as_bytes())
            .with_context(|| format!("{}: write failed", args.out.display()))?;
        progress.inc(1);
        progress.set_message(format!(
            "{:.1} tok/s",
            new_tokens as f64 / started.elapsed().as_secs_f64()
        ));
        Ok(())
    };
    let mut posthoc_totals = None;
    let stats = match &posthoc {
        None => decode::generate_steered(
            loaded.model.as_ref(),
            &loaded.eos_token_ids,
            &requests,
            &settings,
            &mut steering,
            |g| {
                let text = loaded.tokenizer.decode(&g.token_ids)?;
                write(g, text, None, None)
            },
        )?,
        Some(filter) => {
            let totals = filter::generate_posthoc(
                loaded.model.as_ref(),
                &loaded.eos_token_ids,
                &requests,
                &settings,
                &mut steering,
                filter,
                &loaded.tokenizer,
                |s| write(s.generation, s.text, Some(s.redraws), s.still_matched),
            )?;
            let stats = totals.generation.clone();
            posthoc_totals = Some(totals);
            stats
        }
    };
    progress.finish_and_clear();
    note!(
        "{}: {} samples, {} new tokens in {:.1}s ({:.1} tok/s; prefill {:.1}s)",
        args.out.display(),
        stats.samples,
        stats.new_tokens,
        stats.prefill_seconds + stats.decode_seconds,
        stats.tokens_per_second(),
        stats.prefill_seconds
    );
    if let Some(t) = &posthoc_totals {
        note!(
            "post-hoc word filter: {} of {} samples rejected at their first draw, {} redraws, {} still contain a listed word after the cap",
            t.rejected_first_draws,
            t.samples,
            t.redraws,
            t.still_matched
        );
    }
    let counters = steering.iter().flat_map(|s| s.counters()).collect();
    Ok(Some(GenerateOutcome {
        stats,
        posthoc: posthoc_totals,
        counters,
    }))
}

fn settings_fingerprint(model_dir: &Path, settings: &Settings, method: &Method) -> String {
    let model = std::fs::canonicalize(model_dir).unwrap_or_else(|_| model_dir.to_path_buf());
    let mut description = format!(
        "{}|{}|{:?}|{}|{}",
        model.display(),
        settings.max_new_tokens,
        settings.sampling,
        settings.seed,
        settings.stop_at_eos
    );
    // Plain sampling adds nothing, so files written before methods existed still resume.
    if let Some(identity) = method.identity() {
        description.push('|');
        description.push_str(&identity);
    }
    format!("{:016x}", paths::stable_hash(description.as_bytes()))
}

/// (prompt id, sample index) pairs already in `path` (a torn last line is cut off, see
/// [`jsonl::read_resumable`]); a record written with other settings is an error.
fn read_finished(path: &Path, fingerprint: &str) -> Result<HashSet<(String, u64)>> {
    let mut done = HashSet::new();
    jsonl::read_resumable(path, "generation record", |_, record: Record| {
        if record.settings != fingerprint {
            bail!(
                "written with other model or decoding settings ({} vs {fingerprint}); use another --out",
                record.settings
            );
        }
        done.insert((record.prompt_id, record.sample_index));
        Ok(())
    })?;
    Ok(done)
}
