//! BERT-family encoders (BERT, RoBERTa): bidirectional, post-LayerNorm, learned absolute
//! positions. Used for sentence embeddings (all-MiniLM-L6-v2 under the `minilm` toxicity scorer)
//! and Hugging Face sequence classifiers (e.g. toxic-bert, roberta_toxicity_classifier).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::cache::AttentionMask;
use crate::nn::{attention, merge_heads, split_heads, LayerNorm, Linear};
use crate::weights::Weights;
use crate::{DeviceChoice, DtypeChoice};

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub model_type: String,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub max_position_embeddings: i64,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: i64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    /// Sequence-classification label names, when the folder is a classifier.
    #[serde(default)]
    pub id2label: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub problem_type: Option<String>,
}

fn default_type_vocab() -> i64 {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read model config", path.display()))?;
        let config: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a BERT/RoBERTa config", path.display()))?;
        if !matches!(
            config.model_type.as_str(),
            "bert" | "roberta" | "xlm-roberta"
        ) {
            bail!(
                "{}: model_type {:?} is not an encoder this harness implements (bert, roberta)",
                path.display(),
                config.model_type
            );
        }
        if !matches!(
            config.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh"
        ) {
            bail!(
                "{}: hidden_act {:?} is not supported",
                path.display(),
                config.hidden_act
            );
        }
        if config.hidden_size % config.num_attention_heads != 0 {
            bail!(
                "{}: hidden_size is not divisible by num_attention_heads",
                path.display()
            );
        }
        Ok(config)
    }

    /// RoBERTa numbers positions from `pad_token_id + 1` and counts only real tokens.
    fn is_roberta(&self) -> bool {
        self.model_type != "bert"
    }
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The encoder: embeddings and transformer layers, returning the last hidden states.
pub struct BertEncoder {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: i64,
    head_dim: i64,
    gelu_approximation: &'static str,
    roberta_padding_idx: Option<i64>,
    /// `bert.`, `roberta.` or empty: how the checkpoint names the encoder's weights.
    pub prefix: &'static str,
    pub config: BertConfig,
    pub device: Device,
}

impl BertEncoder {
    /// Loads a Hugging Face folder (config.json + safetensors). Weight names may carry the
    /// `bert.` / `roberta.` prefix of classification checkpoints.
    pub fn load(dir: &Path, device: DeviceChoice, dtype: DtypeChoice) -> Result<(Self, Weights)> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let device = device.resolve()?;
        let kind = dtype.resolve(device)?;
        let mut w = Weights::from_hf_folder(dir, device, kind)?;
        let prefix = ["bert.", "roberta.", ""]
            .into_iter()
            .find(|p| w.contains(&format!("{p}embeddings.word_embeddings.weight")))
            .with_context(|| {
                format!(
                    "{}: no embeddings.word_embeddings.weight",
                    w.source().display()
                )
            })?;
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let eps = config.layer_norm_eps;
        let e = format!("{prefix}embeddings");
        let word_embeddings = w.take(
            &format!("{e}.word_embeddings.weight"),
            &[config.vocab_size, h],
        )?;
        let position_embeddings = w.take(
            &format!("{e}.position_embeddings.weight"),
            &[config.max_position_embeddings, h],
        )?;
        let token_type_embeddings = w.take(
            &format!("{e}.token_type_embeddings.weight"),
            &[config.type_vocab_size, h],
        )?;
        let embeddings_norm = LayerNorm::load(&mut w, &format!("{e}.LayerNorm"), h, eps)?;
        let mut layers = Vec::new();
        for l in 0..config.num_hidden_layers {
            let p = format!("{prefix}encoder.layer.{l}");
            let q = Linear::load(&mut w, &format!("{p}.attention.self.query"), h, h, true)?;
            let k = Linear::load(&mut w, &format!("{p}.attention.self.key"), h, h, true)?;
            let v = Linear::load(&mut w, &format!("{p}.attention.self.value"), h, h, true)?;
            layers.push(Layer {
                qkv: Linear::stack(&[q, k, v]),
                attn_out: Linear::load(&mut w, &format!("{p}.attention.output.dense"), h, h, true)?,
                attn_norm: LayerNorm::load(
                    &mut w,
                    &format!("{p}.attention.output.LayerNorm"),
                    h,
                    eps,
                )?,
                intermediate: Linear::load(&mut w, &format!("{p}.intermediate.dense"), h, i, true)?,
                output: Linear::load(&mut w, &format!("{p}.output.dense"), i, h, true)?,
                output_norm: LayerNorm::load(&mut w, &format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        let roberta_padding_idx = config
            .is_roberta()
            .then(|| config.pad_token_id.unwrap_or(1));
        let encoder = Self {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embeddings_norm,
            layers,
            heads: config.num_attention_heads,
            head_dim: h / config.num_attention_heads,
            gelu_approximation: if config.hidden_act == "gelu" {
                "none"
            } else {
                "tanh"
            },
            roberta_padding_idx,
            prefix,
            config,
            device,
        };
        // The caller takes what else it needs (pooler, classifier) from the remaining weights.
        Ok((encoder, w))
    }

    /// Last hidden states `[batch, t, hidden]` for right-padded `input_ids` with `attention_mask`
    /// (1 real, 0 pad), token types all 0.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let input_ids = input_ids.to_device(self.device);
        let mask = attention_mask.to_device(self.device);
        let (b, t) = (input_ids.size()[0], input_ids.size()[1]);
        let positions = match self.roberta_padding_idx {
            Some(pad) => mask.cumsum(1, Kind::Int64) * &mask + pad,
            None => Tensor::arange(t, (Kind::Int64, self.device))
                .unsqueeze(0)
                .expand([b, t], false),
        };
        let embedded = Tensor::embedding(&self.word_embeddings, &input_ids, -1, false, false)
            + Tensor::embedding(&self.position_embeddings, &positions, -1, false, false)
            + self.token_type_embeddings.get(0);
        let mut x = self.embeddings_norm.forward(&embedded);
        // Keys that are padding are masked for every query; every row has real tokens ([CLS]).
        let keys = AttentionMask::Explicit(mask.to_kind(Kind::Bool).view([b, 1, 1, t]));
        let h = self.config.hidden_size;
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x).split(h, 2);
            let q = split_heads(&qkv[0], self.heads, self.head_dim);
            let k = split_heads(&qkv[1], self.heads, self.head_dim);
            let v = split_heads(&qkv[2], self.heads, self.head_dim);
            let context = merge_heads(&attention(&q, &k, &v, &keys, None));
            x = layer
                .attn_norm
                .forward(&(layer.attn_out.forward(&context) + &x));
            let inner = layer.intermediate.forward(&x).gelu(self.gelu_approximation);
            x = layer
                .output_norm
                .forward(&(layer.output.forward(&inner) + &x));
        }
        x
    }

    /// Mean of the hidden states over real tokens, L2-normalised: sentence-transformers'
    /// mean pooling + Normalize, as all-MiniLM-L6-v2 is used.
    pub fn mean_pooled(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let hidden = self.forward(input_ids, attention_mask).to_kind(Kind::Float);
        let mask = attention_mask
            .to_device(self.device)
            .to_kind(Kind::Float)
            .unsqueeze(-1);
        let summed = (&hidden * &mask).sum_dim_intlist(1, false, Kind::Float);
        let counts = mask.sum_dim_intlist(1, false, Kind::Float).clamp_min(1e-9);
        let mean = summed / counts;
        let norm = mean.norm_scalaropt_dim(2.0, [-1i64], true).clamp_min(1e-12);
        mean / norm
    }
}

/// Right-pads token id rows into `[rows, longest]` ids (pad id `pad`) and a mask, on `device`.
pub fn right_pad(rows: &[Vec<i64>], pad: i64, device: Device) -> (Tensor, Tensor) {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * width);
    let mut mask = Vec::with_capacity(rows.len() * width);
    for row in rows {
        ids.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(pad, width - row.len())),
        );
        mask.extend(
            std::iter::repeat_n(1i64, row.len()).chain(std::iter::repeat_n(0, width - row.len())),
        );
    }
    let shape = [rows.len() as i64, width as i64];
    (
        Tensor::from_slice(&ids).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}

/// How a classifier's logits become a toxicity probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelActivation {
    /// Labels are exclusive (`single_label_classification`): softmax over labels.
    Softmax,
    /// Labels are independent (`multi_label_classification`, e.g. toxic-bert): sigmoid each.
    Sigmoid,
}

/// A Hugging Face `BertForSequenceClassification` / `RobertaForSequenceClassification` folder
/// used as a toxicity scorer: the probability of its toxic label.
pub struct SequenceClassifier {
    pub encoder: BertEncoder,
    /// BERT: the pooler (dense + tanh on [CLS]); RoBERTa: `classifier.dense` (+ tanh on <s>).
    pre: Linear,
    out: Linear,
    pub labels: Vec<String>,
    pub toxic_label: usize,
    pub activation: LabelActivation,
}

impl SequenceClassifier {
    /// Loads the folder; `toxic_label` names the label to read (default: the one called `toxic`
    /// or `toxicity`, or `LABEL_1` of a two-label model).
    pub fn load(
        dir: &Path,
        device: DeviceChoice,
        dtype: DtypeChoice,
        toxic_label: Option<&str>,
    ) -> Result<Self> {
        let (encoder, mut w) = BertEncoder::load(dir, device, dtype)?;
        let config = &encoder.config;
        let h = config.hidden_size;
        let mut labels: Vec<(usize, String)> = config
            .id2label
            .as_ref()
            .with_context(|| {
                format!(
                    "{}: no id2label: not a sequence classifier",
                    dir.join("config.json").display()
                )
            })?
            .iter()
            .map(|(id, name)| id.parse::<usize>().map(|i| (i, name.clone())))
            .collect::<std::result::Result<_, _>>()
            .with_context(|| {
                format!(
                    "{}: id2label keys must be integers",
                    dir.join("config.json").display()
                )
            })?;
        labels.sort();
        let labels: Vec<String> = labels.into_iter().map(|(_, name)| name).collect();
        let n = labels.len() as i64;
        let (pre, out) = if encoder.prefix == "roberta." {
            (
                Linear::load(&mut w, "classifier.dense", h, h, true)?,
                Linear::load(&mut w, "classifier.out_proj", h, n, true)?,
            )
        } else {
            (
                Linear::load(
                    &mut w,
                    &format!("{}pooler.dense", encoder.prefix),
                    h,
                    h,
                    true,
                )?,
                Linear::load(&mut w, "classifier", h, n, true)?,
            )
        };
        let lower: Vec<String> = labels.iter().map(|l| l.to_lowercase()).collect();
        let toxic_label = match toxic_label {
            Some(name) => lower.iter().position(|l| *l == name.to_lowercase()),
            None => lower
                .iter()
                .position(|l| l == "toxic" || l == "toxicity")
                .or_else(|| (lower == ["label_0", "label_1"]).then_some(1)),
        }
        .with_context(|| {
            format!(
                "{}: cannot tell which label is toxic among {labels:?}; name it (e.g. hf:DIR#toxic)",
                dir.join("config.json").display()
            )
        })?;
        let activation = match config.problem_type.as_deref() {
            Some("multi_label_classification") => LabelActivation::Sigmoid,
            _ => LabelActivation::Softmax,
        };
        Ok(Self {
            encoder,
            pre,
            out,
            labels,
            toxic_label,
            activation,
        })
    }

    /// Label logits `[batch, labels]` for right-padded ids and mask.
    pub fn logits(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let first = self.encoder.forward(input_ids, attention_mask).select(1, 0);
        self.out
            .forward(&self.pre.forward(&first).tanh())
            .to_kind(Kind::Float)
    }

    /// Probability of the toxic label `[batch]`.
    pub fn toxicity(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Tensor {
        let logits = self.logits(input_ids, attention_mask);
        let probabilities = match self.activation {
            LabelActivation::Softmax => logits.softmax(-1, Kind::Float),
            LabelActivation::Sigmoid => logits.sigmoid(),
        };
        probabilities.select(1, self.toxic_label as i64)
    }
}
