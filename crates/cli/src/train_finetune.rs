//! `detox train finetune SPEC`: regularized fine-tuning driven by a YAML spec (see
//! `finetune::plan`), scheduled by `finetune::schedule`; and `detox train finetune-job`, the
//! process each job of a schedule runs in (`finetune::jobs`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use finetune::schedule::{self, Worker};
use serde::Deserialize;

#[derive(Args, Debug)]
pub struct TrainFinetuneArgs {
    /// The fine-tuning spec (YAML; see experiments/finetune/*.yaml).
    pub spec: PathBuf,
    /// Continue a run whose output folder exists (the spec must be unchanged): finished jobs are
    /// kept, the rest run.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Args, Debug)]
pub struct FinetuneJobArgs {
    /// The run's output folder (holds plan.json and mix.jsonl).
    #[arg(long)]
    pub output: PathBuf,
    /// The job, as JSON (`finetune::plan::Job`).
    #[arg(long)]
    pub job: String,
}

/// Resolves a spec's `base`: a path (with a `/`) against the spec's folder, or a model preset.
fn resolve_base(base: &str, dir: &Path) -> Result<PathBuf> {
    let path = if base.contains('/') || base.contains('\\') {
        dir.join(base)
    } else {
        #[derive(Deserialize)]
        struct Preset {
            path: PathBuf,
        }
        let file = spec::validate::presets_dir().join(format!("{base}.yaml"));
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "unknown model preset {base:?} ({} cannot be read); a path needs a `/`",
                file.display()
            )
        })?;
        let preset: Preset =
            serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        file.parent().unwrap_or(Path::new(".")).join(preset.path)
    };
    if !path.join("config.json").is_file() {
        bail!(
            "{}: not a Hugging Face model folder (no config.json)",
            path.display()
        );
    }
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

pub fn run(args: &TrainFinetuneArgs) -> Result<()> {
    // Each job runs in this same binary, as `detox train finetune-job`.
    let worker = Worker {
        program: std::env::current_exe()?,
        args: vec!["train".into(), "finetune-job".into()],
    };
    let last = schedule::train(
        &args.spec,
        args.resume,
        resolve_base,
        &worker,
        &mut |line| note!("{line}"),
    )?;
    println!("{}", last.display());
    Ok(())
}

/// The body of `detox train finetune-job`.
pub fn run_job(args: &FinetuneJobArgs) -> Result<()> {
    finetune::jobs::run_job(&args.output, &args.job, &mut |line| note!("{line}"))
}
