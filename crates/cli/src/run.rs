//! `detox run SPEC`: every cell of an experiment through generate → score → evaluate, each stage
//! resumable, into `<output>/<cell id>/`:
//!
//! ```text
//! cell.json            the resolved cell (written once, never rewritten)
//! generations.jsonl    append-only, keyed by (prompt id, sample index)
//! scores-<scorer>.jsonl
//! policy.json          the metric policy evaluate reads
//! record.json          the run record: versions, device, wall time per stage, peak memory
//! metrics.json         the evaluation record (written whole, by rename)
//! ```
//!
//! and `<output>/score-cache.jsonl`, the experiment's score cache.
//!
//! A killed run resumes where it stopped: generation and scoring skip what their files already
//! hold; a cell with its metrics written is done. Editing one method in the spec changes only
//! that method's cell ids, so only those cells run.

use std::path::{Path, PathBuf};

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use lm::{DeviceChoice, DtypeChoice};
use spec::{Cell, ModelFormat};

use crate::evaluate::{self, EvaluateArgs};
use crate::generate::{self, GenerateArgs};
use crate::methods::Method;
use crate::progress;
use crate::record::{self, RunRecord};
use crate::score_cmd::{self, ScoreArgs};
use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The experiment spec (YAML).
    pub spec: PathBuf,
    /// Intra-op threads for libtorch.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Run only share I of N (1-based): cells I, I+N, I+2N, … in spec order. Each share writes
    /// to `<output>/shards/I-of-N/` unless --output is given; `detox merge <output>` joins them.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Write here instead of the spec's `output` folder.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// One share of a sweep split across N machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether the cell at `position` (0-based, spec order) belongs to this share. Round robin
    /// balances a sweep whose cells are listed method by method.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }

    /// The folder a share writes to by default.
    pub fn folder(&self, output: &Path) -> PathBuf {
        output
            .join("shards")
            .join(format!("{}-of-{}", self.index, self.count))
    }
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let bad = || format!("--shard takes I/N with 1 <= I <= N (e.g. 2/8), got {s:?}");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let index: usize = i.trim().parse().map_err(|_| bad())?;
    let count: usize = n.trim().parse().map_err(|_| bad())?;
    if index == 0 || count == 0 || index > count {
        return Err(bad());
    }
    Ok(Shard { index, count })
}

pub fn run(args: &RunArgs) -> Result<()> {
    let experiment = spec::load(&args.spec)?;
    let output = match (&args.output, args.shard) {
        (Some(dir), _) => dir.clone(),
        (None, Some(shard)) => shard.folder(&experiment.output),
        (None, None) => experiment.output.clone(),
    };
    let cells: Vec<&Cell> = experiment
        .cells()
        .iter()
        .enumerate()
        .filter(|(i, _)| args.shard.is_none_or(|s| s.owns(*i)))
        .map(|(_, c)| c)
        .collect();
    // Every method must have a decoder before any model is loaded.
    for cell in &cells {
        Method::from_spec(&cell.method)
            .with_context(|| format!("{}: cell {}", args.spec.display(), cell.label()))?;
    }
    check_writable(&output)?;
    let share = args
        .shard
        .map(|s| format!(" (share {} of {})", s.index, s.count))
        .unwrap_or_default();
    note!(
        "{}: {} of {} cells{share} → {}",
        args.spec.display(),
        cells.len(),
        experiment.cells().len(),
        output.display()
    );
    let overall = progress::bar(cells.len() as u64, "cells [{bar:30}] {pos}/{len} {msg}");
    for (i, cell) in cells.iter().enumerate() {
        let dir = output.join(cell.cell_id());
        overall.set_message(cell.label());
        note!(
            "[{}/{}] {} ({})",
            i + 1,
            cells.len(),
            cell.label(),
            dir.display()
        );
        run_cell(cell, &dir, &output, args.threads)
            .with_context(|| format!("cell {} ({})", cell.cell_id(), cell.label()))?;
        overall.inc(1);
    }
    overall.finish_and_clear();
    if args.shard.is_some() && args.output.is_none() {
        note!(
            "share done; when every share is, `detox merge {}` joins them and writes the report",
            experiment.output.display()
        );
        return Ok(());
    }
    // The tables and charts of everything in the folder (earlier runs' cells included).
    crate::report_cmd::run_report(&crate::report_cmd::ReportArgs { dir: output })
}

/// Creates the output folder (or checks it is writable) before any model is loaded.
fn check_writable(output: &Path) -> Result<()> {
    std::fs::create_dir_all(output)
        .with_context(|| format!("output folder {}: cannot create", output.display()))?;
    let probe = output.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("output folder {}: not writable", output.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn run_cell(cell: &Cell, dir: &Path, output: &Path, threads: Option<i32>) -> Result<()> {
    let metrics = dir.join("metrics.json");
    if metrics.is_file() {
        note!("  done already ({})", metrics.display());
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    write_once(&dir.join("cell.json"), &cell.resolved_json())?;
    let method = Method::from_spec(&cell.method)?;
    let device: DeviceChoice = cell.generation.device.parse()?;
    let dtype: DtypeChoice = format!("{:?}", cell.generation.dtype)
        .to_lowercase()
        .parse()?;
    if let Some(threads) = threads {
        anyhow::ensure!(threads >= 1, "--threads must be at least 1");
        tch::set_num_threads(threads);
    }
    let model_args = |model: &spec::ModelRef| -> Result<ModelArgs> {
        Ok(ModelArgs {
            model: Some(hf_folder(model)?),
            device,
            dtype,
            threads,
        })
    };
    record::reset_peak_rss();
    let record_path = dir.join("record.json");
    let mut record = RunRecord::load_or_new(&record_path, &cell.cell_id())?;
    let resolved = device.resolve()?;
    record.device = format!("{resolved:?}").to_lowercase();
    record.dtype = match dtype.resolve(resolved)? {
        tch::Kind::Float => "f32".into(),
        tch::Kind::Half => "f16".into(),
        tch::Kind::BFloat16 => "bf16".into(),
        other => format!("{other:?}").to_lowercase(),
    };
    record.batch_size = cell.generation.batch_size;
    record.seed = cell.seed;

    // Generate.
    let started = Instant::now();
    let prompts = data::load(&cell.prompts.source)?.prompts;
    let expected_samples = prompts.len() * cell.generation.samples_per_prompt;
    let generations = dir.join("generations.jsonl");
    let generate_args = GenerateArgs {
        model: model_args(&cell.model)?,
        prompt: Vec::new(),
        prompts: None,
        n: cell.generation.samples_per_prompt as u64,
        max_new_tokens: cell.generation.max_new_tokens,
        top_p: cell.generation.top_p.unwrap_or(1.0),
        top_k: cell.generation.top_k,
        temperature: cell.generation.temperature,
        seed: cell.seed,
        batch_size: cell.generation.batch_size,
        ignore_eos: false,
        out: generations.clone(),
    };
    if let Some(outcome) = generate::run_prompts(&generate_args, &prompts, &method)? {
        let stats = &outcome.stats;
        record.add_stage("generate", started.elapsed().as_secs_f64(), stats.samples);
        record.add_tokens(
            stats.new_tokens,
            stats.prefill_seconds + stats.decode_seconds,
        );
        if let Some(t) = &outcome.posthoc {
            record.add_counter(
                "posthoc_rejected_first_draws",
                t.rejected_first_draws as f64,
            );
            record.add_counter("posthoc_redraws", t.redraws as f64);
            record.add_counter("posthoc_still_matched", t.still_matched as f64);
        }
        for (name, value) in &outcome.counters {
            record.add_counter(name, *value);
        }
        record.note_peak_memory();
        record.save(&record_path)?;
    }

    // Score, once per scorer.
    let started = Instant::now();
    let mut score_files = Vec::new();
    for scorer in &cell.scorers {
        let name = scorer.spec_name();
        let file_name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let out = dir.join(format!("scores-{file_name}.jsonl"));
        score_cmd::run(&ScoreArgs {
            scorer: name,
            input: generations.clone(),
            out: out.clone(),
            // One cache per experiment: cells that share samples' texts score them once, and
            // concurrent experiments never write the same file.
            cache: Some(output.join("score-cache.jsonl")),
            no_cache: false,
            batch_size: 64,
            device,
        })?;
        score_files.push(out);
    }
    record.add_stage("score", started.elapsed().as_secs_f64(), expected_samples);
    record.note_peak_memory();
    record.save(&record_path)?;

    // Evaluate, written whole by rename so a killed run never leaves half a record.
    let started = Instant::now();
    let policy = dir.join("policy.json");
    std::fs::write(&policy, serde_json::to_string_pretty(&cell.policy)?)
        .with_context(|| format!("{}: cannot write", policy.display()))?;
    let partial = dir.join("metrics.json.part");
    evaluate::run(&EvaluateArgs {
        generations,
        scores: score_files,
        judge: Some(hf_folder(&cell.judge)?),
        device,
        dtype,
        threads,
        batch_size: 16,
        policy: Some(policy),
        out: Some(partial.clone()),
    })?;
    record.add_stage(
        "evaluate",
        started.elapsed().as_secs_f64(),
        expected_samples,
    );
    record.note_peak_memory();
    // The record first: a cell whose metrics exist is done and never revisited.
    record.save(&record_path)?;
    std::fs::rename(&partial, &metrics)
        .with_context(|| format!("{}: cannot write", metrics.display()))?;
    Ok(())
}

/// A model's Hugging Face folder; a GGUF is imported once next to it (`<file>.hf/`).
fn hf_folder(model: &spec::ModelRef) -> Result<PathBuf> {
    match model.format {
        ModelFormat::Hf => Ok(model.path.clone()),
        ModelFormat::Gguf => {
            let folder = model.path.with_extension("hf");
            if !folder.join("model.safetensors").is_file() {
                let partial = model.path.with_extension("hf.part");
                let _ = std::fs::remove_dir_all(&partial);
                note!(
                    "  importing {} → {}",
                    model.path.display(),
                    folder.display()
                );
                gguf::import_to_hf_folder(&model.path, &partial)?;
                std::fs::rename(&partial, &folder)?;
            }
            Ok(folder)
        }
    }
}

/// Writes `text` to a new file; an existing file is left as it is (it describes the same cell).
fn write_once(path: &Path, text: &str) -> Result<()> {
    if !path.exists() {
        std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}
