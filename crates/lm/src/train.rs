//! What every trainer in the harness shares: PyTorch's AdamW over a model's trainable tensors
//! (weight decay on matrices only), a linear warm-up, a seeded batch order per epoch, and the
//! guarantee that the model is frozen again when training ends, however it ends.

use anyhow::{bail, Result};
use tch::{COptimizer, Device, Kind, Tensor};

/// AdamW with two groups — weight matrices (decayed) and everything else: norms, biases, heads
/// (not decayed) — and a learning rate that rises linearly over the first tenth of the steps, so
/// that a model starting from a good point is not thrown off by AdamW's first steps, which move
/// every weight by about the full rate whatever its gradient.
///
/// Holding one makes its tensors require gradients; dropping it makes them stop, so decoding
/// with the model afterwards builds no autograd graph.
pub struct AdamW {
    optimizer: COptimizer,
    tensors: Vec<Tensor>,
    learning_rate: f64,
    warmup_steps: usize,
    steps: usize,
}

impl AdamW {
    /// `tensors` (handles on the model's storage, as [`crate::CausalLm::trainable_tensors`]
    /// gives them, or fresh leaves such as a head) over `total_steps` optimiser steps.
    pub fn new(
        tensors: Vec<Tensor>,
        learning_rate: f64,
        weight_decay: f64,
        total_steps: usize,
    ) -> Result<Self> {
        let mut optimizer =
            COptimizer::adamw(learning_rate, 0.9, 0.999, weight_decay, 1e-8, false)?;
        let tensors: Vec<Tensor> = tensors
            .into_iter()
            .map(|t| t.set_requires_grad(true))
            .collect();
        for t in &tensors {
            optimizer.add_parameters(t, usize::from(t.dim() < 2))?;
        }
        // The group exists only once a tensor was added to it (LoRA factors are all matrices).
        if tensors.iter().any(|t| t.dim() < 2) {
            optimizer.set_weight_decay_group(1, 0.0)?;
        }
        Ok(Self {
            optimizer,
            tensors,
            learning_rate,
            warmup_steps: total_steps.div_ceil(10).max(1),
            steps: 0,
        })
    }

    /// One step down the gradient of `loss` (a scalar built from the tensors).
    pub fn minimize(&mut self, loss: &Tensor) -> Result<()> {
        self.zero_grad()?;
        loss.backward();
        self.step()
    }

    /// Clears the gradients: the start of an accumulation window (several `backward` calls, one
    /// [`step`](Self::step)).
    pub fn zero_grad(&mut self) -> Result<()> {
        Ok(self.optimizer.zero_grad()?)
    }

    /// One optimiser step with the gradients accumulated since [`zero_grad`](Self::zero_grad),
    /// at the warmed-up learning rate.
    pub fn step(&mut self) -> Result<()> {
        self.steps += 1;
        let warm = (self.steps as f64 / self.warmup_steps as f64).min(1.0);
        self.optimizer
            .set_learning_rate(self.learning_rate * warm)?;
        self.optimizer.step()?;
        Ok(())
    }
}

impl Drop for AdamW {
    fn drop(&mut self) {
        for t in &self.tensors {
            let _ = t.set_requires_grad(false);
        }
    }
}

/// Checks an AdamW learning rate (finite, > 0) and weight decay (finite, >= 0), naming the
/// command-line flags that set them.
pub fn check_rates(learning_rate: f64, weight_decay: f64) -> Result<()> {
    if !(learning_rate > 0.0 && learning_rate.is_finite()) {
        bail!("--learning-rate must be a finite number > 0, got {learning_rate}");
    }
    if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
        bail!("--weight-decay must be a finite number >= 0, got {weight_decay}");
    }
    Ok(())
}

/// The order of `batches` batches in epoch `epoch` of a run seeded `seed`: a permutation that is
/// the same for the same seed and epoch on the same machine.
pub fn epoch_order(batches: usize, seed: u64, epoch: usize) -> Result<Vec<usize>> {
    tch::manual_seed(seed as i64 + epoch as i64);
    let order = Vec::<i64>::try_from(Tensor::randperm(batches as i64, (Kind::Int64, Device::Cpu)))?;
    Ok(order.into_iter().map(|i| i as usize).collect())
}
