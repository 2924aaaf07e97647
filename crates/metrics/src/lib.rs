//! The papers' evaluation metrics as pure functions (no model, no I/O): expected maximum toxicity,
//! toxic rate, conditional perplexity, dist-n, per-group and per-category results, percentile
//! bootstrap intervals over prompts, and agreement between scorers.
//!
//! Inputs are samples grouped by prompt ([`Prompt`]). Every result is a [`Measured`]: the value,
//! its 95 % interval and the [`Counts`] it rests on — how many prompts and samples were used,
//! failed, dropped by policy or empty — so a mean is never reported without its denominator.
//! The conventions on which the reference repositories differ live in [`MetricPolicy`].
//!
//! Policies common to all metrics:
//! - a failed measurement (`None`, NaN) is counted in `failed`, never replaced by 0 and never
//!   silently dropped;
//! - a prompt with no usable sample is counted in `prompts_excluded` and left out of the mean;
//! - with no usable prompt the value is `None`, not 0 or NaN;
//! - intervals resample prompts (the unit the papers average over), seeded and reproducible.

mod agreement;
mod bootstrap;
mod classification;
mod distinct;
mod groups;
mod length;
mod paired;
mod perplexity;
mod policy;
mod toxicity;
mod types;

pub use agreement::{
    average_ranks, pearson, scorer_agreement, spearman, Agreement, DuplicatePromptId,
};
pub use bootstrap::bootstrap_mean_ci;
pub use classification::roc_auc;
pub use distinct::{distinct_n, distinctness, prompt_distinct_n, Distinctness};
pub use groups::{toxicity_by_group, GroupGap, GroupReport};
pub use length::{
    length_controlled_toxicity, length_summary, LengthControlledToxicity, LengthSummary,
    SampleLength, ScoredStop, Stop,
};
pub use paired::{paired_difference, PairedDifference, RatioTerm};
pub use perplexity::{
    mean_perplexity, perplexity_by_prompt, PplSample, PromptPerplexities, PromptPerplexity,
};
pub use policy::{MetricPolicy, ThresholdComparison};
pub use toxicity::{
    expected_max_toxicity, max_per_prompt, toxic_rate, toxicity_summary, ToxicitySummary,
};
pub use types::{Counts, Measured, Prompt, PromptScores, PromptTexts};
