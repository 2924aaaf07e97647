//! From a cell's method (a spec `MethodRef`: one method or a stack) to what the decoder loop runs,
//! through the [`crate::registry`].

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use decode::{Method, SampleFilter, Steering, StepParams};
use lm::LoadedModel;
use spec::MethodRef;

/// A cell's method, checked against the registry.
pub struct ResolvedMethod {
    /// (method, its step) in application order; empty for plain sampling.
    steps: Vec<(&'static dyn Method, StepParams)>,
    /// The spec's steps, for the generations fingerprint.
    spec: Option<MethodRef>,
}

/// What one loaded model decodes with.
pub struct Decoding<'m> {
    /// In the spec's order.
    pub steering: Vec<Box<dyn Steering + 'm>>,
    /// At most one: it runs the decoder loop itself.
    pub sample_filter: Option<Box<dyn SampleFilter + 'm>>,
}

impl ResolvedMethod {
    /// Plain sampling.
    pub fn none() -> Self {
        ResolvedMethod {
            steps: Vec::new(),
            spec: None,
        }
    }

    /// Checks that every step names a registered method and that its parameters are good, before
    /// any model is loaded.
    pub fn from_spec(method: &MethodRef) -> Result<Self> {
        let mut steps = Vec::new();
        for step in &method.steps {
            let m = crate::registry::method(&step.name)
                .with_context(|| format!("method {:?} is not registered", step.name))?;
            let params = match serde_json::to_value(&step.params)? {
                serde_json::Value::Object(map) => map,
                other => bail!("{}: parameters are not a map: {other}", step.name),
            };
            let step = StepParams {
                name: step.name.clone(),
                params,
                strength: step.strength,
            };
            m.check(&step)?;
            steps.push((m, step));
        }
        let mut filters = 0;
        for (m, s) in &steps {
            filters += usize::from(m.filters_samples(s)?);
        }
        if filters > 1 {
            bail!("a stack may hold one post-hoc word filter, not {filters}");
        }
        let checkpoints = steps
            .iter()
            .filter(|(m, s)| matches!(m.checkpoint(s), Ok(Some(_))))
            .count();
        if checkpoints > 1 {
            bail!("a stack may decode with one checkpoint, not {checkpoints}");
        }
        Ok(ResolvedMethod {
            steps,
            spec: Some(method.clone()),
        })
    }

    /// The model folder that decodes instead of the cell's model (a fine-tuned variant). The
    /// cell's model stays the judge.
    pub fn weights(&self) -> Result<Option<PathBuf>> {
        for (method, step) in &self.steps {
            if let Some(dir) = method.checkpoint(step)? {
                return Ok(Some(dir));
            }
        }
        Ok(None)
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

    /// The steering methods (and sample filter) for one loaded model, in the spec's order.
    pub fn decoding<'m>(&self, model: &'m LoadedModel) -> Result<Decoding<'m>> {
        let mut decoding = Decoding {
            steering: Vec::new(),
            sample_filter: None,
        };
        for (method, step) in &self.steps {
            let parts = method.build(model, step)?;
            decoding.steering.extend(parts.steering);
            if let Some(filter) = parts.sample_filter {
                if decoding.sample_filter.is_some() {
                    bail!("a stack may hold one post-hoc filter");
                }
                decoding.sample_filter = Some(filter);
            }
        }
        Ok(decoding)
    }
}
