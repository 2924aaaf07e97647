//! The reward model: a backbone cut to the head's number of blocks, and the head read at any
//! position. Decoding runs it step by step on its own cache ([`crate::Rad`]); this file also
//! scores whole sequences from scratch — the reference the cached path is tested against, and
//! what a reward model with another vocabulary does every step.

use std::path::Path;

use anyhow::{bail, Context, Result};
use lm::{
    check_token_ids, left_pad, CausalLm, DeviceChoice, DtypeChoice, LoadedModel, TextTokenizer,
};
use tch::{Device, Kind, Tensor};

use crate::artifact::RewardHead;

/// Sequences scored from scratch together (left-padded to the longest of the chunk).
const SCORE_BATCH: usize = 64;

pub struct RewardModel {
    loaded: LoadedModel,
    head: RewardHead,
    /// w as float32 on the backbone's device.
    w: Tensor,
}

impl RewardModel {
    /// Reads the head at `head_path`, checks that it was fitted on the checkpoint in
    /// `backbone_dir`, and loads that checkpoint's first `head.layers` blocks (with the trained
    /// top blocks over them when the head has some).
    pub fn load(
        head_path: &Path,
        backbone_dir: &Path,
        device: DeviceChoice,
        dtype: DtypeChoice,
    ) -> Result<Self> {
        let head = RewardHead::load_for_backbone(head_path, backbone_dir)?;
        let loaded = LoadedModel::load_with(
            backbone_dir,
            device,
            dtype,
            Some(head.layers),
            &head.overrides()?,
        )
        .with_context(|| format!("RAD reward backbone {}", backbone_dir.display()))?;
        Self::new(loaded, head)
    }

    /// A reward model from a backbone already loaded with `head.layers` blocks.
    pub fn new(loaded: LoadedModel, head: RewardHead) -> Result<Self> {
        head.check_backbone(loaded.model.info())?;
        let w = Tensor::from_slice(&head.w).to_device(loaded.model.info().device);
        Ok(Self { loaded, head, w })
    }

    pub fn model(&self) -> &dyn CausalLm {
        self.loaded.model.as_ref()
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.loaded.tokenizer
    }

    pub fn head(&self) -> &RewardHead {
        &self.head
    }

    pub fn dir(&self) -> &Path {
        &self.loaded.dir
    }

    /// Rewards wᵀh + b of hidden states `[..., hidden]` (any dtype), float32 `[...]` on their
    /// device.
    pub fn rewards(&self, hidden: &Tensor) -> Tensor {
        hidden.to_kind(Kind::Float).matmul(&self.w) + f64::from(self.head.b)
    }

    /// The reward of each whole sequence (at its last token), each run from an empty cache: no
    /// state is shared between calls or with decoding.
    pub fn score_sequences(&self, sequences: &[&[i64]]) -> Result<Vec<f32>> {
        let model = self.model();
        let info = model.info();
        for (i, ids) in sequences.iter().enumerate() {
            if ids.is_empty() {
                bail!("sequence {i} has no tokens");
            }
            check_token_ids(ids, info.vocab_size).with_context(|| format!("sequence {i}"))?;
            if let Some(max) = info.max_positions {
                if ids.len() as i64 > max {
                    bail!(
                        "sequence {i} has {} tokens, more than the reward model's {max} positions",
                        ids.len()
                    );
                }
            }
        }
        let _no_grad = tch::no_grad_guard();
        let mut out = Vec::with_capacity(sequences.len());
        for chunk in sequences.chunks(SCORE_BATCH) {
            let (ids, mask) = left_pad(chunk, info.device);
            let mut cache = model.new_cache();
            let hidden = model.forward_hidden(&ids, &mask, &mut cache).select(1, -1);
            let rewards = self.rewards(&hidden).to_device(Device::Cpu);
            out.extend(Vec::<f32>::try_from(rewards).context("copying rewards to the CPU")?);
        }
        Ok(out)
    }

    /// The reward of each text, tokenized by the reward model's own tokenizer (no special
    /// tokens, as prompts and training texts are).
    pub fn score_texts(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let encoded: Vec<Vec<i64>> = texts
            .iter()
            .map(|t| self.tokenizer().encode(t))
            .collect::<Result<_>>()?;
        let rows: Vec<&[i64]> = encoded.iter().map(Vec::as_slice).collect();
        self.score_sequences(&rows)
    }
}
