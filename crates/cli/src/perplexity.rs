//! `detox perplexity`: a model's perplexity on WikiText-2 paragraphs, the utility measure of
//! regularized fine-tuning (did detoxifying the model cost it ordinary language modelling?).
//! Each paragraph is scored on its own from its first token, cut to `--max-tokens`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use finetune::sequences::{encode_texts, perplexity, MixText};
use lm::LoadedModel;
use serde::Serialize;

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
    /// Append one JSON line per model here (besides printing it).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Serialize)]
struct PerplexityRecord {
    model: PathBuf,
    text: PathBuf,
    paragraphs: usize,
    /// Tokens scored (each paragraph's first token is not: nothing precedes it).
    tokens: usize,
    max_tokens: usize,
    perplexity: f64,
}

pub fn run(args: &PerplexityArgs) -> Result<()> {
    let text = match &args.text {
        Some(path) => path.clone(),
        None => paths::require(&paths::data_dir("wikitext2"), "data folder wikitext2")
            .map_err(anyhow::Error::msg)?
            .join("raw")
            .join("wiki.test.raw"),
    };
    let paragraphs: Vec<MixText> = data::wikitext::paragraphs(&text, 8)?
        .into_iter()
        .take(args.limit)
        .enumerate()
        .map(|(i, text)| MixText {
            id: format!("wikitext:{i}"),
            source: "wikitext2".into(),
            text,
            regularize: false,
        })
        .collect();
    let models = if args.model.is_empty() {
        vec![paths::default_model_dir()]
    } else {
        args.model.clone()
    };
    for dir in &models {
        let loaded = LoadedModel::load(dir, args.device, lm::DtypeChoice::F32)?;
        let info = loaded.model.info();
        let sequences = encode_texts(
            &loaded.tokenizer,
            &paragraphs,
            args.max_tokens,
            info.vocab_size,
        )?;
        let (ppl, tokens) = perplexity(loaded.model.as_ref(), &sequences, args.batch_size);
        let record = PerplexityRecord {
            model: dir.clone(),
            text: text.clone(),
            paragraphs: sequences.len(),
            tokens,
            max_tokens: args.max_tokens,
            perplexity: ppl,
        };
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
