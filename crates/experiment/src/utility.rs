//! Utility measures: what detoxifying a model costs it at ordinary language modelling. Today the
//! perplexity of WikiText-2 paragraphs, each scored on its own from its first token, cut to a
//! token budget, under a model or under NADO decoding's distribution q ∝ p·R^α.

use std::path::{Path, PathBuf};

use anyhow::Result;
use finetune::sequences::{encode_texts, perplexity, MixText};
use lm::{DeviceChoice, DtypeChoice, LoadedModel};
use serde::{Deserialize, Serialize};

/// What to score and how.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityOptions {
    /// A WikiText file (raw format).
    pub text: PathBuf,
    /// The first N paragraphs of at least 8 words.
    pub limit: usize,
    pub max_tokens: usize,
    pub batch_size: usize,
    pub device: DeviceChoice,
    /// Score under NADO decoding with this auxiliary model and α, instead of the model's own
    /// distribution.
    pub nado: Option<(PathBuf, f64)>,
}

/// One model's perplexity, as `detox perplexity` prints it (one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityRecord {
    pub model: PathBuf,
    /// NADO decoding's auxiliary model and α, when the perplexity is of q rather than p.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nado_auxiliary: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nado_alpha: Option<f64>,
    pub text: PathBuf,
    pub paragraphs: usize,
    /// Tokens scored (each paragraph's first token is not: nothing precedes it).
    pub tokens: usize,
    pub max_tokens: usize,
    pub perplexity: f64,
}

/// WikiText-2's raw test split in the shared data folder.
pub fn default_wikitext() -> Result<PathBuf> {
    Ok(
        paths::require(&paths::data_dir("wikitext2"), "data folder wikitext2")
            .map_err(anyhow::Error::msg)?
            .join("raw")
            .join("wiki.test.raw"),
    )
}

/// The perplexity of the model in `model_dir` (float32) on the options' paragraphs.
pub fn wikitext_perplexity(
    model_dir: &Path,
    options: &PerplexityOptions,
) -> Result<PerplexityRecord> {
    let paragraphs: Vec<MixText> = data::wikitext::paragraphs(&options.text, 8)?
        .into_iter()
        .take(options.limit)
        .enumerate()
        .map(|(i, text)| MixText {
            id: format!("wikitext:{i}"),
            source: "wikitext2".into(),
            text,
            regularize: false,
        })
        .collect();
    let loaded = LoadedModel::load(model_dir, options.device, DtypeChoice::F32)?;
    let info = loaded.model.info();
    let sequences = encode_texts(
        &loaded.tokenizer,
        &paragraphs,
        options.max_tokens,
        info.vocab_size,
    )?;
    let (ppl, tokens) = match &options.nado {
        None => perplexity(loaded.model.as_ref(), &sequences, options.batch_size),
        Some((aux, alpha)) => {
            finetune::NadoParams { alpha: *alpha }.validate()?;
            let auxiliary = finetune::Auxiliary::load(aux, options.device, DtypeChoice::F32)?;
            finetune::nado::decoding_perplexity(
                loaded.model.as_ref(),
                &auxiliary,
                *alpha,
                &sequences,
                options.batch_size,
            )
        }
    };
    Ok(PerplexityRecord {
        model: model_dir.to_path_buf(),
        nado_auxiliary: options.nado.as_ref().map(|(aux, _)| aux.clone()),
        nado_alpha: options.nado.as_ref().map(|(_, alpha)| *alpha),
        text: options.text.clone(),
        paragraphs: sequences.len(),
        tokens,
        max_tokens: options.max_tokens,
        perplexity: ppl,
    })
}
