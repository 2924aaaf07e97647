//! Any Hugging Face BERT/RoBERTa sequence-classification folder (e.g. unitary/toxic-bert,
//! s-nlp/roberta_toxicity_classifier) as a toxicity scorer: the probability of its toxic label.

use std::path::Path;

use anyhow::Result;
use lm::bert::{right_pad, SequenceClassifier};
use lm::{DeviceChoice, DtypeChoice, TextTokenizer};
use score::{ScoreFailure, ScoreResult, ToxicityScorer};
use tch::Kind;

pub struct HfClassifierScorer {
    classifier: SequenceClassifier,
    tokenizer: TextTokenizer,
    id: String,
    batch_size: usize,
}

impl HfClassifierScorer {
    pub fn load(dir: &Path, toxic_label: Option<&str>, device: DeviceChoice) -> Result<Self> {
        let classifier = SequenceClassifier::load(dir, device, DtypeChoice::F32, toxic_label)?;
        let max_len = (classifier.encoder.config.max_position_embeddings - 2).max(1) as usize;
        let tokenizer = TextTokenizer::for_encoder(&dir.join("tokenizer.json"), max_len)?;
        let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let id = format!(
            "hf:{}#{}",
            canonical.display(),
            classifier.labels[classifier.toxic_label]
        );
        Ok(Self {
            classifier,
            tokenizer,
            id,
            batch_size: 32,
        })
    }
}

impl ToxicityScorer for HfClassifierScorer {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn score_batch(&mut self, texts: &[&str]) -> Vec<ScoreResult> {
        let mut out: Vec<ScoreResult> = vec![Err(ScoreFailure::EmptyText); texts.len()];
        let scorable: Vec<usize> = (0..texts.len())
            .filter(|&i| !texts[i].trim().is_empty())
            .collect();
        let pad = self.classifier.encoder.config.pad_token_id.unwrap_or(0);
        let _no_grad = tch::no_grad_guard();
        for chunk in scorable.chunks(self.batch_size) {
            let ids: Result<Vec<Vec<i64>>> = chunk
                .iter()
                .map(|&i| self.tokenizer.encode_with_special(texts[i]))
                .collect();
            let result = ids.and_then(|ids| {
                let (input, mask) = right_pad(&ids, pad, self.classifier.encoder.device);
                Ok(Vec::<f32>::try_from(
                    self.classifier.toxicity(&input, &mask).to_kind(Kind::Float),
                )?)
            });
            match result {
                Ok(p) => chunk.iter().zip(p).for_each(|(&i, p)| out[i] = Ok(p)),
                Err(e) => chunk
                    .iter()
                    .for_each(|&i| out[i] = Err(ScoreFailure::Other(format!("{e:#}")))),
            }
        }
        out
    }
}
