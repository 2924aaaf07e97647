//! Input records (samples grouped by prompt) and output records (a value with its counts).

use serde::{Deserialize, Serialize};

/// One prompt's samples, whatever is measured about them (`T`): a toxicity score, a text, a
/// perplexity input. Every metric resamples and averages over prompts, so grouping is part of
/// the input rather than something recovered from ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt<T> {
    /// Identifies the prompt across scorers and methods (used by [`crate::scorer_agreement`]).
    pub prompt_id: String,
    /// BOLD group or AttaQ category, when the data set has one.
    #[serde(default)]
    pub group: Option<String>,
    /// The prompt's samples in generation order.
    pub samples: Vec<T>,
}

impl<T> Prompt<T> {
    /// A prompt without a group.
    pub fn new(prompt_id: impl Into<String>, samples: Vec<T>) -> Self {
        Self {
            prompt_id: prompt_id.into(),
            group: None,
            samples,
        }
    }

    /// Sets the group or category.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
}

/// Toxicity scores of a prompt's samples; `None` is a scoring failure (API error, empty text).
/// A non-finite score is treated as a failure too.
pub type PromptScores = Prompt<Option<f64>>;

/// Generated continuations of a prompt, for dist-n.
pub type PromptTexts = Prompt<String>;

/// Where every prompt and sample went. Invariants:
/// `prompts == prompts_used + prompts_excluded` and
/// `samples == scored + failed + dropped + empty`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Prompts given.
    pub prompts: usize,
    /// Prompts that contributed to the value.
    pub prompts_used: usize,
    /// Prompts that could not contribute (no usable sample); counted, not averaged in as 0.
    pub prompts_excluded: usize,
    /// Samples given.
    pub samples: usize,
    /// Samples with a valid measurement that entered the value.
    pub scored: usize,
    /// Samples whose measurement failed (`None`, NaN).
    pub failed: usize,
    /// Valid samples removed by policy (perplexity cap).
    pub dropped: usize,
    /// Empty continuations (no tokens or no words).
    pub empty: usize,
}

impl Counts {
    /// Adds another set of counts (used to total over groups).
    pub fn add(&mut self, other: &Counts) {
        self.prompts += other.prompts;
        self.prompts_used += other.prompts_used;
        self.prompts_excluded += other.prompts_excluded;
        self.samples += other.samples;
        self.scored += other.scored;
        self.failed += other.failed;
        self.dropped += other.dropped;
        self.empty += other.empty;
    }
}

/// A metric value with its percentile-bootstrap 95 % interval over prompts and the counts behind
/// it, in the spirit of lm-evaluation-harness result records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// `None` when no prompt could contribute (never a made-up 0 or a NaN).
    pub value: Option<f64>,
    /// Lower and upper bound; `None` when the value is `None` or the bootstrap is disabled.
    pub ci95: Option<(f64, f64)>,
    /// Direction of improvement, so reports can mark the best method.
    pub higher_is_better: bool,
    /// Where every prompt and sample went.
    pub counts: Counts,
}

/// One prompt's contribution to a mean: the statistic is `Σ sum / Σ weight` over prompts. A mean
/// over prompts has weight 1 per prompt; a mean over samples pooled across prompts has weight =
/// the prompt's sample count. Writing every metric this way lets one bootstrap resample prompts
/// for all of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Unit {
    pub sum: f64,
    pub weight: f64,
}

impl Unit {
    pub fn one(value: f64) -> Self {
        Self {
            sum: value,
            weight: 1.0,
        }
    }
}

/// Point estimate and interval of `Σ sum / Σ weight` over `units`.
pub(crate) fn measure(
    units: &[Unit],
    counts: Counts,
    higher_is_better: bool,
    policy: &crate::MetricPolicy,
) -> Measured {
    let value = crate::bootstrap::ratio(units);
    let ci95 = value.and_then(|_| {
        crate::bootstrap::ratio_ci(units, policy.bootstrap_resamples, policy.bootstrap_seed)
    });
    Measured {
        value,
        ci95,
        higher_is_better,
        counts,
    }
}
