//! `rad` as the harness registers it ([`RadMethod`]): the spec's parameters ([`RadSpecParams`])
//! and the factory that loads the reward model beside the decoding one.

use std::path::PathBuf;

use anyhow::{Context, Result};
use decode::{auto_path, Method, MethodParts, StepParams};
use lm::{DtypeChoice, LoadedModel};
use method_info::{derive_params, MethodInfo, ParamDoc, StrengthInfo};
use serde::{Deserialize, Serialize};

use crate::artifact::RewardHead;
use crate::reward::RewardModel;
use crate::steering::{Rad, RadParams};

/// The `rad` parameters a spec may give (the strength is β).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadSpecParams {
    pub reward: String,
    pub backbone: String,
    pub top_k: u64,
}

impl Default for RadSpecParams {
    fn default() -> Self {
        RadSpecParams {
            reward: "auto".into(),
            backbone: "auto".into(),
            top_k: 20,
        }
    }
}

const DOCS: &[ParamDoc] = &[
    ParamDoc::new(
        "reward",
        "the fitted reward head (detox train rad-reward); auto: configs/rad/<model folder>.json",
    ),
    ParamDoc::new(
        "backbone",
        "the reward model's backbone folder (checked against the head's fingerprint); auto: the decoding model's own folder",
    ),
    ParamDoc::new(
        "top_k",
        "candidates scored per row, the highest logits among those top-k/top-p left; the rest are removed",
    )
    .range(1.0, 1_000_000.0),
];

/// The `rad` method.
pub struct RadMethod;

/// RAD's decoding parameters, its reward head file and backbone folder (`None`: the defaults).
type Resolved = (RadParams, Option<PathBuf>, Option<PathBuf>);

impl RadMethod {
    fn resolve(step: &StepParams) -> Result<Resolved> {
        let spec: RadSpecParams = step.parse()?;
        let params = RadParams {
            beta: step.required_strength("beta")?,
            top_k: usize::try_from(spec.top_k).context("rad: top_k must be >= 1")?,
        };
        params.validate()?;
        Ok((
            params,
            auto_path("rad", "reward", &spec.reward, false)?,
            auto_path("rad", "backbone", &spec.backbone, true)?,
        ))
    }
}

impl Method for RadMethod {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "rad",
            description: "reward-augmented decoding: the top-k candidates re-weighted by a unidirectional reward model (the LM's first N layers + a linear head) scoring each continuation; strength is beta",
            params: derive_params::<RadSpecParams>(DOCS),
            strength: Some(StrengthInfo::new(0.0, 100_000.0, 10.0)),
            full_distribution: true,
        }
    }

    fn check(&self, step: &StepParams) -> Result<()> {
        Self::resolve(step).map(drop)
    }

    fn build<'m>(&self, model: &'m LoadedModel, step: &StepParams) -> Result<MethodParts<'m>> {
        let (params, head, backbone) = Self::resolve(step)?;
        let head = head.unwrap_or_else(|| RewardHead::default_path(&model.dir));
        let backbone = backbone.unwrap_or_else(|| model.dir.clone());
        // The reward model runs beside the LM: same device, same dtype.
        let info = model.model.info();
        let reward = RewardModel::load(
            &head,
            &backbone,
            info.device.into(),
            DtypeChoice::of_kind(info.kind)?,
        )
        .with_context(|| format!("rad: reward head {}", head.display()))?;
        Ok(MethodParts::steering(Rad::new(
            reward,
            &model.tokenizer,
            params,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_derives_the_parameters() {
        let info = RadMethod.info();
        let names: Vec<&str> = info.params.iter().map(|p| p.name).collect();
        assert_eq!(names, ["reward", "backbone", "top_k"]);
    }
}
