//! Hugging Face `config.json`, read into one typed configuration per architecture.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

/// The checkpoint name of an untied LM head, in both architectures.
pub const HEAD_TENSOR: &str = "lm_head.weight";

/// The config.json key saying whether the head is the token embedding.
pub const TIE_KEY: &str = "tie_word_embeddings";

/// The architectures this crate implements, chosen by `model_type` in `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchitectureConfig {
    Llama(LlamaConfig),
    Gpt2(Gpt2Config),
}

impl ArchitectureConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read model config", path.display()))?;
        Self::from_json(&text).with_context(|| format!("{}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).context("config is not valid JSON")?;
        let model_type = value
            .get("model_type")
            .and_then(Value::as_str)
            .context("config has no \"model_type\"")?;
        match model_type {
            // Mistral-style and SmolLM checkpoints use the Llama block unchanged.
            "llama" | "smollm" | "smollm2" => Ok(Self::Llama(LlamaConfig::from_value(&value)?)),
            "gpt2" => Ok(Self::Gpt2(Gpt2Config::from_value(&value)?)),
            other => bail!("unknown architecture model_type={other:?} (supported: llama, gpt2)"),
        }
    }

    pub fn vocab_size(&self) -> i64 {
        match self {
            Self::Llama(c) => c.vocab_size,
            Self::Gpt2(c) => c.vocab_size,
        }
    }

    /// Transformer blocks in the checkpoint.
    pub fn num_layers(&self) -> usize {
        match self {
            Self::Llama(c) => c.num_hidden_layers as usize,
            Self::Gpt2(c) => c.n_layer as usize,
        }
    }

    /// The same model keeping only its first `layers` blocks (embeddings, final norm and head
    /// unchanged): what a reward model or probe built on a lower part of the network loads.
    pub fn truncated(&self, layers: usize) -> Result<Self> {
        let total = self.num_layers();
        if layers == 0 || layers > total {
            bail!("cannot keep {layers} layers of a model with {total} (expected 1..={total})");
        }
        let mut config = self.clone();
        match &mut config {
            Self::Llama(c) => c.num_hidden_layers = layers as i64,
            Self::Gpt2(c) => c.n_layer = layers as i64,
        }
        Ok(config)
    }

    /// The config.json key holding the number of blocks.
    pub fn layers_key(&self) -> &'static str {
        match self {
            Self::Llama(_) => "num_hidden_layers",
            Self::Gpt2(_) => "n_layer",
        }
    }

    /// Whether the LM head is the token embedding (`tie_word_embeddings`, whose default differs
    /// by architecture: off for Llama, on for GPT-2).
    pub fn head_tied(&self) -> bool {
        match self {
            Self::Llama(c) => c.tie_word_embeddings,
            Self::Gpt2(c) => c.tie_word_embeddings,
        }
    }

    /// Whether `name` is the checkpoint's token embedding table (GPT-2's with or without the
    /// `transformer.` prefix).
    pub fn is_token_embedding(&self, name: &str) -> bool {
        match self {
            Self::Llama(_) => name == "model.embed_tokens.weight",
            Self::Gpt2(_) => name.strip_prefix("transformer.").unwrap_or(name) == "wte.weight",
        }
    }

    /// The block a checkpoint tensor belongs to (`model.layers.7.…` for Llama, `h.7.…` or
    /// `transformer.h.7.…` for GPT-2), or `None` for tensors outside the blocks.
    pub fn block_of_tensor(&self, name: &str) -> Option<usize> {
        let rest = match self {
            Self::Llama(_) => name.strip_prefix("model.layers.")?,
            Self::Gpt2(_) => name
                .strip_prefix("transformer.")
                .unwrap_or(name)
                .strip_prefix("h.")?,
        };
        rest.split('.').next()?.parse().ok()
    }
}

/// How RoPE frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// Llama-3.1's frequency-dependent rescaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: i64,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<i64>,
    pub eos_token_ids: Vec<i64>,
}

#[derive(Deserialize)]
struct RawLlama {
    vocab_size: i64,
    hidden_size: i64,
    intermediate_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    num_key_value_heads: Option<i64>,
    head_dim: Option<i64>,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: i64,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    hidden_act: Option<String>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

fn default_rms_eps() -> f64 {
    1e-6
}

fn default_max_positions() -> i64 {
    2048
}

/// `eos_token_id` is an integer in most checkpoints and a list in Llama-3's.
fn token_ids(value: &Option<Value>) -> Vec<i64> {
    match value {
        Some(Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_i64).collect(),
        _ => Vec::new(),
    }
}

impl LlamaConfig {
    fn from_value(value: &Value) -> Result<Self> {
        let raw: RawLlama =
            serde_json::from_value(value.clone()).context("invalid llama config")?;
        if let Some(act) = &raw.hidden_act {
            if act != "silu" {
                bail!("hidden_act={act:?} is not supported for llama (only \"silu\")");
            }
        }
        if raw.num_attention_heads <= 0 || raw.hidden_size % raw.num_attention_heads != 0 {
            bail!(
                "hidden_size={} is not divisible by num_attention_heads={}",
                raw.hidden_size,
                raw.num_attention_heads
            );
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_key_value_heads <= 0 || raw.num_attention_heads % num_key_value_heads != 0 {
            bail!(
                "num_attention_heads={} is not a multiple of num_key_value_heads={num_key_value_heads}",
                raw.num_attention_heads
            );
        }
        // transformers 5 nests rope settings under `rope_parameters`; older checkpoints keep
        // `rope_theta` and `rope_scaling` at the top level. Read both.
        let rope_parameters = raw.rope_parameters.as_ref();
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                rope_parameters
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10_000.0);
        let scaling_value = raw
            .rope_scaling
            .as_ref()
            .filter(|v| !v.is_null())
            .or(rope_parameters);
        let rope_scaling = match scaling_value {
            None => RopeScaling::None,
            Some(v) => parse_rope_scaling(v, raw.max_position_embeddings)?,
        };
        Ok(Self {
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads,
            head_dim: raw
                .head_dim
                .unwrap_or(raw.hidden_size / raw.num_attention_heads),
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
            bos_token_id: token_ids(&raw.bos_token_id).first().copied(),
            eos_token_ids: token_ids(&raw.eos_token_id),
        })
    }
}

fn parse_rope_scaling(v: &Value, max_positions: i64) -> Result<RopeScaling> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |key: &str| -> Result<f64> {
        v.get(key)
            .and_then(Value::as_f64)
            .with_context(|| format!("rope_scaling of type {kind:?} needs a number {key:?}"))
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: number("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: v
                .get("original_max_position_embeddings")
                .and_then(Value::as_f64)
                .unwrap_or(max_positions as f64),
        },
        other => bail!("rope_scaling type {other:?} is not supported (default, linear, llama3)"),
    })
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: i64,
    pub n_positions: i64,
    pub n_embd: i64,
    pub n_layer: i64,
    pub n_head: i64,
    pub n_inner: Option<i64>,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_gelu")]
    pub activation_function: String,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    pub reorder_and_upcast_attn: bool,
    /// Hugging Face's default for GPT-2 is a head tied to `wte`; a checkpoint written with a
    /// trained head says `false` and stores `lm_head.weight`.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
}

fn default_ln_eps() -> f64 {
    1e-5
}

fn default_gelu() -> String {
    "gelu_new".to_string()
}

fn default_true() -> bool {
    true
}

impl Gpt2Config {
    fn from_value(value: &Value) -> Result<Self> {
        let config: Self = serde_json::from_value(value.clone()).context("invalid gpt2 config")?;
        if !matches!(
            config.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu"
        ) {
            bail!(
                "activation_function={:?} is not supported for gpt2 (gelu_new, gelu_pytorch_tanh, gelu)",
                config.activation_function
            );
        }
        if config.n_head <= 0 || config.n_embd % config.n_head != 0 {
            bail!(
                "n_embd={} is not divisible by n_head={}",
                config.n_embd,
                config.n_head
            );
        }
        Ok(config)
    }

    pub fn inner_size(&self) -> i64 {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rope_theta_from_either_place() {
        let old = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"rope_theta":100000.0}"#;
        let new = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,
            "rope_parameters":{"rope_theta":100000.0,"rope_type":"default"}}"#;
        for text in [old, new] {
            let ArchitectureConfig::Llama(c) = ArchitectureConfig::from_json(text).unwrap() else {
                panic!("not llama")
            };
            assert_eq!(c.rope_theta, 100000.0);
            assert_eq!(c.rope_scaling, RopeScaling::None);
            assert_eq!(c.num_key_value_heads, 2);
            assert_eq!(c.head_dim, 4);
        }
    }

    #[test]
    fn reads_llama3_rope_scaling_and_eos_list() {
        let text = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"rope_theta":500000.0,
            "max_position_embeddings":131072,"eos_token_id":[128001,128008,128009],
            "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":8192,"rope_type":"llama3"}}"#;
        let ArchitectureConfig::Llama(c) = ArchitectureConfig::from_json(text).unwrap() else {
            panic!("not llama")
        };
        assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
        assert_eq!(
            c.rope_scaling,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0
            }
        );
    }

    #[test]
    fn truncation_keeps_the_first_blocks_and_names_their_tensors() {
        let llama = ArchitectureConfig::from_json(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":4,"num_attention_heads":2}"#,
        )
        .unwrap();
        assert_eq!(llama.num_layers(), 4);
        assert_eq!(llama.truncated(2).unwrap().num_layers(), 2);
        assert!(llama.truncated(0).is_err() && llama.truncated(5).is_err());
        assert_eq!(
            llama.block_of_tensor("model.layers.3.mlp.up_proj.weight"),
            Some(3)
        );
        assert_eq!(llama.block_of_tensor("model.norm.weight"), None);
        let gpt2 = ArchitectureConfig::from_json(
            r#"{"model_type":"gpt2","vocab_size":10,"n_positions":8,"n_embd":8,"n_layer":3,
            "n_head":2}"#,
        )
        .unwrap();
        assert_eq!(
            gpt2.block_of_tensor("transformer.h.12.ln_1.weight"),
            Some(12)
        );
        assert_eq!(gpt2.block_of_tensor("h.0.attn.c_attn.bias"), Some(0));
        assert_eq!(gpt2.block_of_tensor("wte.weight"), None);
    }

    #[test]
    fn rejects_unknown_architecture_and_bad_shapes() {
        let err = ArchitectureConfig::from_json(r#"{"model_type":"mamba"}"#).unwrap_err();
        assert!(err.to_string().contains("mamba"), "{err}");
        let err = ArchitectureConfig::from_json(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":9,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("divisible"), "{err}");
        let err = ArchitectureConfig::from_json(
            r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"rope_scaling":{"rope_type":"yarn","factor":2}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("yarn"), "{err}");
    }
}
