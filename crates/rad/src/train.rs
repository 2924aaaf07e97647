//! Training the reward model's top blocks together with its head, by gradient descent on RAD's
//! cumulative squared loss over prefixes (the closed form of [`crate::fit`] covers the head alone).
//!
//! The head starts from the closed-form fit on the frozen backbone, so training begins at the
//! best a frozen backbone can do. The blocks below the trained ones are frozen, so their output
//! (the residual stream) is computed once per text and kept in memory; every step then runs only
//! the trained blocks forward and backward. Optimiser: [`lm::train::AdamW`] (PyTorch's AdamW,
//! weight decay on the blocks' matrices only, linear warm-up over the first tenth of the steps).

use anyhow::{bail, Result};
use lm::train::{epoch_order, AdamW};
use lm::{left_pad, CausalLm, TextTokenizer, TrainableSelection};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::fit::{encode_texts, prefix_weights, FeatureOptions};

/// How the top blocks are trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopBlockOptions {
    /// The last this-many blocks the reward model runs are trained, with the final norm.
    pub blocks: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay, on the blocks' weight matrices.
    pub weight_decay: f64,
    /// Texts per optimiser step.
    pub batch_size: usize,
    /// Seeds the order of the batches in each epoch.
    pub seed: u64,
}

impl TopBlockOptions {
    pub fn validate(&self, reward_layers: usize) -> Result<()> {
        if self.blocks == 0 || self.blocks > reward_layers {
            bail!(
                "--train-blocks is {} but the reward model runs {reward_layers} blocks (expected \
                 1..={reward_layers})",
                self.blocks
            );
        }
        if self.epochs == 0 || self.batch_size == 0 {
            bail!("--epochs and --train-batch-size must be at least 1");
        }
        lm::train::check_rates(self.learning_rate, self.weight_decay)?;
        Ok(())
    }
}

/// One batch with the frozen blocks already run.
struct FrozenBatch {
    residual: Tensor,
    mask: Tensor,
    /// RAD's prefix weights `[B, T]` (zero on padding), float32.
    weights: Tensor,
    /// `[B, 1]` float32.
    targets: Tensor,
}

/// The head after training the top blocks with it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedHead {
    pub w: Vec<f64>,
    pub b: f64,
    /// Mean training prefix loss per text over each epoch.
    pub epoch_losses: Vec<f64>,
}

/// Trains the top `options.blocks` blocks of `model` (in place) and the head `(w, b)` on `texts`
/// with targets `targets`, starting from the head `(w, b)`. `log` receives progress lines.
#[allow(clippy::too_many_arguments)]
pub fn train_top_blocks(
    model: &dyn CausalLm,
    tokenizer: &TextTokenizer,
    texts: &[&str],
    targets: &[f64],
    head: (&[f64], f64),
    features: &FeatureOptions,
    options: &TopBlockOptions,
    mut log: impl FnMut(&str),
) -> Result<TrainedHead> {
    let info = model.info();
    options.validate(info.num_layers)?;
    if texts.len() != targets.len() || texts.is_empty() {
        bail!(
            "{} training texts and {} targets (need the same, at least one)",
            texts.len(),
            targets.len()
        );
    }
    let first = info.num_layers - options.blocks;
    let encoded = encode_texts(model, tokenizer, texts, features)?;
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| (encoded[i].len(), i));
    let started = std::time::Instant::now();
    let batches = tch::no_grad(|| {
        order
            .chunks(options.batch_size)
            .map(|chunk| {
                let rows: Vec<&[i64]> = chunk.iter().map(|&i| encoded[i].as_slice()).collect();
                let (ids, mask) = left_pad(&rows, info.device);
                let y: Vec<f32> = chunk.iter().map(|&i| targets[i] as f32).collect();
                FrozenBatch {
                    residual: model.residual_after(&ids, &mask, first),
                    weights: prefix_weights(&mask, Kind::Float),
                    targets: Tensor::from_slice(&y).to_device(info.device).unsqueeze(1),
                    mask,
                }
            })
            .collect::<Vec<_>>()
    });
    log(&format!(
        "ran the {first} frozen blocks on {} texts in {:.0}s; training blocks {first}..{} and \
         the head",
        texts.len(),
        started.elapsed().as_secs_f64(),
        info.num_layers
    ));

    let selection = TrainableSelection::top(options.blocks, info.num_layers);
    let w = Tensor::from_slice(&head.0.iter().map(|&v| v as f32).collect::<Vec<_>>())
        .to_device(info.device);
    let b = Tensor::from_slice(&[head.1 as f32]).to_device(info.device);
    let mut tensors: Vec<Tensor> = model
        .trainable_tensors(&selection)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    tensors.extend([w.shallow_clone(), b.shallow_clone()]);
    // Dropped at the end of this function, whatever happens: the model is frozen again.
    let mut optimizer = AdamW::new(
        tensors,
        options.learning_rate,
        options.weight_decay,
        options.epochs * batches.len(),
    )?;
    let mut epoch_losses = Vec::with_capacity(options.epochs);
    for epoch in 0..options.epochs {
        let started = std::time::Instant::now();
        let mut total = 0.0;
        for i in epoch_order(batches.len(), options.seed, epoch)? {
            let batch = &batches[i];
            let hidden = model.hidden_from(&batch.residual, &batch.mask, first);
            let rewards = hidden.to_kind(Kind::Float).matmul(&w) + &b;
            let per_text = ((rewards - &batch.targets).square() * &batch.weights).sum_dim_intlist(
                1,
                false,
                Kind::Float,
            );
            let loss = per_text.sum(Kind::Float);
            total += loss.double_value(&[]);
            optimizer.minimize(&(loss / per_text.size()[0] as f64))?;
        }
        let mean = total / texts.len() as f64;
        if !mean.is_finite() {
            bail!("training diverged in epoch {} (loss {mean})", epoch + 1);
        }
        log(&format!(
            "epoch {}/{}: training prefix loss {mean:.4} ({:.0}s)",
            epoch + 1,
            options.epochs,
            started.elapsed().as_secs_f64()
        ));
        epoch_losses.push(mean);
    }
    drop(optimizer);
    let w = Vec::<f32>::try_from(w.detach().to_device(Device::Cpu))?;
    let b = b.detach().double_value(&[0]);
    Ok(TrainedHead {
        w: w.into_iter().map(f64::from).collect(),
        b: b as f32 as f64,
        epoch_losses,
    })
}
