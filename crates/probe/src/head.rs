//! A logistic-regression head on frozen embeddings, trained with full-batch Adam and class
//! weights, stored as JSON with how it was made and how well it did.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{Adam, OptimizerConfig, VarStore};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearHead {
    /// What the head sits on, e.g. "all-MiniLM-L6-v2 mean-pooled, L2-normalised".
    pub embedding: String,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// Free-form provenance: sources and counts, held-out metrics, options.
    pub training: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub steps: usize,
    pub learning_rate: f64,
    /// L2 penalty on the weights (not the bias).
    pub l2: f64,
    pub seed: i64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 600,
            learning_rate: 0.05,
            l2: 1e-4,
            seed: 0,
        }
    }
}

impl LinearHead {
    /// Fits `p(toxic | x) = σ(w·x + b)` on features `x` `[n, d]` and soft labels `y` `[n]` in
    /// [0, 1]. Each class (label ≥ 0.5 or not) carries half the total weight, so an unbalanced
    /// mix does not shift the decision threshold.
    pub fn train(x: &Tensor, y: &Tensor, embedding: &str, options: &TrainOptions) -> Result<Self> {
        let (n, d) = (x.size()[0], x.size()[1]);
        if n == 0 {
            bail!("no training examples");
        }
        tch::manual_seed(options.seed);
        let positives = y.ge(0.5).to_kind(Kind::Float);
        let n_pos = positives.sum(Kind::Float).double_value(&[]);
        let n_neg = n as f64 - n_pos;
        if n_pos == 0.0 || n_neg == 0.0 {
            bail!("training data has only one class ({n_pos} toxic, {n_neg} non-toxic)");
        }
        let sample_weight = &positives * (0.5 / n_pos) + (1.0 - &positives) * (0.5 / n_neg);
        let vs = VarStore::new(tch::Device::Cpu);
        let w = vs.root().zeros("weight", &[d]);
        let b = vs.root().zeros("bias", &[1]);
        let mut opt = Adam::default().build(&vs, options.learning_rate)?;
        for _ in 0..options.steps {
            let logits = x.mv(&w) + &b;
            let loss = (logits.binary_cross_entropy_with_logits::<Tensor>(
                y,
                None,
                None,
                tch::Reduction::None,
            ) * &sample_weight)
                .sum(Kind::Float)
                + w.square().sum(Kind::Float) * options.l2;
            opt.backward_step(&loss);
        }
        Ok(Self {
            embedding: embedding.to_string(),
            weights: Vec::<f32>::try_from(w.detach())?,
            bias: b.double_value(&[0]) as f32,
            training: serde_json::json!({ "options": options }),
        })
    }

    /// Toxicity probabilities `[n]` for features `[n, d]`.
    pub fn predict(&self, x: &Tensor) -> Tensor {
        let w = Tensor::from_slice(&self.weights).to_device(x.device());
        (x.to_kind(Kind::Float).mv(&w) + f64::from(self.bias)).sigmoid()
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read head", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a linear head", path.display()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("{}: cannot write", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::roc_auc;

    #[test]
    fn auc_by_hand() {
        // Positives 0.8, 0.4; negatives 0.5, 0.1: pairs (0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1) → 3/4.
        assert_eq!(
            roc_auc(&[0.8, 0.4, 0.5, 0.1], &[true, true, false, false]),
            Some(0.75)
        );
        // A tie between a positive and a negative counts half: (1 + 0.5) / 2.
        assert_eq!(roc_auc(&[0.5, 0.9, 0.5], &[true, true, false]), Some(0.75));
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn learns_a_separable_direction() {
        tch::manual_seed(1);
        let x = Tensor::randn([400, 8], (Kind::Float, tch::Device::Cpu));
        let y = x.select(1, 3).gt(0.0).to_kind(Kind::Float);
        let head = LinearHead::train(&x, &y, "test", &TrainOptions::default()).unwrap();
        let p = Vec::<f64>::try_from(head.predict(&x).to_kind(Kind::Double)).unwrap();
        let labels: Vec<bool> = Vec::<f64>::try_from(y.to_kind(Kind::Double))
            .unwrap()
            .iter()
            .map(|&v| v > 0.5)
            .collect();
        assert!(roc_auc(&p, &labels).unwrap() > 0.99);
        let strongest = head
            .weights
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap()
            .0;
        assert_eq!(strongest, 3);
        let one_class = LinearHead::train(&x, &y.zeros_like(), "test", &TrainOptions::default());
        assert!(one_class
            .unwrap_err()
            .to_string()
            .contains("only one class"));
    }
}
