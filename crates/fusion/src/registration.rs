//! `calibration_fusion` and `dexperts` as the harness registers them: their spec parameters and
//! the factories that load the extra models beside the decoding one.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use decode::{auto_path, load_beside, Method, MethodParts, StepParams};
use lm::LoadedModel;
use method_info::{derive_params, MethodInfo, ParamDoc, StrengthInfo};
use serde::{Deserialize, Serialize};

use crate::align::AlignMap;
use crate::calibration::default_calibration_dir as default_dir;
use crate::readout::{MapNorm, Readout};
use crate::steering::{CalibrationFusion, DExperts, DExpertsParams, FusionParams};

/// The `calibration_fusion` parameters a spec may give (the strength is α).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionSpecParams {
    pub calibration: String,
    pub readout: String,
    pub align: String,
    pub norm: String,
}

impl Default for FusionSpecParams {
    fn default() -> Self {
        FusionSpecParams {
            calibration: "auto".into(),
            readout: Readout::InfoNce.name().into(),
            align: "auto".into(),
            norm: "auto".into(),
        }
    }
}

const FUSION_DOCS: &[ParamDoc] = &[
    ParamDoc::new(
        "calibration",
        "the calibration model folder (detox train calibration); auto: .detox/calibration/<model folder>",
    ),
    ParamDoc::new(
        "readout",
        "how the calibration state reaches the target's width: infonce (the paper's contrastive map, the default: it detoxified most per unit of perplexity in results/fusion-dexperts-nado), ridge (a least-squares map onto the target's final states) or identity (no map; the calibration model must share the target's width)",
    ),
    ParamDoc::new(
        "align",
        "the alignment map of a ridge or infonce readout (detox train align --fit ...); auto: <calibration folder>/align-<model folder>-<readout>.json",
    ),
    ParamDoc::new(
        "norm",
        "applied to the readout before mixing: layer_norm (no affine, the paper's), target_norm (layer norm rescaled to the target state's length) or none; auto: layer_norm for infonce, none otherwise",
    ),
];

/// The `dexperts` parameters a spec may give (the strength is α).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DExpertsSpecParams {
    pub expert: String,
    pub anti_expert: String,
    pub filter_p: f64,
}

impl Default for DExpertsSpecParams {
    fn default() -> Self {
        DExpertsSpecParams {
            expert: "auto".into(),
            anti_expert: "auto".into(),
            filter_p: 0.9,
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
    ParamDoc::new(
        "filter_p",
        "the base logits are cut to this nucleus before the experts' difference is added, then sampling is from the whole result (the reference); 1 cuts nothing (give the entry top_p: 0.9 for the harness's earlier behaviour, truncation after the experts)",
    ),
];

/// The `calibration_fusion` method.
pub struct CalibrationFusionMethod;

/// What a `calibration_fusion` entry resolves to before anything is loaded.
struct FusionResolved {
    params: FusionParams,
    readout: Readout,
    calibration: Option<PathBuf>,
    align: Option<PathBuf>,
}

impl CalibrationFusionMethod {
    fn resolve(step: &StepParams) -> Result<FusionResolved> {
        let spec: FusionSpecParams = step.parse()?;
        let readout =
            Readout::parse(&spec.readout).context("calibration_fusion: parameter readout")?;
        let norm = if spec.norm == "auto" {
            readout.default_norm()
        } else {
            MapNorm::parse(&spec.norm).context("calibration_fusion: parameter norm")?
        };
        let params = FusionParams {
            alpha: step.required_strength("alpha")?,
            norm,
        };
        params.validate()?;
        let align = auto_path("calibration_fusion", "align", &spec.align, false)?;
        if readout == Readout::Identity && align.is_some() {
            bail!("calibration_fusion: the identity readout takes no align map (align: auto)");
        }
        Ok(FusionResolved {
            params,
            readout,
            calibration: auto_path("calibration_fusion", "calibration", &spec.calibration, true)?,
            align,
        })
    }
}

impl Method for CalibrationFusionMethod {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "calibration_fusion",
            description: "calibration-model output-layer fusion: a compact LM trained on non-toxic text, its final hidden state read into the target's width (ridge map, the paper's InfoNCE map with layer norm, or identity) and mixed in before the head; strength is alpha",
            params: derive_params::<FusionSpecParams>(FUSION_DOCS),
            strength: Some(StrengthInfo::new(0.0, 1.0, 0.1)),
            full_distribution: false,
        }
    }

    fn check(&self, step: &StepParams) -> Result<()> {
        Self::resolve(step).map(drop)
    }

    fn build<'m>(&self, model: &'m LoadedModel, step: &StepParams) -> Result<MethodParts<'m>> {
        let resolved = Self::resolve(step)?;
        let calibration = resolved
            .calibration
            .unwrap_or_else(|| default_dir(&model.dir, false));
        let loaded = load_beside(&calibration, model, "calibration_fusion: calibration model")?;
        let map = match resolved.readout {
            Readout::Identity => None,
            fit => {
                let path = resolved
                    .align
                    .unwrap_or_else(|| AlignMap::default_path(&calibration, &model.dir, fit));
                let map = AlignMap::load(&path, &calibration, &model.dir)
                    .context("calibration_fusion: alignment map")?;
                if map.fit() != fit {
                    bail!(
                        "calibration_fusion: {} is a {} map but the entry's readout is {}",
                        path.display(),
                        map.fit().name(),
                        fit.name()
                    );
                }
                Some(map)
            }
        };
        Ok(MethodParts::steering(CalibrationFusion::new(
            loaded,
            map,
            &model.tokenizer,
            model.model.info().vocab_size,
            resolved.params,
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
            filter_p: spec.filter_p,
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
            description: "DExperts: the base logits cut to their top-p nucleus (filter_p), plus alpha times (expert logits minus anti-expert logits), both experts reading the whole text, sampled without further truncation; strength is alpha",
            params: derive_params::<DExpertsSpecParams>(DEXPERTS_DOCS),
            strength: Some(StrengthInfo::new(0.0, 100.0, 2.0)),
            // The reference truncates the base before the experts and samples from the result
            // with p = 1: the loop's top-p would cut a second time.
            full_distribution: true,
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
            ["calibration", "readout", "align", "norm"]
        );
        assert_eq!(
            names(DExpertsMethod.info()),
            ["expert", "anti_expert", "filter_p"]
        );
    }
}
