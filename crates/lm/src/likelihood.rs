//! Log-likelihood of continuations given prompts: conditional perplexity under a judge LM needs
//! every position's logits, not just the last.

use anyhow::{bail, Result};
use tch::Kind;

use crate::{check_token_ids, left_pad, CausalLm};

/// Summed negative log-likelihood of a continuation and how many tokens it covers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContinuationNll {
    pub total_nll: f64,
    pub tokens: usize,
}

impl ContinuationNll {
    pub fn mean_nll(&self) -> f64 {
        self.total_nll / self.tokens as f64
    }

    /// exp(mean NLL over the continuation tokens).
    pub fn perplexity(&self) -> f64 {
        self.mean_nll().exp()
    }
}

/// NLL of each `continuation` given its `prompt`, `batch_size` pairs per forward pass (left
/// padded). A pair with an empty continuation or prompt is an error: there is nothing to score.
pub fn continuation_nll(
    model: &dyn CausalLm,
    pairs: &[(&[i64], &[i64])],
    batch_size: usize,
) -> Result<Vec<ContinuationNll>> {
    let vocab = model.info().vocab_size;
    for (i, (prompt, continuation)) in pairs.iter().enumerate() {
        if prompt.is_empty() || continuation.is_empty() {
            bail!("pair {i}: prompt and continuation must both have tokens");
        }
        check_token_ids(prompt, vocab)?;
        check_token_ids(continuation, vocab)?;
    }
    let device = model.info().device;
    let _no_grad = tch::no_grad_guard();
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size.max(1)) {
        let joined: Vec<Vec<i64>> = chunk.iter().map(|(p, c)| [*p, *c].concat()).collect();
        let rows: Vec<&[i64]> = joined.iter().map(Vec::as_slice).collect();
        let (ids, mask) = left_pad(&rows, device);
        let width = ids.size()[1] as usize;
        let mut cache = model.new_cache();
        let hidden = model.forward_hidden(&ids, &mask, &mut cache);
        // Position t predicts token t + 1. Left padding puts every continuation at the end of
        // its row, so only the last `scored` positions need logits; log p = logit[target] −
        // logsumexp(logits), without materialising a [batch, t, vocab] log-softmax.
        let scored = chunk.iter().map(|(_, c)| c.len()).max().unwrap_or(1) as i64;
        let start = width as i64 - 1 - scored;
        let logits = model.logits(&hidden.narrow(1, start, scored));
        let targets = ids.narrow(1, start + 1, scored);
        let token_lp = logits
            .gather(2, &targets.unsqueeze(-1), false)
            .squeeze_dim(-1)
            - logits.logsumexp(&[-1i64][..], false);
        let token_lp =
            Vec::<Vec<f32>>::try_from(token_lp.to_kind(Kind::Float).to_device(tch::Device::Cpu))?;
        for ((_, continuation), row) in chunk.iter().zip(token_lp) {
            let n = continuation.len();
            // The last n predictions of the row are the continuation's tokens.
            let total: f64 = row[row.len() - n..].iter().map(|&lp| -f64::from(lp)).sum();
            out.push(ContinuationNll {
                total_nll: total,
                tokens: n,
            });
        }
    }
    Ok(out)
}
