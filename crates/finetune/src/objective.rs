//! One fine-tuning job: L(θ) = L_LM(θ; D) + λ·R(θ), with R one of
//! - the NADO regularizer: Σ_t CE(q(·|x<t), p_θ(·|x<t)) over the continuation positions of the
//!   policy's own samples, q ∝ p_ref·R_aux frozen (KL(q‖p_θ) up to q's entropy);
//! - REINFORCE on the samples' reward (1 − toxicity), with the mean reward as baseline;
//! - nothing (plain SFT, and SFT on a filtered mix).
//!
//! Both terms are means per counted token, so λ weighs one token of regularizer against one token
//! of language modelling. The adaptive mask multiplies the regularizer's per-sample weight. Full
//! fine-tuning trains every block and the final norm; the embeddings (and a head tied to them)
//! stay frozen (see [`lm::CausalLm::trainable_tensors`]). LoRA trains rank-r adapters on the
//! blocks' matrices (see [`crate::lora`]).

use anyhow::{bail, Result};
use lm::train::{epoch_order, AdamW};
use lm::{CausalLm, TrainableSelection};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::lora::{LoraOptions, LoraSet};
use crate::nado::Auxiliary;
use crate::sequences::{batches, next_token_log_probs, summed_nll, Batch, Sequence};

/// Full fine-tuning or LoRA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Adaptation {
    Full,
    Lora(LoraOptions),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneOptions {
    pub adaptation: Adaptation,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Sequences per micro-batch (of the data mix, and of samples for the regularizer).
    pub batch_size: usize,
    /// Micro-batches whose gradients add up before each optimiser step.
    pub accumulate: usize,
    /// Passes over the data mix.
    pub epochs: usize,
}

/// The regularizer of one job.
pub enum Regularizer<'a> {
    None,
    /// The frozen teacher: the reference LM (the policy as the job started) and the auxiliary
    /// model; `samples` give the prefixes.
    Nado {
        reference: &'a dyn CausalLm,
        auxiliary: &'a Auxiliary,
        samples: &'a [Sequence],
    },
    /// REINFORCE on `samples`' labels as rewards.
    Reinforce {
        samples: &'a [Sequence],
    },
}

impl Regularizer<'_> {
    fn samples(&self) -> &[Sequence] {
        match self {
            Regularizer::None => &[],
            Regularizer::Nado { samples, .. } | Regularizer::Reinforce { samples } => samples,
        }
    }
}

/// What a job measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneStats {
    pub steps: usize,
    pub micro_batches: usize,
    pub trainable_parameters: i64,
    /// Mean LM loss (nats per counted token) per epoch.
    pub lm_losses: Vec<f64>,
    /// Mean regularizer per epoch (per counted, unmasked sample token): CE(q, p_θ) for NADO,
    /// the REINFORCE surrogate for RL; empty without one.
    pub regularizer_losses: Vec<f64>,
    /// NADO only: mean KL(q‖p_θ) per regularized token on every sample before and after the job.
    pub kl_before: Option<f64>,
    pub kl_after: Option<f64>,
    /// Samples the regularizer saw, and how many of them the adaptive mask switched off.
    pub regularizer_samples: usize,
    pub masked_samples: usize,
    pub seconds: f64,
}

/// CE(q, p_θ) and KL(q‖p_θ) summed over a batch's counted, unmasked positions, and their count.
fn nado_terms(
    policy: &dyn CausalLm,
    reference: &dyn CausalLm,
    auxiliary: &Auxiliary,
    batch: &Batch,
) -> (Tensor, Tensor, f64) {
    let log_q = {
        let _no_grad = tch::no_grad_guard();
        let t = batch.ids.size()[1];
        let z_ref = {
            let hidden =
                reference.forward_hidden(&batch.ids, &batch.mask, &mut reference.new_cache());
            reference.logits(&hidden.narrow(1, 0, t - 1))
        };
        let trunk = auxiliary.trunk.model.as_ref();
        let aux_hidden = trunk.forward_hidden(&batch.ids, &batch.mask, &mut trunk.new_cache());
        let log_r = auxiliary.log_r(&aux_hidden.narrow(1, 0, t - 1));
        (z_ref + log_r).log_softmax(-1, Kind::Float)
    };
    let q = log_q.exp();
    let log_p = next_token_log_probs(policy, batch);
    let ce = -(&q * &log_p).sum_dim_intlist(-1, false, Kind::Float);
    let entropy = -(&q * &log_q).sum_dim_intlist(-1, false, Kind::Float);
    let weights = batch.target_weights() * batch.regularize.unsqueeze(1);
    let n = weights.sum(Kind::Float).double_value(&[]);
    let kl = (&ce - entropy).detach();
    (
        (ce * &weights).sum(Kind::Float),
        (kl * weights).sum(Kind::Float),
        n,
    )
}

/// −(r − b)·mean_t log p_θ(x_t | x<t) summed over a batch's samples, and the sample count.
fn reinforce_term(policy: &dyn CausalLm, batch: &Batch, baseline: f64) -> (Tensor, f64) {
    let log_p = next_token_log_probs(policy, batch)
        .gather(2, &batch.targets().unsqueeze(-1), false)
        .squeeze_dim(-1);
    let weights = batch.target_weights();
    let per_sample = (log_p * &weights).sum_dim_intlist(1, false, Kind::Float)
        / weights
            .sum_dim_intlist(1, false, Kind::Float)
            .clamp_min(1.0);
    let advantage = &batch.labels - baseline;
    let n = batch.labels.size()[0] as f64;
    ((-(advantage * per_sample)).sum(Kind::Float), n)
}

/// Mean KL(q‖p_θ) per regularized position over `samples`.
fn mean_kl(
    policy: &dyn CausalLm,
    reference: &dyn CausalLm,
    auxiliary: &Auxiliary,
    samples: &[Batch],
) -> f64 {
    let _no_grad = tch::no_grad_guard();
    let (mut total, mut count) = (0.0, 0.0);
    for batch in samples {
        let (_, kl, n) = nado_terms(policy, reference, auxiliary, batch);
        total += kl.double_value(&[]);
        count += n;
    }
    total / count.max(1.0)
}

/// A LoRA run's adapters, named `<matrix>.lora_a` / `.lora_b`.
pub type LoraFactors = Vec<(String, Tensor)>;

/// Trains `policy` in place on `data` with `regularizer` weighted by `lambda`; returns the LoRA
/// adapters' named factors too when LoRA was used (the policy's weights are already merged).
pub fn finetune(
    policy: &dyn CausalLm,
    data: &[Sequence],
    regularizer: &Regularizer,
    lambda: f64,
    options: &FinetuneOptions,
    seed: u64,
    mut log: impl FnMut(&str),
) -> Result<(FinetuneStats, Option<LoraFactors>)> {
    check_inputs(data, lambda, options)?;
    let started = std::time::Instant::now();
    let device = policy.info().device;
    let data_batches = batches(data, options.batch_size, device);
    let samples = regularizer.samples();
    let sample_stream = SampleStream::new(samples, options.batch_size, device, seed);
    let kl_before = nado_kl(policy, regularizer, &sample_stream.batches);
    let (adapted, parameters) = Adapted::new(policy, &options.adaptation, seed)?;
    let total_steps = (options.epochs * data_batches.len()).div_ceil(options.accumulate);
    let optimizer = AdamW::new(
        parameters,
        options.learning_rate,
        options.weight_decay,
        total_steps.max(1),
    )?;
    log(&format!(
        "fine-tuning {} parameters: {} data batches × {} epochs, {} sample batches, λ {lambda}, {total_steps} steps",
        adapted.count,
        data_batches.len(),
        options.epochs,
        sample_stream.batches.len()
    ));
    let mut stats = FinetuneStats {
        steps: 0,
        micro_batches: 0,
        trainable_parameters: adapted.count,
        lm_losses: Vec::new(),
        regularizer_losses: Vec::new(),
        kl_before,
        kl_after: None,
        regularizer_samples: samples.len(),
        masked_samples: samples.iter().filter(|s| !s.regularize).count(),
        seconds: 0.0,
    };
    let mut run = Run {
        policy,
        regularizer,
        lambda,
        options,
        seed,
        data_batches,
        samples: sample_stream,
        optimizer,
        lora: adapted.lora.as_ref(),
    };
    for epoch in 0..options.epochs {
        let losses = run.epoch(epoch, &mut stats, &mut log)?;
        losses.record(epoch, options.epochs, &mut stats, &mut log)?;
    }
    let Run {
        optimizer,
        samples: sample_stream,
        ..
    } = run;
    // The optimiser lets go of the adapters before they are read out and removed from the
    // policy, and the KL after the job is measured on the policy without them.
    drop(optimizer);
    let factors = adapted.lora.as_ref().map(LoraSet::named_factors);
    drop(adapted);
    stats.kl_after = nado_kl(policy, regularizer, &sample_stream.batches);
    stats.seconds = started.elapsed().as_secs_f64();
    Ok((stats, factors))
}

fn check_inputs(data: &[Sequence], lambda: f64, options: &FinetuneOptions) -> Result<()> {
    if data.is_empty() {
        bail!("the data mix is empty");
    }
    if !(lambda >= 0.0 && lambda.is_finite()) {
        bail!("lambda must be a finite number >= 0, got {lambda}");
    }
    if options.batch_size == 0 || options.accumulate == 0 || options.epochs == 0 {
        bail!("batch_size, accumulate and epochs must be at least 1");
    }
    lm::train::check_rates(options.learning_rate, options.weight_decay)
}

/// NADO only: mean KL(q‖p_θ) over the samples.
fn nado_kl(policy: &dyn CausalLm, regularizer: &Regularizer, samples: &[Batch]) -> Option<f64> {
    match regularizer {
        Regularizer::Nado {
            reference,
            auxiliary,
            ..
        } => Some(mean_kl(policy, *reference, auxiliary, samples)),
        _ => None,
    }
}

/// What the optimiser trains: the blocks' tensors themselves, or LoRA adapters on them.
struct Adapted {
    lora: Option<LoraSet>,
    /// Trainable parameters (numbers, not tensors).
    count: i64,
}

impl Adapted {
    /// The adaptation and the tensors the optimiser updates.
    fn new(
        policy: &dyn CausalLm,
        adaptation: &Adaptation,
        seed: u64,
    ) -> Result<(Self, Vec<Tensor>)> {
        let layers = policy.info().num_layers;
        let tensors = policy.trainable_tensors(&TrainableSelection::top(layers, layers));
        Ok(match adaptation {
            Adaptation::Full => {
                let parameters: Vec<Tensor> =
                    tensors.iter().map(|(_, t)| t.shallow_clone()).collect();
                let count = parameters.iter().map(|t| t.numel() as i64).sum();
                (Adapted { lora: None, count }, parameters)
            }
            Adaptation::Lora(options) => {
                let set = LoraSet::new(&tensors, options, seed)?;
                let parameters = set.parameters();
                let count = set.parameter_count();
                (
                    Adapted {
                        lora: Some(set),
                        count,
                    },
                    parameters,
                )
            }
        })
    }
}

/// The regularizer's sample batches, handed out one per data micro-batch in a seeded order that
/// is drawn again each time the stream has gone through them all (across epochs too).
struct SampleStream {
    batches: Vec<Batch>,
    /// Mean label: REINFORCE's baseline.
    baseline: f64,
    seed: u64,
    cursor: usize,
    order: Vec<usize>,
}

impl SampleStream {
    fn new(samples: &[Sequence], batch_size: usize, device: tch::Device, seed: u64) -> Self {
        let baseline = if samples.is_empty() {
            0.0
        } else {
            samples.iter().map(|s| f64::from(s.label)).sum::<f64>() / samples.len() as f64
        };
        SampleStream {
            batches: batches(samples, batch_size, device),
            baseline,
            seed,
            cursor: 0,
            order: Vec::new(),
        }
    }

    /// The next batch, for micro-batch `done` of `epoch`.
    fn next(&mut self, epoch: usize, done: usize) -> Result<&Batch> {
        if self.cursor == 0 {
            self.order = epoch_order(
                self.batches.len(),
                self.seed.wrapping_add(1000),
                epoch * 1000 + done,
            )?;
        }
        let index = self.order[self.cursor];
        self.cursor = (self.cursor + 1) % self.batches.len();
        Ok(&self.batches[index])
    }
}

/// One regularizer term on `batch`: its summed value, its count, and its mean as a loss.
fn regularizer_term(
    policy: &dyn CausalLm,
    regularizer: &Regularizer,
    batch: &Batch,
    baseline: f64,
) -> Option<(f64, f64, Tensor)> {
    match regularizer {
        Regularizer::Nado {
            reference,
            auxiliary,
            ..
        } => {
            let (ce, _, n) = nado_terms(policy, *reference, auxiliary, batch);
            (n > 0.0).then(|| (ce.double_value(&[]), n, ce / n))
        }
        Regularizer::Reinforce { .. } => {
            let (term, n) = reinforce_term(policy, batch, baseline);
            Some((term.double_value(&[]), n, term / n))
        }
        Regularizer::None => None,
    }
}

/// Summed losses and their counts over one epoch.
#[derive(Default)]
struct EpochLosses {
    lm_total: f64,
    lm_count: f64,
    reg_total: f64,
    reg_count: f64,
}

impl EpochLosses {
    fn lm_mean(&self) -> f64 {
        self.lm_total / self.lm_count.max(1.0)
    }

    /// Adds the epoch's means to `stats` and logs them; a non-finite LM loss is divergence.
    fn record(
        &self,
        epoch: usize,
        epochs: usize,
        stats: &mut FinetuneStats,
        log: &mut impl FnMut(&str),
    ) -> Result<()> {
        let lm_mean = self.lm_mean();
        if !lm_mean.is_finite() {
            bail!(
                "fine-tuning diverged in epoch {} (LM loss {lm_mean})",
                epoch + 1
            );
        }
        stats.lm_losses.push(lm_mean);
        let regularizer = (self.reg_count > 0.0).then(|| self.reg_total / self.reg_count);
        stats.regularizer_losses.extend(regularizer);
        log(&format!(
            "epoch {}/{epochs}: LM loss {lm_mean:.4}{}",
            epoch + 1,
            regularizer.map_or(String::new(), |r| format!(", regularizer {r:.4}"))
        ));
        Ok(())
    }
}

/// The state one fine-tuning job carries from micro-batch to micro-batch.
struct Run<'a> {
    policy: &'a dyn CausalLm,
    regularizer: &'a Regularizer<'a>,
    lambda: f64,
    options: &'a FinetuneOptions,
    seed: u64,
    data_batches: Vec<Batch>,
    samples: SampleStream,
    optimizer: AdamW,
    lora: Option<&'a LoraSet>,
}

impl Run<'_> {
    /// One pass over the data mix in the epoch's seeded order, an optimiser step every
    /// `accumulate` micro-batches (and at the end).
    fn epoch(
        &mut self,
        epoch: usize,
        stats: &mut FinetuneStats,
        log: &mut impl FnMut(&str),
    ) -> Result<EpochLosses> {
        let order = epoch_order(self.data_batches.len(), self.seed, epoch)?;
        let accumulate = self.options.accumulate;
        let mut losses = EpochLosses::default();
        for (done, &i) in order.iter().enumerate() {
            if done % accumulate == 0 {
                self.optimizer.zero_grad()?;
                if let Some(set) = self.lora {
                    set.zero_weight_grads();
                }
            }
            let loss = self.micro_batch_loss(i, epoch, done, &mut losses)?;
            (loss / accumulate as f64).backward();
            stats.micro_batches += 1;
            if (done + 1) % accumulate == 0 || done + 1 == order.len() {
                if let Some(set) = self.lora {
                    set.transfer_gradients();
                }
                self.optimizer.step()?;
                if let Some(set) = self.lora {
                    set.merge();
                }
                stats.steps += 1;
            }
            if (done + 1) % 20 == 0 {
                log(&format!(
                    "  epoch {}: {}/{} batches, LM loss {:.4}",
                    epoch + 1,
                    done + 1,
                    order.len(),
                    losses.lm_mean()
                ));
            }
        }
        Ok(losses)
    }

    /// LM loss on data batch `i` plus λ times the regularizer on the next sample batch; adds
    /// both to `losses`.
    fn micro_batch_loss(
        &mut self,
        i: usize,
        epoch: usize,
        done: usize,
        losses: &mut EpochLosses,
    ) -> Result<Tensor> {
        let (nll, n) = summed_nll(self.policy, &self.data_batches[i]);
        let mut loss = if n > 0.0 {
            losses.lm_total += nll.double_value(&[]);
            losses.lm_count += n;
            nll / n
        } else {
            Tensor::zeros([], (Kind::Float, self.policy.info().device))
        };
        if self.lambda > 0.0 && !self.samples.batches.is_empty() {
            let baseline = self.samples.baseline;
            let batch = self.samples.next(epoch, done)?;
            if let Some((value, n, mean)) =
                regularizer_term(self.policy, self.regularizer, batch, baseline)
            {
                losses.reg_total += value;
                losses.reg_count += n;
                // Out of place: the sum is a new node of the autograd graph.
                #[allow(clippy::assign_op_pattern)]
                {
                    loss = loss + mean * self.lambda;
                }
            }
        }
        Ok(loss)
    }
}
