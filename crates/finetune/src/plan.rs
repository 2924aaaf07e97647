//! The YAML that drives `detox train finetune SPEC`, validated into a [`Plan`], and the job graph
//! of its schedule.
//!
//! Outputs of a run, all under the plan's output folder (index K counts fine-tuning rounds;
//! policy 0 is the base model, not copied):
//! - `samples-K.jsonl`: continuations sampled from policy K, scored and labelled;
//! - `auxiliary-K/`: the NADO auxiliary model of round K (a Hugging Face folder plus its head);
//! - `policy-K/`: the fine-tuned model after round K (a Hugging Face folder).
//!
//! Sequential round k: samples-(k−1) ← sample(policy-(k−1)); auxiliary-k ← train(auxiliary-(k−1),
//! samples-(k−1)); policy-k ← fine-tune(policy-(k−1), teacher policy-(k−1) × auxiliary-k,
//! samples-(k−1)). Parallel: round 1 as sequential; from round i = 2 on, three jobs at once, each
//! reading only what earlier rounds wrote: auxiliary-i ← train(auxiliary-(i−1), samples-(i−2));
//! policy-i ← fine-tune(policy-(i−1), teacher policy-(i−1) × auxiliary-(i−1), samples-(i−2));
//! samples-(i−1) ← sample(policy-(i−1)). The last round runs only the fine-tune job, since nothing
//! reads the others' outputs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use artifact::locations::{finetune_auxiliary_name, finetune_policy_name, finetune_samples_name};
use serde::{Deserialize, Serialize};

pub use crate::label::LabelRule;
use crate::nado::AuxiliaryOptions;
use crate::objective::{Adaptation, FinetuneOptions};

/// What the regularizer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The NADO teacher (posterior regularization): the paper's method.
    Nado,
    /// No regularizer: plain SFT (with `filter`, the data-filtering baseline).
    Sft,
    /// REINFORCE on 1 − toxicity of the policy's own samples.
    Reinforce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Sequential,
    Parallel,
}

/// Data sources a mix can draw from.
pub const MIX_SOURCES: [&str; 5] = ["toxigen", "jigsaw", "davidson", "paradetox", "wikitext2"];

/// One part of the training mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixPart {
    /// One of [`MIX_SOURCES`].
    pub source: String,
    /// At most this many texts (a seeded choice).
    pub limit: usize,
    /// Whether the KL term applies to samples started from this part (adaptive regularization
    /// sets it false on the constraint-irrelevant part, e.g. WikiText).
    #[serde(default = "yes")]
    pub regularize: bool,
}

fn yes() -> bool {
    true
}

/// The data-filtering baseline: texts scoring at or above `threshold` are dropped before training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    pub scorer: String,
    pub threshold: f64,
}

/// Where a sample job's prompts come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PromptSource {
    /// The beginnings of the run's mix texts, cut to `prompt_tokens` tokens.
    #[default]
    #[serde(rename = "mix")]
    Mix,
    /// RealToxicityPrompts' challenging prompts (`shared/data/realtoxicityprompts/decodingtrust/
    /// toxic.jsonl`), used whole: they elicit toxic continuations, so the samples carry the
    /// contrast the auxiliary model learns from. The prompts evaluations draw are held out (see
    /// [`crate::label::rtp_training_prompts`]).
    #[serde(rename = "rtp-challenging")]
    RtpChallenging,
}

/// Fewest samples per prompt objective nado accepts without `allow_few_samples`: with fewer,
/// the continuations of a prompt rarely differ enough in toxicity for R to tell next tokens
/// apart, and it learns mostly the prompt's toxicity, which is the same for every next token and
/// cancels out of q. The NADO reference draws 50–200 per prompt.
pub const MIN_NADO_SAMPLES_PER_PROMPT: u64 = 16;

/// How the policy's samples are drawn each round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingRule {
    /// Prompts per round (a seeded choice per round from the prompt source).
    pub prompts: usize,
    /// `mix` (the default) or `rtp-challenging`.
    #[serde(default)]
    pub prompt_source: PromptSource,
    /// Tokens of a mix text kept as its prompt: required with the `mix` source, and left out
    /// with `rtp-challenging`, whose prompts are used whole.
    #[serde(default)]
    pub prompt_tokens: Option<usize>,
    #[serde(default = "one")]
    pub samples_per_prompt: u64,
    /// Lets objective nado sample fewer than [`MIN_NADO_SAMPLES_PER_PROMPT`] per prompt: for
    /// smoke tests, and for the specs of runs made before the floor.
    #[serde(default)]
    pub allow_few_samples: bool,
    pub max_new_tokens: usize,
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    #[serde(default = "default_sample_batch")]
    pub batch_size: usize,
}

fn one() -> u64 {
    1
}
fn default_top_p() -> f64 {
    0.9
}
fn default_temperature() -> f64 {
    1.0
}
fn default_sample_batch() -> usize {
    16
}

/// The fine-tuning job's settings, as written in the spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneSection {
    #[serde(default = "full")]
    pub adaptation: Adaptation,
    pub learning_rate: f64,
    #[serde(default)]
    pub weight_decay: f64,
    pub batch_size: usize,
    #[serde(default = "default_accumulate")]
    pub accumulate: usize,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Mix texts are cut to this many tokens.
    pub max_tokens: usize,
}

fn full() -> Adaptation {
    Adaptation::Full
}
fn default_accumulate() -> usize {
    1
}
fn default_epochs() -> usize {
    1
}

impl FinetuneSection {
    pub fn options(&self) -> FinetuneOptions {
        FinetuneOptions {
            adaptation: self.adaptation.clone(),
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            accumulate: self.accumulate,
            epochs: self.epochs,
        }
    }
}

/// A fine-tuning spec as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    #[serde(default)]
    pub name: Option<String>,
    /// A model preset (`configs/models/<name>.yaml`) or a Hugging Face folder (relative paths
    /// are against the spec's folder).
    pub base: String,
    /// Relative to the spec's folder.
    pub output: PathBuf,
    pub objective: Objective,
    #[serde(default)]
    pub lambda: f64,
    #[serde(default = "sequential")]
    pub schedule: Schedule,
    pub iterations: usize,
    #[serde(default = "default_threads")]
    pub threads_per_job: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_device")]
    pub device: String,
    pub data: Vec<MixPart>,
    #[serde(default)]
    pub filter: Option<FilterRule>,
    #[serde(default)]
    pub sampling: Option<SamplingRule>,
    #[serde(default)]
    pub label: Option<LabelRule>,
    #[serde(default)]
    pub auxiliary: Option<AuxiliaryOptions>,
    /// Objective nado, one iteration: stop after the auxiliary model (sample, label, train R),
    /// without fine-tuning the policy. The `finetune` section is then read but unused.
    #[serde(default)]
    pub auxiliary_only: bool,
    pub finetune: FinetuneSection,
}

fn sequential() -> Schedule {
    Schedule::Sequential
}
fn default_threads() -> usize {
    1
}
fn default_device() -> String {
    "cpu".into()
}

/// A validated plan: every path absolute, every section the objective needs present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    /// The spec file it came from.
    pub spec: PathBuf,
    pub base: PathBuf,
    pub output: PathBuf,
    pub objective: Objective,
    pub lambda: f64,
    pub schedule: Schedule,
    pub iterations: usize,
    pub threads_per_job: usize,
    pub seed: u64,
    pub device: String,
    pub data: Vec<MixPart>,
    pub filter: Option<FilterRule>,
    pub sampling: Option<SamplingRule>,
    pub label: Option<LabelRule>,
    pub auxiliary: Option<AuxiliaryOptions>,
    #[serde(default)]
    pub auxiliary_only: bool,
    pub finetune: FinetuneSection,
}

impl Plan {
    /// The jobs of each round ([`rounds`]), without the fine-tuning job when the plan stops
    /// after the auxiliary model.
    pub fn rounds(&self) -> Vec<Vec<Job>> {
        let mut all = rounds(self.objective, self.schedule, self.iterations);
        if self.auxiliary_only {
            for round in &mut all {
                round.retain(|job| !matches!(job, Job::Finetune { .. }));
            }
        }
        all
    }
}

/// Reads and validates a spec; `resolve_base` turns `base` (a preset name or a path relative to
/// the spec's folder) into a model folder. Errors name the file and the field.
pub fn load(path: &Path, resolve_base: impl Fn(&str, &Path) -> Result<PathBuf>) -> Result<Plan> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let raw: RawPlan =
        serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    validate(raw, path, &dir, resolve_base)
}

fn validate(
    raw: RawPlan,
    path: &Path,
    dir: &Path,
    resolve_base: impl Fn(&str, &Path) -> Result<PathBuf>,
) -> Result<Plan> {
    let at =
        |field: &str, message: String| anyhow::anyhow!("{}: {field}: {message}", path.display());
    if !(raw.lambda >= 0.0 && raw.lambda.is_finite()) {
        return Err(at(
            "lambda",
            format!("must be a finite number >= 0, got {}", raw.lambda),
        ));
    }
    if raw.iterations == 0 {
        return Err(at("iterations", "must be at least 1".into()));
    }
    if raw.threads_per_job == 0 {
        return Err(at("threads_per_job", "must be at least 1".into()));
    }
    if raw.data.is_empty() {
        return Err(at("data", "the mix lists no source".into()));
    }
    for (i, part) in raw.data.iter().enumerate() {
        if !MIX_SOURCES.contains(&part.source.as_str()) {
            return Err(at(
                &format!("data[{i}].source"),
                format!(
                    "unknown source {:?} (expected one of: {})",
                    part.source,
                    MIX_SOURCES.join(", ")
                ),
            ));
        }
        if part.limit == 0 {
            return Err(at(&format!("data[{i}].limit"), "must be at least 1".into()));
        }
    }
    if let Some(filter) = &raw.filter {
        if !(0.0..=1.0).contains(&filter.threshold) {
            return Err(at(
                "filter.threshold",
                format!("must be in [0, 1], got {}", filter.threshold),
            ));
        }
    }
    let f = &raw.finetune;
    if f.batch_size == 0 || f.accumulate == 0 || f.epochs == 0 {
        return Err(at(
            "finetune",
            "batch_size, accumulate and epochs must be at least 1".into(),
        ));
    }
    if f.max_tokens < 2 {
        return Err(at("finetune.max_tokens", "must be at least 2".into()));
    }
    lm::train::check_rates(f.learning_rate, f.weight_decay).map_err(|e| {
        at(
            "finetune",
            e.to_string()
                .replace("--learning-rate", "learning_rate")
                .replace("--weight-decay", "weight_decay"),
        )
    })?;
    if let Adaptation::Lora(lora) = &f.adaptation {
        if lora.rank == 0 {
            return Err(at("finetune.adaptation.rank", "must be at least 1".into()));
        }
    }
    let needs_samples = raw.objective != Objective::Sft;
    if needs_samples {
        let Some(sampling) = &raw.sampling else {
            return Err(at(
                "sampling",
                format!(
                    "objective {:?} samples from the policy: give a sampling section",
                    raw.objective
                ),
            ));
        };
        if sampling.prompts == 0
            || sampling.max_new_tokens == 0
            || sampling.samples_per_prompt == 0
            || sampling.batch_size == 0
        {
            return Err(at(
                "sampling",
                "prompts, samples_per_prompt, max_new_tokens and batch_size must be at least 1"
                    .into(),
            ));
        }
        match (sampling.prompt_source, sampling.prompt_tokens) {
            (PromptSource::Mix, None | Some(0)) => {
                return Err(at(
                    "sampling.prompt_tokens",
                    "prompts cut from mix texts need a length of at least 1 token".into(),
                ))
            }
            (PromptSource::RtpChallenging, Some(_)) => {
                return Err(at(
                    "sampling.prompt_tokens",
                    "rtp-challenging prompts are used whole; leave prompt_tokens out".into(),
                ))
            }
            _ => {}
        }
        if raw.objective == Objective::Nado
            && sampling.samples_per_prompt < MIN_NADO_SAMPLES_PER_PROMPT
            && !sampling.allow_few_samples
        {
            return Err(at(
                "sampling.samples_per_prompt",
                format!(
                    "objective nado needs at least {MIN_NADO_SAMPLES_PER_PROMPT} samples per \
                     prompt, got {}: with fewer, a prompt's continuations rarely differ in \
                     toxicity, so the auxiliary model learns mostly the prompt's toxicity, which \
                     cancels out of q (the NADO reference draws 50-200); set \
                     sampling.allow_few_samples: true for a smoke test",
                    sampling.samples_per_prompt
                ),
            ));
        }
        if raw.label.is_none() {
            return Err(at(
                "label",
                "samples need a label rule (scorer, optional hard and policy)".into(),
            ));
        }
        if raw.lambda == 0.0 {
            return Err(at(
                "lambda",
                format!(
                    "objective {:?} with lambda 0 is plain SFT; use objective sft",
                    raw.objective
                ),
            ));
        }
    } else if raw.lambda != 0.0 {
        return Err(at(
            "lambda",
            "objective sft has no regularizer; leave lambda out".into(),
        ));
    }
    match raw.objective {
        Objective::Nado => {
            let Some(aux) = &raw.auxiliary else {
                return Err(at("auxiliary", "objective nado needs an auxiliary section (layers, epochs, learning_rate, batch_size)".into()));
            };
            if aux.layers == 0 || aux.epochs == 0 || aux.batch_size == 0 {
                return Err(at(
                    "auxiliary",
                    "layers, epochs and batch_size must be at least 1".into(),
                ));
            }
            lm::train::check_rates(aux.learning_rate, aux.weight_decay)
                .map_err(|e| at("auxiliary", e.to_string()))?;
            if !(aux.consistency >= 0.0 && aux.consistency.is_finite()) {
                return Err(at(
                    "auxiliary.consistency",
                    format!("must be a finite number >= 0, got {}", aux.consistency),
                ));
            }
            if raw.auxiliary_only && raw.iterations != 1 {
                return Err(at(
                    "auxiliary_only",
                    format!(
                        "stops after round 1's auxiliary model; iterations must be 1, got {}",
                        raw.iterations
                    ),
                ));
            }
        }
        Objective::Sft | Objective::Reinforce => {
            if raw.auxiliary_only {
                return Err(at(
                    "auxiliary_only",
                    format!("objective {:?} has no auxiliary model", raw.objective),
                ));
            }
            if raw.schedule == Schedule::Parallel {
                return Err(at(
                    "schedule",
                    format!(
                        "parallel updates are defined for objective nado only, not {:?}",
                        raw.objective
                    ),
                ));
            }
        }
    }
    let base = resolve_base(&raw.base, dir).map_err(|e| at("base", format!("{e:#}")))?;
    let output = paths::normalize(&dir.join(&raw.output));
    let name = raw.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(Plan {
        name,
        spec: path.to_path_buf(),
        base,
        output,
        objective: raw.objective,
        lambda: raw.lambda,
        schedule: raw.schedule,
        iterations: raw.iterations,
        threads_per_job: raw.threads_per_job,
        seed: raw.seed,
        device: raw.device,
        data: raw.data,
        filter: raw.filter,
        sampling: raw.sampling,
        label: raw.label,
        auxiliary: raw.auxiliary,
        auxiliary_only: raw.auxiliary_only,
        finetune: raw.finetune,
    })
}

/// One job of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// samples-`policy` ← sample(policy-`policy`), scored and labelled.
    Sample { policy: usize },
    /// auxiliary-`out` ← train(auxiliary-`out − 1` (a fresh one from the base's first blocks
    /// when `out` is 1), samples-`samples`).
    Auxiliary { out: usize, samples: usize },
    /// policy-`out` ← fine-tune(policy-`out − 1`) with the regularizer's inputs.
    Finetune {
        out: usize,
        auxiliary: Option<usize>,
        samples: Option<usize>,
    },
}

impl Job {
    /// The job's name: the output it writes.
    pub fn name(&self) -> String {
        match self {
            Job::Sample { policy } => finetune_samples_name(*policy),
            Job::Auxiliary { out, .. } => finetune_auxiliary_name(*out),
            Job::Finetune { out, .. } => finetune_policy_name(*out),
        }
    }

    /// The outputs (by name) the job reads; policy-0 is the base and always there.
    pub fn inputs(&self) -> Vec<String> {
        let policy = |k: usize| (k > 0).then(|| finetune_policy_name(k));
        match self {
            Job::Sample { policy: k } => policy(*k).into_iter().collect(),
            Job::Auxiliary { out, samples } => (*out > 1)
                .then(|| finetune_auxiliary_name(out - 1))
                .into_iter()
                .chain([finetune_samples_name(*samples)])
                .collect(),
            Job::Finetune {
                out,
                auxiliary,
                samples,
            } => policy(out - 1)
                .into_iter()
                .chain(auxiliary.map(finetune_auxiliary_name))
                .chain(samples.map(finetune_samples_name))
                .collect(),
        }
    }
}

/// Whether no job of `round` reads another's output, so they may run at once (a parallel
/// schedule's rounds after the first).
pub fn independent(round: &[Job]) -> bool {
    let names: Vec<String> = round.iter().map(Job::name).collect();
    round
        .iter()
        .all(|job| job.inputs().iter().all(|input| !names.contains(input)))
}

/// The jobs of each round, in the order a sequential run takes them; a parallel round's jobs
/// run at once.
pub fn rounds(objective: Objective, schedule: Schedule, iterations: usize) -> Vec<Vec<Job>> {
    (1..=iterations)
        .map(|k| match (objective, schedule) {
            (Objective::Sft, _) => vec![Job::Finetune {
                out: k,
                auxiliary: None,
                samples: None,
            }],
            (Objective::Reinforce, _) => vec![
                Job::Sample { policy: k - 1 },
                Job::Finetune {
                    out: k,
                    auxiliary: None,
                    samples: Some(k - 1),
                },
            ],
            (Objective::Nado, _) if k == 1 || schedule == Schedule::Sequential => {
                vec![
                    Job::Sample { policy: k - 1 },
                    Job::Auxiliary {
                        out: k,
                        samples: k - 1,
                    },
                    Job::Finetune {
                        out: k,
                        auxiliary: Some(k),
                        samples: Some(k - 1),
                    },
                ]
            }
            (Objective::Nado, _) => {
                let finetune = Job::Finetune {
                    out: k,
                    auxiliary: Some(k - 1),
                    samples: Some(k - 2),
                };
                if k == iterations {
                    vec![finetune]
                } else {
                    vec![
                        Job::Sample { policy: k - 1 },
                        Job::Auxiliary {
                            out: k,
                            samples: k - 2,
                        },
                        finetune,
                    ]
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every job reads only what an earlier round wrote, or an earlier job of its own round when
    /// the round runs its jobs one after another.
    fn check_dependencies(rounds: &[Vec<Job>]) {
        let mut written: Vec<String> = Vec::new();
        for round in rounds {
            let at_once = independent(round);
            let mut this_round = Vec::new();
            for job in round {
                for input in job.inputs() {
                    assert!(
                        written.contains(&input) || (!at_once && this_round.contains(&input)),
                        "{} reads {input}, not yet written",
                        job.name()
                    );
                }
                this_round.push(job.name());
            }
            written.extend(this_round);
        }
    }

    #[test]
    fn parallel_rounds_read_only_earlier_rounds() {
        let parallel = rounds(Objective::Nado, Schedule::Parallel, 4);
        check_dependencies(&parallel);
        let at_once: Vec<bool> = parallel.iter().map(|r| independent(r)).collect();
        assert_eq!(at_once, [false, true, true, true]);
        assert_eq!(parallel[1].len(), 3);
        assert_eq!(
            parallel[3],
            vec![Job::Finetune {
                out: 4,
                auxiliary: Some(3),
                samples: Some(2)
            }]
        );
        assert_eq!(
            parallel[2],
            vec![
                Job::Sample { policy: 2 },
                Job::Auxiliary { out: 3, samples: 1 },
                Job::Finetune {
                    out: 3,
                    auxiliary: Some(2),
                    samples: Some(1)
                },
            ]
        );
        // Sequential rounds feed each job into the next, so none may run at once.
        let sequential = rounds(Objective::Nado, Schedule::Sequential, 4);
        check_dependencies(&sequential);
        assert!(sequential.iter().all(|r| !independent(r)));
        assert_eq!(
            sequential[3][2],
            Job::Finetune {
                out: 4,
                auxiliary: Some(4),
                samples: Some(3)
            }
        );
        check_dependencies(&rounds(Objective::Reinforce, Schedule::Sequential, 3));
        check_dependencies(&rounds(Objective::Sft, Schedule::Sequential, 2));
    }

    fn raw(extra: &str) -> String {
        format!(
            "base: tiny\noutput: out\nobjective: nado\nlambda: 0.5\niterations: 2\n\
             data:\n  - {{source: toxigen, limit: 10}}\n\
             sampling: {{prompts: 4, prompt_tokens: 3, samples_per_prompt: 16, max_new_tokens: 5}}\n\
             label: {{scorer: profanity}}\n\
             auxiliary: {{layers: 1, epochs: 1, learning_rate: 0.001, batch_size: 4}}\n\
             finetune: {{learning_rate: 0.0001, batch_size: 2, max_tokens: 16}}\n{extra}"
        )
    }

    fn check(text: &str) -> Result<Plan> {
        let dir = std::env::temp_dir().join(format!("plan-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("spec-{}.yaml", paths::stable_hash(text.as_bytes())));
        std::fs::write(&path, text).unwrap();
        load(&path, |_, d| Ok(d.join("model")))
    }

    #[test]
    fn bad_specs_name_the_field() {
        let plan = check(&raw("")).unwrap();
        assert_eq!(plan.schedule, Schedule::Sequential);
        assert!(plan.output.is_absolute());
        let err = |s: &str| format!("{:#}", check(s).unwrap_err());
        assert!(err(&raw("").replace("lambda: 0.5", "lambda: -1"))
            .contains("lambda: must be a finite number >= 0"));
        assert!(err(
            &raw("schedule: parallel\n").replace("objective: nado", "objective: reinforce")
        )
        .contains("schedule: parallel updates"));
        assert!(err(&raw("").replace("toxigen", "wiki"))
            .contains("data[0].source: unknown source \"wiki\""));
        assert!(err(&raw("extra: 1\n")).contains("unknown field `extra`"));
        assert!(err(&raw("").replace(
            "auxiliary: {layers: 1, epochs: 1, learning_rate: 0.001, batch_size: 4}\n",
            ""
        ))
        .contains("auxiliary: objective nado needs"));
        let lora = raw("").replace(
            "finetune: {",
            "finetune: {adaptation: {mode: lora, rank: 0}, ",
        );
        assert!(err(&lora).contains("finetune.adaptation.rank: must be at least 1"));
        let rule =
            check(&raw("").replace("{scorer: profanity}", "{scorer: profanity, threshold: 0.5}"))
                .unwrap()
                .label
                .unwrap();
        assert_eq!((rule.label(0.7), rule.label(0.2)), (0.0, 1.0));
        assert!(err(&raw("").replace(
            "{scorer: profanity}",
            "{scorer: profanity, threshold: 0.5, policy: {}}"
        ))
        .contains("not both"));
        assert_eq!(plan.auxiliary.unwrap().consistency, 1.0, "on by default");
        assert!(
            err(&raw("").replace("batch_size: 4}", "batch_size: 4, consistency: -1}"))
                .contains("auxiliary.consistency: must be a finite number >= 0")
        );
    }

    #[test]
    fn nado_needs_enough_samples_per_prompt_unless_told_otherwise() {
        let err = |s: &str| format!("{:#}", check(s).unwrap_err());
        let few = raw("").replace("samples_per_prompt: 16", "samples_per_prompt: 2");
        assert!(err(&few).contains("sampling.samples_per_prompt: objective nado needs at least 16"));
        let allowed = few.replace(
            "max_new_tokens: 5}",
            "max_new_tokens: 5, allow_few_samples: true}",
        );
        assert_eq!(
            check(&allowed)
                .unwrap()
                .sampling
                .unwrap()
                .samples_per_prompt,
            2
        );
        // REINFORCE has no auxiliary model to starve.
        assert!(check(&few.replace("objective: nado", "objective: reinforce")).is_ok());
    }

    #[test]
    fn rtp_prompts_are_whole_and_auxiliary_only_stops_before_finetuning() {
        let err = |s: &str| format!("{:#}", check(s).unwrap_err());
        let rtp = raw("").replace("prompt_tokens: 3", "prompt_source: rtp-challenging");
        let plan = check(&rtp).unwrap();
        assert_eq!(
            plan.sampling.as_ref().unwrap().prompt_source,
            PromptSource::RtpChallenging
        );
        assert!(err(&raw("").replace(
            "prompt_tokens: 3",
            "prompt_source: rtp-challenging, prompt_tokens: 3"
        ))
        .contains("sampling.prompt_tokens: rtp-challenging prompts are used whole"));
        assert!(err(&raw("").replace("prompt_tokens: 3, ", ""))
            .contains("sampling.prompt_tokens: prompts cut from mix texts"));
        assert!(err(&raw("auxiliary_only: true\n")).contains("auxiliary_only: stops after round 1"));
        let only = check(&raw("auxiliary_only: true\n").replace("iterations: 2", "iterations: 1"))
            .unwrap();
        assert_eq!(
            only.rounds(),
            vec![vec![
                Job::Sample { policy: 0 },
                Job::Auxiliary { out: 1, samples: 0 }
            ]]
        );
        assert!(err(&raw("auxiliary_only: true\n")
            .replace("iterations: 2", "iterations: 1")
            .replace("objective: nado", "objective: reinforce"))
        .contains("auxiliary_only: objective Reinforce has no auxiliary model"));
    }
}
