//! A small classifier head on frozen embeddings — logistic regression, or one hidden GELU layer —
//! trained full-batch with AdamW and class weights, stored as JSON with how it was made and how
//! well it did.
//!
//! Why a hidden layer: on all-MiniLM-L6-v2 embeddings a logistic regression reached held-out
//! Jigsaw ROC-AUC 0.92; one hidden layer of 256 reached 0.94 (same data and split), and the
//! artifact stays small enough to commit.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig, VarStore};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeHead {
    /// What the head sits on, e.g. "all-MiniLM-L6-v2 mean-pooled, L2-normalised".
    pub embedding: String,
    /// Feature standardisation fitted on the training set: x' = (x − mean) / scale.
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    /// Hidden layer `[hidden, dim]` row-major with its bias, when there is one.
    pub hidden: Option<Dense>,
    /// Output layer: `[1, hidden or dim]` and its bias.
    pub output: Dense,
    /// Free-form provenance: sources and counts, held-out metrics, options.
    pub training: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dense {
    pub rows: usize,
    pub cols: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Dense {
    fn from_linear(layer: &nn::Linear) -> Result<Self> {
        let size = layer.ws.size();
        Ok(Self {
            rows: size[0] as usize,
            cols: size[1] as usize,
            weight: Vec::<f32>::try_from(layer.ws.detach().reshape([-1]))?,
            bias: Vec::<f32>::try_from(layer.bs.as_ref().expect("bias").detach())?,
        })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let w = Tensor::from_slice(&self.weight)
            .view([self.rows as i64, self.cols as i64])
            .to_device(x.device());
        let b = Tensor::from_slice(&self.bias).to_device(x.device());
        x.linear(&w, Some(&b))
    }

    fn check(&self, what: &str, cols: usize) -> Result<()> {
        ensure!(
            self.cols == cols && self.weight.len() == self.rows * self.cols && self.bias.len() == self.rows,
            "{what} layer has inconsistent shapes ({} × {}, {} weights, {} biases; input width {cols})",
            self.rows,
            self.cols,
            self.weight.len(),
            self.bias.len()
        );
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Width of the hidden layer; 0 for logistic regression.
    pub hidden: usize,
    pub steps: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub seed: i64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            hidden: 256,
            steps: 1500,
            learning_rate: 0.01,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

impl ProbeHead {
    /// Fits `p(toxic | x)` on features `x` `[n, d]` and soft labels `y` `[n]` in [0, 1]. Each
    /// class (label ≥ 0.5 or not) carries half the total weight, so an unbalanced mix does not
    /// shift the decision threshold.
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
        let mean = x.mean_dim(0, false, Kind::Float);
        let scale = x.std_dim(0, true, false) + 1e-6;
        let xs = (x - &mean) / &scale;

        let vs = VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let hidden = (options.hidden > 0).then(|| {
            nn::linear(
                &root / "hidden",
                d,
                options.hidden as i64,
                Default::default(),
            )
        });
        let out_in = if options.hidden > 0 {
            options.hidden as i64
        } else {
            d
        };
        let output = nn::linear(&root / "output", out_in, 1, Default::default());
        let forward = |x: &Tensor| {
            let h = match &hidden {
                Some(layer) => layer.forward(x).gelu("none"),
                None => x.shallow_clone(),
            };
            output.forward(&h).squeeze_dim(1)
        };
        let mut opt = nn::AdamW {
            wd: options.weight_decay,
            ..Default::default()
        }
        .build(&vs, options.learning_rate)?;
        for _ in 0..options.steps {
            let loss = (forward(&xs).binary_cross_entropy_with_logits::<Tensor>(
                y,
                None,
                None,
                tch::Reduction::None,
            ) * &sample_weight)
                .sum(Kind::Float);
            opt.backward_step(&loss);
        }
        Ok(Self {
            embedding: embedding.to_string(),
            mean: Vec::<f32>::try_from(mean)?,
            scale: Vec::<f32>::try_from(scale)?,
            hidden: hidden.as_ref().map(Dense::from_linear).transpose()?,
            output: Dense::from_linear(&output)?,
            training: serde_json::json!({ "options": options }),
        })
    }

    /// Width of the features the head expects.
    pub fn input_dim(&self) -> usize {
        self.mean.len()
    }

    /// Toxicity probabilities `[n]` for features `[n, d]`.
    pub fn predict(&self, x: &Tensor) -> Tensor {
        let device = x.device();
        let mean = Tensor::from_slice(&self.mean).to_device(device);
        let scale = Tensor::from_slice(&self.scale).to_device(device);
        let xs = (x.to_kind(Kind::Float) - mean) / scale;
        let h = match &self.hidden {
            Some(layer) => layer.forward(&xs).gelu("none"),
            None => xs,
        };
        self.output.forward(&h).squeeze_dim(1).sigmoid()
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read head", path.display()))?;
        let head: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a probe head", path.display()))?;
        let d = head.input_dim();
        let check = || -> Result<()> {
            ensure!(head.scale.len() == d, "mean and scale differ in length");
            let out_in = match &head.hidden {
                Some(h) => {
                    h.check("hidden", d)?;
                    h.rows
                }
                None => d,
            };
            head.output.check("output", out_in)?;
            ensure!(head.output.rows == 1, "output layer must have one row");
            Ok(())
        };
        check().with_context(|| format!("{}", path.display()))?;
        Ok(head)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("{}: cannot write", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::roc_auc;

    fn auc_of(head: &ProbeHead, x: &Tensor, y: &Tensor) -> f64 {
        let p = Vec::<f64>::try_from(head.predict(x).to_kind(Kind::Double)).unwrap();
        let labels: Vec<bool> = Vec::<f32>::try_from(y)
            .unwrap()
            .iter()
            .map(|&v| v > 0.5)
            .collect();
        roc_auc(&p, &labels).unwrap()
    }

    #[test]
    fn learns_linear_and_nonlinear_rules_and_round_trips() {
        tch::manual_seed(1);
        let x = Tensor::randn([600, 8], (Kind::Float, tch::Device::Cpu));
        let linear = x.select(1, 3).gt(0.0).to_kind(Kind::Float);
        let options = TrainOptions {
            hidden: 0,
            steps: 300,
            learning_rate: 0.05,
            ..Default::default()
        };
        let head = ProbeHead::train(&x, &linear, "test", &options).unwrap();
        assert!(auc_of(&head, &x, &linear) > 0.99);
        // |x₀| > 1 is not linearly separable; the hidden layer learns it.
        let ring = x.select(1, 0).abs().gt(1.0).to_kind(Kind::Float);
        let logistic = ProbeHead::train(&x, &ring, "test", &options).unwrap();
        let mlp = ProbeHead::train(
            &x,
            &ring,
            "test",
            &TrainOptions {
                hidden: 16,
                steps: 400,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(auc_of(&logistic, &x, &ring) < 0.7);
        assert!(auc_of(&mlp, &x, &ring) > 0.95);

        let path = std::env::temp_dir().join(format!("probe-head-{}.json", std::process::id()));
        mlp.save(&path).unwrap();
        let loaded = ProbeHead::load(&path).unwrap();
        let diff = (loaded.predict(&x) - mlp.predict(&x))
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(diff, 0.0);
        std::fs::write(&path, r#"{"embedding":"x","mean":[0],"scale":[1],"hidden":null,"output":{"rows":1,"cols":2,"weight":[1,2],"bias":[0]},"training":null}"#).unwrap();
        let err = ProbeHead::load(&path).unwrap_err();
        assert!(
            format!("{err:#}").contains("inconsistent shapes"),
            "{err:#}"
        );
        std::fs::remove_file(&path).unwrap();

        let one_class = ProbeHead::train(&x, &linear.zeros_like(), "test", &options);
        assert!(one_class
            .unwrap_err()
            .to_string()
            .contains("only one class"));
    }
}
