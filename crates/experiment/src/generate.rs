//! The generate stage: sample continuations of prompts with a method and append them to a
//! generations file. A rerun with the same settings skips the (prompt id, sample index) pairs
//! already written, so a killed run resumes; a file written with other settings is refused.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use data::Prompt;
use decode::{FilteredSample, Generation, GenerationStats, Request, SamplingParams, Settings};
use lm::LoadedModel;
use records::GenerationLine;

use crate::method::{Decoding, ResolvedMethod};
use crate::model::ModelOptions;
use crate::monitor::{Count, Monitor};

/// What to generate: the decoding protocol of a cell.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub samples_per_prompt: u64,
    pub max_new_tokens: usize,
    /// End-of-sequence suppressed for the first this-many new tokens (0: never).
    pub min_new_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    /// Sample rows decoded together.
    pub batch_size: usize,
    /// Stop a sample at an end-of-sequence token (false: always `max_new_tokens`).
    pub stop_at_eos: bool,
}

impl GenerateOptions {
    fn settings(&self) -> Settings {
        Settings {
            max_new_tokens: self.max_new_tokens,
            min_new_tokens: self.min_new_tokens,
            sampling: self.sampling,
            seed: self.seed,
            batch_size: self.batch_size,
            stop_at_eos: self.stop_at_eos,
        }
    }
}

/// What one [`generate`] call produced.
pub struct GenerateOutcome {
    pub stats: GenerationStats,
    /// The methods' own totals (post-hoc redraws, steering counters), for the run record.
    pub counters: Vec<(String, f64)>,
}

/// Generates `options.samples_per_prompt` samples of each prompt into `out` with `method`,
/// decoding with `model_dir` (or the method's checkpoint), resuming the file. Returns what this
/// call generated (`None`: everything was already there).
pub fn generate(
    model_dir: &Path,
    model: &ModelOptions,
    prompts: &[Prompt],
    method: &ResolvedMethod,
    options: &GenerateOptions,
    out: &Path,
    monitor: &dyn Monitor,
) -> Result<Option<GenerateOutcome>> {
    options.sampling.validate()?;
    let settings = options.settings();
    // A fine-tuned variant decodes with its own checkpoint.
    let model_dir: PathBuf = method.weights()?.unwrap_or_else(|| model_dir.to_path_buf());
    let fingerprint = settings_fingerprint(&model_dir, &settings, method);
    let done = read_finished(out, &fingerprint)?;
    let loaded = model.load(&model_dir)?;
    let (requests, by_id) = requests(&loaded, prompts, options.samples_per_prompt, &done)?;
    let total = prompts.len() as u64 * options.samples_per_prompt;
    if requests.is_empty() {
        monitor.note(&format!(
            "{}: all {total} samples already present",
            out.display()
        ));
        return Ok(None);
    }
    let decoding = method.decoding(&loaded)?;
    let mut writer = Writer::new(out, by_id, fingerprint, total, requests.len(), monitor)?;
    let outcome = decode_all(&loaded, &requests, &settings, decoding, &mut writer)?;
    writer.progress.finish();
    let stats = &outcome.stats;
    monitor.note(&format!(
        "{}: {} samples, {} new tokens in {:.1}s ({:.1} tok/s; prefill {:.1}s)",
        out.display(),
        stats.samples,
        stats.new_tokens,
        stats.prefill_seconds + stats.decode_seconds,
        stats.tokens_per_second(),
        stats.prefill_seconds
    ));
    Ok(Some(outcome))
}

/// The requests still to draw, and the prompts by id.
fn requests<'p>(
    loaded: &LoadedModel,
    prompts: &'p [Prompt],
    n: u64,
    done: &HashSet<(String, u64)>,
) -> Result<(Vec<Request>, HashMap<String, &'p Prompt>)> {
    let mut requests = Vec::new();
    let mut by_id = HashMap::new();
    for prompt in prompts {
        let ids = loaded.tokenizer.encode(&prompt.text)?;
        by_id.insert(prompt.id.clone(), prompt);
        requests.extend(
            Request::samples(&prompt.id, &ids, n)
                .into_iter()
                .filter(|r| !done.contains(&(r.prompt_id.clone(), r.sample_index))),
        );
    }
    Ok((requests, by_id))
}

/// Runs the decoder loop (or the method's own sample filter) over `requests`, writing each
/// finished sample.
fn decode_all(
    loaded: &LoadedModel,
    requests: &[Request],
    settings: &Settings,
    decoding: Decoding<'_>,
    writer: &mut Writer<'_>,
) -> Result<GenerateOutcome> {
    let Decoding {
        mut steering,
        sample_filter,
    } = decoding;
    let (stats, mut counters) = match &sample_filter {
        None => {
            let stats = decode::generate_steered(
                loaded.model.as_ref(),
                &loaded.eos_token_ids,
                requests,
                settings,
                &mut steering,
                |g| {
                    let text = loaded.tokenizer.decode(&g.token_ids)?;
                    writer.write(g, text, None, None)
                },
            )?;
            (stats, Vec::new())
        }
        Some(filter) => {
            let inputs = decode::LoopInputs {
                model: loaded.model.as_ref(),
                eos_token_ids: &loaded.eos_token_ids,
                tokenizer: &loaded.tokenizer,
                requests,
                settings,
            };
            let outcome = filter.generate(inputs, &mut steering, &mut |s: FilteredSample| {
                writer.write(s.generation, s.text, Some(s.redraws), s.still_matched)
            })?;
            writer.monitor.note(&outcome.summary);
            (outcome.stats, outcome.counters)
        }
    };
    counters.extend(steering.iter().flat_map(|s| s.counters()));
    Ok(GenerateOutcome { stats, counters })
}

/// Appends finished samples to the generations file, one flushed write per line: a killed run
/// leaves whole lines (a torn last line is detected and dropped on resume).
struct Writer<'a> {
    file: std::fs::File,
    path: PathBuf,
    prompts: HashMap<String, &'a Prompt>,
    fingerprint: String,
    progress: Box<dyn crate::monitor::Progress>,
    monitor: &'a dyn Monitor,
    started: Instant,
    new_tokens: usize,
}

impl<'a> Writer<'a> {
    fn new(
        path: &Path,
        prompts: HashMap<String, &'a Prompt>,
        fingerprint: String,
        total: u64,
        to_do: usize,
        monitor: &'a dyn Monitor,
    ) -> Result<Self> {
        let progress = monitor.progress(total, Count::Samples);
        progress.set_position(total - to_do as u64);
        Ok(Writer {
            file: data::jsonl::open_append(path)?,
            path: path.to_path_buf(),
            prompts,
            fingerprint,
            progress,
            monitor,
            started: Instant::now(),
            new_tokens: 0,
        })
    }

    fn write(
        &mut self,
        g: Generation,
        text: String,
        redraws: Option<u64>,
        still_matched: Option<String>,
    ) -> Result<()> {
        use std::io::Write;
        self.new_tokens += g.token_ids.len();
        let prompt = self.prompts[&g.prompt_id];
        let record = GenerationLine {
            text,
            prompt: prompt.text.clone(),
            group: prompt.group.clone(),
            prompt_id: g.prompt_id,
            sample_index: g.sample_index,
            token_ids: g.token_ids,
            finish_reason: g.finish_reason,
            settings: self.fingerprint.clone(),
            redraws,
            still_matched,
        };
        let mut line = serde_json::to_string(&record)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("{}: write failed", self.path.display()))?;
        self.progress.inc(1);
        self.progress.set_message(format!(
            "{:.1} tok/s",
            self.new_tokens as f64 / self.started.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

/// The fingerprint every line of a generations file carries: 16 hex digits of the stable hash of
/// the model folder, the decoding settings and the method. Its layout is frozen, field by field
/// (it began as the settings' `Debug` text, which a renamed field would have changed, breaking
/// every resume), so files written since keep resuming.
fn settings_fingerprint(model_dir: &Path, settings: &Settings, method: &ResolvedMethod) -> String {
    let model = std::fs::canonicalize(model_dir).unwrap_or_else(|_| model_dir.to_path_buf());
    let s = &settings.sampling;
    let option = |x: Option<String>| x.map_or_else(|| "None".to_owned(), |v| format!("Some({v})"));
    let sampling = format!(
        "SamplingParams {{ temperature: {:?}, top_k: {}, top_p: {} }}",
        s.temperature,
        option(s.top_k.map(|k| k.to_string())),
        option(s.top_p.map(|p| format!("{p:?}")))
    );
    let mut description = format!(
        "{}|{}|{sampling}|{}|{}",
        model.display(),
        settings.max_new_tokens,
        settings.seed,
        settings.stop_at_eos
    );
    // Added only when set, as the method below, so older files still resume.
    if settings.min_new_tokens > 0 {
        description.push_str(&format!("|min{}", settings.min_new_tokens));
    }
    // Plain sampling adds nothing, so files written before methods existed still resume.
    if let Some(identity) = method.identity() {
        description.push('|');
        description.push_str(&identity);
    }
    format!("{:016x}", paths::stable_hash(description.as_bytes()))
}

/// (prompt id, sample index) pairs already in `path` (a torn last line is cut off, see
/// [`data::jsonl::read_resumable`]); a record written with other settings is an error.
fn read_finished(path: &Path, fingerprint: &str) -> Result<HashSet<(String, u64)>> {
    let mut done = HashSet::new();
    data::jsonl::read_resumable(path, "generation record", |_, record: GenerationLine| {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint's text is pinned to what `{:?}` of the settings gave when it was
    /// introduced: a file written then must still resume.
    #[test]
    fn the_fingerprint_layout_is_frozen() {
        let settings = Settings {
            max_new_tokens: 20,
            min_new_tokens: 0,
            sampling: SamplingParams {
                temperature: 1.0,
                top_k: Some(20),
                top_p: Some(0.9),
            },
            seed: 7,
            batch_size: 32,
            stop_at_eos: true,
        };
        let dir = Path::new("/nonexistent/model");
        let expected = paths::stable_hash(
            b"/nonexistent/model|20|SamplingParams { temperature: 1.0, top_k: Some(20), top_p: Some(0.9) }|7|true",
        );
        assert_eq!(
            settings_fingerprint(dir, &settings, &ResolvedMethod::none()),
            format!("{expected:016x}")
        );
    }
}
