//! NADO's auxiliary model: R(x<t, v), the probability that a finished sequence is non-toxic given
//! its prefix and next token, from a causal-LM trunk (the policy's first blocks) and a |V|-way
//! sigmoid head. The constrained distribution is q(v|x<t) ∝ p(v|x<t)·R(x<t, v), in logits
//! z_q = z_p + log σ(head(h)).
//!
//! A fresh head has zero weights and every bias at logit(ȳ), ȳ the mean label of the samples it
//! first trains on: R = ȳ for every token. A zero bias would say R = ½ while labels average ≈ 0.9,
//! and the rows of tokens never sampled would stay there, so q would favour whatever tokens
//! happened to be sampled. A bias constant over the vocabulary still leaves q = p.
//!
//! The training loss is binary cross-entropy between R(x<t, x_t) of each sampled token and its
//! sequence's label, at every continuation position, plus `consistency` times NADO's consistency
//! regularizer ([`consistency_terms`]). The BCE reaches only the head rows of sampled tokens; the
//! regularizer ties R(x<t−1, x_{t−1}) to Σ_v p(v|x<t)·R(x<t, v) under the policy p and so reaches
//! every row. Without it (`consistency: 0`) only the sampled tokens' rows are gathered, instead of
//! projecting onto the whole vocabulary.
//!
//! On disk an auxiliary model is a Hugging Face folder (the trunk, loadable like any model), plus
//! `nado-head.safetensors` and `nado.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use decode::{ReadAlong, Request, Steering, Step};
use lm::train::{epoch_order, AdamW};
use lm::{CausalLm, DeviceChoice, DtypeChoice, LoadedModel, TextTokenizer, TrainableSelection};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::sequences::{batches, next_token_log_probs, Batch, Sequence};

pub const HEAD_FILE: &str = "nado-head.safetensors";
pub const RECORD_FILE: &str = "nado.json";
pub const FORMAT: &str = "detox-nado-auxiliary/1";

/// Labels are clamped into [ε, 1 − ε] before the logit of the prior, so that samples all labelled
/// 1 (hard labels, nothing toxic) give a large but finite bias.
const PRIOR_EPSILON: f64 = 1e-3;

/// A trunk and its sigmoid head.
pub struct Auxiliary {
    pub trunk: LoadedModel,
    /// `[vocab, hidden]` float32.
    pub head_weight: Tensor,
    /// `[vocab]` float32.
    pub head_bias: Tensor,
    /// The constant bias a fresh head started with (`None` for a loaded one), for the record.
    initial_bias: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuxiliaryOptions {
    /// Blocks of the policy the trunk keeps.
    pub layers: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    #[serde(default)]
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Weight of NADO's consistency regularizer beside the BCE; both are in nats per counted
    /// token (pair), so 1 puts them on an equal footing. 0 turns it off (and with it the policy's
    /// forward pass in training).
    #[serde(default = "default_consistency")]
    pub consistency: f64,
}

fn default_consistency() -> f64 {
    1.0
}

/// What `nado.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuxiliaryRecord {
    pub format: String,
    /// The folder whose first blocks the trunk started from (or the previous auxiliary model).
    pub started_from: String,
    pub options: AuxiliaryOptions,
    pub train_sequences: usize,
    /// Continuation tokens the loss counted per epoch.
    pub train_tokens: usize,
    /// Mean label of the training sequences (the share judged non-toxic).
    pub mean_label: f64,
    /// A fresh head's bias, logit(mean label), the same for every token; `None` when training
    /// went on from an earlier auxiliary model.
    #[serde(default)]
    pub head_bias_init: Option<f64>,
    /// Mean binary cross-entropy per counted token before training and after each epoch.
    pub loss_before: f64,
    pub epoch_losses: Vec<f64>,
    /// Mean consistency regularizer per counted position pair during each epoch (empty when off).
    #[serde(default)]
    pub epoch_consistency: Vec<f64>,
    /// Measured again after training, with the final weights: mean BCE per counted token and mean
    /// consistency regularizer per counted pair.
    #[serde(default)]
    pub loss_after: Option<f64>,
    #[serde(default)]
    pub consistency_after: Option<f64>,
    /// Mean over the training samples of Σ_t KL(q_t‖p_t) over each sample's continuation, q =
    /// softmax(z_p + log R), after training. Estimated on p's own samples (the sequence KL(q‖p)
    /// is an expectation under q's, which we do not draw).
    #[serde(default)]
    pub kl_q_p_per_sequence: Option<f64>,
    /// −log(mean label): what KL(q‖p) of whole sequences equals for the exact posterior q ∝ p·y
    /// (−log E_p[y]), with the mean label as the estimate of E_p[y]. A KL far above it means R
    /// moves q further than the labels justify.
    #[serde(default)]
    pub kl_bound: Option<f64>,
    pub seconds: f64,
}

/// The mean label of `sequences` (0.5 when there is none): a fresh head's prior.
pub fn mean_label(sequences: &[Sequence]) -> f64 {
    if sequences.is_empty() {
        return 0.5;
    }
    sequences.iter().map(|s| f64::from(s.label)).sum::<f64>() / sequences.len() as f64
}

/// logit(`label`), with `label` clamped into [ε, 1 − ε].
pub fn prior_logit(label: f64) -> f64 {
    let y = label.clamp(PRIOR_EPSILON, 1.0 - PRIOR_EPSILON);
    (y / (1.0 - y)).ln()
}

/// NADO's consistency regularizer, summed over a batch's counted position pairs, and the number
/// of pairs. `head_logits` `[B, T-1, V]` are the head's logits ℓ (R = σ(ℓ)) at each predicting
/// position, `log_p` `[B, T-1, V]` the policy's next-token log-probabilities there (no gradient),
/// `targets` and `weights` `[B, T-1]` the batch's next tokens and counted positions.
///
/// R of a prefix is Σ_v p(v|x<t)·R(x<t, v), and it is also the previous position's value for the
/// token actually taken, R(x<t−1, x_{t−1}). The term compares the two as Bernoulli distributions,
/// KL(Bern(r_prev) ‖ Bern(r_expected)), at pairs of positions that both count. Chosen over the
/// squared gap because it is in nats like the BCE (so the weight reads as a ratio), is zero
/// exactly when R is consistent, and its gradient does not fade as the probabilities near 1,
/// where a squared gap of two values ≈ 0.9 would barely move. Gradients reach both sides: each is
/// the same model's estimate of one quantity.
pub fn consistency_terms(
    head_logits: &Tensor,
    log_p: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
) -> (Tensor, f64) {
    let positions = head_logits.size()[1];
    if positions < 2 {
        return (Tensor::zeros([], (Kind::Float, head_logits.device())), 0.0);
    }
    let pairs = positions - 1;
    // The value of the token taken at positions 0..T-2.
    let taken = head_logits
        .narrow(1, 0, pairs)
        .gather(2, &targets.narrow(1, 0, pairs).unsqueeze(-1), false)
        .squeeze_dim(-1);
    let (log_r_prev, log_not_r_prev) = (taken.log_sigmoid(), (-&taken).log_sigmoid());
    // Σ_v p(v)·σ(ℓ_v) and Σ_v p(v)·σ(−ℓ_v) = 1 − it, at positions 1..T-1, in log space.
    let next_logits = head_logits.narrow(1, 1, pairs);
    let next_log_p = log_p.narrow(1, 1, pairs);
    let log_r_expected = (&next_log_p + next_logits.log_sigmoid()).logsumexp([-1], false);
    let log_not_r_expected = (&next_log_p + (-&next_logits).log_sigmoid()).logsumexp([-1], false);
    let kl = log_r_prev.exp() * (&log_r_prev - log_r_expected)
        + log_not_r_prev.exp() * (&log_not_r_prev - log_not_r_expected);
    let pair_weights = weights.narrow(1, 0, pairs) * weights.narrow(1, 1, pairs);
    let count = pair_weights.sum(Kind::Float).double_value(&[]);
    ((kl * pair_weights).sum(Kind::Float), count)
}

/// Σ over a batch's rows of Σ_t KL(q_t‖p_t) at each row's counted positions, q = softmax(log p +
/// log R). `log_p` and `log_r` `[B, T-1, V]`, `weights` `[B, T-1]`.
pub fn summed_sequence_kl(log_p: &Tensor, log_r: &Tensor, weights: &Tensor) -> f64 {
    let log_q = (log_p + log_r).log_softmax(-1, Kind::Float);
    let per_position = (log_q.exp() * (&log_q - log_p)).sum_dim_intlist(-1, false, Kind::Float);
    (per_position * weights).sum(Kind::Float).double_value(&[])
}

/// A batch's losses: BCE summed over counted tokens with their count, and with the policy's
/// log-probabilities the consistency regularizer summed over counted pairs with their count.
struct BatchTerms {
    bce: Tensor,
    tokens: f64,
    consistency: Option<(Tensor, f64)>,
}

/// What a pass over the samples with the model as it stands measured.
struct Measures {
    bce: f64,
    consistency: f64,
    kl_per_sequence: f64,
}

/// BCE between the head's logits for the tokens taken `[B, T-1]` and each row's label, summed
/// over the counted positions (`weights`), and their count.
fn summed_bce(taken_logits: &Tensor, batch: &Batch, weights: &Tensor) -> (Tensor, f64) {
    let labels = batch.labels.unsqueeze(1).expand_as(taken_logits);
    let bce = taken_logits.binary_cross_entropy_with_logits::<Tensor>(
        &labels,
        None,
        None,
        tch::Reduction::None,
    );
    (
        (bce * weights).sum(Kind::Float),
        weights.sum(Kind::Float).double_value(&[]),
    )
}

/// The policy's next-token log-probabilities `[B, T-1, V]` on a batch, outside the graph. Not
/// cached across epochs: the policy is frozen, but a batch's `[B, T-1, V]` float table is tens of
/// MB, too much to keep for every batch.
fn policy_log_probs(policy: &dyn CausalLm, batch: &Batch) -> Tensor {
    let _no_grad = tch::no_grad_guard();
    next_token_log_probs(policy, batch)
}

impl Auxiliary {
    /// The first `layers` blocks of `source` with a fresh head: zero weights, and every bias at
    /// logit(`prior_label`) (the mean label of the samples it will train on; see the module
    /// comment). Constant over the vocabulary, so q = p.
    pub fn fresh(
        source: &Path,
        layers: usize,
        device: DeviceChoice,
        prior_label: f64,
    ) -> Result<Self> {
        let trunk = LoadedModel::load_layers(source, device, DtypeChoice::F32, Some(layers))?;
        let info = trunk.model.info().clone();
        let bias = prior_logit(prior_label);
        Ok(Self {
            head_weight: Tensor::zeros(
                [info.vocab_size, info.hidden_size],
                (Kind::Float, info.device),
            ),
            head_bias: Tensor::full([info.vocab_size], bias, (Kind::Float, info.device)),
            trunk,
            initial_bias: Some(bias),
        })
    }

    /// An auxiliary model written by [`Auxiliary::save`].
    pub fn load(dir: &Path, device: DeviceChoice, dtype: DtypeChoice) -> Result<Self> {
        let head_path = dir.join(HEAD_FILE);
        if !head_path.is_file() {
            bail!(
                "{}: not a NADO auxiliary model (no {HEAD_FILE}; train one with `detox train finetune`)",
                dir.display()
            );
        }
        let trunk = LoadedModel::load(dir, device, dtype)?;
        let info = trunk.model.info().clone();
        let tensors = Tensor::read_safetensors(&head_path)
            .with_context(|| format!("{}: cannot read", head_path.display()))?;
        let find = |name: &str, shape: &[i64]| -> Result<Tensor> {
            let t = tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .with_context(|| format!("{}: no tensor {name}", head_path.display()))?;
            if t.size() != shape {
                bail!(
                    "{}: {name} has shape {:?}, the trunk needs {shape:?}",
                    head_path.display(),
                    t.size()
                );
            }
            Ok(t.to_kind(Kind::Float).to_device(info.device))
        };
        Ok(Self {
            head_weight: find("nado.head.weight", &[info.vocab_size, info.hidden_size])?,
            head_bias: find("nado.head.bias", &[info.vocab_size])?,
            trunk,
            initial_bias: None,
        })
    }

    /// log R(x<t, v) for every v: `[..., vocab]` float32 from trunk states `[..., hidden]`.
    pub fn log_r(&self, hidden: &Tensor) -> Tensor {
        self.head_logits(hidden).log_sigmoid()
    }

    /// The head's logits ℓ (R = σ(ℓ)) for every v: `[..., vocab]` float32.
    fn head_logits(&self, hidden: &Tensor) -> Tensor {
        hidden
            .to_kind(Kind::Float)
            .linear(&self.head_weight, Some(&self.head_bias))
    }

    /// The trunk's states at the predicting positions `[B, T-1, hidden]` float32.
    fn states(&self, batch: &Batch) -> Tensor {
        let model = self.trunk.model.as_ref();
        let t = batch.ids.size()[1];
        model
            .forward_hidden(&batch.ids, &batch.mask, &mut model.new_cache())
            .narrow(1, 0, t - 1)
            .to_kind(Kind::Float)
    }

    /// The head's logit for each position's target token `[B, T-1]`: the rows of the head for
    /// the targets only.
    fn target_logits(&self, hidden: &Tensor, targets: &Tensor) -> Tensor {
        let flat = targets.flatten(0, -1);
        let rows = self.head_weight.index_select(0, &flat);
        let rows = rows.view([targets.size()[0], targets.size()[1], -1]);
        (hidden * rows).sum_dim_intlist(-1, false, Kind::Float)
            + self.head_bias.index_select(0, &flat).view_as(targets)
    }

    /// The batch's BCE and, given the policy, its consistency regularizer.
    fn batch_terms(&self, batch: &Batch, policy: Option<&dyn CausalLm>) -> BatchTerms {
        let hidden = self.states(batch);
        let targets = batch.targets();
        let weights = batch.target_weights();
        let (logits, consistency) = match policy {
            Some(policy) => {
                let all = self.head_logits(&hidden);
                let log_p = policy_log_probs(policy, batch);
                let consistency = consistency_terms(&all, &log_p, &targets, &weights);
                let taken = all.gather(2, &targets.unsqueeze(-1), false).squeeze_dim(-1);
                (taken, Some(consistency))
            }
            None => (self.target_logits(&hidden, &targets), None),
        };
        let (bce, tokens) = summed_bce(&logits, batch, &weights);
        BatchTerms {
            bce,
            tokens,
            consistency,
        }
    }

    fn mean_loss(&self, all: &[Batch]) -> f64 {
        let _no_grad = tch::no_grad_guard();
        let (mut total, mut count) = (0.0, 0.0);
        for batch in all {
            let terms = self.batch_terms(batch, None);
            total += terms.bce.double_value(&[]);
            count += terms.tokens;
        }
        total / count.max(1.0)
    }

    /// BCE, consistency and the per-sequence KL(q‖p) with the model as it stands.
    fn measure(&self, policy: &dyn CausalLm, all: &[Batch]) -> Measures {
        let _no_grad = tch::no_grad_guard();
        let (mut bce, mut tokens, mut consistency, mut pairs, mut kl, mut rows) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for batch in all {
            let hidden = self.states(batch);
            let targets = batch.targets();
            let weights = batch.target_weights();
            let logits = self.head_logits(&hidden);
            let log_p = policy_log_probs(policy, batch);
            let (c, n) = consistency_terms(&logits, &log_p, &targets, &weights);
            consistency += c.double_value(&[]);
            pairs += n;
            kl += summed_sequence_kl(&log_p, &logits.log_sigmoid(), &weights);
            rows += batch.ids.size()[0] as f64;
            let taken = logits
                .gather(2, &targets.unsqueeze(-1), false)
                .squeeze_dim(-1);
            let (b, n) = summed_bce(&taken, batch, &weights);
            bce += b.double_value(&[]);
            tokens += n;
        }
        Measures {
            bce: bce / tokens.max(1.0),
            consistency: consistency / pairs.max(1.0),
            kl_per_sequence: kl / rows.max(1.0),
        }
    }

    /// Trains the trunk's blocks, final norm and head on labelled `sequences` of `policy` (whose
    /// next-token distribution the consistency regularizer and the KL measurement read).
    pub fn train(
        &mut self,
        sequences: &[Sequence],
        options: &AuxiliaryOptions,
        policy: &dyn CausalLm,
        seed: u64,
        started_from: String,
        mut log: impl FnMut(&str),
    ) -> Result<AuxiliaryRecord> {
        if sequences.is_empty() {
            bail!("the auxiliary model has no labelled sample to train on");
        }
        lm::train::check_rates(options.learning_rate, options.weight_decay)?;
        if !(options.consistency >= 0.0 && options.consistency.is_finite()) {
            bail!(
                "auxiliary consistency must be a finite number >= 0, got {}",
                options.consistency
            );
        }
        let (policy_vocab, own_vocab) =
            (policy.info().vocab_size, self.trunk.model.info().vocab_size);
        if policy_vocab != own_vocab {
            bail!("the policy has {policy_vocab} tokens, the auxiliary model {own_vocab}");
        }
        let started = std::time::Instant::now();
        let device = self.trunk.model.info().device;
        let all = batches(sequences, options.batch_size, device);
        let mean_label = mean_label(sequences);
        let loss_before = self.mean_loss(&all);
        log(&format!(
            "auxiliary: {} labelled samples, mean label {mean_label:.4}, BCE before training \
             {loss_before:.4}",
            sequences.len()
        ));
        let layers = self.trunk.model.info().num_layers;
        let selection = TrainableSelection::top(layers, layers);
        let mut tensors: Vec<Tensor> = self
            .trunk
            .model
            .trainable_tensors(&selection)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        tensors.push(self.head_weight.shallow_clone());
        tensors.push(self.head_bias.shallow_clone());
        let mut optimizer = AdamW::new(
            tensors,
            options.learning_rate,
            options.weight_decay,
            options.epochs * all.len(),
        )?;
        let regularized = options.consistency > 0.0;
        let mut epoch_losses = Vec::new();
        let mut epoch_consistency = Vec::new();
        for epoch in 0..options.epochs {
            let (mut total, mut count) = (0.0, 0.0);
            let (mut consistency_total, mut pairs) = (0.0, 0.0);
            for i in epoch_order(all.len(), seed, epoch)? {
                let terms = self.batch_terms(&all[i], regularized.then_some(policy));
                if terms.tokens == 0.0 {
                    continue;
                }
                total += terms.bce.double_value(&[]);
                count += terms.tokens;
                let bce = terms.bce / terms.tokens;
                let loss = match terms.consistency {
                    Some((sum, n)) if n > 0.0 => {
                        consistency_total += sum.double_value(&[]);
                        pairs += n;
                        bce + sum * (options.consistency / n)
                    }
                    _ => bce,
                };
                optimizer.minimize(&loss)?;
            }
            let mean = total / count.max(1.0);
            if !mean.is_finite() {
                bail!(
                    "auxiliary training diverged in epoch {} (loss {mean})",
                    epoch + 1
                );
            }
            if regularized {
                let consistency = consistency_total / pairs.max(1.0);
                log(&format!(
                    "auxiliary epoch {}: BCE {mean:.4}, consistency {consistency:.5}",
                    epoch + 1
                ));
                epoch_consistency.push(consistency);
            } else {
                log(&format!("auxiliary epoch {}: BCE {mean:.4}", epoch + 1));
            }
            epoch_losses.push(mean);
        }
        drop(optimizer);
        let after = self.measure(policy, &all);
        let kl_bound = -mean_label.ln();
        log(&format!(
            "auxiliary after training: BCE {:.4}, consistency {:.5}; KL(q‖p) per sequence \
             {:.4} nats (on p's samples) beside its bound −log E_p[y] = {kl_bound:.4}",
            after.bce, after.consistency, after.kl_per_sequence
        ));
        let train_tokens = sequences.iter().map(Sequence::counted).sum();
        Ok(AuxiliaryRecord {
            format: FORMAT.into(),
            started_from,
            options: options.clone(),
            train_sequences: sequences.len(),
            train_tokens,
            mean_label,
            head_bias_init: self.initial_bias,
            loss_before,
            epoch_losses,
            epoch_consistency,
            loss_after: Some(after.bce),
            consistency_after: Some(after.consistency),
            kl_q_p_per_sequence: Some(after.kl_per_sequence),
            kl_bound: Some(kl_bound),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Writes the trunk as a Hugging Face folder `out` (which must not exist), with the head and
    /// `record` beside it. Written beside `out` and renamed, so `out` appears only complete.
    pub fn save(&self, out: &Path, record: &AuxiliaryRecord) -> Result<()> {
        if out.exists() {
            bail!(
                "{}: already exists; choose another folder or remove it",
                out.display()
            );
        }
        let layers = self.trunk.model.info().num_layers;
        let staging = staging_path(out);
        let _ = std::fs::remove_dir_all(&staging);
        lm::checkpoint::write_folder(
            &self.trunk.dir,
            &staging,
            Some(layers),
            self.trunk
                .model
                .export_tensors(&TrainableSelection::top(layers, layers)),
        )?;
        let _no_grad = tch::no_grad_guard();
        let head = [
            (
                "nado.head.weight".to_string(),
                self.head_weight.to_device(tch::Device::Cpu),
            ),
            (
                "nado.head.bias".to_string(),
                self.head_bias.to_device(tch::Device::Cpu),
            ),
        ];
        Tensor::write_safetensors(&head, staging.join(HEAD_FILE))
            .with_context(|| format!("{}: cannot write {HEAD_FILE}", staging.display()))?;
        std::fs::write(
            staging.join(RECORD_FILE),
            serde_json::to_string_pretty(record)? + "\n",
        )
        .with_context(|| format!("{}: cannot write {RECORD_FILE}", staging.display()))?;
        std::fs::rename(&staging, out)
            .with_context(|| format!("cannot move {} to {}", staging.display(), out.display()))
    }
}

/// Perplexity of NADO's decoding distribution q ∝ p·R^α (the policy's logits plus α·log R) on
/// the counted tokens of `sequences`, with the token count: the utility of NADO decoding measured
/// the same way as a fine-tuned model's.
pub fn decoding_perplexity(
    policy: &dyn CausalLm,
    auxiliary: &Auxiliary,
    alpha: f64,
    sequences: &[Sequence],
    batch_size: usize,
) -> (f64, usize) {
    let _no_grad = tch::no_grad_guard();
    let (mut total, mut count) = (0.0, 0.0);
    for batch in batches(sequences, batch_size, policy.info().device) {
        let t = batch.ids.size()[1];
        let hidden = policy.forward_hidden(&batch.ids, &batch.mask, &mut policy.new_cache());
        let z = policy.logits(&hidden.narrow(1, 0, t - 1));
        let trunk = auxiliary.trunk.model.as_ref();
        let aux_hidden = trunk.forward_hidden(&batch.ids, &batch.mask, &mut trunk.new_cache());
        let log_r = auxiliary.log_r(&aux_hidden.narrow(1, 0, t - 1));
        let log_q = (z + log_r * alpha).log_softmax(-1, Kind::Float);
        let nll = -log_q
            .gather(2, &batch.targets().unsqueeze(-1), false)
            .squeeze_dim(-1);
        let weights = batch.target_weights();
        count += weights.sum(Kind::Float).double_value(&[]);
        total += (nll * weights).sum(Kind::Float).double_value(&[]);
    }
    let ppl = if count > 0.0 {
        (total / count).exp()
    } else {
        f64::NAN
    };
    (ppl, count as usize)
}

/// A sibling of `out` to write into before renaming.
pub(crate) fn staging_path(out: &Path) -> PathBuf {
    out.with_file_name(format!(
        ".{}.staging-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ))
}

/// NADO decoding's strength: z + α·log R. α = 1 is NADO's posterior q ∝ p·R; 0 is plain sampling.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NadoParams {
    pub alpha: f64,
}

impl NadoParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            bail!(
                "nado: alpha must be a finite number >= 0, got {}",
                self.alpha
            );
        }
        Ok(())
    }
}

/// NADO decoding: the policy's logits plus α·log R from the auxiliary model, which reads the
/// whole text on its own cache. No fine-tuning: one of the paper's baselines.
pub struct NadoDecoding {
    auxiliary: Auxiliary,
    params: NadoParams,
    reader: ReadAlong,
    steps: usize,
    seconds: f64,
}

impl NadoDecoding {
    pub fn new(
        auxiliary: Auxiliary,
        target_tokenizer: &TextTokenizer,
        target_vocab: i64,
        params: NadoParams,
    ) -> Result<Self> {
        params.validate()?;
        let trunk = &auxiliary.trunk;
        if !trunk.tokenizer.same_ids_as(target_tokenizer)
            || trunk.model.info().vocab_size != target_vocab
        {
            bail!(
                "the auxiliary model {} does not share the target's tokenizer: NADO feeds it the \
                 target's token ids; train it from the target (`detox train finetune`)",
                trunk.dir.display()
            );
        }
        Ok(Self {
            auxiliary,
            params,
            reader: ReadAlong::default(),
            steps: 0,
            seconds: 0.0,
        })
    }
}

impl Steering for NadoDecoding {
    fn name(&self) -> &str {
        "nado"
    }

    fn prepare(&mut self, model: &dyn CausalLm) -> Result<()> {
        let (a, b) = (
            self.auxiliary.trunk.model.info().device,
            model.info().device,
        );
        if a != b {
            bail!("the auxiliary model is on {a:?} but the target on {b:?}");
        }
        Ok(())
    }

    fn begin(&mut self, rows: &[&Request]) -> Result<()> {
        self.reader.begin(self.auxiliary.trunk.model.as_ref(), rows)
    }

    fn adjust_logits(&mut self, _step: &Step, logits: &mut Tensor) -> Result<()> {
        let started = std::time::Instant::now();
        if self.params.alpha > 0.0 {
            *logits = &*logits + self.auxiliary.log_r(self.reader.hidden()?) * self.params.alpha;
        }
        self.steps += 1;
        self.seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    fn observe(&mut self, _step: &Step, tokens: &[i64]) -> Result<()> {
        self.reader
            .advance(self.auxiliary.trunk.model.as_ref(), tokens)
    }

    fn retain_rows(&mut self, keep: &[usize]) -> Result<()> {
        self.reader.retain(keep);
        Ok(())
    }

    fn counters(&self) -> Vec<(String, f64)> {
        vec![
            ("nado_steps".into(), self.steps as f64),
            ("nado_seconds".into(), self.seconds + self.reader.seconds()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row, three predicting positions over a vocabulary of four, all counted.
    fn tiny_case() -> (Tensor, Tensor, Tensor) {
        let log_p = Tensor::from_slice(&[
            0.1f32, 0.2, 0.3, 0.4, //
            0.4, 0.3, 0.2, 0.1, //
            0.25, 0.25, 0.25, 0.25,
        ])
        .view([1, 3, 4])
        .log();
        let targets = Tensor::from_slice(&[2i64, 1, 3]).view([1, 3]);
        let weights = Tensor::ones([1, 3], (Kind::Float, tch::Device::Cpu));
        (log_p, targets, weights)
    }

    fn logit(r: f64) -> f64 {
        (r / (1.0 - r)).ln()
    }

    #[test]
    fn the_consistency_regularizer_is_zero_when_r_is_consistent_and_positive_otherwise() {
        let (log_p, targets, weights) = tiny_case();
        // Position 2's values are free; position 1's value of its taken token (1) is set to their
        // expectation under p at position 2, and position 0's value of token 2 to the expectation
        // at position 1.
        let r2 = [0.9, 0.2, 0.6, 0.95];
        let p = |t: i64, v: i64| log_p.double_value(&[0, t, v]).exp();
        let expected2: f64 = (0..4).map(|v| p(2, v) * r2[v as usize]).sum();
        let r1 = [0.7, expected2, 0.5, 0.99];
        let expected1: f64 = (0..4).map(|v| p(1, v) * r1[v as usize]).sum();
        let r0 = [0.3, 0.3, expected1, 0.3];
        let values: Vec<f32> = [r0, r1, r2]
            .iter()
            .flat_map(|row| row.iter().map(|&r| logit(r) as f32))
            .collect();
        let logits = Tensor::from_slice(&values).view([1, 3, 4]);
        let (sum, pairs) = consistency_terms(&logits, &log_p, &targets, &weights);
        assert_eq!(pairs, 2.0);
        assert!(sum.double_value(&[]).abs() < 1e-6, "{sum}");

        // Move a value of a token that was not taken: the expectation changes, the gap appears.
        let inconsistent = logits.copy();
        let _ = inconsistent.get(0).get(2).get(0).fill_(logit(0.1));
        let (sum, _) = consistency_terms(&inconsistent, &log_p, &targets, &weights);
        assert!(sum.double_value(&[]) > 1e-3, "{sum}");

        // A pair with an uncounted position does not count.
        let half = Tensor::from_slice(&[0.0f32, 1.0, 1.0]).view([1, 3]);
        let (sum_half, pairs_half) = consistency_terms(&inconsistent, &log_p, &targets, &half);
        assert_eq!(pairs_half, 1.0);
        assert!(sum_half.double_value(&[]) > 1e-3);

        // It reaches rows of tokens never taken: the gradient of an untaken token's logit.
        let leaf = inconsistent.detach().set_requires_grad(true);
        let (sum, _) = consistency_terms(&leaf, &log_p, &targets, &weights);
        sum.backward();
        assert!(leaf.grad().double_value(&[0, 2, 0]).abs() > 1e-4);
    }

    #[test]
    fn a_fresh_prior_leaves_q_equal_to_p_and_kl_zero() {
        let labels = [1.0f32, 1.0, 0.0, 1.0];
        let sequences: Vec<Sequence> = labels
            .iter()
            .map(|&label| Sequence {
                ids: vec![1, 2, 3],
                counted_from: 1,
                label,
                regularize: true,
            })
            .collect();
        assert_eq!(mean_label(&sequences), 0.75);
        assert!((prior_logit(0.75) - 3f64.ln()).abs() < 1e-12);
        assert!(prior_logit(1.0).is_finite() && prior_logit(0.0).is_finite());
        let (log_p, _, weights) = tiny_case();
        let bias = Tensor::full([4], prior_logit(0.75), (Kind::Float, tch::Device::Cpu));
        let log_r = bias.log_sigmoid().expand([1, 3, 4], false);
        let log_q = (&log_p + &log_r).log_softmax(-1, Kind::Float);
        let gap = (log_q - log_p.log_softmax(-1, Kind::Float)).abs().max();
        assert!(gap.double_value(&[]) < 1e-6);
        assert!(summed_sequence_kl(&log_p, &log_r, &weights).abs() < 1e-6);
        // A token-dependent R moves q away from p.
        let moved = Tensor::from_slice(&[0.0f32, -2.0, 0.0, 0.0]).expand([1, 3, 4], false);
        assert!(summed_sequence_kl(&log_p, &moved, &weights) > 1e-3);
    }
}
