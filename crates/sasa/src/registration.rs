//! `sasa` as the harness registers it ([`SasaMethod`]): the spec's parameters ([`SasaSpecParams`])
//! and the factory of the steering step.

use std::path::PathBuf;

use anyhow::{Context, Result};
use decode::{auto_path, Method, MethodParts, StepParams};
use lm::LoadedModel;
use method_info::{derive_params, MethodInfo, ParamDoc, StrengthInfo};
use serde::{Deserialize, Serialize};

use crate::steering::{MarginTransform, Sasa, SasaParams};
use crate::subspace::Subspace;

/// The `sasa` parameters a spec may give (the strength is β).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SasaSpecParams {
    pub subspace: String,
    pub margin_transform: String,
    pub max_candidates: i64,
    pub eos_bonus: bool,
}

impl Default for SasaSpecParams {
    fn default() -> Self {
        SasaSpecParams {
            subspace: "auto".into(),
            margin_transform: "softmax".into(),
            max_candidates: 0,
            eos_bonus: true,
        }
    }
}

const DOCS: &[ParamDoc] = &[
    ParamDoc::new(
        "subspace",
        "the fitted discriminant (detox train sasa); auto: configs/sasa/<model folder>.json",
    ),
    ParamDoc::new(
        "margin_transform",
        "bonus per candidate: softmax of the row's margins (paper's closed form) or the raw margin",
    )
    .choices(&["softmax", "raw"]),
    ParamDoc::new(
        "max_candidates",
        "score at most this many top candidates per row, the rest drawable with unchanged logits (unset: every candidate top-k/top-p leave, as published; a spec cannot write 0)",
    )
    .range(1.0, 100_000.0),
    ParamDoc::new(
        "eos_bonus",
        "end-of-sequence takes part in the bonus like any candidate (published); false keeps its logit and leaves it out of the softmax",
    ),
];

/// The `sasa` method.
pub struct SasaMethod;

impl SasaMethod {
    /// The decoding parameters and the subspace file (`None`: the model's default).
    fn resolve(step: &StepParams) -> Result<(SasaParams, Option<PathBuf>)> {
        let spec: SasaSpecParams = step.parse()?;
        let margin_transform: MarginTransform = spec.margin_transform.parse()?;
        let params = SasaParams {
            beta: step.required_strength("beta")?,
            margin_transform,
            max_candidates: (spec.max_candidates > 0).then_some(spec.max_candidates as usize),
            eos_bonus: spec.eos_bonus,
        };
        params.validate()?;
        Ok((
            params,
            auto_path("sasa", "subspace", &spec.subspace, false)?,
        ))
    }
}

impl Method for SasaMethod {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "sasa",
            description: "self-disciplined autoregressive sampling: candidates re-weighted by a linear toxic/non-toxic margin of the model's own next hidden state; strength is beta",
            params: derive_params::<SasaSpecParams>(DOCS),
            strength: Some(StrengthInfo::new(0.0, 100_000.0, 10.0)),
            full_distribution: false,
        }
    }

    fn check(&self, step: &StepParams) -> Result<()> {
        Self::resolve(step).map(drop)
    }

    fn build<'m>(&self, model: &'m LoadedModel, step: &StepParams) -> Result<MethodParts<'m>> {
        let (params, subspace) = Self::resolve(step)?;
        let path = subspace.unwrap_or_else(|| Subspace::default_path(&model.dir));
        let sasa = Sasa::load(&path, &model.dir, params)
            .with_context(|| format!("sasa: subspace {}", path.display()))?
            .with_eos_ids(&model.eos_token_ids);
        Ok(MethodParts::steering(sasa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_derives_the_parameters() {
        let info = SasaMethod.info();
        let names: Vec<&str> = info.params.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "subspace",
                "margin_transform",
                "max_candidates",
                "eos_bonus"
            ]
        );
    }
}
