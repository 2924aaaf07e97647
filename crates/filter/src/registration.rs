//! `word_filter` as the harness registers it ([`WordFilterMethod`]): the spec's parameters
//! ([`WordFilterParams`]), their check, and the decoder parts (a decode-time ban, a post-hoc
//! redraw loop, or both).

use anyhow::{Context, Result};
use decode::{
    FilterOutcome, FilteredSample, LoopInputs, Method, MethodParts, SampleFilter, Steering,
    StepParams,
};
use lm::LoadedModel;
use method_info::{derive_params, MethodInfo, ParamDoc};
use serde::{Deserialize, Serialize};

use crate::list::{load_lists, ListRef};
use crate::method::{FilterMode, WordFilterConfig, DEFAULT_MAX_RETRIES};
use crate::posthoc::{generate_posthoc, PosthocFilter};

/// The `word_filter` parameters a spec may give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordFilterParams {
    pub mode: String,
    pub lists: String,
    pub max_retries: u64,
    pub text_rule: bool,
}

impl Default for WordFilterParams {
    fn default() -> Self {
        WordFilterParams {
            mode: FilterMode::default().name().to_owned(),
            lists: "rtp".to_owned(),
            max_retries: DEFAULT_MAX_RETRIES,
            text_rule: false,
        }
    }
}

const DOCS: &[ParamDoc] = &[
    ParamDoc::new(
        "mode",
        "decode: ban token sequences; posthoc: reject and redraw; both",
    )
    .choices(&FilterMode::NAMES),
    ParamDoc::new(
        "lists",
        "comma-separated: rtp (RealToxicityPrompts' list), ldnoobw, or list files (absolute paths)",
    ),
    ParamDoc::new(
        "max_retries",
        "post-hoc redraws per sample before the last draw is kept (flagged)",
    )
    .range(0.0, 1000.0),
    ParamDoc::new(
        "text_rule",
        "decode mode: also ban a token that would complete a listed word in the decoded text, however it is tokenized (false, the default: token sequences of the listed spellings only, RealToxicityPrompts' baseline)",
    )
    .labelled(),
];

impl WordFilterParams {
    /// The filter's configuration; the lists are read, so a missing list fails here, before a
    /// model loads.
    pub fn config(&self) -> Result<WordFilterConfig> {
        let config = WordFilterConfig {
            mode: self.mode.parse()?,
            lists: self
                .lists
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(ListRef::parse)
                .collect(),
            max_retries: self.max_retries,
            text_rule: self.text_rule,
        };
        load_lists(&config.lists).context("word_filter: lists")?;
        Ok(config)
    }
}

/// The `word_filter` method.
pub struct WordFilterMethod;

impl Method for WordFilterMethod {
    fn info(&self) -> MethodInfo {
        MethodInfo {
            name: "word_filter",
            description: "ban listed words while decoding (multi-token aware) and/or redraw finished samples that contain one",
            params: derive_params::<WordFilterParams>(DOCS),
            strength: None,
            full_distribution: false,
        }
    }

    fn check(&self, step: &StepParams) -> Result<()> {
        step.parse::<WordFilterParams>()?.config().map(drop)
    }

    fn filters_samples(&self, step: &StepParams) -> Result<bool> {
        Ok(step
            .parse::<WordFilterParams>()?
            .mode
            .parse::<FilterMode>()?
            .redraws_finished_samples())
    }

    fn build<'m>(&self, model: &'m LoadedModel, step: &StepParams) -> Result<MethodParts<'m>> {
        let built = step
            .parse::<WordFilterParams>()?
            .config()?
            .build(&model.tokenizer)?;
        Ok(MethodParts {
            steering: built.decode.map(|s| Box::new(s) as Box<dyn Steering + 'm>),
            sample_filter: built
                .posthoc
                .map(|f| Box::new(f) as Box<dyn SampleFilter + 'm>),
        })
    }
}

impl SampleFilter for PosthocFilter {
    fn generate(
        &self,
        inputs: LoopInputs<'_>,
        steering: &mut [Box<dyn Steering + '_>],
        sink: &mut dyn FnMut(FilteredSample) -> Result<()>,
    ) -> Result<FilterOutcome> {
        let totals = generate_posthoc(
            inputs.model,
            inputs.eos_token_ids,
            inputs.requests,
            inputs.settings,
            steering,
            self,
            inputs.tokenizer,
            |s| {
                sink(FilteredSample {
                    generation: s.generation,
                    text: s.text,
                    redraws: s.redraws,
                    still_matched: s.still_matched,
                })
            },
        )?;
        Ok(FilterOutcome {
            stats: totals.generation.clone(),
            counters: vec![
                (
                    "posthoc_rejected_first_draws".into(),
                    totals.rejected_first_draws as f64,
                ),
                ("posthoc_redraws".into(), totals.redraws as f64),
                ("posthoc_still_matched".into(), totals.still_matched as f64),
            ],
            summary: format!(
                "post-hoc word filter: {} of {} samples rejected at their first draw, {} redraws, {} still contain a listed word after the cap",
                totals.rejected_first_draws, totals.samples, totals.redraws, totals.still_matched
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_derives_the_parameters_and_their_defaults() {
        let info = WordFilterMethod.info();
        let names: Vec<&str> = info.params.iter().map(|p| p.name).collect();
        assert_eq!(names, ["mode", "lists", "max_retries", "text_rule"]);
        assert_eq!(
            info.param("max_retries").unwrap().default,
            Some(method_info::ParamDefault::Int(10))
        );
    }
}
