//! The `minilm` toxicity scorer: MiniLM sentence embedding → trained probe head.

use std::path::{Path, PathBuf};

use anyhow::Result;
use lm::DeviceChoice;
use score::{ScoreFailure, ScoreResult, ToxicityScorer};
use tch::Kind;

use crate::{MiniLmEmbedder, ProbeHead};

pub struct MiniLmScorer {
    embedder: MiniLmEmbedder,
    head: ProbeHead,
    /// Fingerprint of the head file, part of the cache id.
    fingerprint: String,
    batch_size: usize,
}

impl MiniLmScorer {
    /// The head trained by `detox train-scorer` and committed with the project.
    pub fn default_head() -> PathBuf {
        paths::project_root().join("configs/scorers/minilm-toxicity-head.json")
    }

    pub fn load(encoder_dir: &Path, head_path: &Path, device: DeviceChoice) -> Result<Self> {
        let embedder = MiniLmEmbedder::load(encoder_dir, device)?;
        let head = ProbeHead::load(head_path)?;
        if head.input_dim() as i64 != embedder.dim() {
            anyhow::bail!(
                "{}: head expects {} features but the encoder's embeddings have {}",
                head_path.display(),
                head.input_dim(),
                embedder.dim()
            );
        }
        let bytes = std::fs::read(head_path)?;
        let fingerprint = format!("{:016x}", paths::stable_hash(&bytes));
        Ok(Self {
            embedder,
            head,
            fingerprint,
            batch_size: 64,
        })
    }
}

impl ToxicityScorer for MiniLmScorer {
    fn id(&self) -> String {
        format!("minilm-head:{}", self.fingerprint)
    }

    fn score_batch(&mut self, texts: &[&str]) -> Vec<ScoreResult> {
        let scorable: Vec<usize> = (0..texts.len())
            .filter(|&i| !texts[i].trim().is_empty())
            .collect();
        let inputs: Vec<&str> = scorable.iter().map(|&i| texts[i]).collect();
        let mut out: Vec<ScoreResult> = vec![Err(ScoreFailure::EmptyText); texts.len()];
        let probabilities = self
            .embedder
            .embed(&inputs, self.batch_size)
            .map(|x| Vec::<f32>::try_from(self.head.predict(&x).to_kind(Kind::Float)));
        match probabilities {
            Ok(Ok(p)) => {
                for (&i, p) in scorable.iter().zip(p) {
                    out[i] = Ok(p);
                }
            }
            Ok(Err(e)) => scorable
                .iter()
                .for_each(|&i| out[i] = Err(ScoreFailure::Other(e.to_string()))),
            Err(e) => scorable
                .iter()
                .for_each(|&i| out[i] = Err(ScoreFailure::Other(format!("{e:#}")))),
        }
        out
    }
}
