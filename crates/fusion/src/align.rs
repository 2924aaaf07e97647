//! The alignment map from the calibration model's final hidden state to the target's: A
//! (calibration width × target width, no bias), then a layer norm whose gain and offset are the
//! target's own per-dimension spread and mean of final hidden states, so the fused state
//! α·LN(h_cal A) + (1 − α)·h lives at the scale of the states the target's head was trained on.
//! (The paper's LN has no stated affine; an identity one would put a unit-variance vector beside
//! SmolLM2's final states, whose scale is far from 1, and make α mean something else per model.)
//!
//! A is trained with InfoNCE: each anchor x A (cosine, temperature τ) must pick its own partner
//! y out of K + 1 candidates, the other K drawn at random. Pairs are either the final hidden
//! states of the same text at the same position (default: the states fusion actually mixes) or
//! the input embeddings of the tokens both vocabularies spell the same (the paper's recipe, which
//! then applies A to final states it never saw).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use artifact::{checkpoint_fingerprint, ModelIdentity};
use lm::{left_pad, CausalLm, LoadedModel};
use serde::{Deserialize, Serialize};
use tch::{COptimizer, Device, Kind, Tensor};

pub const FORMAT: &str = "detox-align/1";
const NORM_EPS: f64 = 1e-5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlignOn {
    /// Final hidden states of both models at the same positions of the same texts.
    HiddenStates,
    /// Input embeddings of the tokens both vocabularies share.
    Embeddings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignOptions {
    pub on: AlignOn,
    /// K random negatives per anchor (paper: 10).
    pub negatives: usize,
    /// Adam (paper: 1e-3).
    pub learning_rate: f64,
    /// Anchors per step (paper: 32).
    pub batch_size: usize,
    /// Passes over the training pairs (paper: 5).
    pub epochs: usize,
    /// Cosine similarities are divided by this before the softmax.
    pub temperature: f64,
    /// At most this many pairs are kept (seeded choice), a tenth of them held out.
    pub max_pairs: usize,
    /// Texts are cut to this many tokens.
    pub max_tokens: usize,
    pub seed: u64,
}

impl Default for AlignOptions {
    fn default() -> Self {
        Self {
            on: AlignOn::HiddenStates,
            negatives: 10,
            learning_rate: 1e-3,
            batch_size: 32,
            epochs: 5,
            temperature: 0.1,
            max_pairs: 50_000,
            max_tokens: 64,
            seed: 0,
        }
    }
}

impl AlignOptions {
    pub fn validate(&self) -> Result<()> {
        if self.negatives == 0 || self.batch_size == 0 || self.epochs == 0 {
            bail!("--negatives, --batch-size and --epochs must be at least 1");
        }
        if self.max_pairs < 20 || self.max_tokens == 0 {
            bail!("--max-pairs must be at least 20 and --max-tokens at least 1");
        }
        for (name, value) in [
            ("--learning-rate", self.learning_rate),
            ("--temperature", self.temperature),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                bail!("{name} must be a finite number > 0, got {value}");
            }
        }
        Ok(())
    }
}

/// What the map's JSON file says besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignRecord {
    pub format: String,
    pub procedure: String,
    pub calibration: ModelIdentity,
    pub target: ModelIdentity,
    pub options: AlignOptions,
    pub texts: usize,
    pub train_pairs: usize,
    pub held_out_pairs: usize,
    /// Mean InfoNCE loss over each epoch.
    pub epoch_losses: Vec<f64>,
    /// On the held-out pairs, each with K fixed random negatives: the loss, and how often the
    /// partner scored above every negative (chance: 1/(K + 1)).
    pub held_out_loss: f64,
    pub held_out_accuracy: f64,
    /// The tensors' file, beside this one.
    pub tensors: String,
}

/// A trained map, ready to apply.
pub struct AlignMap {
    pub record: AlignRecord,
    /// `[calibration width, target width]`, float32.
    pub a: Tensor,
    /// Per target dimension: spread and mean of the target's final hidden states.
    pub gain: Tensor,
    pub offset: Tensor,
    /// The JSON file this was read from.
    pub source: Option<PathBuf>,
}

impl AlignMap {
    /// LN(h_cal A) `[..., target width]` float32 for calibration states `[..., calibration
    /// width]` on the map's device ([`AlignMap::move_to`]).
    pub fn apply(&self, calibration_hidden: &Tensor) -> Tensor {
        let mapped = calibration_hidden.to_kind(Kind::Float).matmul(&self.a);
        let width = mapped.size()[mapped.dim() - 1];
        mapped.layer_norm(
            [width],
            Some(&self.gain),
            Some(&self.offset),
            NORM_EPS,
            false,
        )
    }

    /// Moves the map's tensors to `device` once, so applying it each step copies nothing.
    pub fn move_to(&mut self, device: Device) {
        for t in [&mut self.a, &mut self.gain, &mut self.offset] {
            *t = t.to_device(device);
        }
    }

    pub fn calibration_width(&self) -> i64 {
        self.a.size()[0]
    }

    pub fn target_width(&self) -> i64 {
        self.a.size()[1]
    }

    /// Where `detox train align` writes the map for a calibration model and target by default,
    /// and where fusion looks for it: `<calibration folder>/align-<target folder name>.json`.
    pub fn default_path(calibration_dir: &Path, target_dir: &Path) -> PathBuf {
        artifact::locations::align_map(calibration_dir, target_dir)
    }

    /// Writes the JSON record at `path` and the tensors beside it (`<name>.safetensors`).
    pub fn save(&mut self, path: &Path) -> Result<()> {
        let tensors = path.with_extension("safetensors");
        self.record.tensors = tensors
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("the map's path has no file name")?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create", dir.display()))?;
        }
        Tensor::write_safetensors(
            &[
                ("a", self.a.to_device(Device::Cpu)),
                ("gain", self.gain.to_device(Device::Cpu)),
                ("offset", self.offset.to_device(Device::Cpu)),
            ],
            &tensors,
        )
        .with_context(|| format!("{}: cannot write", tensors.display()))?;
        std::fs::write(path, serde_json::to_string_pretty(&self.record)? + "\n")
            .with_context(|| format!("{}: cannot write", path.display()))?;
        self.source = Some(path.to_path_buf());
        Ok(())
    }

    /// Reads a map and checks it was trained for these two checkpoints and has their widths.
    pub fn load(path: &Path, calibration_dir: &Path, target_dir: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the alignment map", path.display()))?;
        let record: AlignRecord = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an alignment-map file", path.display()))?;
        if record.format != FORMAT {
            bail!(
                "{}: field \"format\" is {:?}, expected {FORMAT:?}",
                path.display(),
                record.format
            );
        }
        for (what, identity, dir) in [
            ("calibration", &record.calibration, calibration_dir),
            ("target", &record.target, target_dir),
        ] {
            let found = checkpoint_fingerprint(dir)?;
            if found != identity.fingerprint {
                bail!(
                    "{}: trained for {what} model {:?} (fingerprint {}), but {} is another \
                     checkpoint (fingerprint {found}); train one with `detox train align`",
                    path.display(),
                    identity.folder,
                    identity.fingerprint,
                    dir.display()
                );
            }
        }
        let tensors_path = path.with_file_name(&record.tensors);
        let mut tensors: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(&tensors_path)
                .with_context(|| format!("{}: cannot read", tensors_path.display()))?
                .into_iter()
                .collect();
        let mut take = |name: &str, shape: &[i64]| -> Result<Tensor> {
            let t = tensors
                .remove(name)
                .with_context(|| format!("{}: no tensor {name:?}", tensors_path.display()))?;
            if t.size() != shape {
                bail!(
                    "{}: tensor {name:?} has shape {:?}, expected {shape:?}",
                    tensors_path.display(),
                    t.size()
                );
            }
            Ok(t.to_kind(Kind::Float))
        };
        let (dc, dt) = (record.calibration.hidden_size, record.target.hidden_size);
        Ok(Self {
            a: take("a", &[dc, dt])?,
            gain: take("gain", &[dt])?,
            offset: take("offset", &[dt])?,
            record,
            source: Some(path.to_path_buf()),
        })
    }
}

/// `model`'s final hidden states at every real position of the token rows `encoded`, in order,
/// float32 on the CPU `[positions, width]`.
fn states_at_real_positions(model: &dyn CausalLm, encoded: &[Vec<i64>]) -> Tensor {
    let _no_grad = tch::no_grad_guard();
    let mut states = Vec::new();
    for chunk in encoded.chunks(16) {
        let rows: Vec<&[i64]> = chunk.iter().map(Vec::as_slice).collect();
        let (ids, mask) = left_pad(&rows, model.info().device);
        let hidden = model.forward_hidden(&ids, &mask, &mut model.new_cache());
        let real = mask.to_device(Device::Cpu).to_kind(Kind::Bool).view([-1]);
        let width = hidden.size()[2];
        states.push(
            hidden
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .view([-1, width])
                .index(&[Some(real)]),
        );
    }
    Tensor::cat(&states, 0)
}

/// Input embeddings of the tokens whose strings both vocabularies hold.
fn shared_token_embeddings(calibration: &LoadedModel, target: &LoadedModel) -> (Tensor, Tensor) {
    let target_vocab = target.tokenizer.vocabulary();
    let mut pairs: Vec<(i64, i64)> = calibration
        .tokenizer
        .vocabulary()
        .into_iter()
        .filter_map(|(token, c)| {
            target_vocab
                .get(&token)
                .map(|&t| (i64::from(c), i64::from(t)))
        })
        .collect();
    pairs.sort_unstable();
    let index = |side: fn(&(i64, i64)) -> i64| {
        Tensor::from_slice(&pairs.iter().map(side).collect::<Vec<_>>())
    };
    let take = |model: &LoadedModel, ids: Tensor| {
        model
            .model
            .input_embeddings()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .index_select(0, &ids)
    };
    (
        take(calibration, index(|p| p.0)),
        take(target, index(|p| p.1)),
    )
}

/// InfoNCE loss of anchors `x A` against partners `y` `[B, d]` and negatives `[B, K, d]`, and
/// how many anchors scored their partner above every negative.
fn info_nce(
    x: &Tensor,
    a: &Tensor,
    y: &Tensor,
    negatives: &Tensor,
    temperature: f64,
) -> (Tensor, i64) {
    let unit = |t: &Tensor| {
        let norm = t.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-8);
        t / norm
    };
    let anchor = unit(&x.matmul(a));
    let positive = (&anchor * unit(y)).sum_dim_intlist(-1, true, Kind::Float);
    let negative = unit(negatives)
        .matmul(&anchor.unsqueeze(-1))
        .squeeze_dim(-1);
    let scores = Tensor::cat(&[positive, negative], 1) / temperature;
    let loss = -scores
        .log_softmax(1, Kind::Float)
        .select(1, 0)
        .mean(Kind::Float);
    let correct = scores
        .argmax(1, false)
        .eq(0)
        .sum(Kind::Int64)
        .int64_value(&[]);
    (loss, correct)
}

/// Trains the map from `calibration`'s final hidden state to `target`'s on `texts` (which also
/// give the target's hidden-state statistics for the norm).
pub fn train_align(
    calibration: &LoadedModel,
    target: &LoadedModel,
    texts: &[&str],
    options: &AlignOptions,
    procedure: String,
    mut log: impl FnMut(&str),
) -> Result<AlignMap> {
    options.validate()?;
    if texts.is_empty() {
        bail!("no texts to align on");
    }
    let shared_ids = calibration.tokenizer.same_ids_as(&target.tokenizer);
    if options.on == AlignOn::HiddenStates && !shared_ids {
        bail!(
            "aligning on hidden states feeds both models the same token ids, but {} and {} have \
             different vocabularies; align on embeddings instead (--on embeddings)",
            calibration.dir.display(),
            target.dir.display()
        );
    }
    let encoded: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| {
            let mut ids = target.tokenizer.encode(t)?;
            ids.truncate(options.max_tokens);
            Ok(ids)
        })
        .filter(|r: &Result<Vec<i64>>| r.as_ref().map_or(true, |ids| !ids.is_empty()))
        .collect::<Result<_>>()?;
    let started = std::time::Instant::now();
    // Both models read the same ids (checked above for hidden states), so their states line up
    // position by position.
    let target_states = states_at_real_positions(target.model.as_ref(), &encoded);
    let (x, y) = match options.on {
        AlignOn::HiddenStates => (
            states_at_real_positions(calibration.model.as_ref(), &encoded),
            target_states.shallow_clone(),
        ),
        AlignOn::Embeddings => shared_token_embeddings(calibration, target),
    };
    let gain = target_states.std_dim(0, true, false);
    let offset = target_states.mean_dim(0, false, Kind::Float);
    log(&format!(
        "{} pairs ({:?}) from {} texts in {:.0}s",
        x.size()[0],
        options.on,
        encoded.len(),
        started.elapsed().as_secs_f64()
    ));

    tch::manual_seed(options.seed as i64);
    let n = x.size()[0];
    let keep = Tensor::randperm(n, (Kind::Int64, Device::Cpu)).narrow(
        0,
        0,
        n.min(options.max_pairs as i64),
    );
    let kept = keep.size()[0];
    let held = (kept / 10).max(1);
    if kept - held < options.batch_size as i64 {
        bail!(
            "{kept} pairs leave fewer than one batch of {} to train on; give more texts",
            options.batch_size
        );
    }
    let (x_held, y_held) = (
        x.index_select(0, &keep.narrow(0, 0, held)),
        y.index_select(0, &keep.narrow(0, 0, held)),
    );
    let train_index = keep.narrow(0, held, kept - held);
    let (x_train, y_train) = (
        x.index_select(0, &train_index),
        y.index_select(0, &train_index),
    );
    let train_n = x_train.size()[0];
    let (dc, dt) = (x.size()[1], y.size()[1]);
    let k = options.negatives as i64;

    let a = (Tensor::randn([dc, dt], (Kind::Float, Device::Cpu)) / (dc as f64).sqrt())
        .set_requires_grad(true);
    let mut optimizer = COptimizer::adam(options.learning_rate, 0.9, 0.999, 0.0, 1e-8, false)?;
    optimizer.add_parameters(&a, 0)?;
    let mut epoch_losses = Vec::new();
    for epoch in 0..options.epochs {
        let order = Tensor::randperm(train_n, (Kind::Int64, Device::Cpu));
        let (mut total, mut batches) = (0.0, 0);
        let mut start = 0;
        while start + options.batch_size as i64 <= train_n {
            let idx = order.narrow(0, start, options.batch_size as i64);
            start += options.batch_size as i64;
            let negatives = y_train.index_select(
                0,
                &Tensor::randint(
                    train_n,
                    [options.batch_size as i64 * k],
                    (Kind::Int64, Device::Cpu),
                ),
            );
            let negatives = negatives.view([options.batch_size as i64, k, dt]);
            optimizer.zero_grad()?;
            let (loss, _) = info_nce(
                &x_train.index_select(0, &idx),
                &a,
                &y_train.index_select(0, &idx),
                &negatives,
                options.temperature,
            );
            total += loss.double_value(&[]);
            batches += 1;
            loss.backward();
            optimizer.step()?;
        }
        let mean = total / f64::from(batches.max(1));
        log(&format!(
            "epoch {}/{}: InfoNCE loss {mean:.4}",
            epoch + 1,
            options.epochs
        ));
        epoch_losses.push(mean);
    }
    let a = a.detach().set_requires_grad(false);
    let (held_out_loss, held_out_accuracy) = tch::no_grad(|| {
        tch::manual_seed(options.seed as i64 + 1_000_003);
        let negatives = y_held
            .index_select(
                0,
                &Tensor::randint(held, [held * k], (Kind::Int64, Device::Cpu)),
            )
            .view([held, k, dt]);
        let (loss, correct) = info_nce(&x_held, &a, &y_held, &negatives, options.temperature);
        (loss.double_value(&[]), correct as f64 / held as f64)
    });
    log(&format!(
        "held-out: InfoNCE loss {held_out_loss:.4}, partner ranked first {:.1} % of {held} \
         (chance {:.1} %)",
        100.0 * held_out_accuracy,
        100.0 / (k + 1) as f64
    ));
    let record = AlignRecord {
        format: FORMAT.into(),
        procedure,
        calibration: ModelIdentity::of_folder(&calibration.dir, calibration.model.info())?,
        target: ModelIdentity::of_folder(&target.dir, target.model.info())?,
        options: options.clone(),
        texts: encoded.len(),
        train_pairs: train_n as usize,
        held_out_pairs: held as usize,
        epoch_losses,
        held_out_loss,
        held_out_accuracy,
        tensors: String::new(),
    };
    Ok(AlignMap {
        record,
        a,
        gain,
        offset,
        source: None,
    })
}
