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

#[derive(Serialize)]
struct PerplexityRecord {
    model: PathBuf,
    /// NADO decoding's auxiliary model and α, when the perplexity is of q rather than p.
    #[serde(skip_serializing_if = "Option::is_none")]
    nado_auxiliary: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nado_alpha: Option<f64>,
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
    if args.nado_auxiliary.is_some() && models.len() != 1 {
        anyhow::bail!("--nado-auxiliary scores one --model, not {}", models.len());
    }
    for dir in &models {
        let loaded = LoadedModel::load(dir, args.device, lm::DtypeChoice::F32)?;
        let info = loaded.model.info();
        let sequences = encode_texts(
            &loaded.tokenizer,
            &paragraphs,
            args.max_tokens,
            info.vocab_size,
        )?;
        let (ppl, tokens) = match &args.nado_auxiliary {
            None => perplexity(loaded.model.as_ref(), &sequences, args.batch_size),
            Some(aux) => {
                finetune::NadoParams {
                    alpha: args.nado_alpha,
                }
                .validate()?;
                let auxiliary = finetune::Auxiliary::load(aux, args.device, lm::DtypeChoice::F32)?;
                finetune::nado::decoding_perplexity(
                    loaded.model.as_ref(),
                    &auxiliary,
                    args.nado_alpha,
                    &sequences,
                    args.batch_size,
                )
            }
        };
        let record = PerplexityRecord {
            model: dir.clone(),
            nado_auxiliary: args.nado_auxiliary.clone(),
            nado_alpha: args.nado_auxiliary.as_ref().map(|_| args.nado_alpha),
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
