//! The methods this build knows: **one line per method**. A method crate exports a value that
//! implements [`decode::Method`] (its spec metadata, parameter check and decoder factory); adding
//! it here, and the crate to this crate's `Cargo.toml` and the workspace, is all it takes for specs
//! to name it, `detox list` to show it and `detox run` to decode with it (see
//! `docs/adding-a-method.md`).

use decode::Method;

/// Every registered method, `none` first.
pub fn methods() -> Vec<&'static dyn Method> {
    vec![
        &decode::NoMethod,
        &filter::WordFilterMethod,
        &sasa::SasaMethod,
        &rad::RadMethod,
        &fusion::CalibrationFusionMethod,
        &fusion::DExpertsMethod,
        &finetune::NadoMethod,
        &finetune::FinetunedMethod,
        &logit_bias::LogitBiasMethod,
    ]
}

/// The registered method called `name`.
pub fn method(name: &str) -> Option<&'static dyn Method> {
    methods().into_iter().find(|m| m.info().name == name)
}

/// What specs are validated against: every registered method's metadata.
pub fn spec_registry() -> spec::Registry {
    spec::Registry::with(methods().iter().map(|m| m.info()))
}

/// Loads and validates a spec against [`spec_registry`].
pub fn load_spec(path: &std::path::Path) -> Result<spec::Experiment, spec::SpecErrors> {
    spec::load_with(path, &spec_registry())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_none_comes_first() {
        let names: Vec<&str> = methods().iter().map(|m| m.info().name).collect();
        assert_eq!(names[0], "none");
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "{names:?}");
    }
}
