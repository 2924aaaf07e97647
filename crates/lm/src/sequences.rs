//! Token sequences as trainers see them — which tokens a loss counts, a per-sequence label and
//! mask — and their left-padded batches, with the next-token losses every trainer in the harness
//! computes on them (calibration models, fine-tuning, NADO's auxiliary model).

use tch::{Device, Kind, Tensor};

use crate::{left_pad, CausalLm};

/// One training sequence: the losses count tokens `counted_from..` (each predicted from what is
/// before it).
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub ids: Vec<i64>,
    /// 1 for a plain text (its first token has nothing before it); the prompt's length for a
    /// sample, so only the continuation counts.
    pub counted_from: usize,
    /// The auxiliary model's target: the probability that the sequence is non-toxic (1 − the
    /// scorer's toxicity, or that thresholded); the reward for REINFORCE.
    pub label: f32,
    /// Whether the KL regularizer applies to it (adaptive regularization masks the rest).
    pub regularize: bool,
}

impl Sequence {
    pub fn counted(&self) -> usize {
        self.ids.len().saturating_sub(self.counted_from.max(1))
    }
}

/// A batch on the device: ids and real-token mask `[B, T]` (left padded), `counted` `[B, T]`
/// float32 (1 on counted tokens), `labels` and `regularize` `[B]` float32.
pub struct Batch {
    pub ids: Tensor,
    pub mask: Tensor,
    pub counted: Tensor,
    pub labels: Tensor,
    pub regularize: Tensor,
}

impl Batch {
    /// Weights of the next-token positions `[B, T-1]`: position t predicts token t+1.
    pub fn target_weights(&self) -> Tensor {
        let t = self.ids.size()[1];
        self.counted.narrow(1, 1, t - 1)
    }

    /// The tokens predicted at each position `[B, T-1]`.
    pub fn targets(&self) -> Tensor {
        let t = self.ids.size()[1];
        self.ids.narrow(1, 1, t - 1)
    }
}

/// Batches of `batch_size` sequences of similar length (sorted by length, so padding stays
/// small); a batch's index is stable for the same sequences.
pub fn batches(sequences: &[Sequence], batch_size: usize, device: Device) -> Vec<Batch> {
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| (sequences[i].ids.len(), i));
    order
        .chunks(batch_size.max(1))
        .map(|chunk| {
            let rows: Vec<&[i64]> = chunk.iter().map(|&i| sequences[i].ids.as_slice()).collect();
            let (ids, mask) = left_pad(&rows, device);
            let width = ids.size()[1] as usize;
            let counted: Vec<f32> = chunk
                .iter()
                .flat_map(|&i| {
                    let s = &sequences[i];
                    let from = s.counted_from.max(1);
                    std::iter::repeat_n(0.0, width - s.ids.len())
                        .chain((0..s.ids.len()).map(move |t| f32::from(u8::from(t >= from))))
                })
                .collect();
            let labels: Vec<f32> = chunk.iter().map(|&i| sequences[i].label).collect();
            let regularize: Vec<f32> = chunk
                .iter()
                .map(|&i| f32::from(u8::from(sequences[i].regularize)))
                .collect();
            Batch {
                counted: Tensor::from_slice(&counted)
                    .view([chunk.len() as i64, width as i64])
                    .to_device(device),
                labels: Tensor::from_slice(&labels).to_device(device),
                regularize: Tensor::from_slice(&regularize).to_device(device),
                ids,
                mask,
            }
        })
        .collect()
}

/// Per-position next-token log-probabilities `[B, T-1, V]` of a model on a batch.
pub fn next_token_log_probs(model: &dyn CausalLm, batch: &Batch) -> Tensor {
    let t = batch.ids.size()[1];
    let hidden = model.forward_hidden(&batch.ids, &batch.mask, &mut model.new_cache());
    model
        .logits(&hidden.narrow(1, 0, t - 1))
        .log_softmax(-1, Kind::Float)
}

/// Summed negative log-likelihood of the counted tokens of a batch, and how many there were.
pub fn summed_nll(model: &dyn CausalLm, batch: &Batch) -> (Tensor, f64) {
    let log_probs = next_token_log_probs(model, batch);
    let nll = -log_probs
        .gather(2, &batch.targets().unsqueeze(-1), false)
        .squeeze_dim(-1);
    let weights = batch.target_weights();
    let n = weights.sum(Kind::Float).double_value(&[]);
    ((nll * weights).sum(Kind::Float), n)
}

/// Perplexity of `model` on the counted tokens of `sequences`, with the token count (NaN when
/// no token counts).
pub fn perplexity(model: &dyn CausalLm, sequences: &[Sequence], batch_size: usize) -> (f64, usize) {
    let _no_grad = tch::no_grad_guard();
    let (mut total, mut count) = (0.0, 0.0);
    for batch in batches(sequences, batch_size, model.info().device) {
        let (nll, n) = summed_nll(model, &batch);
        total += nll.double_value(&[]);
        count += n;
    }
    let ppl = if count > 0.0 {
        (total / count).exp()
    } else {
        f64::NAN
    };
    (ppl, count as usize)
}
