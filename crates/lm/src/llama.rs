//! Llama family: RMSNorm, rotary positions (with Llama-3 / linear rescaling), grouped-query
//! attention, SwiGLU MLP, tied or separate LM head. Covers SmolLM2, Llama-2 and Llama-3.x.

use std::ops::Range;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::cache::{AttentionMask, KvCache};
use crate::config::{LlamaConfig, RopeScaling, HEAD_TENSOR};
use crate::nn::{attention, merge_heads, Linear, RmsNorm};
use crate::weights::Weights;
use crate::{check_block_split, check_selection, CausalLm, ModelInfo, TrainableSelection};

/// Inverse rotary frequencies `[head_dim / 2]`, rescaled as the config asks.
fn inverse_frequencies(config: &LlamaConfig) -> Vec<f64> {
    let dim = config.head_dim as f64;
    let base: Vec<f64> = (0..config.head_dim / 2)
        .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f64 / dim))
        .collect();
    match config.rope_scaling {
        RopeScaling::None => base,
        RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_context,
        } => {
            // Long wavelengths are slowed by `factor`, short ones kept, the band between blended.
            let low_freq_wavelen = old_context / low_freq_factor;
            let high_freq_wavelen = old_context / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (old_context / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

struct Rotary {
    /// `[head_dim / 2]` float32.
    inv_freq: Tensor,
}

impl Rotary {
    /// cos and signed sin `[batch, t, 1, head_dim]` for position ids `[batch, t]`, shaped to
    /// broadcast over heads in the `[batch, t, heads, head_dim]` layout. The sin's first half is
    /// negated so that `rotate_half(x) * sin == x.roll(half) * signed_sin`.
    fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let cos = freqs.cos();
        let sin = freqs.sin();
        let cos = Tensor::cat(&[&cos, &cos], -1).unsqueeze(2);
        let signed_sin = Tensor::cat(&[&(-&sin), &sin], -1).unsqueeze(2);
        (cos.to_kind(kind), signed_sin.to_kind(kind))
    }
}

/// Hugging Face Llama's "rotate half" rotary embedding (not the interleaved form of Meta's code;
/// converted checkpoints store Q/K rows for this one), on `[batch, t, heads, head_dim]`.
fn apply_rotary(x: &Tensor, cos: &Tensor, signed_sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    x * cos + x.roll([half], [3]) * signed_sin
}

struct Attention {
    /// Q, K and V projections stacked into one `[(heads + 2 kv_heads) * head_dim, hidden]`
    /// matrix: one matmul per layer instead of three, which at batch 1 streams the weights
    /// closer to memory bandwidth.
    qkv_proj: Linear,
    o_proj: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn load(c: &LlamaConfig, w: &mut Weights, prefix: &str) -> Result<Self> {
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (heads, kv_heads) = (c.num_attention_heads, c.num_key_value_heads);
        // Llama checkpoints have no attention biases; a checkpoint with them (Qwen-style) is
        // refused as having unused tensors rather than silently mis-loaded.
        let q = Linear::load(w, &format!("{prefix}.q_proj"), h, heads * hd, false)?;
        let k = Linear::load(w, &format!("{prefix}.k_proj"), h, kv_heads * hd, false)?;
        let v = Linear::load(w, &format!("{prefix}.v_proj"), h, kv_heads * hd, false)?;
        Ok(Self {
            qkv_proj: Linear::stack(&[q, k, v]),
            o_proj: Linear::load(w, &format!("{prefix}.o_proj"), heads * hd, h, false)?,
            heads,
            kv_heads,
            head_dim: hd,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos_sin: &(Tensor, Tensor),
        mask: &AttentionMask,
        layer: usize,
        cache: &mut KvCache,
    ) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let qkv =
            self.qkv_proj
                .forward(x)
                .view([b, t, self.heads + 2 * self.kv_heads, self.head_dim]);
        // Rotate Q and K heads together, in the projection's own layout.
        let qk = apply_rotary(
            &qkv.narrow(2, 0, self.heads + self.kv_heads),
            &cos_sin.0,
            &cos_sin.1,
        );
        let q = qk.narrow(2, 0, self.heads).transpose(1, 2);
        let k = qk.narrow(2, self.heads, self.kv_heads).transpose(1, 2);
        let v = qkv
            .narrow(2, self.heads + self.kv_heads, self.kv_heads)
            .transpose(1, 2);
        let (k, v) = cache.extend_layer(layer, k, v);
        self.o_proj
            .forward(&merge_heads(&attention(&q, &k, &v, mask, None)))
    }
}

struct Mlp {
    /// Gate and up projections stacked `[2 * intermediate, hidden]`: one matmul.
    gate_up_proj: Linear,
    down_proj: Linear,
    intermediate: i64,
}

impl Mlp {
    fn load(c: &LlamaConfig, w: &mut Weights, prefix: &str) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let gate = Linear::load(w, &format!("{prefix}.gate_proj"), h, i, false)?;
        let up = Linear::load(w, &format!("{prefix}.up_proj"), h, i, false)?;
        Ok(Self {
            gate_up_proj: Linear::stack(&[gate, up]),
            down_proj: Linear::load(w, &format!("{prefix}.down_proj"), i, h, false)?,
            intermediate: i,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let gate_up = self.gate_up_proj.forward(x);
        let gate = gate_up.narrow(-1, 0, self.intermediate).silu();
        self.down_proj
            .forward(&(gate * gate_up.narrow(-1, self.intermediate, self.intermediate)))
    }
}

struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

pub struct Llama {
    embed_tokens: Tensor,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    /// Whether the checkpoint ties the head to the embedding (the head is a copy of it then).
    head_tied: bool,
    rotary: Rotary,
    info: ModelInfo,
}

impl Llama {
    pub fn load(c: &LlamaConfig, w: &mut Weights) -> Result<Self> {
        let embed_tokens = w.take("model.embed_tokens.weight", &[c.vocab_size, c.hidden_size])?;
        let device = embed_tokens.device();
        let kind = embed_tokens.kind();
        let mut layers = Vec::with_capacity(c.num_hidden_layers as usize);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                input_layernorm: RmsNorm::load(
                    w,
                    &format!("{p}.input_layernorm"),
                    c.hidden_size,
                    c.rms_norm_eps,
                )?,
                self_attn: Attention::load(c, w, &format!("{p}.self_attn"))?,
                post_attention_layernorm: RmsNorm::load(
                    w,
                    &format!("{p}.post_attention_layernorm"),
                    c.hidden_size,
                    c.rms_norm_eps,
                )?,
                mlp: Mlp::load(c, w, &format!("{p}.mlp"))?,
            });
        }
        let norm = RmsNorm::load(w, "model.norm", c.hidden_size, c.rms_norm_eps)?;
        // Some tied checkpoints still store a copy of the head; it equals the embedding then.
        // A tied head is kept as its own transposed copy (`Linear`'s fast layout): the vocabulary
        // projection is the largest matmul of a step.
        let lm_head = if w.contains("lm_head.weight") && !c.tie_word_embeddings {
            Linear::from_weight(
                &w.take("lm_head.weight", &[c.vocab_size, c.hidden_size])?,
                None,
            )
        } else if c.tie_word_embeddings {
            if w.contains("lm_head.weight") {
                let _redundant_copy = w.take("lm_head.weight", &[c.vocab_size, c.hidden_size])?;
            }
            Linear::from_weight(&embed_tokens, None)
        } else {
            bail!(
                "{}: missing tensor \"lm_head.weight\" and tie_word_embeddings is false",
                w.source().display()
            );
        };
        let leftover: Vec<&str> = w
            .remaining()
            .into_iter()
            .filter(|n| !n.ends_with("rotary_emb.inv_freq"))
            .collect();
        if !leftover.is_empty() {
            bail!(
                "{}: {} tensor(s) the llama architecture does not use, e.g. {:?}",
                w.source().display(),
                leftover.len(),
                &leftover[..leftover.len().min(3)]
            );
        }
        let inv_freq: Vec<f32> = inverse_frequencies(c).iter().map(|&f| f as f32).collect();
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            head_tied: c.tie_word_embeddings,
            rotary: Rotary {
                inv_freq: Tensor::from_slice(&inv_freq).to_device(device),
            },
            info: ModelInfo {
                architecture: "llama",
                vocab_size: c.vocab_size,
                hidden_size: c.hidden_size,
                num_layers: c.num_hidden_layers as usize,
                max_positions: Some(c.max_position_embeddings),
                device,
                kind,
            },
        })
    }
}

impl Llama {
    /// Runs blocks `blocks` on the residual stream `x` `[batch, t, hidden]` at position ids
    /// `positions`; the caller commits the tokens to `cache` afterwards.
    // `x += y` on a tch tensor adds in place, which autograd refuses once a norm kept `x`.
    #[allow(clippy::assign_op_pattern)]
    fn run_blocks(
        &self,
        mut x: Tensor,
        positions: &Tensor,
        mask: &AttentionMask,
        blocks: Range<usize>,
        cache: &mut KvCache,
    ) -> Tensor {
        let cos_sin = self.rotary.cos_sin(positions, self.info.kind);
        for i in blocks {
            let block = &self.layers[i];
            let attn = block.self_attn.forward(
                &block.input_layernorm.forward(&x),
                &cos_sin,
                mask,
                i,
                cache,
            );
            // Out of place: the norms keep `x` for the backward pass when a trainer runs this.
            x = x + attn;
            let mlp = block
                .mlp
                .forward(&block.post_attention_layernorm.forward(&x));
            x = x + mlp;
        }
        x
    }
}

impl CausalLm for Llama {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn forward_hidden(
        &self,
        input_ids: &Tensor,
        real_mask: &Tensor,
        cache: &mut KvCache,
    ) -> Tensor {
        let step = cache.step_inputs(input_ids, real_mask, self.info.device);
        let x = Tensor::embedding(&self.embed_tokens, &step.input_ids, -1, false, false);
        let x = self.run_blocks(x, &step.positions, &step.mask, 0..self.layers.len(), cache);
        cache.commit_tokens(&step.real_mask);
        self.norm.forward(&x)
    }

    fn logits(&self, hidden: &Tensor) -> Tensor {
        self.lm_head.forward(hidden).to_kind(Kind::Float)
    }

    fn input_embeddings(&self) -> Tensor {
        self.embed_tokens.shallow_clone()
    }

    fn residual_after(&self, input_ids: &Tensor, real_mask: &Tensor, blocks: usize) -> Tensor {
        check_block_split(blocks, self.layers.len());
        let mut cache = self.new_cache();
        let step = cache.step_inputs(input_ids, real_mask, self.info.device);
        let x = Tensor::embedding(&self.embed_tokens, &step.input_ids, -1, false, false);
        self.run_blocks(x, &step.positions, &step.mask, 0..blocks, &mut cache)
    }

    fn hidden_from(&self, residual: &Tensor, real_mask: &Tensor, first_block: usize) -> Tensor {
        check_block_split(first_block, self.layers.len());
        let mut cache = self.new_cache();
        let real_mask = real_mask.to_device(self.info.device);
        let (positions, mask) = (
            cache.position_ids(&real_mask),
            cache.attention_mask(&real_mask),
        );
        let x = self.run_blocks(
            residual.shallow_clone(),
            &positions,
            &mask,
            first_block..self.layers.len(),
            &mut cache,
        );
        self.norm.forward(&x)
    }

    fn trainable_tensors(&self, selection: &TrainableSelection) -> Vec<(String, Tensor)> {
        check_selection(selection, self.layers.len(), self.head_tied);
        let mut out = Vec::new();
        for i in selection.blocks.clone() {
            let b = &self.layers[i];
            let p = format!("model.layers.{i}");
            out.extend(
                [
                    (
                        format!("{p}.input_layernorm.weight"),
                        &b.input_layernorm.weight,
                    ),
                    (
                        format!("{p}.self_attn.qkv_proj.weight_t"),
                        &b.self_attn.qkv_proj.weight_t,
                    ),
                    (
                        format!("{p}.self_attn.o_proj.weight_t"),
                        &b.self_attn.o_proj.weight_t,
                    ),
                    (
                        format!("{p}.post_attention_layernorm.weight"),
                        &b.post_attention_layernorm.weight,
                    ),
                    (
                        format!("{p}.mlp.gate_up_proj.weight_t"),
                        &b.mlp.gate_up_proj.weight_t,
                    ),
                    (
                        format!("{p}.mlp.down_proj.weight_t"),
                        &b.mlp.down_proj.weight_t,
                    ),
                ]
                .map(|(name, t)| (name, t.shallow_clone())),
            );
        }
        if selection.final_norm {
            out.push(("model.norm.weight".into(), self.norm.weight.shallow_clone()));
        }
        if selection.embeddings {
            out.push((
                "model.embed_tokens.weight".into(),
                self.embed_tokens.shallow_clone(),
            ));
        }
        if selection.head {
            // Its own storage even when tied (a transposed copy), so it trains apart from the
            // embedding: untied from here on.
            out.push((
                "lm_head.weight_t".into(),
                self.lm_head.weight_t.shallow_clone(),
            ));
        }
        out
    }

    fn export_tensors(&self, selection: &TrainableSelection) -> Vec<(String, Tensor)> {
        check_selection(selection, self.layers.len(), self.head_tied);
        let _no_grad = tch::no_grad_guard();
        // Back to Hugging Face's `[out, in]` weights, one per projection.
        let weight = |t: &Tensor, from: i64, width: i64| {
            t.narrow(1, from, width).transpose(0, 1).contiguous()
        };
        let mut out = Vec::new();
        for i in selection.blocks.clone() {
            let b = &self.layers[i];
            let a = &b.self_attn;
            let p = format!("model.layers.{i}");
            let (q, kv) = (a.heads * a.head_dim, a.kv_heads * a.head_dim);
            let inter = b.mlp.intermediate;
            out.extend([
                (
                    format!("{p}.input_layernorm.weight"),
                    b.input_layernorm.weight.copy(),
                ),
                (
                    format!("{p}.self_attn.q_proj.weight"),
                    weight(&a.qkv_proj.weight_t, 0, q),
                ),
                (
                    format!("{p}.self_attn.k_proj.weight"),
                    weight(&a.qkv_proj.weight_t, q, kv),
                ),
                (
                    format!("{p}.self_attn.v_proj.weight"),
                    weight(&a.qkv_proj.weight_t, q + kv, kv),
                ),
                (
                    format!("{p}.self_attn.o_proj.weight"),
                    weight(&a.o_proj.weight_t, 0, self.info.hidden_size),
                ),
                (
                    format!("{p}.post_attention_layernorm.weight"),
                    b.post_attention_layernorm.weight.copy(),
                ),
                (
                    format!("{p}.mlp.gate_proj.weight"),
                    weight(&b.mlp.gate_up_proj.weight_t, 0, inter),
                ),
                (
                    format!("{p}.mlp.up_proj.weight"),
                    weight(&b.mlp.gate_up_proj.weight_t, inter, inter),
                ),
                (
                    format!("{p}.mlp.down_proj.weight"),
                    weight(&b.mlp.down_proj.weight_t, 0, self.info.hidden_size),
                ),
            ]);
        }
        if selection.final_norm {
            out.push(("model.norm.weight".into(), self.norm.weight.copy()));
        }
        if selection.embeddings {
            out.push(("model.embed_tokens.weight".into(), self.embed_tokens.copy()));
        }
        if selection.head {
            out.push((
                HEAD_TENSOR.into(),
                weight(&self.lm_head.weight_t, 0, self.info.vocab_size),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(scaling: RopeScaling) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 10,
            hidden_size: 8,
            intermediate_size: 16,
            num_hidden_layers: 1,
            num_attention_heads: 1,
            num_key_value_heads: 1,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: scaling,
            max_position_embeddings: 131072,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_and_slows_low_frequencies() {
        let plain = inverse_frequencies(&config(RopeScaling::None));
        let scaled = inverse_frequencies(&config(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        }));
        assert_eq!(plain[0], scaled[0], "highest frequency is unchanged");
        let last = plain.len() - 1;
        assert!(
            (scaled[last] - plain[last] / 8.0).abs() < 1e-15,
            "lowest frequency divided by factor"
        );
        // Every scaled frequency lies between f/8 and f.
        for (p, s) in plain.iter().zip(&scaled) {
            assert!(*s <= *p + 1e-18 && *s >= p / 8.0 - 1e-18);
        }
    }
}
