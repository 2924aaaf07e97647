//! How fusion turns the calibration model's final state into a state the target's head can read,
//! and mixes it in: h̃ = α·norm(readout(h_cal)) + (1 − α)·h at the target's final normed state h.
//!
//! Readouts ([`Readout`]):
//! - `infonce` (default): the paper's map A, trained with InfoNCE (on input embeddings in the
//!   paper's code), which learns to tell states apart, not to reconstruct them;
//! - `ridge`: a least-squares map (with intercept) fitted onto the target's own final states at
//!   the same positions of the same texts — it reconstructs them;
//! - `identity`: no map — the calibration model's final normed state as it is, possible when it
//!   shares the target's width and tokenizer (a cut of the target's own base). Through the
//!   shared head this is the geometric mixture p^(1−α)·p_cal^α.
//!
//! Norms ([`MapNorm`]) applied to the readout before mixing:
//! - `layer_norm`: LayerNorm over the width with no learned affine (the paper's code);
//! - `target_norm`: the same, rescaled to the L2 norm of the target's own state at that position
//!   (one number per position, no per-dimension statistics), so the mixed-in vector has the
//!   target's scale;
//! - `none`: the readout as it is (a ridge map already lands at the target's scale).
//!
//! A norm that rescales each dimension by the target's spread and mean (what the harness used
//! before) is not offered: on SmolLM2, whose final states have a few very large dimensions, even
//! a perfect map comes out of it far from the state it should be (`detox train align` measures
//! this as `perfect_map_kl` for every norm).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

pub(crate) const NORM_EPS: f64 = 1e-5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readout {
    Ridge,
    #[serde(rename = "infonce")]
    InfoNce,
    Identity,
}

impl Readout {
    pub const ALL: [Readout; 3] = [Readout::Ridge, Readout::InfoNce, Readout::Identity];

    pub fn name(self) -> &'static str {
        match self {
            Readout::Ridge => "ridge",
            Readout::InfoNce => "infonce",
            Readout::Identity => "identity",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match Self::ALL.into_iter().find(|r| r.name() == text) {
            Some(r) => Ok(r),
            None => bail!("unknown readout {text:?} (expected ridge, infonce or identity)"),
        }
    }

    /// The norm a readout uses unless the spec names one: the paper's plain LayerNorm after the
    /// InfoNCE map (whose output has no meaningful scale), none after a map that already
    /// reconstructs the target's states or after the calibration model's own final norm.
    pub fn default_norm(self) -> MapNorm {
        match self {
            Readout::InfoNce => MapNorm::LayerNorm,
            Readout::Ridge | Readout::Identity => MapNorm::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapNorm {
    LayerNorm,
    TargetNorm,
    None,
}

impl MapNorm {
    pub const ALL: [MapNorm; 3] = [MapNorm::LayerNorm, MapNorm::TargetNorm, MapNorm::None];

    pub fn name(self) -> &'static str {
        match self {
            MapNorm::LayerNorm => "layer_norm",
            MapNorm::TargetNorm => "target_norm",
            MapNorm::None => "none",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match Self::ALL.into_iter().find(|n| n.name() == text) {
            Some(n) => Ok(n),
            None => bail!("unknown norm {text:?} (expected layer_norm, target_norm or none)"),
        }
    }

    /// `readout` `[..., width]` normed as this norm says; `target_hidden` (same shape) gives the
    /// scale for `target_norm`. Float32.
    pub fn apply(self, readout: &Tensor, target_hidden: &Tensor) -> Tensor {
        let x = readout.to_kind(Kind::Float);
        match self {
            MapNorm::None => x,
            MapNorm::LayerNorm => plain_layer_norm(&x),
            MapNorm::TargetNorm => {
                let normed = plain_layer_norm(&x);
                let norm_of = |t: &Tensor| t.norm_scalaropt_dim(2.0, [-1], true);
                let scale =
                    norm_of(&target_hidden.to_kind(Kind::Float)) / norm_of(&normed).clamp_min(1e-8);
                normed * scale
            }
        }
    }
}

/// LayerNorm over the last dimension without a learned gain or offset.
fn plain_layer_norm(x: &Tensor) -> Tensor {
    let width = x.size()[x.dim() - 1];
    x.layer_norm([width], None::<&Tensor>, None::<&Tensor>, NORM_EPS, false)
}

/// h̃ = α·norm(readout) + (1 − α)·h, float32.
pub fn fused_state(target_hidden: &Tensor, readout: &Tensor, norm: MapNorm, alpha: f64) -> Tensor {
    let h = target_hidden.to_kind(Kind::Float);
    norm.apply(readout, &h) * alpha + h * (1.0 - alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for r in Readout::ALL {
            assert_eq!(Readout::parse(r.name()).unwrap(), r);
        }
        for n in MapNorm::ALL {
            assert_eq!(MapNorm::parse(n.name()).unwrap(), n);
        }
        assert!(Readout::parse("lstsq").is_err());
        assert!(MapNorm::parse("rms").is_err());
    }

    #[test]
    fn target_norm_has_the_targets_length_and_the_readouts_direction() {
        let readout = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 6.0]).view([1, 4]);
        let target = Tensor::from_slice(&[30.0f32, 0.0, 40.0, 0.0]).view([1, 4]);
        let out = MapNorm::TargetNorm.apply(&readout, &target);
        let length = out.norm().double_value(&[]);
        assert!((length - 50.0).abs() < 1e-3, "{length}");
        let ln = MapNorm::LayerNorm.apply(&readout, &target);
        let cosine = (&out * &ln).sum(Kind::Float).double_value(&[])
            / (length * ln.norm().double_value(&[]));
        assert!((cosine - 1.0).abs() < 1e-5, "{cosine}");
    }
}
