//! `detox perplexity`: a model's perplexity on WikiText-2 paragraphs
//! ([`experiment::utility`]), one JSON line per model.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use experiment::utility::PerplexityOptions;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    /// Model folders (repeatable); default: the imported default model.
    #[arg(long)]
    pub model: Vec<PathBuf>,
    /// A WikiText file; default: WikiText-2's raw test split in the shared data folder.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// The first N paragraphs of at least 8 words.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: lm::DeviceChoice,
    /// Score under NADO decoding's distribution q ∝ p·R^α with this auxiliary model (one
    /// `--model` only), instead of the model's own.
    #[arg(long)]
    pub nado_auxiliary: Option<PathBuf>,
    /// α of NADO decoding (with --nado-auxiliary).
    #[arg(long, default_value_t = 1.0)]
    pub nado_alpha: f64,
    /// Append one JSON line per model here (besides printing it).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &PerplexityArgs) -> Result<()> {
    let models = if args.model.is_empty() {
        vec![paths::default_model_dir()]
    } else {
        args.model.clone()
    };
    if args.nado_auxiliary.is_some() && models.len() != 1 {
        anyhow::bail!("--nado-auxiliary scores one --model, not {}", models.len());
    }
    let options = PerplexityOptions {
        text: match &args.text {
            Some(path) => path.clone(),
            None => experiment::utility::default_wikitext()?,
        },
        limit: args.limit,
        max_tokens: args.max_tokens,
        batch_size: args.batch_size,
        device: args.device,
        nado: args
            .nado_auxiliary
            .clone()
            .map(|aux| (aux, args.nado_alpha)),
    };
    for dir in &models {
        let record = experiment::utility::wikitext_perplexity(dir, &options)?;
        let line = serde_json::to_string(&record)?;
        println!("{line}");
        if let Some(out) = &args.out {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out)
                .with_context(|| format!("{}: cannot open", out.display()))?;
            writeln!(file, "{line}")?;
        }
    }
    Ok(())
}
