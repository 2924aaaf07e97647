//! The few layers the architectures share, holding plain tensors (weights named as in Hugging Face).

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::weights::Weights;

/// `y = x Wᵀ + b` with `W` stored `[out, in]` as in PyTorch's `nn.Linear`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(
        w: &mut Weights,
        prefix: &str,
        in_dim: i64,
        out_dim: i64,
        bias: bool,
    ) -> Result<Self> {
        let weight = w.take(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(w.take(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// GPT-2's `Conv1D` keeps the weight as `[in, out]`; transpose once at load time.
    pub fn load_conv1d(w: &mut Weights, prefix: &str, in_dim: i64, out_dim: i64) -> Result<Self> {
        let weight = w
            .take(&format!("{prefix}.weight"), &[in_dim, out_dim])?
            .t_()
            .contiguous();
        let bias = Some(w.take(&format!("{prefix}.bias"), &[out_dim])?);
        Ok(Self { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

/// Root-mean-square norm, computed in float32 as Hugging Face's LlamaRMSNorm does.
#[derive(Debug)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn load(w: &mut Weights, prefix: &str, dim: i64, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"), &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let variance = x32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = x32 * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(kind)
    }
}

/// Layer norm with weight and bias.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(w: &mut Weights, prefix: &str, dim: i64, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"), &[dim])?,
            bias: w.take(&format!("{prefix}.bias"), &[dim])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let dim = *x
            .size()
            .last()
            .expect("layer norm input has a last dimension");
        x.layer_norm([dim], Some(&self.weight), Some(&self.bias), self.eps, false)
    }
}

/// Splits `[batch, t, heads * head_dim]` into `[batch, heads, t, head_dim]`.
pub fn split_heads(x: &Tensor, heads: i64, head_dim: i64) -> Tensor {
    let (b, t) = (x.size()[0], x.size()[1]);
    x.view([b, t, heads, head_dim]).transpose(1, 2)
}

/// Joins `[batch, heads, t, head_dim]` back into `[batch, t, heads * head_dim]`.
pub fn merge_heads(x: &Tensor) -> Tensor {
    let s = x.size();
    x.transpose(1, 2)
        .contiguous()
        .view([s[0], s[2], s[1] * s[3]])
}
