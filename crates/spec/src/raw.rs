//! The spec as written (after includes are merged), before validation. Every struct denies
//! unknown keys.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use data::spec::PromptSourceSpec;
use metrics::MetricPolicy;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// Top level of a spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    /// Already merged by the loader; kept so `deny_unknown_fields` accepts the key.
    #[serde(default)]
    #[allow(dead_code)]
    pub include: Vec<String>,
    /// Experiment name; defaults to the spec file's stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Output folder; defaults to `results/<name>` under the project root.
    #[serde(default)]
    pub output: Option<PathBuf>,
    pub models: Vec<RawModel>,
    pub methods: Vec<RawMethod>,
    pub prompts: Vec<RawPromptSet>,
    #[serde(default)]
    pub generation: RawGeneration,
    pub scorers: Vec<String>,
    /// `same` (the default): each cell's own model; otherwise a model entry.
    #[serde(default)]
    pub judge: Option<RawModel>,
    #[serde(default)]
    pub policy: MetricPolicy,
    #[serde(default)]
    pub only: Vec<RawFilter>,
    #[serde(default)]
    pub exclude: Vec<RawFilter>,
}

/// Model file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFormat {
    /// A Hugging Face folder (`config.json`, `*.safetensors`, `tokenizer.json`).
    Hf,
    /// A single `.gguf` file.
    Gguf,
}

/// A model: either a string (a preset name, or a path when it contains `/` or ends in `.gguf`;
/// `same` for the judge) or a map.
#[derive(Debug, Clone, PartialEq)]
pub enum RawModel {
    Short(String),
    Full(RawModelFull),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelFull {
    /// Display name; defaults to the preset name or the path's file name.
    #[serde(default)]
    pub name: Option<String>,
    /// A preset in `configs/models/<preset>.yaml`.
    #[serde(default)]
    pub preset: Option<String>,
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Inferred from the path when absent (a folder is `hf`, a `.gguf` file is `gguf`).
    #[serde(default)]
    pub format: Option<ModelFormat>,
    /// A missing optional model drops its cells (listed by `detox validate`) instead of failing
    /// the spec: a paper-scale spec runs on whichever checkpoints a machine has. A missing
    /// optional judge falls back to each cell's own model.
    #[serde(default)]
    pub optional: bool,
}

impl<'de> Deserialize<'de> for RawModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawModel;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a preset name, a path, or a map with `preset` or `path`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawModel, E> {
                Ok(RawModel::Short(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawModel, A::Error> {
                RawModelFull::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawModel::Full)
            }
        }
        d.deserialize_any(V)
    }
}

/// A single value or a list of them (the sweep axes: `strength`, `seed`).
#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany<T> {
    pub values: Vec<T>,
    /// Whether the spec wrote a list (error paths then carry an index).
    pub is_list: bool,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> V<T> {
            fn one<E: de::Error>(v: impl de::IntoDeserializer<'de, E>) -> Result<OneOrMany<T>, E> {
                Ok(OneOrMany {
                    values: vec![T::deserialize(v.into_deserializer())?],
                    is_list: false,
                })
            }
        }
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a list of numbers")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Self::one(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Self::one(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Self::one(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let values = Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(OneOrMany {
                    values,
                    is_list: true,
                })
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// One method entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMethod {
    /// A single method; an entry gives either `name` or `stack`.
    #[serde(default)]
    pub name: Option<String>,
    /// Distinguishes two entries of the same method with different parameters; defaults to `name`
    /// (for a stack, the step names joined by `+`).
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, serde_yaml::Value>,
    /// One strength or a list (a sweep).
    #[serde(default)]
    pub strength: Option<OneOrMany<f64>>,
    /// Methods applied together in this order under one decoder loop (e.g. word_filter then
    /// sasa). Strength lists of the steps expand as a product.
    #[serde(default)]
    pub stack: Option<Vec<RawMethodStep>>,
    /// The method entry (its label) this entry's cells are compared with; defaults to `none`
    /// when the spec has a `none` entry.
    #[serde(default)]
    pub baseline: Option<String>,
    /// This entry's top-p, overriding `generation.top_p` (1 turns it off). Without it, a method
    /// that draws from the full distribution (RAD) runs with top-p off.
    #[serde(default)]
    pub top_p: Option<f64>,
}

/// One method inside a `stack`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMethodStep {
    pub name: String,
    #[serde(default)]
    pub params: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub strength: Option<OneOrMany<f64>>,
}

/// One prompt set: a name plus a [`PromptSourceSpec`] (`kind`, `path`, options).
#[derive(Debug, Clone, Deserialize)]
pub struct RawPromptSet {
    /// Defaults to the file stem of the source's path.
    #[serde(default)]
    pub name: Option<String>,
    /// A missing optional prompt file drops its cells instead of failing the spec.
    #[serde(default)]
    pub optional: bool,
    #[serde(flatten)]
    pub source: PromptSourceSpec,
}

/// Numeric type the model runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    #[default]
    F32,
    F16,
    Bf16,
    /// f32 on CPU, bf16 on CUDA, decided when the cell runs (the run record says which).
    Auto,
}

fn default_samples() -> usize {
    25
}
fn default_max_new_tokens() -> usize {
    20
}
fn default_temperature() -> f64 {
    1.0
}
fn default_top_p() -> Option<f64> {
    Some(0.9)
}
fn default_batch_size() -> usize {
    32
}
fn default_device() -> String {
    "auto".into()
}

/// Generation settings; the defaults are the toxicity papers' protocol (25 samples of 20 tokens,
/// nucleus sampling with top-p 0.9 at temperature 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeneration {
    #[serde(default = "default_samples")]
    pub samples_per_prompt: usize,
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
    /// End-of-sequence suppressed for the first this-many new tokens, for every method alike
    /// (Hugging Face's min-new-tokens processor); 0, the default, never suppresses it. Equal to
    /// `max_new_tokens`, every sample has the same length.
    #[serde(default)]
    pub min_new_tokens: usize,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "default_top_p")]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// One seed or a list (a sweep axis).
    #[serde(default)]
    pub seed: Option<OneOrMany<u64>>,
    /// `auto`, `cpu`, `cuda`, `cuda:N` or `mps`.
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default)]
    pub dtype: Dtype,
}

impl Default for RawGeneration {
    fn default() -> Self {
        RawGeneration {
            samples_per_prompt: default_samples(),
            max_new_tokens: default_max_new_tokens(),
            min_new_tokens: 0,
            temperature: default_temperature(),
            top_p: default_top_p(),
            top_k: None,
            batch_size: default_batch_size(),
            seed: None,
            device: default_device(),
            dtype: Dtype::default(),
        }
    }
}

/// A partial cell: a cell matches when every field given equals the cell's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Method label (the method name unless the entry sets `label`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    /// Prompt set name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}
