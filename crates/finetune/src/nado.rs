//! NADO's auxiliary model: R(x<t, v), the probability that a finished sequence is non-toxic given
//! its prefix and next token, from a causal-LM trunk (the policy's first blocks) and a |V|-way
//! sigmoid head. The constrained distribution is q(v|x<t) ∝ p(v|x<t)·R(x<t, v), in logits
//! z_q = z_p + log σ(head(h)). The head starts at zero, so R = ½ for every token and q = p.
//!
//! Trained with binary cross-entropy between R(x<t, x_t) of each sampled token and its sequence's
//! label, at every continuation position. Only the logit of the token actually sampled enters the
//! loss, so the head's rows are gathered per target instead of projecting onto the whole
//! vocabulary.
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

use crate::sequences::{batches, Batch, Sequence};

pub const HEAD_FILE: &str = "nado-head.safetensors";
pub const RECORD_FILE: &str = "nado.json";
pub const FORMAT: &str = "detox-nado-auxiliary/1";

/// A trunk and its sigmoid head.
pub struct Auxiliary {
    pub trunk: LoadedModel,
    /// `[vocab, hidden]` float32.
    pub head_weight: Tensor,
    /// `[vocab]` float32.
    pub head_bias: Tensor,
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
    /// Mean binary cross-entropy per counted token before training and after each epoch.
    pub loss_before: f64,
    pub epoch_losses: Vec<f64>,
    pub seconds: f64,
}

impl Auxiliary {
    /// The first `layers` blocks of `source` with a zero head: R = ½ everywhere, so q = p.
    pub fn fresh(source: &Path, layers: usize, device: DeviceChoice) -> Result<Self> {
        let trunk = LoadedModel::load_layers(source, device, DtypeChoice::F32, Some(layers))?;
        let info = trunk.model.info().clone();
        Ok(Self {
            head_weight: Tensor::zeros(
                [info.vocab_size, info.hidden_size],
                (Kind::Float, info.device),
            ),
            head_bias: Tensor::zeros([info.vocab_size], (Kind::Float, info.device)),
            trunk,
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
        })
    }

    /// log R(x<t, v) for every v: `[..., vocab]` float32 from trunk states `[..., hidden]`.
    pub fn log_r(&self, hidden: &Tensor) -> Tensor {
        hidden
            .to_kind(Kind::Float)
            .linear(&self.head_weight, Some(&self.head_bias))
            .log_sigmoid()
    }

    /// The head's logit for each position's target token `[B, T-1]`: the rows of the head for
    /// the targets only.
    fn target_logits(&self, batch: &Batch) -> Tensor {
        let model = self.trunk.model.as_ref();
        let t = batch.ids.size()[1];
        let hidden = model
            .forward_hidden(&batch.ids, &batch.mask, &mut model.new_cache())
            .narrow(1, 0, t - 1)
            .to_kind(Kind::Float);
        let targets = batch.targets();
        let rows = self.head_weight.index_select(0, &targets.flatten(0, -1));
        let rows = rows.view([targets.size()[0], targets.size()[1], -1]);
        (hidden * rows).sum_dim_intlist(-1, false, Kind::Float)
            + self
                .head_bias
                .index_select(0, &targets.flatten(0, -1))
                .view_as(&targets)
    }

    /// Summed BCE over the counted positions of a batch, and their count.
    fn batch_loss(&self, batch: &Batch) -> (Tensor, f64) {
        let logits = self.target_logits(batch);
        let labels = batch.labels.unsqueeze(1).expand_as(&logits);
        let bce = logits.binary_cross_entropy_with_logits::<Tensor>(
            &labels,
            None,
            None,
            tch::Reduction::None,
        );
        let weights = batch.target_weights();
        let n = weights.sum(Kind::Float).double_value(&[]);
        ((bce * weights).sum(Kind::Float), n)
    }

    fn mean_loss(&self, all: &[Batch]) -> f64 {
        let _no_grad = tch::no_grad_guard();
        let (mut total, mut count) = (0.0, 0.0);
        for batch in all {
            let (loss, n) = self.batch_loss(batch);
            total += loss.double_value(&[]);
            count += n;
        }
        total / count.max(1.0)
    }

    /// Trains the trunk's blocks, final norm and head on labelled `sequences`.
    pub fn train(
        &mut self,
        sequences: &[Sequence],
        options: &AuxiliaryOptions,
        seed: u64,
        started_from: String,
        mut log: impl FnMut(&str),
    ) -> Result<AuxiliaryRecord> {
        if sequences.is_empty() {
            bail!("the auxiliary model has no labelled sample to train on");
        }
        lm::train::check_rates(options.learning_rate, options.weight_decay)?;
        let started = std::time::Instant::now();
        let device = self.trunk.model.info().device;
        let all = batches(sequences, options.batch_size, device);
        let loss_before = self.mean_loss(&all);
        log(&format!(
            "auxiliary: {} labelled samples, BCE before training {loss_before:.4}",
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
        let mut epoch_losses = Vec::new();
        for epoch in 0..options.epochs {
            let (mut total, mut count) = (0.0, 0.0);
            for i in epoch_order(all.len(), seed, epoch)? {
                let (loss, n) = self.batch_loss(&all[i]);
                if n == 0.0 {
                    continue;
                }
                total += loss.double_value(&[]);
                count += n;
                optimizer.minimize(&(loss / n))?;
            }
            let mean = total / count.max(1.0);
            if !mean.is_finite() {
                bail!(
                    "auxiliary training diverged in epoch {} (loss {mean})",
                    epoch + 1
                );
            }
            log(&format!("auxiliary epoch {}: BCE {mean:.4}", epoch + 1));
            epoch_losses.push(mean);
        }
        drop(optimizer);
        let train_tokens = sequences.iter().map(Sequence::counted).sum();
        let mean_label =
            sequences.iter().map(|s| f64::from(s.label)).sum::<f64>() / sequences.len() as f64;
        Ok(AuxiliaryRecord {
            format: FORMAT.into(),
            started_from,
            options: options.clone(),
            train_sequences: sequences.len(),
            train_tokens,
            mean_label,
            loss_before,
            epoch_losses,
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
