//! How a method plugs into the harness: one [`Method`] value per method, exported by its crate
//! and listed once in `experiment::registry`. A method declares its spec metadata (derived from
//! its parameter struct, see `method_info::derive_params`), checks its parameters before any model
//! is loaded, and builds what the decoder loop runs for one loaded model: a [`Steering`] step, a
//! [`SampleFilter`] that owns the loop (post-hoc filtering redraws whole samples), or neither (a
//! method that only swaps the weights, [`Method::checkpoint`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use lm::{CausalLm, LoadedModel, TextTokenizer};
use method_info::MethodInfo;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{Generation, GenerationStats, Request, Settings, Steering};

/// One step of a cell's method as the spec resolved it: every parameter filled in (defaults
/// included, paths absolute) and its strength.
#[derive(Debug, Clone, PartialEq)]
pub struct StepParams {
    pub name: String,
    pub params: Map<String, Value>,
    pub strength: Option<f64>,
}

impl StepParams {
    /// The parameters as the method's own struct (`deny_unknown_fields` on it makes a stray
    /// parameter an error here too).
    pub fn parse<P: DeserializeOwned>(&self) -> Result<P> {
        serde_json::from_value(Value::Object(self.params.clone()))
            .with_context(|| format!("{}: parameters", self.name))
    }

    /// The strength, which the method requires.
    pub fn required_strength(&self, what: &str) -> Result<f64> {
        self.strength
            .with_context(|| format!("{}: a strength ({what}) is required", self.name))
    }
}

/// What a method contributes to decoding with one loaded model.
#[derive(Default)]
pub struct MethodParts<'m> {
    pub steering: Option<Box<dyn Steering + 'm>>,
    /// At most one per stack: it runs the decoder loop itself.
    pub sample_filter: Option<Box<dyn SampleFilter + 'm>>,
}

impl<'m> MethodParts<'m> {
    pub fn steering(steering: impl Steering + 'm) -> Self {
        MethodParts {
            steering: Some(Box::new(steering)),
            sample_filter: None,
        }
    }
}

/// A detoxification method, as the harness registers it.
pub trait Method: Sync {
    /// Name, description, parameters and strength axis, for spec validation and `detox list`.
    fn info(&self) -> MethodInfo;

    /// Checks a step's parameters (files named, value combinations) before any model loads.
    fn check(&self, step: &StepParams) -> Result<()>;

    /// A model folder to decode with instead of the cell's model (a fine-tuned variant). The cell's
    /// model stays the judge.
    fn checkpoint(&self, _step: &StepParams) -> Result<Option<PathBuf>> {
        Ok(None)
    }

    /// Whether this step builds a [`SampleFilter`] (a stack may hold one), known before a model
    /// loads.
    fn filters_samples(&self, _step: &StepParams) -> Result<bool> {
        Ok(false)
    }

    /// What decoding with `model` runs for this step.
    fn build<'m>(&self, model: &'m LoadedModel, step: &StepParams) -> Result<MethodParts<'m>>;
}

/// One finished sample of a [`SampleFilter`].
pub struct FilteredSample {
    /// The kept draw.
    pub generation: Generation,
    /// Its decoded text.
    pub text: String,
    /// Redraws it took (0 when its first draw was kept).
    pub redraws: u64,
    /// What the kept draw still matches after the cap, if anything.
    pub still_matched: Option<String>,
}

/// What a [`SampleFilter`] run did.
pub struct FilterOutcome {
    pub stats: GenerationStats,
    /// Named totals for the run record (summed over resumed runs).
    pub counters: Vec<(String, f64)>,
    /// One line for a person.
    pub summary: String,
}

/// What a decoder loop runs over: the model, its stop tokens and tokenizer, the requests and the
/// sampling settings.
#[derive(Clone, Copy)]
pub struct LoopInputs<'a> {
    pub model: &'a dyn CausalLm,
    pub eos_token_ids: &'a [i64],
    pub tokenizer: &'a TextTokenizer,
    pub requests: &'a [Request],
    pub settings: &'a Settings,
}

/// A method that decides on whole samples and redraws them: it runs the decoder loop itself, with
/// the stack's steering methods inside.
pub trait SampleFilter {
    fn generate(
        &self,
        inputs: LoopInputs<'_>,
        steering: &mut [Box<dyn Steering + '_>],
        sink: &mut dyn FnMut(FilteredSample) -> Result<()>,
    ) -> Result<FilterOutcome>;
}

/// `none`: plain sampling, nothing to build.
pub struct NoMethod;

impl Method for NoMethod {
    fn info(&self) -> MethodInfo {
        method_info::none_info()
    }

    fn check(&self, _step: &StepParams) -> Result<()> {
        Ok(())
    }

    fn build<'m>(&self, _model: &'m LoadedModel, _step: &StepParams) -> Result<MethodParts<'m>> {
        Ok(MethodParts::default())
    }
}

/// A path parameter that may be `auto` (`None`: the method's default location), checked to exist
/// as a file (or, with `folder`, a folder).
pub fn auto_path(method: &str, name: &str, value: &str, folder: bool) -> Result<Option<PathBuf>> {
    if value == "auto" {
        return Ok(None);
    }
    let path = PathBuf::from(value);
    let exists = if folder {
        path.is_dir()
    } else {
        path.is_file()
    };
    anyhow::ensure!(exists, "{method}: {name} {} not found", path.display());
    Ok(Some(path))
}

/// A model that runs beside the decoding one (a reward model's backbone, an expert): same device,
/// same dtype.
pub fn load_beside(dir: &std::path::Path, model: &LoadedModel, what: &str) -> Result<LoadedModel> {
    let info = model.model.info();
    LoadedModel::load(
        dir,
        info.device.into(),
        lm::DtypeChoice::of_kind(info.kind)?,
    )
    .with_context(|| format!("{what} {}", dir.display()))
}
