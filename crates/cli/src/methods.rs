//! From a cell's method (a spec `MethodRef`) to what the decoder loop runs: the steering methods
//! in the order the spec lists them, and a post-hoc filter when one asks for it. Each method
//! crate registers its spec entry in `spec::BUILTIN_METHODS` and is built here.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use decode::Steering;
use filter::{FilterMode, ListRef, PosthocFilter, WordFilterConfig};
use fusion::{AlignMap, CalibrationFusion, DExperts, DExpertsParams, FusionParams};
use lm::{DtypeChoice, LoadedModel};
use rad::{Rad, RadParams, RewardHead, RewardModel};
use sasa::{MarginTransform, Sasa, SasaParams, Subspace};
use spec::{MethodRef, MethodStep, ParamValue};

use crate::train_fusion::default_calibration_dir;

/// A resolved decoding method.
pub struct Method {
    spec: Option<MethodRef>,
}

/// What one loaded model decodes with.
pub struct Decoding<'m> {
    pub steering: Vec<Box<dyn Steering + 'm>>,
    /// At most one post-hoc filter (a stack with two would redraw for either).
    pub posthoc: Option<PosthocFilter>,
}

impl Method {
    /// Plain sampling.
    pub fn none() -> Self {
        Method { spec: None }
    }

    /// Checks every step names a method this binary can decode with and that its parameters
    /// parse, before any model is loaded.
    pub fn from_spec(method: &MethodRef) -> Result<Self> {
        let mut posthoc_steps = 0;
        for step in &method.steps {
            match step.name.as_str() {
                "none" => {}
                "word_filter" => {
                    let config = word_filter_config(step)?;
                    if config.mode.redraws_finished_samples() {
                        posthoc_steps += 1;
                    }
                }
                "sasa" => {
                    sasa_params(step)?;
                }
                "rad" => {
                    rad_params(step)?;
                }
                "calibration_fusion" => {
                    fusion_params(step)?;
                }
                "dexperts" => {
                    dexperts_params(step)?;
                }
                "nado" => {
                    nado_params(step)?;
                }
                "finetuned" => {
                    finetuned_checkpoint(step)?;
                }
                other => bail!("method {other:?} is registered but has no decoder"),
            }
        }
        if posthoc_steps > 1 {
            bail!("a stack may hold one post-hoc word filter, not {posthoc_steps}");
        }
        Ok(Method {
            spec: Some(method.clone()),
        })
    }

    /// The model folder that decodes instead of the cell's model: a fine-tuned variant
    /// (`finetuned`), whose strength λ only labels the cell. The cell's model stays the judge.
    pub fn weights(&self) -> Option<PathBuf> {
        let spec = self.spec.as_ref()?;
        spec.steps
            .iter()
            .find(|s| s.name == "finetuned")
            .and_then(|step| finetuned_checkpoint(step).ok())
    }

    /// What distinguishes this method's samples from plain sampling (`None` for plain sampling):
    /// part of the generations file's settings fingerprint.
    pub fn identity(&self) -> Option<String> {
        let spec = self.spec.as_ref()?;
        if spec.steps.iter().all(|s| s.name == "none") {
            return None;
        }
        Some(spec::canonical_json(
            &serde_json::to_value(&spec.steps).ok()?,
        ))
    }

    /// The steering methods (and post-hoc filter) for one loaded model, in the spec's order.
    pub fn decoding<'m>(&self, model: &'m LoadedModel) -> Result<Decoding<'m>> {
        let mut decoding = Decoding {
            steering: Vec::new(),
            posthoc: None,
        };
        let Some(spec) = &self.spec else {
            return Ok(decoding);
        };
        for step in &spec.steps {
            match step.name.as_str() {
                "none" => {}
                "word_filter" => {
                    let built = word_filter_config(step)?.build(&model.tokenizer)?;
                    if let Some(steering) = built.decode {
                        decoding.steering.push(Box::new(steering));
                    }
                    if built.posthoc.is_some() {
                        decoding.posthoc = built.posthoc;
                    }
                }
                "sasa" => {
                    let (params, subspace) = sasa_params(step)?;
                    let path = subspace.unwrap_or_else(|| Subspace::default_path(&model.dir));
                    let sasa = Sasa::load(&path, &model.dir, params)
                        .with_context(|| format!("sasa: subspace {}", path.display()))?;
                    decoding.steering.push(Box::new(sasa));
                }
                "rad" => {
                    let (params, head, backbone) = rad_params(step)?;
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
                    decoding
                        .steering
                        .push(Box::new(Rad::new(reward, &model.tokenizer, params)?));
                }
                "calibration_fusion" => {
                    let (params, calibration, align) = fusion_params(step)?;
                    let calibration =
                        calibration.unwrap_or_else(|| default_calibration_dir(&model.dir, false));
                    let align =
                        align.unwrap_or_else(|| AlignMap::default_path(&calibration, &model.dir));
                    let info = model.model.info();
                    let loaded =
                        load_beside(&calibration, model, "calibration_fusion: calibration model")?;
                    let map = AlignMap::load(&align, &calibration, &model.dir)
                        .context("calibration_fusion: alignment map")?;
                    decoding.steering.push(Box::new(CalibrationFusion::new(
                        loaded,
                        map,
                        &model.tokenizer,
                        info.vocab_size,
                        params,
                    )?));
                }
                "dexperts" => {
                    let (params, expert, anti) = dexperts_params(step)?;
                    let expert =
                        expert.unwrap_or_else(|| default_calibration_dir(&model.dir, false));
                    let anti = anti.unwrap_or_else(|| default_calibration_dir(&model.dir, true));
                    decoding.steering.push(Box::new(DExperts::new(
                        load_beside(&expert, model, "dexperts: expert")?,
                        load_beside(&anti, model, "dexperts: anti-expert")?,
                        &model.tokenizer,
                        model.model.info().vocab_size,
                        params,
                    )?));
                }
                "nado" => {
                    let (params, auxiliary) = nado_params(step)?;
                    let info = model.model.info();
                    let auxiliary = finetune::Auxiliary::load(
                        &auxiliary,
                        info.device.into(),
                        DtypeChoice::of_kind(info.kind)?,
                    )
                    .with_context(|| format!("nado: auxiliary model {}", auxiliary.display()))?;
                    decoding.steering.push(Box::new(finetune::NadoDecoding::new(
                        auxiliary,
                        &model.tokenizer,
                        info.vocab_size,
                        params,
                    )?));
                }
                // The checkpoint was loaded in place of the cell's model (`Method::weights`).
                "finetuned" => {}
                other => bail!("method {other:?} has no decoder"),
            }
        }
        Ok(decoding)
    }
}

fn string<'a>(step: &'a MethodStep, name: &str) -> Result<&'a str> {
    match step.params.get(name) {
        Some(ParamValue::String(s)) => Ok(s),
        other => bail!("{}: parameter {name} is {other:?}, not a string", step.name),
    }
}

fn path(step: &MethodStep, name: &str) -> Result<PathBuf> {
    match step.params.get(name) {
        Some(ParamValue::Path(p)) => Ok(p.clone()),
        other => bail!("{}: parameter {name} is {other:?}, not a path", step.name),
    }
}

fn int(step: &MethodStep, name: &str) -> Result<i64> {
    match step.params.get(name) {
        Some(ParamValue::Int(x)) => Ok(*x),
        other => bail!(
            "{}: parameter {name} is {other:?}, not an integer",
            step.name
        ),
    }
}

fn word_filter_config(step: &MethodStep) -> Result<WordFilterConfig> {
    let mode: FilterMode = string(step, "mode")?.parse()?;
    let lists: Vec<ListRef> = string(step, "lists")?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(ListRef::parse)
        .collect();
    let max_retries = u64::try_from(int(step, "max_retries")?)
        .context("word_filter: max_retries must be >= 0")?;
    let text_rule = match step.params.get("text_rule") {
        Some(ParamValue::Bool(b)) => *b,
        other => bail!("word_filter: parameter text_rule is {other:?}, not a boolean"),
    };
    let config = WordFilterConfig {
        mode,
        lists,
        max_retries,
        text_rule,
    };
    // Fails early (before a model loads) on a list that does not exist.
    filter::load_lists(&config.lists).context("word_filter: lists")?;
    Ok(config)
}

/// SASA's parameters and its subspace file (`None`: the model's default).
fn sasa_params(step: &MethodStep) -> Result<(SasaParams, Option<PathBuf>)> {
    let beta = step
        .strength
        .context("sasa: a strength (beta) is required")?;
    let margin_transform: MarginTransform = string(step, "margin_transform")?.parse()?;
    let cap = int(step, "max_candidates")?;
    let params = SasaParams {
        beta,
        margin_transform,
        max_candidates: (cap > 0).then_some(cap as usize),
    };
    params.validate()?;
    Ok((params, auto_path(step, "subspace", false)?))
}

/// A path parameter that may be `auto` (`None`), checked to exist.
fn auto_path(step: &MethodStep, name: &str, folder: bool) -> Result<Option<PathBuf>> {
    match string(step, name)? {
        "auto" => Ok(None),
        path => {
            let path = PathBuf::from(path);
            if !(if folder {
                path.is_dir()
            } else {
                path.is_file()
            }) {
                bail!("{}: {name} {} not found", step.name, path.display());
            }
            Ok(Some(path))
        }
    }
}

/// A model that runs beside the decoding one: same device, same dtype.
fn load_beside(dir: &std::path::Path, model: &LoadedModel, what: &str) -> Result<LoadedModel> {
    let info = model.model.info();
    LoadedModel::load(dir, info.device.into(), DtypeChoice::of_kind(info.kind)?)
        .with_context(|| format!("{what} {}", dir.display()))
}

/// Fusion's α, its calibration model folder and its alignment map (`None`: the defaults).
fn fusion_params(step: &MethodStep) -> Result<(FusionParams, Option<PathBuf>, Option<PathBuf>)> {
    let alpha = step
        .strength
        .context("calibration_fusion: a strength (alpha) is required")?;
    let params = FusionParams { alpha };
    params.validate()?;
    Ok((
        params,
        auto_path(step, "calibration", true)?,
        auto_path(step, "align", false)?,
    ))
}

/// DExperts' α and its expert and anti-expert folders (`None`: the defaults).
fn dexperts_params(
    step: &MethodStep,
) -> Result<(DExpertsParams, Option<PathBuf>, Option<PathBuf>)> {
    let alpha = step
        .strength
        .context("dexperts: a strength (alpha) is required")?;
    let params = DExpertsParams { alpha };
    params.validate()?;
    Ok((
        params,
        auto_path(step, "expert", true)?,
        auto_path(step, "anti_expert", true)?,
    ))
}

/// RAD's parameters, its reward-head file and its backbone folder (`None`: the model's own).
fn rad_params(step: &MethodStep) -> Result<(RadParams, Option<PathBuf>, Option<PathBuf>)> {
    let beta = step
        .strength
        .context("rad: a strength (beta) is required")?;
    let top_k = usize::try_from(int(step, "top_k")?).context("rad: top_k must be >= 1")?;
    let params = RadParams { beta, top_k };
    params.validate()?;
    Ok((
        params,
        auto_path(step, "reward", false)?,
        auto_path(step, "backbone", true)?,
    ))
}

/// NADO decoding's α and its auxiliary model folder (required: it is trained per base model by
/// `detox train finetune`).
fn nado_params(step: &MethodStep) -> Result<(finetune::NadoParams, PathBuf)> {
    let alpha = step
        .strength
        .context("nado: a strength (alpha) is required")?;
    let params = finetune::NadoParams { alpha };
    params.validate()?;
    let dir = path(step, "auxiliary")?;
    if !dir.join(finetune::nado::HEAD_FILE).is_file() {
        bail!(
            "nado: {} is not an auxiliary model (no {})",
            dir.display(),
            finetune::nado::HEAD_FILE
        );
    }
    Ok((params, dir))
}

/// A fine-tuned variant's checkpoint folder, checked to be a model folder.
fn finetuned_checkpoint(step: &MethodStep) -> Result<PathBuf> {
    let dir = path(step, "checkpoint")?;
    if !dir.join("config.json").is_file() {
        bail!(
            "finetuned: checkpoint {} is not a model folder (no config.json); train it with `detox train finetune`",
            dir.display()
        );
    }
    Ok(dir)
}
