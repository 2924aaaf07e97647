//! Sentence embeddings from all-MiniLM-L6-v2: mean pooling over the mask, then L2 norm.

use std::path::Path;

use anyhow::Result;
use lm::bert::{right_pad, BertEncoder};
use lm::{DeviceChoice, DtypeChoice, TextTokenizer};
use tch::{Kind, Tensor};

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2.
const MAX_TOKENS: usize = 256;

pub struct MiniLmEmbedder {
    encoder: BertEncoder,
    tokenizer: TextTokenizer,
}

impl MiniLmEmbedder {
    /// Loads the encoder folder (set-up puts it at `paths::minilm_dir()`).
    pub fn load(dir: &Path, device: DeviceChoice) -> Result<Self> {
        let (encoder, _unused_pooler) = BertEncoder::load(dir, device, DtypeChoice::F32)?;
        let tokenizer = TextTokenizer::for_encoder(&dir.join("tokenizer.json"), MAX_TOKENS)?;
        Ok(Self { encoder, tokenizer })
    }

    pub fn dim(&self) -> i64 {
        self.encoder.config.hidden_size
    }

    /// Embeddings `[texts, dim]` (float32, on the CPU), `batch_size` texts per forward pass.
    /// Texts are batched in order of length so little compute goes to padding; the output keeps
    /// the input order.
    pub fn embed(&self, texts: &[&str], batch_size: usize) -> Result<Tensor> {
        let ids: Vec<Vec<i64>> = texts
            .iter()
            .map(|t| self.tokenizer.encode_with_special(t))
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut rows: Vec<Option<Tensor>> = (0..texts.len()).map(|_| None).collect();
        let _no_grad = tch::no_grad_guard();
        for chunk in order.chunks(batch_size.max(1)) {
            let batch: Vec<Vec<i64>> = chunk.iter().map(|&i| ids[i].clone()).collect();
            let (input, mask) = right_pad(&batch, 0, self.encoder.device);
            let pooled = self
                .encoder
                .mean_pooled(&input, &mask)
                .to_device(tch::Device::Cpu);
            for (slot, &i) in chunk.iter().enumerate() {
                rows[i] = Some(pooled.get(slot as i64));
            }
        }
        let rows: Vec<Tensor> = rows
            .into_iter()
            .map(|r| r.expect("every text embedded"))
            .collect();
        if rows.is_empty() {
            return Ok(Tensor::zeros(
                [0, self.dim()],
                (Kind::Float, tch::Device::Cpu),
            ));
        }
        Ok(Tensor::stack(&rows, 0))
    }
}
