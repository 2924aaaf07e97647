//! The Hugging Face side: llama tensor names, config.json, and the streaming safetensors writer.

use crate::error::GgufError;
use crate::reader::{GgufFile, TensorInfo};
use crate::tokenizer::SpecialIds;
use serde_json::{json, Map, Value};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Hyper-parameters read from `llama.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: u64,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub num_hidden_layers: u64,
    pub num_attention_heads: u64,
    pub num_key_value_heads: u64,
    pub head_dim: u64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: u64,
    pub tie_word_embeddings: bool,
    /// `rope_scaling` for config.json, when the GGUF asks for linear scaling.
    pub rope_scaling: Option<Value>,
    pub special: SpecialIds,
}

impl LlamaConfig {
    pub fn from_gguf(gguf: &GgufFile, vocab_size: u64) -> Result<Self, GgufError> {
        let arch = gguf.architecture()?;
        if arch != "llama" {
            return Err(GgufError::UnknownArchitecture {
                path: gguf.path().to_path_buf(),
                arch: arch.to_string(),
            });
        }
        let bad = |key: &str, what: String| GgufError::BadMetadata {
            path: gguf.path().to_path_buf(),
            key: key.to_string(),
            what,
        };
        let hidden_size = gguf.get_u64("llama.embedding_length")?;
        let num_attention_heads = gguf.get_u64("llama.attention.head_count")?;
        let num_key_value_heads = gguf
            .get_u64_opt("llama.attention.head_count_kv")?
            .unwrap_or(num_attention_heads);
        if num_attention_heads == 0 || num_key_value_heads == 0 {
            return Err(bad("llama.attention.head_count", "zero heads".into()));
        }
        if num_attention_heads % num_key_value_heads != 0 {
            return Err(bad(
                "llama.attention.head_count_kv",
                format!("{num_key_value_heads} does not divide {num_attention_heads} heads"),
            ));
        }
        let head_dim = match gguf.get_u64_opt("llama.attention.key_length")? {
            Some(d) => d,
            None => hidden_size / num_attention_heads,
        };
        // Rotary embeddings rotate pairs of a head, and the Q/K un-permutation needs the halves.
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(
                "llama.attention.key_length",
                format!("head size {head_dim} is not even"),
            ));
        }

        let rope_scaling = match gguf.get("llama.rope.scaling.type").and_then(|v| v.as_str()) {
            None | Some("none") => None,
            Some("linear") => Some(json!({
                "type": "linear",
                "factor": gguf.get_f64("llama.rope.scaling.factor")?,
            })),
            Some(other) => {
                return Err(bad(
                    "llama.rope.scaling.type",
                    format!("rope scaling {other:?} is not supported (only linear)"),
                ))
            }
        };

        Ok(LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: gguf.get_u64("llama.feed_forward_length")?,
            num_hidden_layers: gguf.get_u64("llama.block_count")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: gguf.get_f64("llama.attention.layer_norm_rms_epsilon")?,
            // llama.cpp's default when the key is absent.
            rope_theta: match gguf.get("llama.rope.freq_base") {
                None => 10_000.0,
                Some(_) => gguf.get_f64("llama.rope.freq_base")?,
            },
            max_position_embeddings: gguf.get_u64("llama.context_length")?,
            tie_word_embeddings: gguf.tensor("output.weight").is_none(),
            rope_scaling,
            special: SpecialIds::from_gguf(gguf)?,
        })
    }

    /// config.json in the pre-transformers-5 layout (top-level `rope_theta`), which both old and
    /// new transformers read.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        self.insert_special_ids(&mut v);
        v
    }

    pub fn generation_config_json(&self) -> Value {
        let mut v = json!({});
        self.insert_special_ids(&mut v);
        v
    }

    fn insert_special_ids(&self, v: &mut Value) {
        let s = &self.special;
        for (key, id) in [
            ("bos_token_id", s.bos),
            ("eos_token_id", s.eos),
            ("pad_token_id", s.pad),
        ] {
            if let Some(id) = id {
                v[key] = json!(id);
            }
        }
    }
}

/// How a GGUF tensor becomes a safetensors tensor.
#[derive(Debug)]
pub struct PlannedTensor<'a> {
    pub hf_name: String,
    pub info: &'a TensorInfo,
    /// Heads to un-permute the rows with (Q and K only).
    pub unpermute_heads: Option<usize>,
}

/// Maps every GGUF tensor to its HF name and checks that the set and the shapes are exactly
/// what `config` describes, so the write cannot fail halfway on a bad tensor.
pub fn plan<'a>(
    gguf: &'a GgufFile,
    config: &LlamaConfig,
) -> Result<Vec<PlannedTensor<'a>>, GgufError> {
    let path = gguf.path();
    let (h, ff, v) = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
    );
    let q_dim = config.num_attention_heads * config.head_dim;
    let kv_dim = config.num_key_value_heads * config.head_dim;

    let mut planned = Vec::new();
    for info in gguf.tensors() {
        let unmapped = || GgufError::UnmappedTensor {
            path: path.to_path_buf(),
            tensor: info.name.clone(),
        };
        let (hf_name, dims, heads) = match info.name.as_str() {
            "token_embd.weight" => ("model.embed_tokens.weight".to_string(), vec![h, v], None),
            "output_norm.weight" => ("model.norm.weight".to_string(), vec![h], None),
            "output.weight" => ("lm_head.weight".to_string(), vec![h, v], None),
            name => {
                let rest = name.strip_prefix("blk.").ok_or_else(unmapped)?;
                let (layer_str, part) = rest.split_once('.').ok_or_else(unmapped)?;
                let layer: u64 = layer_str.parse().map_err(|_| unmapped())?;
                // "blk.01" or a layer past block_count would silently alias or be dropped.
                if layer >= config.num_hidden_layers || layer.to_string() != layer_str {
                    return Err(unmapped());
                }
                let (suffix, dims, heads) = match part {
                    "attn_q.weight" => (
                        "self_attn.q_proj.weight",
                        vec![h, q_dim],
                        Some(config.num_attention_heads),
                    ),
                    "attn_k.weight" => (
                        "self_attn.k_proj.weight",
                        vec![h, kv_dim],
                        Some(config.num_key_value_heads),
                    ),
                    "attn_v.weight" => ("self_attn.v_proj.weight", vec![h, kv_dim], None),
                    "attn_output.weight" => ("self_attn.o_proj.weight", vec![q_dim, h], None),
                    "ffn_gate.weight" => ("mlp.gate_proj.weight", vec![h, ff], None),
                    "ffn_up.weight" => ("mlp.up_proj.weight", vec![h, ff], None),
                    "ffn_down.weight" => ("mlp.down_proj.weight", vec![ff, h], None),
                    "attn_norm.weight" => ("input_layernorm.weight", vec![h], None),
                    "ffn_norm.weight" => ("post_attention_layernorm.weight", vec![h], None),
                    _ => return Err(unmapped()),
                };
                (format!("model.layers.{layer}.{suffix}"), dims, heads)
            }
        };
        if info.dims != dims {
            return Err(GgufError::BadShape {
                path: path.to_path_buf(),
                tensor: info.name.clone(),
                found: info.dims.clone(),
                expected: dims,
            });
        }
        if !info.ty.is_supported() {
            return Err(GgufError::UnsupportedType {
                path: path.to_path_buf(),
                tensor: info.name.clone(),
                ty: info.ty.name(),
            });
        }
        planned.push(PlannedTensor {
            hf_name,
            info,
            unpermute_heads: heads.map(|n| n as usize),
        });
    }

    let mut required = vec![
        "token_embd.weight".to_string(),
        "output_norm.weight".to_string(),
    ];
    for layer in 0..config.num_hidden_layers {
        for part in [
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
            "attn_norm",
            "ffn_norm",
        ] {
            required.push(format!("blk.{layer}.{part}.weight"));
        }
    }
    if let Some(missing) = required
        .into_iter()
        .find(|name| gguf.tensor(name).is_none())
    {
        return Err(GgufError::MissingTensor {
            path: path.to_path_buf(),
            tensor: missing,
        });
    }
    planned.sort_by(|a, b| a.hf_name.cmp(&b.hf_name));
    Ok(planned)
}

/// llama.cpp's `permute` from convert_hf_to_gguf.py, applied to the rows of a row-major
/// `[rows, cols]` matrix: `reshape(n_heads, 2, head_dim / 2, cols).swapaxes(1, 2)`. It turns HF's
/// rotate-half layout of each head into ggml's interleaved pairs. Kept for tests and writers.
pub fn permute_rows(w: &[f32], cols: usize, n_heads: usize) -> Vec<f32> {
    reorder_rows(w, cols, n_heads, |half, pair, bit| {
        (pair * 2 + bit, bit * half + pair)
    })
}

/// The exact inverse of [`permute_rows`]: ggml's interleaved rows back to HF's layout, which is
/// what transformers does when it loads a GGUF.
pub fn unpermute_rows(w: &[f32], cols: usize, n_heads: usize) -> Vec<f32> {
    reorder_rows(w, cols, n_heads, |half, pair, bit| {
        (bit * half + pair, pair * 2 + bit)
    })
}

/// Within each head, row `dst` of the output is row `src` of the input, for every
/// (pair < head_dim / 2, bit < 2) with `(dst, src) = map(head_dim / 2, pair, bit)`.
fn reorder_rows(
    w: &[f32],
    cols: usize,
    n_heads: usize,
    map: impl Fn(usize, usize, usize) -> (usize, usize),
) -> Vec<f32> {
    let rows = w.len() / cols;
    let head_dim = rows / n_heads;
    let half = head_dim / 2;
    debug_assert_eq!(rows * cols, w.len());
    debug_assert_eq!(head_dim * n_heads, rows);
    debug_assert_eq!(half * 2, head_dim);
    let mut out = vec![0.0; w.len()];
    for head in 0..n_heads {
        let base = head * head_dim;
        for pair in 0..half {
            for bit in 0..2 {
                let (dst, src) = map(half, pair, bit);
                let (dst, src) = ((base + dst) * cols, (base + src) * cols);
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

/// Writes `model.safetensors` one tensor at a time: only the tensor being written is ever
/// dequantized in memory, never the whole model. Returns the parameter count.
pub fn write_safetensors(
    gguf: &GgufFile,
    planned: &[PlannedTensor],
    out: &Path,
) -> Result<u64, GgufError> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for t in planned {
        let n_bytes = t.info.n_elements() * 4;
        header.insert(
            t.hf_name.clone(),
            json!({
                "dtype": "F32",
                "shape": t.info.shape(),
                "data_offsets": [offset, offset + n_bytes],
            }),
        );
        offset += n_bytes;
    }
    let mut header =
        serde_json::to_vec(&Value::Object(header)).map_err(|e| GgufError::io(out, e.into()))?;
    // safetensors readers expect the data to start 8-byte aligned; spaces are valid JSON padding.
    header.resize(header.len().next_multiple_of(8), b' ');

    let io = |e| GgufError::io(out, e);
    let file = File::create(out).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&header).map_err(io)?;

    let mut params = 0;
    // Converting in chunks keeps the byte copy small next to the tensor itself.
    let mut bytes = Vec::with_capacity(1 << 18);
    for t in planned {
        let mut values = gguf.dequantize_info(t.info)?;
        if let Some(n_heads) = t.unpermute_heads {
            values = unpermute_rows(&values, t.info.dims[0] as usize, n_heads);
        }
        for chunk in values.chunks(1 << 16) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
            w.write_all(&bytes).map_err(io)?;
        }
        params += values.len() as u64;
    }
    w.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_permute() {
        // 2 KV heads of size 6 (K) and 4 query heads (Q) over 5 columns: n_head != n_head_kv.
        let cols = 5;
        for (n_heads, head_dim) in [(4usize, 6usize), (2, 6), (3, 2)] {
            let w: Vec<f32> = (0..n_heads * head_dim * cols).map(|i| i as f32).collect();
            let p = permute_rows(&w, cols, n_heads);
            if head_dim > 2 {
                assert_ne!(p, w, "permute must move rows when head_dim > 2");
            }
            assert_eq!(unpermute_rows(&p, cols, n_heads), w);
            assert_eq!(
                permute_rows(&unpermute_rows(&w, cols, n_heads), cols, n_heads),
                w
            );
        }
    }

    #[test]
    fn permute_matches_numpy_reshape_swapaxes() {
        // One head of size 4, one column: HF rows [a0, a1, b0, b1] (rotate-half) become
        // [a0, b0, a1, b1] under reshape(1, 2, 2, 1).swapaxes(1, 2).
        let hf = [10.0, 11.0, 20.0, 21.0];
        assert_eq!(permute_rows(&hf, 1, 1), vec![10.0, 20.0, 11.0, 21.0]);
        // Two heads of size 4, two columns.
        let hf: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let rows = |order: &[usize]| {
            order
                .iter()
                .flat_map(|&r| [hf[2 * r], hf[2 * r + 1]])
                .collect::<Vec<_>>()
        };
        assert_eq!(permute_rows(&hf, 2, 2), rows(&[0, 2, 1, 3, 4, 6, 5, 7]));
        assert_eq!(unpermute_rows(&rows(&[0, 2, 1, 3, 4, 6, 5, 7]), 2, 2), hf);
    }
}
