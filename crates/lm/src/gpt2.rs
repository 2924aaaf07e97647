//! GPT-2 family: learned positions, pre-LayerNorm blocks, GELU (tanh form), fused QKV stored in
//! the `Conv1D` layout `[in, out]`. Covers GPT-2 small through XL.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::cache::KvCache;
use crate::config::Gpt2Config;
use crate::nn::{attention, merge_heads, split_heads, LayerNorm, Linear};
use crate::weights::Weights;
use crate::{CausalLm, ModelInfo};

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    /// Softmax scale: 1/sqrt(head_dim), optionally also 1/(layer index + 1).
    scale: f64,
}

pub struct Gpt2 {
    wte: Tensor,
    /// Tied to `wte`; a transposed copy in `Linear`'s fast layout.
    lm_head: Linear,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    heads: i64,
    head_dim: i64,
    /// `gelu_new` and `gelu_pytorch_tanh` are the tanh approximation; plain `gelu` is exact.
    gelu_approximation: &'static str,
    info: ModelInfo,
}

impl Gpt2 {
    pub fn load(c: &Gpt2Config, w: &mut Weights) -> Result<Self> {
        if c.reorder_and_upcast_attn {
            bail!(
                "{}: reorder_and_upcast_attn=true is not supported",
                w.source().display()
            );
        }
        // `GPT2LMHeadModel` checkpoints prefix everything with `transformer.`; the original OpenAI
        // conversions (gpt2, gpt2-large, ...) do not.
        let prefix = if w.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let h = c.n_embd;
        let wte = w.take(&format!("{prefix}wte.weight"), &[c.vocab_size, h])?;
        let wpe = w.take(&format!("{prefix}wpe.weight"), &[c.n_positions, h])?;
        let head_dim = h / c.n_head;
        let mut blocks = Vec::with_capacity(c.n_layer as usize);
        for i in 0..c.n_layer {
            let p = format!("{prefix}h.{i}");
            let mut scale = if c.scale_attn_weights {
                1.0 / (head_dim as f64).sqrt()
            } else {
                1.0
            };
            if c.scale_attn_by_inverse_layer_idx {
                scale /= (i + 1) as f64;
            }
            blocks.push(Block {
                ln_1: LayerNorm::load(w, &format!("{p}.ln_1"), h, c.layer_norm_epsilon)?,
                c_attn: Linear::load_conv1d(w, &format!("{p}.attn.c_attn"), h, 3 * h)?,
                attn_proj: Linear::load_conv1d(w, &format!("{p}.attn.c_proj"), h, h)?,
                ln_2: LayerNorm::load(w, &format!("{p}.ln_2"), h, c.layer_norm_epsilon)?,
                c_fc: Linear::load_conv1d(w, &format!("{p}.mlp.c_fc"), h, c.inner_size())?,
                mlp_proj: Linear::load_conv1d(w, &format!("{p}.mlp.c_proj"), c.inner_size(), h)?,
                scale,
            });
        }
        let ln_f = LayerNorm::load(w, &format!("{prefix}ln_f"), h, c.layer_norm_epsilon)?;
        // The head is always tied in GPT-2; a stored copy is redundant.
        let leftover: Vec<&str> = w
            .remaining()
            .into_iter()
            .filter(|n| {
                *n != "lm_head.weight"
                    && !n.ends_with(".attn.bias")
                    && !n.ends_with(".attn.masked_bias")
            })
            .collect();
        if !leftover.is_empty() {
            bail!(
                "{}: {} tensor(s) the gpt2 architecture does not use, e.g. {:?}",
                w.source().display(),
                leftover.len(),
                &leftover[..leftover.len().min(3)]
            );
        }
        let device = wte.device();
        let kind = wte.kind();
        Ok(Self {
            lm_head: Linear::from_weight(&wte, None),
            wte,
            wpe,
            blocks,
            ln_f,
            heads: c.n_head,
            head_dim,
            gelu_approximation: if c.activation_function == "gelu" {
                "none"
            } else {
                "tanh"
            },
            info: ModelInfo {
                architecture: "gpt2",
                vocab_size: c.vocab_size,
                hidden_size: h,
                num_layers: c.n_layer as usize,
                max_positions: Some(c.n_positions),
                device,
                kind,
            },
        })
    }
}

impl CausalLm for Gpt2 {
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
        let mut x = Tensor::embedding(&self.wte, &step.input_ids, -1, false, false)
            + Tensor::embedding(&self.wpe, &step.positions, -1, false, false);
        let hidden = self.info.hidden_size;
        for (i, block) in self.blocks.iter().enumerate() {
            let qkv = block
                .c_attn
                .forward(&block.ln_1.forward(&x))
                .split(hidden, 2);
            let q = split_heads(&qkv[0], self.heads, self.head_dim);
            let k = split_heads(&qkv[1], self.heads, self.head_dim);
            let v = split_heads(&qkv[2], self.heads, self.head_dim);
            let (k, v) = cache.extend_layer(i, k, v);
            let attn = attention(&q, &k, &v, &step.mask, Some(block.scale));
            x += block.attn_proj.forward(&merge_heads(&attn));
            let inner = block
                .c_fc
                .forward(&block.ln_2.forward(&x))
                .gelu(self.gelu_approximation);
            x += block.mlp_proj.forward(&inner);
        }
        cache.commit_tokens(&step.real_mask);
        self.ln_f.forward(&x)
    }

    fn logits(&self, hidden: &Tensor) -> Tensor {
        self.lm_head.forward(hidden).to_kind(Kind::Float)
    }
}
