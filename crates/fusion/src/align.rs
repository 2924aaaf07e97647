//! The map from the calibration model's final hidden state to the target's width, as fusion
//! applies it: h_cal·A + b, before the norm of [`crate::readout`]. Two fits
//! ([`crate::align_fit`]):
//!
//! - `infonce` (default): the paper's A (no bias), trained contrastively — each anchor x·A must
//!   pick its own partner y out of K + 1 candidates — on the input embeddings of the tokens both
//!   vocabularies share (the paper's recipe, which then applies A to final states it never saw)
//!   or on paired final states;
//! - `ridge`: least squares with an intercept onto the target's own final states at the same
//!   positions of the same texts, so the map reconstructs them.
//!
//! Which is better is measured, not assumed: on SmolLM2-135M the ridge map rebuilds the target's
//! states far better (held-out cosine 0.84 against 0.04), yet fusion through it detoxified less
//! for the same perplexity than the paper's map under plain LayerNorm
//! (results/fusion-dexperts-nado), so the paper's recipe is the default.
//!
//! A map file is a JSON record (this module's [`AlignRecord`]) with its tensors beside it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use artifact::{checkpoint_fingerprint, ModelIdentity};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::readout::{MapNorm, Readout};

pub const FORMAT: &str = "detox-align/2";

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
    /// `ridge` or `infonce` (`identity` needs no map).
    pub fit: Readout,
    /// What the InfoNCE pairs are (a ridge map always fits paired final states).
    pub on: AlignOn,
    /// Ridge penalty, relative to the mean variance of the calibration states' dimensions.
    pub ridge: f64,
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
            fit: Readout::InfoNce,
            on: AlignOn::Embeddings,
            ridge: 1e-3,
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
        if self.fit == Readout::Identity {
            bail!("the identity readout has no map to fit (--fit ridge or infonce)");
        }
        if !(self.ridge >= 0.0 && self.ridge.is_finite()) {
            bail!("--ridge must be a finite number >= 0, got {}", self.ridge);
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
    /// Texts whose positions are held out of the fit and measure [`Reconstruction`].
    pub held_out_texts: usize,
    pub train_pairs: usize,
    /// InfoNCE only: mean loss over each epoch; on held-out pairs, each with K fixed random
    /// negatives, the loss and how often the partner scored above every negative (chance
    /// 1/(K + 1)).
    pub epoch_losses: Vec<f64>,
    pub held_out_pairs: usize,
    pub held_out_loss: Option<f64>,
    pub held_out_accuracy: Option<f64>,
    /// How well the map rebuilds the target's final states on the held-out texts' positions
    /// (when both models read the same ids).
    pub reconstruction: Option<Reconstruction>,
    /// The tensors' file, beside this one.
    pub tensors: String,
}

/// The map on the held-out texts: how close h_cal·A + b lands to the target's state, and what
/// mixing it in does to the target's next-token distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconstruction {
    pub positions: usize,
    /// Mean cosine between h_cal·A + b and the target's state.
    pub cosine: f64,
    /// Mean over positions of ‖h_cal·A + b − h‖² / ‖h‖².
    pub relative_error: f64,
    /// KL(p ‖ p_fused) in nats per position, p the target's next-token distribution, for each
    /// norm and α, over the first 1,024 held-out positions at most.
    pub fused_kl: Vec<FusedKl>,
    /// The same with a perfect map (the readout equal to h itself): what the norm alone costs.
    /// `per_dimension_statistics` is the norm the harness used before (LayerNorm with the
    /// target's per-dimension spread and mean as gain and offset), kept here as the evidence
    /// for dropping it.
    pub perfect_map_kl: Vec<FusedKl>,
    /// The identity readout (h_cal itself, no norm) when the calibration model has the target's
    /// width; empty otherwise.
    #[serde(default)]
    pub identity_kl: Vec<FusedKl>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusedKl {
    pub norm: String,
    pub alpha: f64,
    pub kl: f64,
    /// Share of positions whose most likely token is the target's.
    pub top1_agreement: f64,
}

/// A trained map, ready to apply.
pub struct AlignMap {
    pub record: AlignRecord,
    /// `[calibration width, target width]`, float32.
    pub a: Tensor,
    /// `[target width]`, float32; zero for an InfoNCE map (the paper's A has no bias).
    pub bias: Tensor,
    /// The JSON file this was read from.
    pub source: Option<PathBuf>,
}

impl AlignMap {
    /// h_cal·A + b `[..., target width]` float32 for calibration states `[..., calibration
    /// width]` on the map's device ([`AlignMap::move_to`]); the norm comes after
    /// ([`MapNorm::apply`]).
    pub fn map(&self, calibration_hidden: &Tensor) -> Tensor {
        calibration_hidden.to_kind(Kind::Float).matmul(&self.a) + &self.bias
    }

    /// Which readout this map is.
    pub fn fit(&self) -> Readout {
        self.record.options.fit
    }

    /// The norm a map of this fit is applied with unless a spec names another.
    pub fn default_norm(&self) -> MapNorm {
        self.fit().default_norm()
    }

    /// Moves the map's tensors to `device` once, so applying it each step copies nothing.
    pub fn move_to(&mut self, device: Device) {
        for t in [&mut self.a, &mut self.bias] {
            *t = t.to_device(device);
        }
    }

    pub fn calibration_width(&self) -> i64 {
        self.a.size()[0]
    }

    pub fn target_width(&self) -> i64 {
        self.a.size()[1]
    }

    /// Where `detox train align` writes a map of `fit` for a calibration model and target by
    /// default, and where fusion looks for it: `<calibration folder>/align-<target folder
    /// name>-<fit>.json`.
    pub fn default_path(calibration_dir: &Path, target_dir: &Path, fit: Readout) -> PathBuf {
        artifact::locations::align_map(calibration_dir, target_dir, fit.name())
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
                ("a", self.a.to_device(Device::Cpu).contiguous()),
                ("bias", self.bias.to_device(Device::Cpu).contiguous()),
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
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        // The format first, so an old map gets a reason rather than a missing-field error.
        let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
        if format != FORMAT {
            bail!(
                "{}: field \"format\" is {format:?}, expected {FORMAT:?} (maps of format 1 put a \
                 per-dimension norm after A that fusion no longer applies; train a new one with \
                 `detox train align`)",
                path.display()
            );
        }
        let record: AlignRecord = serde_json::from_value(value)
            .with_context(|| format!("{}: not an alignment-map file", path.display()))?;
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
            bias: take("bias", &[dt])?,
            record,
            source: Some(path.to_path_buf()),
        })
    }
}
