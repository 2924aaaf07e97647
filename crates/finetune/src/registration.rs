//! `nado` (decoding with an auxiliary model) and `finetuned` (decoding with a fine-tuned
//! checkpoint) as the harness registers them.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use decode::{Method, MethodParts, StepParams};
use lm::{DtypeChoice, LoadedModel};
use method_info::{derive_params, MethodInfo, ParamDoc, StrengthInfo};
use serde::{Deserialize, Serialize};

use crate::nado::{Auxiliary, NadoDecoding, NadoParams, HEAD_FILE};

/// The `nado` parameters a spec may give (the strength is α).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NadoSpecParams {
    /// Required: an auxiliary model is trained per base model.
    pub auxiliary: Option<PathBuf>,
}

const NADO_DOCS: &[ParamDoc] = &[ParamDoc::new(
    "auxiliary",
    "the auxiliary model folder a fine-tuning run wrote (<output>/auxiliary-1 is trained on the base model's own samples)",
)
.path()];

/// The `finetuned` parameters a spec may give (the strength is the variant's λ, a label).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetunedSpecParams {
    pub checkpoint: Option<PathBuf>,
}

const FINETUNED_DOCS: &[ParamDoc] = &[ParamDoc::new(
    "checkpoint",
    "the fine-tuned model folder (<output>/policy-N)",
)
.path()];

/// The `nado` method: z + α·log R from an auxiliary model.
pub struct NadoMethod;

impl NadoMethod {
    fn resolve(step: &StepParams) -> Result<(NadoParams, PathBuf)> {
        let spec: NadoSpecParams = step.parse()?;
        let params = NadoParams {
            alpha: step.required_strength("alpha")?,
        };
        params.validate()?;
        let dir = spec.auxiliary.context("nado: auxiliary is required")?;
        if !dir.join(HEAD_FILE).is_file() {
            bail!(
                "nado: {} is not an auxiliary model (no {HEAD_FILE})",
                dir.display()
            );
        }
        Ok((params, dir))
    }
}

impl Method for NadoMethod {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "nado",
            description: "NADO decoding: logits plus alpha times log R from an auxiliary model (detox train finetune, objective nado), no fine-tuning; alpha 1 is NADO's posterior q ∝ p·R",
            params: derive_params::<NadoSpecParams>(NADO_DOCS),
            strength: Some(StrengthInfo::new(0.0, 100.0, 1.0)),
            full_distribution: false,
        }
    }

    fn check(&self, step: &StepParams) -> Result<()> {
        Self::resolve(step).map(drop)
    }

    fn build<'m>(&self, model: &'m LoadedModel, step: &StepParams) -> Result<MethodParts<'m>> {
        let (params, dir) = Self::resolve(step)?;
        let info = model.model.info();
        let auxiliary = Auxiliary::load(&dir, info.device.into(), DtypeChoice::of_kind(info.kind)?)
            .with_context(|| format!("nado: auxiliary model {}", dir.display()))?;
        Ok(MethodParts::steering(NadoDecoding::new(
            auxiliary,
            &model.tokenizer,
            info.vocab_size,
            params,
        )?))
    }
}

/// The `finetuned` method: the cell decodes with a checkpoint instead of its model.
pub struct FinetunedMethod;

impl FinetunedMethod {
    fn resolve(step: &StepParams) -> Result<PathBuf> {
        let spec: FinetunedSpecParams = step.parse()?;
        let dir = spec
            .checkpoint
            .context("finetuned: checkpoint is required")?;
        if !dir.join("config.json").is_file() {
            bail!(
                "finetuned: checkpoint {} is not a model folder (no config.json); train it with `detox train finetune`",
                dir.display()
            );
        }
        Ok(dir)
    }
}

impl Method for FinetunedMethod {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "finetuned",
            description: "decode with a fine-tuned variant of the cell's model (detox train finetune) instead of the model itself; the strength is the variant's lambda and only labels the cell (the cell's model stays the judge)",
            params: derive_params::<FinetunedSpecParams>(FINETUNED_DOCS),
            strength: Some(StrengthInfo::new(0.0, 1000.0, 0.0)),
            full_distribution: false,
        }
    }

    fn check(&self, step: &StepParams) -> Result<()> {
        Self::resolve(step).map(drop)
    }

    fn checkpoint(&self, step: &StepParams) -> Result<Option<PathBuf>> {
        Self::resolve(step).map(Some)
    }

    /// The checkpoint was loaded in place of the cell's model: nothing else to run.
    fn build<'m>(&self, _model: &'m LoadedModel, _step: &StepParams) -> Result<MethodParts<'m>> {
        Ok(MethodParts::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_required() {
        for info in [NadoMethod.info(), FinetunedMethod.info()] {
            assert_eq!(info.params.len(), 1);
            assert_eq!(info.params[0].kind, method_info::ParamKind::Path);
            assert_eq!(info.params[0].default, None);
        }
    }
}
