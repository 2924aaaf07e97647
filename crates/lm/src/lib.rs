//! Causal language models in tch, loaded offline from Hugging Face folders.
//!
//! Shape (after candle): one file per architecture; the model is `&self` and the KV cache lives
//! outside it; the base model returns final-norm hidden states and the LM head is a separate call,
//! because SASA, fusion and perplexity all need hidden states or every position's logits.

pub mod bert;
pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod gpt2;
pub mod likelihood;
pub mod llama;
pub mod nn;
pub mod sequences;
pub mod tokenizer;
pub mod train;
pub mod weights;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

pub use cache::KvCache;
pub use config::ArchitectureConfig;
pub use device::{DeviceChoice, DtypeChoice};
pub use tokenizer::TextTokenizer;
pub use weights::Weights;

/// Facts about a loaded model that callers need without knowing its architecture.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: &'static str,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_layers: usize,
    pub max_positions: Option<i64>,
    pub device: tch::Device,
    pub kind: Kind,
}

/// A decoder-only language model. Implementations hold only weights; all per-sequence state is in
/// the [`KvCache`] the caller owns.
pub trait CausalLm {
    fn info(&self) -> &ModelInfo;

    /// An empty cache shaped for this model.
    fn new_cache(&self) -> KvCache {
        KvCache::new(self.info().num_layers)
    }

    /// Runs `input_ids` `[batch, t]` after whatever `cache` holds and returns the final-norm hidden
    /// states `[batch, t, hidden]`. `real_mask` `[batch, t]` is 1 for real tokens and 0 for left
    /// padding; position ids continue each row's count of real tokens.
    fn forward_hidden(&self, input_ids: &Tensor, real_mask: &Tensor, cache: &mut KvCache)
        -> Tensor;

    /// The LM head: hidden states `[..., hidden]` to float32 logits `[..., vocab]`.
    fn logits(&self, hidden: &Tensor) -> Tensor;

    /// The token embedding table `[vocab, hidden]` (a handle sharing the model's storage).
    fn input_embeddings(&self) -> Tensor;

    /// The residual stream `[batch, t, hidden]` after the embeddings and the first `blocks`
    /// blocks (no final norm), for `input_ids` run from an empty cache. With
    /// [`hidden_from`](Self::hidden_from) it splits `forward_hidden` in two, so a trainer runs
    /// the frozen lower blocks once and only the trained upper ones every step.
    fn residual_after(&self, input_ids: &Tensor, real_mask: &Tensor, blocks: usize) -> Tensor;

    /// Runs blocks `first_block..` on a residual stream from
    /// [`residual_after`](Self::residual_after)`(.., first_block)` with the same `real_mask`,
    /// then the final norm: equal to `forward_hidden` from an empty cache.
    fn hidden_from(&self, residual: &Tensor, real_mask: &Tensor, first_block: usize) -> Tensor;

    /// The tensors a trainer updates for `selection`, as handles sharing storage with the model
    /// (so `set_requires_grad` and optimiser steps act on the model itself), named by checkpoint
    /// name where the model stores the checkpoint's layout and by an internal name where it
    /// stores a fused or transposed form (e.g. Llama's stacked Q/K/V, the head's `[in, out]`
    /// copy). A tied head is a transposed copy of the embedding here, so training the head
    /// unties it; see [`TrainableSelection`] for what that asks of the selection.
    ///
    /// Panics on a selection outside the model, or one that trains the embeddings of a tied
    /// model without its head (callers build selections from validated options).
    fn trainable_tensors(&self, selection: &TrainableSelection) -> Vec<(String, Tensor)>;

    /// Copies of the `selection`'s weights under their Hugging Face names and layouts, as a
    /// checkpoint stores them: what [`LoadedModel::load_with`] reads back as overrides, and
    /// what [`checkpoint::write_folder`] stores. A trained head is `lm_head.weight` even when
    /// the checkpoint ties it, which only `write_folder` can add (it unties the config).
    fn export_tensors(&self, selection: &TrainableSelection) -> Vec<(String, Tensor)>;
}

/// Which of a model's tensors are trained: some blocks, perhaps the final norm, and perhaps the
/// input embeddings and the LM head (all of them together is full fine-tuning).
///
/// Training the head of a tied model unties it: the head becomes its own parameter, starting
/// from the embedding, and a folder written from it says `tie_word_embeddings: false`. Training
/// the embeddings of a tied model without its head is refused, because the frozen head would
/// then be the old embedding: untied too, but silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainableSelection {
    pub blocks: std::ops::Range<usize>,
    pub final_norm: bool,
    /// The token embedding table (and GPT-2's learned position embeddings).
    pub embeddings: bool,
    /// The LM head, untied from the embedding when the model ties them.
    pub head: bool,
}

impl TrainableSelection {
    /// The last `blocks` of a model with `num_layers` blocks, and its final norm.
    pub fn top(blocks: usize, num_layers: usize) -> Self {
        Self {
            blocks: num_layers.saturating_sub(blocks)..num_layers,
            final_norm: true,
            embeddings: false,
            head: false,
        }
    }

    /// Every tensor of a model with `num_layers` blocks: blocks, final norm, embeddings and
    /// (untied) head.
    pub fn everything(num_layers: usize) -> Self {
        Self {
            blocks: 0..num_layers,
            final_norm: true,
            embeddings: true,
            head: true,
        }
    }
}

/// Panics unless `split` is a block boundary of a model with `num_layers` blocks (a caller bug:
/// the split comes from validated configuration).
pub(crate) fn check_block_split(split: usize, num_layers: usize) {
    assert!(
        split <= num_layers,
        "block split {split} is past the model's {num_layers} blocks"
    );
}

/// Panics unless `selection` fits a model with `num_layers` blocks whose head is tied to its
/// embedding when `head_tied` (see [`TrainableSelection`]).
pub(crate) fn check_selection(selection: &TrainableSelection, num_layers: usize, head_tied: bool) {
    assert!(
        selection.blocks.start <= selection.blocks.end && selection.blocks.end <= num_layers,
        "blocks {:?} are not inside the model's {num_layers} blocks",
        selection.blocks
    );
    assert!(
        !(head_tied && selection.embeddings && !selection.head),
        "training the embeddings of a model whose head is tied to them needs the head trained too"
    );
}

/// A model with its tokenizer and the folder it came from.
pub struct LoadedModel {
    pub model: Box<dyn CausalLm>,
    pub tokenizer: TextTokenizer,
    pub dir: PathBuf,
    /// Token ids that end generation (from generation_config.json, else config.json, else the
    /// tokenizer's end-of-sequence token).
    pub eos_token_ids: Vec<i64>,
}

impl LoadedModel {
    /// Loads `dir` (config.json, weights, tokenizer.json) onto the chosen device and dtype.
    pub fn load(dir: &Path, device: DeviceChoice, dtype: DtypeChoice) -> Result<Self> {
        Self::load_layers(dir, device, dtype, None)
    }

    /// [`LoadedModel::load`] keeping only the first `layers` transformer blocks when given: the
    /// final norm then applies to block `layers`' output, `forward_hidden` returns that, and the
    /// cache has `layers` layers. The other blocks' weights are dropped before the model is built.
    pub fn load_layers(
        dir: &Path,
        device: DeviceChoice,
        dtype: DtypeChoice,
        layers: Option<usize>,
    ) -> Result<Self> {
        Self::load_with(dir, device, dtype, layers, &[])
    }

    /// [`LoadedModel::load_layers`], then every tensor in each `overrides` safetensors file
    /// (Hugging Face names and layouts, as [`CausalLm::export_tensors`] writes them) replaces the
    /// checkpoint's tensor of that name: how trained blocks are stored without copying the rest
    /// of the checkpoint. An override the checkpoint lacks, or of another shape, is an error.
    pub fn load_with(
        dir: &Path,
        device: DeviceChoice,
        dtype: DtypeChoice,
        layers: Option<usize>,
        overrides: &[PathBuf],
    ) -> Result<Self> {
        if !dir.is_dir() {
            bail!("{}: model folder does not exist", dir.display());
        }
        let device = device.resolve()?;
        let kind = dtype.resolve(device)?;
        let mut config = ArchitectureConfig::from_file(&dir.join("config.json"))?;
        let full = config.clone();
        if let Some(layers) = layers {
            config = config
                .truncated(layers)
                .with_context(|| format!("{}", dir.display()))?;
        }
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        if tokenizer.vocab_size() as i64 > config.vocab_size() {
            bail!(
                "{}: tokenizer has {} tokens but the model's vocabulary is {}",
                dir.join("tokenizer.json").display(),
                tokenizer.vocab_size(),
                config.vocab_size()
            );
        }
        let mut weights = Weights::from_hf_folder(dir, device, kind)?;
        for file in overrides {
            weights.override_from(file, device, kind)?;
        }
        let kept = config.num_layers();
        weights.drop_where(|name| full.block_of_tensor(name).is_some_and(|b| b >= kept));
        let mut eos_token_ids = generation_eos(dir)?;
        let model: Box<dyn CausalLm> = match &config {
            ArchitectureConfig::Llama(c) => {
                if eos_token_ids.is_empty() {
                    eos_token_ids = c.eos_token_ids.clone();
                }
                Box::new(llama::Llama::load(c, &mut weights)?)
            }
            ArchitectureConfig::Gpt2(c) => {
                if eos_token_ids.is_empty() {
                    eos_token_ids.extend(c.eos_token_id);
                }
                Box::new(gpt2::Gpt2::load(c, &mut weights)?)
            }
        };
        if eos_token_ids.is_empty() {
            eos_token_ids.extend(tokenizer.eos_token_id());
        }
        Ok(Self {
            model,
            tokenizer,
            dir: dir.to_path_buf(),
            eos_token_ids,
        })
    }
}

/// End-of-sequence ids from `generation_config.json`, when the folder has one.
fn generation_eos(dir: &Path) -> Result<Vec<i64>> {
    let path = dir.join("generation_config.json");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    Ok(match value.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_i64()).collect(),
        _ => Vec::new(),
    })
}

/// Checks that every id is inside the model's vocabulary, before it reaches an embedding lookup
/// (libtorch would abort the process on an out-of-range index).
pub fn check_token_ids(ids: &[i64], vocab_size: i64) -> Result<()> {
    if let Some(bad) = ids.iter().find(|&&id| id < 0 || id >= vocab_size) {
        bail!("token id {bad} is outside the vocabulary [0, {vocab_size})");
    }
    Ok(())
}

/// Left-pads `rows` into `[rows, longest]` ids (pad id 0) and a real-token mask (0 on pads), on
/// `device`. Left padding keeps every row's last real token in the last column.
pub fn left_pad(rows: &[&[i64]], device: tch::Device) -> (Tensor, Tensor) {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * width);
    let mut mask = Vec::with_capacity(rows.len() * width);
    for row in rows {
        let pad = width - row.len();
        ids.extend(std::iter::repeat_n(0i64, pad).chain(row.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1i64, row.len())));
    }
    let shape = [rows.len() as i64, width as i64];
    (
        Tensor::from_slice(&ids).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}
