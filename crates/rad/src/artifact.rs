//! The fitted reward head of one backbone (which layers, w, b, and what it was fitted on), its
//! file format, and the checks that keep it from being used with another checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use artifact::{checkpoint_fingerprint, ModelIdentity, SourceCounts};
use lm::{CausalLm, ModelInfo, TrainableSelection};
use serde::{Deserialize, Serialize};

use crate::train::TopBlockOptions;

/// The `format` field of a reward-head file; bumped when the layout changes.
pub const FORMAT: &str = "detox-rad-reward/1";

/// What `features` says for heads fitted by this crate.
pub const FEATURES: &str = "the backbone's final norm applied to the output of block `layers` \
                            (the first `layers` blocks run, the rest dropped), at every position; \
                            texts left-padded, no special tokens added";

/// How well the reward predicts the target on some texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardMetrics {
    pub texts: usize,
    /// Mean squared error of the reward at each text's last token (what decoding reads).
    pub mse: f64,
    /// RAD's training loss, averaged over texts: per text 2/(l(l+1)) · Σₜ t·(r(x₁..ₜ) − y)².
    pub prefix_loss: f64,
    /// ROC-AUC of the last-token reward for "toxic" (target ≥ 0.5); `None` when a class is missing.
    pub roc_auc: Option<f64>,
    /// Spearman rank correlation of the last-token reward with the targets: the agreement that
    /// matters where targets are continuous (RealToxicityPrompts' Perspective scores).
    #[serde(default)]
    pub spearman: Option<f64>,
}

/// What a head was fitted on and how, so a reader of the file can judge and redo it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardFitRecord {
    /// The command that wrote the file.
    pub procedure: String,
    /// Labelled sources by name, with their train / held-out counts.
    pub sources: BTreeMap<String, SourceCounts>,
    /// At most this many toxic and this many non-toxic texts were loaded per source, seeded.
    pub per_label: Option<usize>,
    pub seed: u64,
    pub held_out_fraction: f64,
    pub split_seed: u64,
    /// Texts longer than this many tokens were cut to their first this-many.
    pub max_tokens: usize,
    /// Device and dtype the hidden states were computed in (the statistics are float64).
    pub device: String,
    pub dtype: String,
    /// What y is.
    pub target: String,
    /// Ridge added to the normal equations, relative to the mean diagonal of the features'
    /// weighted second moments (the bias is not penalised).
    pub ridge: f64,
    pub train_texts: usize,
    /// Prefixes (token positions) the training loss summed over.
    pub train_prefixes: usize,
    pub train_metrics: Option<RewardMetrics>,
    /// On the held-out texts of the sources fitted on, together; per source (including sources
    /// only measured on); and on every held-out text.
    pub held_out: Option<RewardMetrics>,
    pub held_out_by_source: BTreeMap<String, RewardMetrics>,
    pub held_out_all_sources: Option<RewardMetrics>,
    /// Set when the top blocks were trained with the head; their weights are then in the file
    /// beside the head's ([`RewardHead::blocks_path`]). Absent for a head on a frozen backbone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_blocks: Option<TrainedBlocks>,
}

/// How the reward model's top blocks were trained, and what it bought.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainedBlocks {
    /// Blocks `first_block..layers` and the final norm were trained.
    pub first_block: usize,
    pub options: TopBlockOptions,
    /// Mean training prefix loss per text over each epoch.
    pub epoch_losses: Vec<f64>,
    /// The closed-form head on the frozen backbone (where training started), on the same
    /// held-out texts as `held_out`.
    pub frozen_held_out: Option<RewardMetrics>,
}

/// A linear head on the first `layers` blocks of a backbone: r(h) = wᵀh + b, a toxicity
/// estimate (trained towards 1 for toxic text, 0 for non-toxic; not clamped here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardHead {
    pub format: String,
    pub backbone: ModelIdentity,
    /// Blocks of the backbone the reward model runs.
    pub layers: usize,
    /// Blocks the backbone has.
    pub total_layers: usize,
    /// What h is, in words.
    pub features: String,
    pub fit: RewardFitRecord,
    pub w: Vec<f32>,
    pub b: f32,
    /// The file this was read from, for error messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl RewardHead {
    pub fn new(
        backbone: ModelIdentity,
        layers: usize,
        total_layers: usize,
        fit: RewardFitRecord,
        w: Vec<f32>,
        b: f32,
    ) -> Result<Self> {
        let head = Self {
            format: FORMAT.to_string(),
            backbone,
            layers,
            total_layers,
            features: FEATURES.to_string(),
            fit,
            w,
            b,
            source: None,
        };
        head.validate()?;
        Ok(head)
    }

    /// Where `detox train rad-reward` writes the head for the backbone in `model_dir` by default,
    /// and where decoding with that model looks for it: `configs/rad/<model folder name>.json`.
    pub fn default_path(model_dir: &Path) -> PathBuf {
        artifact::locations::rad_reward_head(model_dir)
    }

    /// Reads and checks a head file (format, lengths, finite values, layers).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the RAD reward head", path.display()))?;
        let mut head: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a RAD reward-head file", path.display()))?;
        head.source = Some(path.to_path_buf());
        head.validate()?;
        Ok(head)
    }

    /// Reads a head file and checks that it was fitted on the checkpoint in `backbone_dir`.
    pub fn load_for_backbone(path: &Path, backbone_dir: &Path) -> Result<Self> {
        let head = Self::load(path)?;
        head.check_backbone_folder(backbone_dir)?;
        Ok(head)
    }

    /// Writes the file: metadata indented, `w` on one line. A head whose top blocks were trained
    /// needs [`RewardHead::save_with_blocks`], which also writes their weights.
    pub fn save(&self, path: &Path) -> Result<()> {
        if self.fit.trained_blocks.is_some() {
            bail!(
                "{}: this head's top blocks were trained; write it with their weights \
                 (RewardHead::save_with_blocks)",
                path.display()
            );
        }
        self.validate()?;
        artifact::json::write_compact(self, path, "reward head")
    }

    /// Writes the head file and, when its top blocks were trained, those blocks' and the final
    /// norm's weights from `model` (the trained reward model) to [`RewardHead::blocks_path`].
    pub fn save_with_blocks(&self, path: &Path, model: &dyn CausalLm) -> Result<()> {
        self.validate()?;
        self.check_backbone(model.info())?;
        if let Some(trained) = &self.fit.trained_blocks {
            let selection = TrainableSelection {
                blocks: trained.first_block..self.layers,
                final_norm: true,
                embeddings: false,
                head: false,
            };
            let blocks = Self::blocks_path(path);
            if let Some(dir) = blocks.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("{}: cannot create", dir.display()))?;
            }
            let tensors: Vec<(String, tch::Tensor)> = model
                .export_tensors(&selection)
                .into_iter()
                .map(|(name, t)| (name, t.to_device(tch::Device::Cpu)))
                .collect();
            tch::Tensor::write_safetensors(&tensors, &blocks).with_context(|| {
                format!("{}: cannot write the trained blocks", blocks.display())
            })?;
        }
        artifact::json::write_compact(self, path, "reward head")
    }

    /// Where the trained top blocks of the head file at `head_path` live: beside it, as
    /// `<name>.blocks.safetensors` (Hugging Face names and layouts, read as overrides of the
    /// backbone's checkpoint).
    pub fn blocks_path(head_path: &Path) -> PathBuf {
        head_path.with_extension("blocks.safetensors")
    }

    /// The override files the reward model loads over its backbone: the trained blocks' file
    /// when there is one (an error naming it when it is missing).
    pub fn overrides(&self) -> Result<Vec<PathBuf>> {
        if self.fit.trained_blocks.is_none() {
            return Ok(Vec::new());
        }
        let head_path = self.source.as_ref().with_context(|| {
            format!(
                "{}: a head with trained blocks must be read from its file",
                self.describe()
            )
        })?;
        let blocks = Self::blocks_path(head_path);
        if !blocks.is_file() {
            bail!(
                "{}: the head's top blocks were trained, but their weights file {} is missing",
                head_path.display(),
                blocks.display()
            );
        }
        Ok(vec![blocks])
    }

    fn describe(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => format!("RAD reward head for {}", self.backbone.folder),
        }
    }

    fn validate(&self) -> Result<()> {
        let name = self.describe();
        if self.format != FORMAT {
            bail!(
                "{name}: field \"format\" is {:?}, expected {FORMAT:?}",
                self.format
            );
        }
        if self.layers == 0 || self.layers > self.total_layers {
            bail!(
                "{name}: field \"layers\" is {} but the backbone has {} (expected 1..={})",
                self.layers,
                self.total_layers,
                self.total_layers
            );
        }
        if self.w.len() as i64 != self.backbone.hidden_size {
            bail!(
                "{name}: field \"w\" has {} values but backbone.hidden_size is {}",
                self.w.len(),
                self.backbone.hidden_size
            );
        }
        if let Some(i) = self.w.iter().position(|v| !v.is_finite()) {
            bail!("{name}: field \"w\" has a non-finite value at index {i}");
        }
        if !self.b.is_finite() {
            bail!("{name}: field \"b\" is not finite");
        }
        if let Some(trained) = &self.fit.trained_blocks {
            if trained.first_block >= self.layers {
                bail!(
                    "{name}: field \"fit.trained_blocks.first_block\" is {} but the reward model \
                     runs {} blocks",
                    trained.first_block,
                    self.layers
                );
            }
        }
        Ok(())
    }

    /// Checks that a loaded backbone has this head's shape: hidden size, vocabulary and the
    /// number of blocks the head was fitted on.
    pub fn check_backbone(&self, info: &ModelInfo) -> Result<()> {
        if info.hidden_size != self.backbone.hidden_size
            || info.vocab_size != self.backbone.vocab_size
            || info.num_layers != self.layers
        {
            bail!(
                "{}: fitted on the first {} blocks of {} (hidden size {}, vocabulary {}) but the \
                 loaded reward model has {} blocks, hidden size {} and vocabulary {}",
                self.describe(),
                self.layers,
                self.backbone.folder,
                self.backbone.hidden_size,
                self.backbone.vocab_size,
                info.num_layers,
                info.hidden_size,
                info.vocab_size
            );
        }
        Ok(())
    }

    /// Checks that the checkpoint in `dir` is the one this head was fitted on.
    pub fn check_backbone_folder(&self, dir: &Path) -> Result<()> {
        let found = checkpoint_fingerprint(dir)?;
        if found != self.backbone.fingerprint {
            bail!(
                "{}: fitted on backbone {:?} (checkpoint fingerprint {}), but {} is another \
                 checkpoint (fingerprint {found}); fit one for it with `detox train rad-reward \
                 --backbone {}`",
                self.describe(),
                self.backbone.folder,
                self.backbone.fingerprint,
                dir.display(),
                dir.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(hidden: i64) -> ModelIdentity {
        ModelIdentity {
            folder: "m".into(),
            architecture: "llama".into(),
            hidden_size: hidden,
            vocab_size: 10,
            fingerprint: "0".into(),
        }
    }

    #[test]
    fn save_and_load_round_trip_and_checks() {
        let dir = std::env::temp_dir().join(format!("rad-artifact-{}", std::process::id()));
        let path = dir.join("r.json");
        let fit = RewardFitRecord {
            procedure: "test".into(),
            ridge: 1e-3,
            held_out: Some(RewardMetrics {
                texts: 3,
                mse: 0.2,
                prefix_loss: 0.25,
                roc_auc: Some(0.75),
                spearman: Some(0.5),
            }),
            ..RewardFitRecord::default()
        };
        let head = RewardHead::new(identity(3), 2, 4, fit, vec![0.5, -1.25, 2.0], 0.125).unwrap();
        head.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"w\": [0.5,-1.25,2.0]"), "{text}");
        let back = RewardHead::load(&path).unwrap();
        assert_eq!(back.w, head.w);
        assert_eq!(back.b, head.b);
        assert_eq!(back.fit, head.fit);
        assert_eq!(back.layers, 2);

        for (from, to, expect) in [
            ("[0.5,-1.25,2.0]", "[0.5,-1.25]", "\"w\""),
            ("\"layers\": 2", "\"layers\": 5", "\"layers\""),
            ("\"layers\": 2", "\"layers\": 0", "\"layers\""),
        ] {
            std::fs::write(&path, text.replace(from, to)).unwrap();
            let error = format!("{:#}", RewardHead::load(&path).unwrap_err());
            assert!(
                error.contains("r.json") && error.contains(expect),
                "{error}"
            );
        }
        std::fs::write(
            &path,
            text.replace("\"b\": 0.125", "\"b\": 0.125, \"bias\": 1"),
        )
        .unwrap();
        assert!(
            RewardHead::load(&path).is_err(),
            "unknown fields are refused"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The committed head reads and writes back byte for byte: the layout has not drifted.
    #[test]
    fn the_committed_head_is_written_back_unchanged() {
        let committed = RewardHead::default_path(&paths::default_model_dir());
        let written =
            artifact::json::compact_bytes(&RewardHead::load(&committed).unwrap()).unwrap();
        assert!(written == std::fs::read(&committed).unwrap());
    }
}
