//! `calibration_fusion` and `dexperts` as the harness registers them: their spec parameters and
//! the factories that load the extra models beside the decoding one.

use std::path::PathBuf;

use anyhow::{Context, Result};
use decode::{auto_path, load_beside, Method, MethodParts, StepParams};
use lm::LoadedModel;
use method_info::{derive_params, MethodInfo, ParamDoc, StrengthInfo};
use serde::{Deserialize, Serialize};

use crate::align::AlignMap;
use crate::calibration::default_calibration_dir as default_dir;
use crate::steering::{CalibrationFusion, DExperts, DExpertsParams, FusionParams};

/// The `calibration_fusion` parameters a spec may give (the strength is α).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionSpecParams {
    pub calibration: String,
    pub align: String,
}

impl Default for FusionSpecParams {
    fn default() -> Self {
        FusionSpecParams {
            calibration: "auto".into(),
            align: "auto".into(),
        }
    }
}

const FUSION_DOCS: &[ParamDoc] = &[
    ParamDoc::new(
        "calibration",
        "the calibration model folder (detox train calibration); auto: .detox/calibration/<model folder>",
    ),
    ParamDoc::new(
        "align",
        "the alignment map (detox train align); auto: <calibration folder>/align-<model folder>.json",
    ),
];

/// The `dexperts` parameters a spec may give (the strength is α).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DExpertsSpecParams {
    pub expert: String,
    pub anti_expert: String,
}

impl Default for DExpertsSpecParams {
    fn default() -> Self {
        DExpertsSpecParams {
            expert: "auto".into(),
            anti_expert: "auto".into(),
        }
    }
}

const DEXPERTS_DOCS: &[ParamDoc] = &[
    ParamDoc::new(
        "expert",
        "the expert model folder; auto: .detox/calibration/<model folder> (trained on non-toxic text)",
    ),
    ParamDoc::new(
        "anti_expert",
        "the anti-expert model folder; auto: .detox/calibration/<model folder>-toxic (detox train calibration --toxic)",
    ),
];

/// The `calibration_fusion` method.
pub struct CalibrationFusionMethod;

type FusionResolved = (FusionParams, Option<PathBuf>, Option<PathBuf>);

impl CalibrationFusionMethod {
    fn resolve(step: &StepParams) -> Result<FusionResolved> {
        let spec: FusionSpecParams = step.parse()?;
        let params = FusionParams {
            alpha: step.required_strength("alpha")?,
        };
        params.validate()?;
        Ok((
            params,
            auto_path("calibration_fusion", "calibration", &spec.calibration, true)?,
            auto_path("calibration_fusion", "align", &spec.align, false)?,
        ))
    }
}

impl Method for CalibrationFusionMethod {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "calibration_fusion",
            description: "calibration-model output-layer fusion: a compact LM trained on non-toxic text, its final hidden state mapped into the target's (LN(h_cal A)) and mixed in before the head; strength is alpha",
            params: derive_params::<FusionSpecParams>(FUSION_DOCS),
            strength: Some(StrengthInfo::new(0.0, 1.0, 0.1)),
            full_distribution: false,
        }
    }

    fn check(&self, step: &StepParams) -> Result<()> {
        Self::resolve(step).map(drop)
    }

    fn build<'m>(&self, model: &'m LoadedModel, step: &StepParams) -> Result<MethodParts<'m>> {
        let (params, calibration, align) = Self::resolve(step)?;
        let calibration = calibration.unwrap_or_else(|| default_dir(&model.dir, false));
        let align = align.unwrap_or_else(|| AlignMap::default_path(&calibration, &model.dir));
        let loaded = load_beside(&calibration, model, "calibration_fusion: calibration model")?;
        let map = AlignMap::load(&align, &calibration, &model.dir)
            .context("calibration_fusion: alignment map")?;
        Ok(MethodParts::steering(CalibrationFusion::new(
            loaded,
            map,
            &model.tokenizer,
            model.model.info().vocab_size,
            params,
        )?))
    }
}

/// The `dexperts` method.
pub struct DExpertsMethod;

type DExpertsResolved = (DExpertsParams, Option<PathBuf>, Option<PathBuf>);

impl DExpertsMethod {
    fn resolve(step: &StepParams) -> Result<DExpertsResolved> {
        let spec: DExpertsSpecParams = step.parse()?;
        let params = DExpertsParams {
            alpha: step.required_strength("alpha")?,
        };
        params.validate()?;
        Ok((
            params,
            auto_path("dexperts", "expert", &spec.expert, true)?,
            auto_path("dexperts", "anti_expert", &spec.anti_expert, true)?,
        ))
    }
}

impl Method for DExpertsMethod {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "dexperts",
            description: "DExperts: logits plus alpha times (expert logits minus anti-expert logits), both experts reading the whole text; strength is alpha",
            params: derive_params::<DExpertsSpecParams>(DEXPERTS_DOCS),
            strength: Some(StrengthInfo::new(0.0, 100.0, 2.0)),
            full_distribution: false,
        }
    }

    fn check(&self, step: &StepParams) -> Result<()> {
        Self::resolve(step).map(drop)
    }

    fn build<'m>(&self, model: &'m LoadedModel, step: &StepParams) -> Result<MethodParts<'m>> {
        let (params, expert, anti) = Self::resolve(step)?;
        let expert = expert.unwrap_or_else(|| default_dir(&model.dir, false));
        let anti = anti.unwrap_or_else(|| default_dir(&model.dir, true));
        Ok(MethodParts::steering(DExperts::new(
            load_beside(&expert, model, "dexperts: expert")?,
            load_beside(&anti, model, "dexperts: anti-expert")?,
            &model.tokenizer,
            model.model.info().vocab_size,
            params,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infos_derive_their_parameters() {
        let names = |info: MethodInfo| -> Vec<&'static str> {
            info.params.iter().map(|p| p.name).collect()
        };
        assert_eq!(
            names(CalibrationFusionMethod.info()),
            ["calibration", "align"]
        );
        assert_eq!(names(DExpertsMethod.info()), ["expert", "anti_expert"]);
    }
}
