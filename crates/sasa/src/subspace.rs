//! The fitted discriminant of one model (`w`, `b` and what it was fitted on), its file format,
//! and the checks that keep it from being used with another model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use artifact::{checkpoint_fingerprint, ModelIdentity, SourceCounts};
use lm::ModelInfo;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The `format` field of a subspace file; bumped when the layout changes.
pub const FORMAT: &str = "detox-sasa-subspace/1";

/// How far `w` may be from unit length in a file (it is stored as float32).
const UNIT_TOLERANCE: f64 = 1e-4;

/// How well the sign of the margin separates the classes on some texts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierMetrics {
    pub texts: usize,
    /// Share of texts with margin > 0 exactly when non-toxic.
    pub accuracy: f64,
    /// ROC-AUC of the margin for "non-toxic" (`None` when a class is missing).
    pub roc_auc: Option<f64>,
}

/// What a subspace was fitted on and how, so a reader of the file can judge and redo it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitRecord {
    /// The command or procedure that wrote the file.
    pub procedure: String,
    /// Labelled sources by name (`jigsaw`, `davidson`, …).
    pub sources: BTreeMap<String, SourceCounts>,
    /// At most this many toxic and this many non-toxic texts were loaded per source.
    pub per_label: Option<usize>,
    /// Seed of that per-label choice.
    pub seed: u64,
    /// Fraction of each source held out, and the seed of that split.
    pub held_out_fraction: f64,
    pub split_seed: u64,
    /// Texts longer than this many tokens were cut to their first this-many.
    pub max_tokens: usize,
    /// Device and dtype the hidden states were computed in (statistics are float64).
    pub device: String,
    pub dtype: String,
    /// Eigenvalues of the pooled covariance below this fraction of the largest were dropped.
    pub eigen_cutoff: f64,
    pub eigenvalues_kept: usize,
    pub eigenvalues_total: usize,
    /// Training texts per class.
    pub train_toxic: usize,
    pub train_non_toxic: usize,
    /// On the training texts (how much of the held-out quality is fit).
    pub train_metrics: Option<ClassifierMetrics>,
    /// On the held-out texts of the sources fitted on, together; and per source (including
    /// sources only measured on, which have `train: 0`).
    pub held_out: Option<ClassifierMetrics>,
    pub held_out_by_source: BTreeMap<String, ClassifierMetrics>,
    /// On every held-out text, of the sources fitted on and of those only measured on: the
    /// number that compares fits on different mixes of sources over the same texts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_all_sources: Option<ClassifierMetrics>,
}

/// A linear discriminant on a model's final-norm hidden states: margin m(h) = wᵀ(h − b),
/// positive on the non-toxic side, `w` of unit length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subspace {
    pub format: String,
    pub model: ModelIdentity,
    /// What h is, in words.
    pub embedding: String,
    pub fit: FitRecord,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    /// The file this was read from, for error messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// What `embedding` says for subspaces fitted by this crate.
pub const EMBEDDING: &str =
    "final-norm hidden state (the LM head's input) at the last real token, \
                             texts left-padded, no special tokens added";

impl Subspace {
    /// A subspace from its parts; `w` must be of unit length and `b` as long as `w`.
    pub fn new(model: ModelIdentity, fit: FitRecord, w: Vec<f32>, b: Vec<f32>) -> Result<Self> {
        let subspace = Self {
            format: FORMAT.to_string(),
            model,
            embedding: EMBEDDING.to_string(),
            fit,
            w,
            b,
            source: None,
        };
        subspace.validate()?;
        Ok(subspace)
    }

    /// Where `detox train sasa` writes the subspace of the model in `model_dir` by default, and
    /// where decoding looks for it: `configs/sasa/<model folder name>.json` in the checkout.
    pub fn default_path(model_dir: &Path) -> PathBuf {
        artifact::locations::sasa_subspace(model_dir)
    }

    /// Reads and checks a subspace file (format, lengths, finite values, unit `w`).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the SASA subspace", path.display()))?;
        let mut subspace: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a SASA subspace file", path.display()))?;
        subspace.source = Some(path.to_path_buf());
        subspace.validate()?;
        Ok(subspace)
    }

    /// Reads a subspace file and checks that it was fitted on the model in `model_dir`.
    pub fn load_for_model(path: &Path, model_dir: &Path) -> Result<Self> {
        let subspace = Self::load(path)?;
        subspace.check_model_folder(model_dir)?;
        Ok(subspace)
    }

    /// Writes the file: metadata indented, `w` and `b` one line each.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()?;
        artifact::json::write_compact(self, path, "subspace")
    }

    fn describe(&self) -> String {
        match &self.source {
            Some(path) => path.display().to_string(),
            None => format!("SASA subspace for {}", self.model.folder),
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
        let hidden = self.model.hidden_size;
        for (field, values) in [("w", &self.w), ("b", &self.b)] {
            if values.len() as i64 != hidden {
                bail!(
                    "{name}: field {field:?} has {} values but model.hidden_size is {hidden}",
                    values.len()
                );
            }
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                bail!("{name}: field {field:?} has a non-finite value at index {i}");
            }
        }
        let norm = self
            .w
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if (norm - 1.0).abs() > UNIT_TOLERANCE {
            bail!("{name}: field \"w\" has length {norm}, expected unit length");
        }
        Ok(())
    }

    /// Checks that the model's shape matches (hidden size, vocabulary).
    pub fn check_model(&self, info: &ModelInfo) -> Result<()> {
        if info.hidden_size != self.model.hidden_size || info.vocab_size != self.model.vocab_size {
            bail!(
                "{}: fitted on {} (hidden size {}, vocabulary {}) but the model has hidden size {} \
                 and vocabulary {}",
                self.describe(),
                self.model.folder,
                self.model.hidden_size,
                self.model.vocab_size,
                info.hidden_size,
                info.vocab_size
            );
        }
        Ok(())
    }

    /// Checks that the checkpoint in `model_dir` is the one this subspace was fitted on.
    pub fn check_model_folder(&self, model_dir: &Path) -> Result<()> {
        let found = checkpoint_fingerprint(model_dir)?;
        if found != self.model.fingerprint {
            bail!(
                "{}: fitted on model {:?} (checkpoint fingerprint {}), but {} is another checkpoint \
                 (fingerprint {found}); fit one for it with `detox train sasa --model {}`",
                self.describe(),
                self.model.folder,
                self.model.fingerprint,
                model_dir.display(),
                model_dir.display()
            );
        }
        Ok(())
    }

    /// Margins wᵀ(h − b) of hidden states `[n, hidden]` (any device and dtype), as float32 `[n]`
    /// on the same device.
    pub fn margins(&self, hidden: &Tensor) -> Tensor {
        let device = hidden.device();
        let w = Tensor::from_slice(&self.w).to_device(device);
        let b = Tensor::from_slice(&self.b).to_device(device);
        (hidden.to_kind(Kind::Float) - b).matmul(&w)
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
        let dir = std::env::temp_dir().join(format!("sasa-subspace-{}", std::process::id()));
        let path = dir.join("s.json");
        let fit = FitRecord {
            procedure: "test".into(),
            held_out: Some(ClassifierMetrics {
                texts: 3,
                accuracy: 0.5,
                roc_auc: None,
            }),
            ..FitRecord::default()
        };
        let s =
            Subspace::new(identity(3), fit, vec![0.6, 0.0, -0.8], vec![1.0, 2.5, -3.0]).unwrap();
        s.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"w\": [0.6,0.0,-0.8]"), "{text}");
        let back = Subspace::load(&path).unwrap();
        assert_eq!(back.w, s.w);
        assert_eq!(back.fit, s.fit);
        assert_eq!(back.source.as_deref(), Some(path.as_path()));

        // A wrong length or a non-unit w is refused, naming the file and the field.
        let broken = text.replace("[0.6,0.0,-0.8]", "[0.6,0.0]");
        std::fs::write(&path, broken).unwrap();
        let error = format!("{:#}", Subspace::load(&path).unwrap_err());
        assert!(
            error.contains("s.json") && error.contains("\"w\""),
            "{error}"
        );
        let broken = text.replace("[0.6,0.0,-0.8]", "[0.6,0.0,-0.7]");
        std::fs::write(&path, broken).unwrap();
        assert!(format!("{:#}", Subspace::load(&path).unwrap_err()).contains("unit length"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The committed subspace reads and writes back byte for byte: the layout has not drifted.
    #[test]
    fn the_committed_subspace_is_written_back_unchanged() {
        let committed = Subspace::default_path(&paths::default_model_dir());
        let written = artifact::json::compact_bytes(&Subspace::load(&committed).unwrap()).unwrap();
        assert!(written == std::fs::read(&committed).unwrap());
    }

    #[test]
    fn margins_are_w_dot_h_minus_b() {
        let s = Subspace::new(
            identity(2),
            FitRecord::default(),
            vec![0.6, 0.8],
            vec![1.0, -1.0],
        )
        .unwrap();
        let hidden = Tensor::from_slice(&[1.0f32, -1.0, 2.0, 0.0]).view([2, 2]);
        let m = Vec::<f32>::try_from(s.margins(&hidden)).unwrap();
        assert!(m[0].abs() < 1e-7);
        assert!((m[1] - (0.6 + 0.8)).abs() < 1e-6);
    }
}
