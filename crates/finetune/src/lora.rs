//! LoRA on the model's own weight storage. The model is `&self` and its forward reads its weight
//! tensors directly, so an adapter cannot sit inside the forward pass; instead each adapted
//! matrix W (a trainable handle on the model) is kept equal to W₀ + s·A·B, and the adapter's
//! gradients come from W's by the chain rule: after `backward`, ∂L/∂A = s·G·Bᵀ and
//! ∂L/∂B = s·Aᵀ·G with G = ∂L/∂W. [`LoraSet::transfer_gradients`] obtains exactly these through a
//! second, tiny backward pass of Σ(s·A·B ⊙ G), then [`LoraSet::merge`] writes W₀ + s·A·B back
//! after the optimiser step. The optimiser holds only A and B (rank r), which is where LoRA saves
//! memory on optimiser state; W's gradient is still materialised, so unlike a fused LoRA kernel
//! this does not save gradient memory — fine at the sizes this harness trains on a CPU.
//!
//! The checkpoint a LoRA run writes is the merged model (an ordinary Hugging Face folder), with
//! the adapters beside it.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Which matrices get an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTargets {
    /// The attention projections (a fused Q/K/V projection, as GPT-2's `c_attn` and this
    /// harness's Llama store it, gets one adapter, as PEFT does for GPT-2).
    Attention,
    /// Attention and MLP projections.
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraOptions {
    pub rank: usize,
    /// The update is scaled by `alpha / rank` (PEFT's convention).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default = "default_targets")]
    pub targets: LoraTargets,
}

fn default_alpha() -> f64 {
    16.0
}

fn default_targets() -> LoraTargets {
    LoraTargets::All
}

impl LoraTargets {
    fn selects(self, name: &str) -> bool {
        let attention = name.contains("attn");
        match self {
            LoraTargets::Attention => attention,
            LoraTargets::All => attention || name.contains("mlp"),
        }
    }
}

struct Adapter {
    name: String,
    /// The model's own weight (a handle on its storage).
    weight: Tensor,
    /// W₀, float32.
    base: Tensor,
    /// `[rows, rank]`, random.
    a: Tensor,
    /// `[rank, cols]`, zero: the adapted model starts equal to the original.
    b: Tensor,
}

/// The adapters on one model's matrices.
pub struct LoraSet {
    adapters: Vec<Adapter>,
    scale: f64,
}

impl LoraSet {
    /// Adapters on the 2-D tensors among `tensors` (named as
    /// [`lm::CausalLm::trainable_tensors`] names them) that `options.targets` selects. A rank of
    /// 0 or above a matrix's smaller side is an error naming the matrix. Seeded by `seed`.
    pub fn new(tensors: &[(String, Tensor)], options: &LoraOptions, seed: u64) -> Result<Self> {
        if options.rank == 0 {
            bail!("lora rank must be at least 1");
        }
        if !(options.alpha > 0.0 && options.alpha.is_finite()) {
            bail!(
                "lora alpha must be a finite number > 0, got {}",
                options.alpha
            );
        }
        tch::manual_seed(seed as i64);
        let _no_grad = tch::no_grad_guard();
        let mut adapters = Vec::new();
        for (name, weight) in tensors {
            if weight.dim() != 2 || !options.targets.selects(name) {
                continue;
            }
            let (rows, cols) = (weight.size()[0], weight.size()[1]);
            let width = rows.min(cols);
            if options.rank as i64 > width {
                bail!(
                    "lora rank {} is larger than the width {width} of {name} ({rows}×{cols})",
                    options.rank
                );
            }
            let device = weight.device();
            let r = options.rank as i64;
            // Kaiming-like scale on the random factor, as PEFT initialises its A.
            let a = (Tensor::randn([rows, r], (Kind::Float, device)) / (rows as f64).sqrt())
                .set_requires_grad(true);
            let b = Tensor::zeros([r, cols], (Kind::Float, device)).set_requires_grad(true);
            adapters.push(Adapter {
                name: name.clone(),
                weight: weight.shallow_clone(),
                base: weight.to_kind(Kind::Float).copy(),
                a,
                b,
            });
        }
        if adapters.is_empty() {
            bail!(
                "lora: no matrix matches targets {:?} among the model's trainable tensors",
                options.targets
            );
        }
        for adapter in &adapters {
            let _ = adapter.weight.set_requires_grad(true);
        }
        Ok(Self {
            adapters,
            scale: options.alpha / options.rank as f64,
        })
    }

    /// The adapters' factors: what the optimiser steps.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.adapters
            .iter()
            .flat_map(|a| [a.a.shallow_clone(), a.b.shallow_clone()])
            .collect()
    }

    /// Trainable parameters in the adapters.
    pub fn parameter_count(&self) -> i64 {
        self.adapters
            .iter()
            .map(|a| a.a.numel() as i64 + a.b.numel() as i64)
            .sum()
    }

    /// Clears the adapted weights' gradients (the optimiser clears A's and B's).
    pub fn zero_weight_grads(&self) {
        for adapter in &self.adapters {
            let mut grad = adapter.weight.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }

    /// Adds ∂L/∂A and ∂L/∂B to the factors' gradients from the gradient the adapted weights
    /// received, then clears the weights' gradients.
    pub fn transfer_gradients(&self) {
        let mut surrogate: Option<Tensor> = None;
        for adapter in &self.adapters {
            let grad = adapter.weight.grad();
            if !grad.defined() {
                continue;
            }
            let term =
                (adapter.a.matmul(&adapter.b) * self.scale * grad.detach().to_kind(Kind::Float))
                    .sum(Kind::Float);
            surrogate = Some(match surrogate {
                Some(s) => s + term,
                None => term,
            });
        }
        if let Some(s) = surrogate {
            s.backward();
        }
        self.zero_weight_grads();
    }

    /// Writes W₀ + s·A·B into every adapted weight.
    pub fn merge(&self) {
        let _no_grad = tch::no_grad_guard();
        for adapter in &self.adapters {
            let merged = &adapter.base + adapter.a.matmul(&adapter.b) * self.scale;
            let mut weight = adapter.weight.shallow_clone();
            weight.copy_(&merged.to_kind(weight.kind()));
        }
    }

    /// The factors under `<matrix name>.lora_a` / `.lora_b`, for saving beside a checkpoint.
    pub fn named_factors(&self) -> Vec<(String, Tensor)> {
        self.adapters
            .iter()
            .flat_map(|a| {
                [
                    (format!("{}.lora_a", a.name), a.a.detach().copy()),
                    (format!("{}.lora_b", a.name), a.b.detach().copy()),
                ]
            })
            .collect()
    }
}

impl Drop for LoraSet {
    /// The model is frozen again however training ends.
    fn drop(&mut self) {
        for adapter in &self.adapters {
            let _ = adapter.weight.set_requires_grad(false);
        }
    }
}
