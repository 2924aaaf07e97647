//! GPT-2 family: learned positions, pre-LayerNorm blocks, GELU (tanh form), fused QKV stored in
//! the `Conv1D` layout `[in, out]`. Covers GPT-2 small through XL.

use std::ops::Range;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use crate::cache::{AttentionMask, KvCache};
use crate::config::{Gpt2Config, HEAD_TENSOR, TIE_KEY};
use crate::nn::{attention, merge_heads, split_heads, LayerNorm, Linear};
use crate::weights::Weights;
use crate::{check_block_split, check_selection, CausalLm, ModelInfo, TrainableSelection};

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
    /// Tied to `wte` unless the config says otherwise; either way a transposed copy in
    /// `Linear`'s fast layout.
    lm_head: Linear,
    head_tied: bool,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// `"transformer."` or `""`: how the checkpoint named its tensors (kept for exporting them).
    prefix: &'static str,
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
        // A tied checkpoint may still store a copy of the head, which is redundant; an untied
        // one (a trained head, see `TrainableSelection`) stores its own.
        let head_weight = if c.tie_word_embeddings {
            wte.shallow_clone()
        } else {
            w.take(HEAD_TENSOR, &[c.vocab_size, h]).with_context(|| {
                format!("{TIE_KEY} is false, so the head must be stored as {HEAD_TENSOR:?}")
            })?
        };
        let leftover: Vec<&str> = w
            .remaining()
            .into_iter()
            .filter(|n| {
                *n != HEAD_TENSOR && !n.ends_with(".attn.bias") && !n.ends_with(".attn.masked_bias")
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
            lm_head: Linear::from_weight(&head_weight, None),
            head_tied: c.tie_word_embeddings,
            wte,
            wpe,
            blocks,
            ln_f,
            prefix,
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

impl Gpt2 {
    /// Runs blocks `blocks` on the residual stream `x` `[batch, t, hidden]`; the caller commits
    /// the tokens to `cache` afterwards.
    // `x += y` on a tch tensor adds in place, which autograd refuses once a norm kept `x`.
    #[allow(clippy::assign_op_pattern)]
    fn run_blocks(
        &self,
        mut x: Tensor,
        mask: &AttentionMask,
        blocks: Range<usize>,
        cache: &mut KvCache,
    ) -> Tensor {
        let hidden = self.info.hidden_size;
        for i in blocks {
            let block = &self.blocks[i];
            let qkv = block
                .c_attn
                .forward(&block.ln_1.forward(&x))
                .split(hidden, 2);
            let q = split_heads(&qkv[0], self.heads, self.head_dim);
            let k = split_heads(&qkv[1], self.heads, self.head_dim);
            let v = split_heads(&qkv[2], self.heads, self.head_dim);
            let (k, v) = cache.extend_layer(i, k, v);
            let attn = attention(&q, &k, &v, mask, Some(block.scale));
            // Out of place: the norms keep `x` for the backward pass when a trainer runs this.
            x = x + block.attn_proj.forward(&merge_heads(&attn));
            let inner = block
                .c_fc
                .forward(&block.ln_2.forward(&x))
                .gelu(self.gelu_approximation);
            x = x + block.mlp_proj.forward(&inner);
        }
        x
    }

    fn embed(&self, input_ids: &Tensor, positions: &Tensor) -> Tensor {
        Tensor::embedding(&self.wte, input_ids, -1, false, false)
            + Tensor::embedding(&self.wpe, positions, -1, false, false)
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
        let x = self.embed(&step.input_ids, &step.positions);
        let x = self.run_blocks(x, &step.mask, 0..self.blocks.len(), cache);
        cache.commit_tokens(&step.real_mask);
        self.ln_f.forward(&x)
    }

    fn logits(&self, hidden: &Tensor) -> Tensor {
        self.lm_head.forward(hidden).to_kind(Kind::Float)
    }

    fn input_embeddings(&self) -> Tensor {
        self.wte.shallow_clone()
    }

    fn residual_after(&self, input_ids: &Tensor, real_mask: &Tensor, blocks: usize) -> Tensor {
        check_block_split(blocks, self.blocks.len());
        let mut cache = self.new_cache();
        let step = cache.step_inputs(input_ids, real_mask, self.info.device);
        let x = self.embed(&step.input_ids, &step.positions);
        self.run_blocks(x, &step.mask, 0..blocks, &mut cache)
    }

    fn hidden_from(&self, residual: &Tensor, real_mask: &Tensor, first_block: usize) -> Tensor {
        check_block_split(first_block, self.blocks.len());
        let mut cache = self.new_cache();
        let mask = cache.attention_mask(&real_mask.to_device(self.info.device));
        let x = self.run_blocks(
            residual.shallow_clone(),
            &mask,
            first_block..self.blocks.len(),
            &mut cache,
        );
        self.ln_f.forward(&x)
    }

    fn trainable_tensors(&self, selection: &TrainableSelection) -> Vec<(String, Tensor)> {
        // GPT-2 stores every weight but the head in the layout it computes with, so the
        // trainable tensors are the checkpoint's own.
        let mut out = self.named_weights(selection, |t| t.shallow_clone());
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
        let _no_grad = tch::no_grad_guard();
        let mut out = self.named_weights(selection, |t| t.copy());
        if selection.head {
            // Hugging Face's `lm_head` is an `nn.Linear`, `[vocab, hidden]`, not a `Conv1D`.
            out.push((
                HEAD_TENSOR.into(),
                self.lm_head.weight_t.transpose(0, 1).contiguous(),
            ));
        }
        out
    }
}

impl Gpt2 {
    /// The selected blocks', final norm's and embeddings' tensors under their checkpoint names.
    fn named_weights(
        &self,
        selection: &TrainableSelection,
        take: impl Fn(&Tensor) -> Tensor,
    ) -> Vec<(String, Tensor)> {
        check_selection(selection, self.blocks.len(), self.head_tied);
        let prefix = self.prefix;
        let mut out = Vec::new();
        let linear = |out: &mut Vec<(String, Tensor)>, name: String, l: &Linear| {
            out.push((format!("{name}.weight"), take(&l.weight_t)));
            if let Some(b) = &l.bias {
                out.push((format!("{name}.bias"), take(b)));
            }
        };
        let norm = |out: &mut Vec<(String, Tensor)>, name: String, n: &LayerNorm| {
            out.push((format!("{name}.weight"), take(&n.weight)));
            out.push((format!("{name}.bias"), take(&n.bias)));
        };
        for i in selection.blocks.clone() {
            let b = &self.blocks[i];
            let p = format!("{prefix}h.{i}");
            norm(&mut out, format!("{p}.ln_1"), &b.ln_1);
            linear(&mut out, format!("{p}.attn.c_attn"), &b.c_attn);
            linear(&mut out, format!("{p}.attn.c_proj"), &b.attn_proj);
            norm(&mut out, format!("{p}.ln_2"), &b.ln_2);
            linear(&mut out, format!("{p}.mlp.c_fc"), &b.c_fc);
            linear(&mut out, format!("{p}.mlp.c_proj"), &b.mlp_proj);
        }
        if selection.final_norm {
            norm(&mut out, format!("{prefix}ln_f"), &self.ln_f);
        }
        if selection.embeddings {
            out.push((format!("{prefix}wte.weight"), take(&self.wte)));
            out.push((format!("{prefix}wpe.weight"), take(&self.wpe)));
        }
        out
    }
}
