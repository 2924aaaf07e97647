//! `detox`: the command line of the detoxification harness.

// First, so its `note!` macro is in scope in every module below.
#[macro_use]
mod progress;

mod audit;
mod forward;
mod inspect;
mod labelled;
mod perplexity;
mod pipeline;
mod train_finetune;
mod train_fusion;
mod train_rad;
mod train_sasa;
mod train_scorer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lm::{DeviceChoice, DtypeChoice};

#[derive(Parser)]
#[command(
    name = "detox",
    version,
    about = "Compare LLM detoxification methods side by side"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a llama-architecture GGUF into a Hugging Face folder (config, safetensors, tokenizer).
    ImportGguf {
        /// The .gguf file.
        gguf: PathBuf,
        /// Folder to create (must not exist or be empty).
        out_dir: PathBuf,
    },
    /// Sample continuations of prompts and append them to a JSONL file (resumable).
    Generate(pipeline::GenerateArgs),
    /// Score the texts of a generations file with one scorer, through the score cache (resumable).
    Score(pipeline::ScoreArgs),
    /// EMT, toxic rate, dist-n, per-group results, scorer agreement and judge perplexity as JSON.
    Evaluate(pipeline::EvaluateArgs),
    /// Write logits [T, V] and final-norm hidden states [T, H] for token ids (debugging, parity).
    Forward(forward::ForwardArgs),
    /// Train the `minilm` scorer's toxicity head on labelled text; prints held-out ROC-AUC.
    TrainScorer(train_scorer::TrainScorerArgs),
    /// Fit what a method needs before decoding (`detox train sasa`, `detox train rad-reward`).
    #[command(subcommand)]
    Train(TrainCommand),
    /// ROC-AUC of a scorer on held-out labelled text, and its mean score per identity term on
    /// non-toxic template sentences.
    AuditScorer(audit::AuditScorerArgs),
    /// Load every prompt and labelled source in the shared data folder and print their counts.
    InspectData(inspect::InspectDataArgs),
    /// Perplexity of models on WikiText-2 paragraphs (utility after fine-tuning), as JSON lines.
    Perplexity(perplexity::PerplexityArgs),
    /// Run every cell of an experiment spec: generate, score, evaluate (resumable).
    Run(pipeline::RunArgs),
    /// Join the shares of a sweep run with `run --shard I/N` into one folder and rebuild its report.
    Merge(pipeline::MergeArgs),
    /// Model presets, methods with their parameters, scorers and prompt sources a spec can name.
    List,
    /// Rebuild an experiment's tables (Parquet, CSV, Markdown) and charts from its stored outputs,
    /// without loading a model; prints the summary.
    Report(pipeline::ReportArgs),
    /// Two experiments side by side: cells matched by model, method, strength, prompt set and
    /// scorer, with B − A for EMT, toxic rate, perplexity, dist-2 and tokens/s.
    Compare(pipeline::CompareArgs),
    /// Check an experiment spec and print the cells it expands to, without running anything.
    Validate {
        /// The experiment spec (YAML).
        spec: PathBuf,
    },
}

/// What `detox train` fits.
#[derive(Subcommand)]
enum TrainCommand {
    /// SASA's linear discriminant on the model's own hidden states of labelled text; prints its
    /// held-out accuracy and ROC-AUC and writes configs/sasa/<model>.json (or --out).
    Sasa(train_sasa::TrainSasaArgs),
    /// RAD's reward head on a backbone's first N blocks (cumulative squared loss over prefixes,
    /// closed form); prints held-out MSE and ROC-AUC and writes configs/rad/<model>.json (or --out).
    RadReward(train_rad::TrainRadArgs),
    /// The compact calibration LM of calibration-model fusion (a base's first blocks fine-tuned
    /// on non-toxic text; --toxic for a DExperts anti-expert); writes a model folder.
    Calibration(train_fusion::TrainCalibrationArgs),
    /// The map from a calibration model's final hidden state to a target's (InfoNCE); prints
    /// held-out retrieval accuracy and writes <calibration>/align-<target>.json (or --out).
    Align(train_fusion::TrainAlignArgs),
    /// Regularized fine-tuning from a YAML spec (NADO teacher, SFT, data filtering, REINFORCE;
    /// sequential or parallel rounds, full or LoRA); writes Hugging Face model folders.
    Finetune(train_finetune::TrainFinetuneArgs),
    /// One job of a fine-tuning schedule (started by `detox train finetune`, one process each).
    #[command(hide = true)]
    FinetuneJob(train_finetune::FinetuneJobArgs),
}

/// Model, device and threading options shared by every command that loads a model.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Hugging Face model folder (config.json, safetensors, tokenizer.json). Default: the imported
    /// SmolLM2-135M-Instruct that scripts/setup.sh prepares.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// auto (f32 on CPU, bf16 on CUDA), f32, f16 or bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeChoice,
    /// Intra-op threads for libtorch (default: libtorch's choice, one per core).
    #[arg(long)]
    pub threads: Option<i32>,
}

impl ModelArgs {
    /// The model folder: `--model`, else the default model (which may not be imported yet).
    pub fn model_dir(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(paths::default_model_dir)
    }

    /// [`ModelArgs::model_dir`], or an error that says how to import the default model.
    pub fn resolved_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.model {
            Some(dir) => Ok(dir.clone()),
            None => experiment::default_model(),
        }
    }

    pub fn options(&self) -> experiment::ModelOptions {
        experiment::ModelOptions {
            device: self.device,
            dtype: self.dtype,
            threads: self.threads,
        }
    }

    pub fn load(&self) -> anyhow::Result<lm::LoadedModel> {
        self.load_layers(None)
    }

    /// [`ModelArgs::load`] keeping only the first `layers` blocks when given.
    pub fn load_layers(&self, layers: Option<usize>) -> anyhow::Result<lm::LoadedModel> {
        self.options().load_layers(&self.resolved_dir()?, layers)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ImportGguf { gguf, out_dir } => gguf::import_to_hf_folder(&gguf, &out_dir)
            .map(|report| eprintln!("{report}"))
            .map_err(anyhow::Error::from),
        Command::Generate(args) => pipeline::generate(&args),
        Command::Score(args) => pipeline::score(&args),
        Command::Evaluate(args) => pipeline::evaluate(&args),
        Command::Forward(args) => forward::run(&args),
        Command::TrainScorer(args) => train_scorer::run(&args),
        Command::Train(TrainCommand::Sasa(args)) => train_sasa::run(&args),
        Command::Train(TrainCommand::RadReward(args)) => train_rad::run(&args),
        Command::Train(TrainCommand::Calibration(args)) => train_fusion::run_calibration(&args),
        Command::Train(TrainCommand::Align(args)) => train_fusion::run_align(&args),
        Command::Train(TrainCommand::Finetune(args)) => train_finetune::run(&args),
        Command::Train(TrainCommand::FinetuneJob(args)) => train_finetune::run_job(&args),
        Command::Perplexity(args) => perplexity::run(&args),
        Command::AuditScorer(args) => audit::run(&args),
        Command::InspectData(args) => inspect::run(&args),
        Command::Run(args) => pipeline::run(&args),
        Command::Merge(args) => pipeline::merge(&args),
        Command::List => pipeline::list(),
        Command::Report(args) => pipeline::report(&args),
        Command::Compare(args) => pipeline::compare(&args),
        Command::Validate { spec } => pipeline::validate(&spec),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, the whole cause chain; a backtrace only when RUST_BACKTRACE asks for it.
            eprintln!("error: {error:#}");
            if std::env::var_os("RUST_BACKTRACE").is_some() {
                eprintln!("{}", error.backtrace());
            }
            ExitCode::FAILURE
        }
    }
}
