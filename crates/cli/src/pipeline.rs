//! The pipeline's commands: `generate`, `score`, `evaluate`, `run`, `merge`, `report`, `compare`,
//! `validate` and `list`. Each parses its arguments and calls the `experiment` (or `report`)
//! library; what they do is documented there.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use data::prompts::user::{self, UserOptions};
use data::Prompt;
use experiment::{
    CacheChoice, EvaluateInputs, GenerateOptions, Judge, ResolvedMethod, RunOptions, ScoreInput,
    Shard,
};
use lm::DeviceChoice;
use metrics::MetricPolicy;

use crate::progress::Bars;
use crate::ModelArgs;

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
    /// End-of-sequence suppressed for the first this-many new tokens.
    #[arg(long, default_value_t = 0)]
    pub min_new_tokens: usize,
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

pub fn generate(args: &GenerateArgs) -> Result<()> {
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
    let options = GenerateOptions {
        samples_per_prompt: args.n,
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        sampling: decode::SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: (args.top_p < 1.0).then_some(args.top_p),
        },
        seed: args.seed,
        batch_size: args.batch_size,
        stop_at_eos: !args.ignore_eos,
    };
    experiment::generate(
        &args.model.resolved_dir()?,
        &args.model.options(),
        &prompts,
        &ResolvedMethod::none(),
        &options,
        &args.out,
        &Bars,
    )?;
    Ok(())
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Scorer: minilm, profanity, perspective or hf:DIR[#label].
    #[arg(long)]
    pub scorer: String,
    /// Generations JSONL written by `detox generate`.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Scores JSONL; appended to, and samples already in it are skipped.
    #[arg(long)]
    pub out: PathBuf,
    /// Score cache file. Default: <state dir>/cache/scores.jsonl.
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Score everything afresh and cache nothing.
    #[arg(long)]
    pub no_cache: bool,
    /// Texts per scorer call (and per write to --out).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Device of model-based scorers: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

pub fn score(args: &ScoreArgs) -> Result<()> {
    let cache = match (&args.cache, args.no_cache) {
        (_, true) => CacheChoice::None,
        (Some(path), false) => CacheChoice::File(path.clone()),
        (None, false) => CacheChoice::Default,
    };
    let mut scorer = probe::build_scorer(&args.scorer, args.device)?;
    experiment::score(
        &args.input,
        scorer.as_mut(),
        &args.out,
        &cache,
        args.batch_size,
        &Bars,
    )?;
    Ok(())
}

#[derive(Args, Debug)]
#[command(mut_arg("model", |a| a.long("judge").value_name("DIR").help(
    "Judge LM folder for conditional perplexity (any model folder `detox generate` can load)"
)))]
pub struct EvaluateArgs {
    /// Generations JSONL written by `detox generate`.
    #[arg(long)]
    pub generations: PathBuf,
    /// Scores JSONL written by `detox score` (repeatable, one per scorer).
    #[arg(long = "scores")]
    pub scores: Vec<PathBuf>,
    /// The judge, its device, dtype and threads.
    #[command(flatten)]
    pub judge: ModelArgs,
    /// (prompt, continuation) pairs per judge forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Metric policy JSON (threshold, comparison, perplexity cap, bootstrap); default: the defaults.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Where to write the JSON record (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn evaluate(args: &EvaluateArgs) -> Result<()> {
    let policy = match &args.policy {
        Some(path) => read_policy(path)?,
        None => MetricPolicy::default(),
    };
    let judge = args.judge.model.as_ref().map(|dir| Judge {
        dir: dir.clone(),
        model: args.judge.options(),
        batch_size: args.batch_size,
    });
    let scores: Vec<ScoreInput> = args
        .scores
        .iter()
        .map(|path| ScoreInput {
            path: path.clone(),
            name: None,
        })
        .collect();
    let record = experiment::evaluate(
        &EvaluateInputs {
            generations: &args.generations,
            scores: &scores,
            judge: judge.as_ref(),
            policy: &policy,
            policy_file: args.policy.as_deref(),
        },
        &Bars,
    )?;
    eprint!("{}", experiment::evaluate::table(&record));
    match &args.out {
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("{}: cannot create folder", parent.display()))?;
            }
            records::write_json(path, &record)
        }
        None => {
            println!("{}", serde_json::to_string_pretty(&record)?);
            Ok(())
        }
    }
}

/// A metric policy file, checked.
fn read_policy(path: &std::path::Path) -> Result<MetricPolicy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let policy: MetricPolicy = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a metric policy", path.display()))?;
    policy
        .validate()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(policy)
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The experiment spec (YAML).
    pub spec: PathBuf,
    /// Intra-op threads for libtorch.
    #[arg(long)]
    pub threads: Option<i32>,
    /// Run only share I of N (1-based): cells I, I+N, I+2N, … in spec order. Each share writes
    /// to `<output>/shards/I-of-N/` unless --output is given; `detox merge <output>` joins them.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Write here instead of the spec's `output` folder.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let experiment = experiment::load_spec(&args.spec)?;
    let options = RunOptions {
        threads: args.threads,
        shard: args.shard,
        output: args.output.clone(),
    };
    let summary = experiment::run_experiment(&experiment, &args.spec, &options, &Bars)?;
    if !summary.whole {
        note!(
            "share done; when every share is, `detox merge {}` joins them and writes the report",
            experiment.output.display()
        );
        return Ok(());
    }
    // The tables and charts of everything in the folder (earlier runs' cells included).
    report(&ReportArgs {
        dir: summary.output,
    })
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The experiment's output folder (the spec's `output`).
    pub dir: PathBuf,
    /// Share folders to join (default: every folder under DIR/shards/).
    #[arg(long = "from")]
    pub from: Vec<PathBuf>,
}

pub fn merge(args: &MergeArgs) -> Result<()> {
    let summary = experiment::merge(&args.dir, &args.from)?;
    note!(
        "{}: {} cells copied, {} already present, {} unfinished in their share (run that share again), {} score-cache lines added",
        args.dir.display(),
        summary.copied,
        summary.already_present,
        summary.incomplete,
        summary.cache_lines_added
    );
    report(&ReportArgs {
        dir: args.dir.clone(),
    })
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The experiment folder (`output:` of the spec): one sub-folder per cell.
    pub dir: PathBuf,
}

pub fn report(args: &ReportArgs) -> Result<()> {
    let output = report::write_report(&args.dir)?;
    print!("{}", output.markdown);
    note!(
        "{} cells ({} complete, {} incomplete); wrote {} files to {}",
        output.complete_cells + output.incomplete_cells,
        output.complete_cells,
        output.incomplete_cells,
        output.files.len(),
        output.report_dir.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The first experiment folder (A; differences are B − A).
    pub a: PathBuf,
    /// The second experiment folder (B).
    pub b: PathBuf,
    /// Where to write compare.{parquet,csv,md} (default: <B>/report/compare-<name of A>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn compare(args: &CompareArgs) -> Result<()> {
    let a = report::Experiment::load(&args.a)?;
    let b = report::Experiment::load(&args.b)?;
    let comparison = report::compare(&a, &b);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| report::default_compare_dir(&args.a, &args.b));
    let files = comparison.write(&out)?;
    print!("{}", comparison.markdown());
    note!(
        "{} rows; wrote {} files to {}",
        comparison.rows.len(),
        files.len(),
        out.display()
    );
    Ok(())
}

pub fn validate(spec: &std::path::Path) -> Result<()> {
    let report = spec::validate_report(spec, &experiment::spec_registry())?;
    println!("{report}");
    Ok(())
}

pub fn list() -> Result<()> {
    print!(
        "{}",
        experiment::catalog::render(&experiment::spec_registry())?
    );
    Ok(())
}
