//! `detox run SPEC`: every cell of an experiment through generate → score → evaluate, each stage
//! resumable, into `<output>/<cell id>/`:
//!
//! ```text
//! cell.json            the resolved cell (written once, never rewritten)
//! generations.jsonl    append-only, keyed by (prompt id, sample index)
//! scores-<scorer>.jsonl
//! policy.json          the metric policy evaluate reads
//! metrics.json         the evaluation record (written whole, by rename)
//! ```
//!
//! and `<output>/score-cache.jsonl`, the experiment's score cache.
//!
//! A killed run resumes where it stopped: generation and scoring skip what their files already
//! hold; a cell with its metrics written is done. Editing one method in the spec changes only
//! that method's cell ids, so only those cells run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use lm::{DeviceChoice, DtypeChoice};
use spec::{Cell, ModelFormat};

use crate::evaluate::{self, EvaluateArgs};
use crate::generate::{self, GenerateArgs};
use crate::score_cmd::{self, ScoreArgs};
use crate::ModelArgs;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The experiment spec (YAML).
    pub spec: PathBuf,
    /// Intra-op threads for libtorch.
    #[arg(long)]
    pub threads: Option<i32>,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let experiment = spec::load(&args.spec)?;
    let cells = experiment.cells();
    eprintln!(
        "{}: {} cells → {}",
        args.spec.display(),
        cells.len(),
        experiment.output.display()
    );
    for (i, cell) in cells.iter().enumerate() {
        let dir = experiment.output.join(cell.cell_id());
        eprintln!(
            "[{}/{}] {} ({})",
            i + 1,
            cells.len(),
            cell.label(),
            dir.display()
        );
        run_cell(cell, &dir, &experiment.output, args.threads)
            .with_context(|| format!("cell {} ({})", cell.cell_id(), cell.label()))?;
    }
    Ok(())
}

fn run_cell(cell: &Cell, dir: &Path, output: &Path, threads: Option<i32>) -> Result<()> {
    let metrics = dir.join("metrics.json");
    if metrics.is_file() {
        eprintln!("  done already ({})", metrics.display());
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    write_once(&dir.join("cell.json"), &cell.resolved_json())?;
    if cell.method.name != "none" {
        bail!(
            "method {:?} is registered but has no decoder yet",
            cell.method.name
        );
    }
    let device: DeviceChoice = cell.generation.device.parse()?;
    let dtype: DtypeChoice = format!("{:?}", cell.generation.dtype)
        .to_lowercase()
        .parse()?;
    let model_args = |model: &spec::ModelRef| -> Result<ModelArgs> {
        Ok(ModelArgs {
            model: Some(hf_folder(model)?),
            device,
            dtype,
            threads,
        })
    };

    // Generate.
    let prompts = data::load(&cell.prompts.source)?.prompts;
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
    generate::run_prompts(&generate_args, &prompts)?;

    // Score, once per scorer.
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

    // Evaluate, written whole by rename so a killed run never leaves half a record.
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
                eprintln!(
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
