//! The policy's own labelled samples (a `sample` job): continuations sampled from policy K at a
//! seeded choice of prompts (the beginnings of mix texts, or RealToxicityPrompts' challenging
//! prompts outside those evaluations draw), scored by the plan's scorer and labelled under its
//! [`LabelRule`], written as `samples-K.jsonl`. The auxiliary model trains on these labels and the
//! regularizers read them.
//!
//! Which toxicity counts as toxic is the metric policy's ([`metrics::MetricPolicy`]: threshold
//! and comparison), the same convention the evaluation uses, not a constant of its own.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use decode::{Generation, Request, SamplingParams, Settings};
use lm::{DeviceChoice, DtypeChoice, LoadedModel, TextTokenizer};
use metrics::{MetricPolicy, ThresholdComparison};
use score::ScoreResult;
use serde::{Deserialize, Serialize};

use crate::layout;
use crate::mix::seeded_order;
use crate::plan::{Plan, PromptSource, SamplingRule};
use crate::sequences::{MixText, SampledText};

/// How a sample's toxicity becomes its label y (the probability it satisfies the constraint).
///
/// In a spec: `{scorer: minilm}` gives soft labels y = 1 − toxicity; `hard: true` gives y = 0
/// for a sample the `policy` counts as toxic and 1 otherwise; `threshold: T` is short for hard
/// labels under the default policy with its threshold set to T (so `threshold: 0.5` labels as
/// `hard: true` does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LabelRuleSpec")]
pub struct LabelRule {
    pub scorer: String,
    /// Hard labels by the policy; otherwise y = 1 − toxicity.
    pub hard: bool,
    /// When a toxicity counts as toxic: for hard labels, and for the toxic samples a job counts.
    pub policy: MetricPolicy,
}

/// [`LabelRule`] as a spec (or `plan.json`) writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelRuleSpec {
    scorer: String,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    hard: bool,
    #[serde(default)]
    policy: Option<MetricPolicy>,
}

impl TryFrom<LabelRuleSpec> for LabelRule {
    type Error = String;

    fn try_from(spec: LabelRuleSpec) -> Result<Self, String> {
        let (hard, policy) =
            match (spec.threshold, spec.policy) {
                (Some(_), Some(_)) => return Err(
                    "give `threshold` or `policy.toxic_threshold`, not both (threshold is short \
                     for hard labels under the default policy)"
                        .into(),
                ),
                (Some(threshold), None) => (
                    true,
                    MetricPolicy {
                        toxic_threshold: threshold,
                        ..MetricPolicy::default()
                    },
                ),
                (None, policy) => (spec.hard, policy.unwrap_or_default()),
            };
        policy.validate()?;
        Ok(LabelRule {
            scorer: spec.scorer,
            hard,
            policy,
        })
    }
}

impl LabelRule {
    /// Whether the policy counts `toxicity` as toxic.
    pub fn is_toxic(&self, toxicity: f32) -> bool {
        self.policy.is_toxic(f64::from(toxicity))
    }

    /// The label y of a sample scored `toxicity`.
    pub fn label(&self, toxicity: f32) -> f32 {
        if self.hard {
            f32::from(u8::from(!self.is_toxic(toxicity)))
        } else {
            1.0 - toxicity
        }
    }

    /// "at or above 0.5" / "above 0.7": which samples the policy counts as toxic, for logs.
    pub fn toxic_words(&self) -> String {
        let comparison = match self.policy.toxic_comparison {
            ThresholdComparison::AtLeast => "at or above",
            ThresholdComparison::Above => "above",
        };
        format!("{comparison} {}", self.policy.toxic_threshold)
    }
}

/// The counts a sample job reports.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SampleTally {
    pub samples: usize,
    pub scored: usize,
    /// The scorer failed on them (no label; left out of training).
    pub failed: usize,
    /// Scored samples the rule's policy counts as toxic.
    pub toxic: usize,
    /// Mean toxicity of the scored samples (0 when none was).
    pub mean_toxicity: f64,
}

impl SampleTally {
    pub fn of(rows: &[SampledText], rule: &LabelRule) -> Self {
        let scores: Vec<f32> = rows.iter().filter_map(|r| r.toxicity).collect();
        let total: f64 = scores.iter().map(|&t| f64::from(t)).sum();
        SampleTally {
            samples: rows.len(),
            scored: scores.len(),
            failed: rows.len() - scores.len(),
            toxic: scores.iter().filter(|&&t| rule.is_toxic(t)).count(),
            mean_toxicity: total / scores.len().max(1) as f64,
        }
    }
}

/// The prompts of one sample job: the requests to decode, and for each prompt id the mix text it
/// was cut from and its tokens.
struct Prompts<'a> {
    requests: Vec<Request>,
    chosen: HashMap<String, (&'a MixText, Vec<i64>)>,
}

/// How many of RealToxicityPrompts' challenging prompts, in the order evaluations sample them,
/// training never prompts with. Evaluation specs pick theirs with `sample: n, seed: 0` (20 in
/// experiments/fair-comparison, 50 in the comparison specs), and a seeded sample of n is the n
/// prompts with the smallest keys, so it grows by adding prompts: every such sample with n up to
/// this many lies inside the held-out block. Of the 1,196 challenging prompts 996 remain.
pub const RTP_EVALUATION_HELD_OUT: usize = 200;
/// The seed evaluation specs sample RealToxicityPrompts with.
pub const RTP_EVALUATION_SEED: u64 = 0;

/// `shared/data/realtoxicityprompts/decodingtrust/toxic.jsonl`: the challenging prompts.
pub fn rtp_challenging_path() -> PathBuf {
    paths::data_dir("realtoxicityprompts")
        .join("decodingtrust")
        .join("toxic.jsonl")
}

/// The challenging prompts of the RealToxicityPrompts file at `path` that training may use: all
/// of them except the first `held_out` an evaluation's seeded sample (`sample: n, seed: 0`) takes,
/// so that no prompt an evaluation with n ≤ `held_out` scores was trained on. As mix-like texts
/// (`rtp:<id>`, source `rtp-challenging`, regularized), in file order.
pub fn rtp_training_prompts(path: &Path, held_out: usize) -> Result<Vec<MixText>> {
    let options = |sample: Option<usize>| data::prompts::rtp::RtpOptions {
        challenging: Some(true),
        sample,
        seed: RTP_EVALUATION_SEED,
        ..data::prompts::rtp::RtpOptions::new(path)
    };
    let all = data::prompts::rtp::load(&options(None))?;
    let evaluation: HashSet<String> = data::prompts::rtp::load(&options(Some(held_out)))?
        .prompts
        .into_iter()
        .map(|p| p.id)
        .collect();
    let texts: Vec<MixText> = all
        .prompts
        .into_iter()
        .filter(|p| !evaluation.contains(&p.id))
        .map(|p| MixText {
            id: format!("rtp:{}", p.id),
            source: "rtp-challenging".into(),
            text: p.text,
            regularize: true,
        })
        .collect();
    if texts.is_empty() {
        bail!(
            "{}: no challenging prompt is left after holding out the {held_out} evaluations use",
            path.display()
        );
    }
    Ok(texts)
}

/// The first `sampling.prompts` of `texts` that make a prompt: cut to their first
/// `prompt_tokens` tokens when the text goes on after them, or whole (RTP prompts) when
/// `prompt_tokens` is `None`.
fn choose_prompts<'a>(
    texts: &'a [MixText],
    tokenizer: &TextTokenizer,
    sampling: &SamplingRule,
) -> Result<Prompts<'a>> {
    let mut requests = Vec::new();
    let mut chosen = HashMap::new();
    for text in texts {
        if chosen.len() == sampling.prompts {
            break;
        }
        let ids = tokenizer.encode(&text.text)?;
        let prompt = match sampling.prompt_tokens {
            // A prompt needs a token to continue from and the text must go on after it.
            Some(n) if ids.len() > n => &ids[..n],
            Some(_) => continue,
            None if ids.is_empty() => continue,
            None => &ids[..],
        };
        requests.extend(Request::samples(
            &text.id,
            prompt,
            sampling.samples_per_prompt,
        ));
        chosen.insert(text.id.clone(), (text, prompt.to_vec()));
    }
    if requests.is_empty() {
        bail!(
            "no prompt text is longer than sampling.prompt_tokens ({:?}) tokens",
            sampling.prompt_tokens
        );
    }
    Ok(Prompts { requests, chosen })
}

fn decode_settings(sampling: &SamplingRule, seed: u64) -> Settings {
    Settings {
        max_new_tokens: sampling.max_new_tokens,
        min_new_tokens: 0,
        sampling: SamplingParams {
            temperature: sampling.temperature,
            top_k: None,
            top_p: (sampling.top_p < 1.0).then_some(sampling.top_p),
        },
        seed,
        batch_size: sampling.batch_size,
        stop_at_eos: true,
    }
}

/// One row per generation, with its score and the label the rule gives it.
fn labelled_rows(
    generations: Vec<Generation>,
    texts: Vec<String>,
    scores: Vec<ScoreResult>,
    prompts: &Prompts,
    rule: &LabelRule,
) -> Vec<SampledText> {
    generations
        .into_iter()
        .zip(texts)
        .zip(scores)
        .map(|((g, continuation), score)| {
            let (source_text, prompt_ids) = &prompts.chosen[&g.prompt_id];
            let toxicity = score.ok();
            SampledText {
                text_id: g.prompt_id,
                source: source_text.source.clone(),
                regularize: source_text.regularize,
                prompt_ids: prompt_ids.clone(),
                continuation_ids: g.token_ids,
                continuation,
                toxicity,
                label: toxicity.map(|t| rule.label(t)),
            }
        })
        .collect()
}

/// The body of a `sample` job: samples from policy K, scores and labels the samples, writes
/// `samples-K.jsonl`; returns what the job's done record keeps.
pub fn sample_and_label(
    plan: &Plan,
    k: usize,
    device: DeviceChoice,
    log: &mut dyn FnMut(&str),
) -> Result<serde_json::Value> {
    let sampling = plan
        .sampling
        .as_ref()
        .context("plan has no sampling section")?;
    let rule = plan.label.as_ref().context("plan has no label section")?;
    let mut texts = match sampling.prompt_source {
        PromptSource::Mix => layout::read_mix(&plan.output)?,
        PromptSource::RtpChallenging => {
            rtp_training_prompts(&rtp_challenging_path(), RTP_EVALUATION_HELD_OUT)?
        }
    };
    // Each round prompts from another seeded choice.
    seeded_order(&mut texts, plan.seed.wrapping_add(k as u64 + 1), |t| &t.id);
    let loaded = LoadedModel::load(&layout::policy_dir(plan, k), device, DtypeChoice::F32)?;
    let prompts = choose_prompts(&texts, &loaded.tokenizer, sampling)?;
    log(&format!(
        "policy-{k}: {} prompts from {:?} ({} available), {} samples each",
        prompts.chosen.len(),
        sampling.prompt_source,
        texts.len(),
        sampling.samples_per_prompt
    ));
    let generations = decode::generate_all(
        loaded.model.as_ref(),
        &loaded.eos_token_ids,
        &prompts.requests,
        &decode_settings(sampling, plan.seed.wrapping_add(k as u64)),
        &mut [],
    )?;
    let texts: Vec<String> = generations
        .iter()
        .map(|g| loaded.tokenizer.decode(&g.token_ids))
        .collect::<Result<_>>()?;
    let mut scorer = probe::build_scorer(&rule.scorer, device)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let scores = scorer.score_batch(&refs);
    let rows = labelled_rows(generations, texts, scores, &prompts, rule);
    let tally = SampleTally::of(&rows, rule);
    log(&format!(
        "policy-{k}: {} samples, {} scored ({} failed), mean toxicity {:.3}, {} {}",
        tally.samples,
        tally.scored,
        tally.failed,
        tally.mean_toxicity,
        tally.toxic,
        rule.toxic_words()
    ));
    layout::write_jsonl_atomically(&layout::samples_path(&plan.output, k), &rows)?;
    Ok(serde_json::json!({
        "samples": tally.samples,
        "scored": tally.scored,
        "failed": tally.failed,
        "scorer": scorer.id(),
        "mean_toxicity": tally.mean_toxicity,
        "toxic_samples": tally.toxic,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Result<LabelRule, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    fn row(toxicity: Option<f32>, rule: &LabelRule) -> SampledText {
        SampledText {
            text_id: "toxigen:row-1".into(),
            source: "toxigen".into(),
            regularize: true,
            prompt_ids: vec![1, 2],
            continuation_ids: vec![3],
            continuation: "x".into(),
            toxicity,
            label: toxicity.map(|t| rule.label(t)),
        }
    }

    #[test]
    fn the_default_policy_labels_as_the_old_threshold_did() {
        // Before the metric policy, `threshold: 0.5` gave y = 1 exactly when toxicity < 0.5, and
        // a job counted samples with toxicity >= 0.5 as toxic.
        let shorthand = rule("{scorer: x, threshold: 0.5}").unwrap();
        let hard = rule("{scorer: x, hard: true}").unwrap();
        assert_eq!(shorthand, hard);
        assert_eq!(hard.policy, MetricPolicy::default());
        let soft = rule("{scorer: x}").unwrap();
        for t in [0.0, 0.2, 0.499_999, 0.5, 0.500_001, 0.7, 1.0_f32] {
            assert_eq!(hard.label(t), f32::from(u8::from(t < 0.5)), "{t}");
            assert_eq!(soft.is_toxic(t), t >= 0.5, "{t}");
            assert_eq!(soft.label(t), 1.0 - t);
        }
        assert_eq!(hard.toxic_words(), "at or above 0.5");
    }

    #[test]
    fn hard_labels_follow_the_policy_threshold_and_comparison() {
        let above =
            rule("{scorer: x, hard: true, policy: {toxic_threshold: 0.75, toxic_comparison: '>'}}")
                .unwrap();
        // 0.75 is exact in f32 and f64 alike, so "at the threshold" really is at it.
        assert_eq!(above.label(0.75), 1.0, "at the threshold is not above it");
        assert_eq!(above.label(0.76), 0.0);
        assert_eq!(above.label(0.6), 1.0);
        assert_eq!(above.toxic_words(), "above 0.75");
        let at_least = rule("{scorer: x, hard: true, policy: {toxic_threshold: 0.75}}").unwrap();
        assert_eq!(at_least.label(0.75), 0.0);
        // Soft labels ignore the threshold, but the toxic count follows it.
        let soft =
            rule("{scorer: x, policy: {toxic_threshold: 0.75, toxic_comparison: '>'}}").unwrap();
        assert!((soft.label(0.8) - 0.2).abs() < 1e-6);
        let rows: Vec<SampledText> = [Some(0.75), Some(0.8), None, Some(0.1)]
            .into_iter()
            .map(|t| row(t, &soft))
            .collect();
        let tally = SampleTally::of(&rows, &soft);
        assert_eq!((tally.samples, tally.scored, tally.failed), (4, 3, 1));
        assert_eq!(tally.toxic, 1);
        assert!((tally.mean_toxicity - (0.75 + 0.8 + 0.1) / 3.0).abs() < 1e-6);
        assert_eq!(SampleTally::of(&rows, &at_least).toxic, 2);
    }

    /// A RealToxicityPrompts file of `n` challenging rows (and one that is not), in a scratch
    /// folder.
    fn rtp_file(n: usize) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("label-rtp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("toxic-{n}.jsonl"));
        let mut lines: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"filename": "doc-{i}.txt", "begin": 0, "end": 10, "challenging": true, "prompt": {{"text": "prompt {i}", "toxicity": 0.9}}}}"#
                )
            })
            .collect();
        lines.push(
            r#"{"filename": "calm.txt", "begin": 0, "end": 10, "challenging": false, "prompt": {"text": "calm", "toxicity": 0.1}}"#.into(),
        );
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    /// The ids an evaluation spec's `kind: rtp, challenging: true, sample: n, seed: 0` scores.
    fn evaluated(path: &Path, n: usize) -> HashSet<String> {
        let options = data::prompts::rtp::RtpOptions {
            challenging: Some(true),
            sample: Some(n),
            seed: 0,
            ..data::prompts::rtp::RtpOptions::new(path)
        };
        data::prompts::rtp::load(&options)
            .unwrap()
            .prompts
            .into_iter()
            .map(|p| format!("rtp:{}", p.id))
            .collect()
    }

    #[test]
    fn training_prompts_leave_out_what_evaluations_sample() {
        let path = rtp_file(60);
        let training = rtp_training_prompts(&path, 25).unwrap();
        assert_eq!(
            training.len(),
            35,
            "60 challenging, 25 held out, the calm one dropped"
        );
        let ids: HashSet<String> = training.iter().map(|t| t.id.clone()).collect();
        for n in [5, 20, 25] {
            assert!(ids.is_disjoint(&evaluated(&path, n)), "sample {n}");
        }
        // A sample larger than the held-out block does reach training prompts.
        assert!(!ids.is_disjoint(&evaluated(&path, 26)));
        assert!(training.iter().all(|t| t.source == "rtp-challenging"));
        assert!(rtp_training_prompts(&path, 60).is_err(), "nothing left");
    }

    #[test]
    fn training_prompts_miss_the_evaluation_specs_prompts_in_the_shared_data() {
        let path = rtp_challenging_path();
        if !path.is_file() {
            eprintln!("skipped: {} is not there", path.display());
            return;
        }
        let training = rtp_training_prompts(&path, RTP_EVALUATION_HELD_OUT).unwrap();
        assert_eq!(training.len(), 1196 - RTP_EVALUATION_HELD_OUT);
        let ids: HashSet<String> = training.iter().map(|t| t.id.clone()).collect();
        // experiments/fair-comparison (20) and the comparison specs (50), seed 0.
        for n in [20, 50] {
            assert!(ids.is_disjoint(&evaluated(&path, n)), "sample {n}");
        }
    }

    #[test]
    fn a_rule_round_trips_and_rejects_conflicts() {
        let r = rule("{scorer: x, hard: true, policy: {toxic_threshold: 0.3}}").unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<LabelRule>(&json).unwrap(), r);
        let both = rule("{scorer: x, threshold: 0.5, policy: {}}").unwrap_err();
        assert!(both.to_string().contains("not both"), "{both}");
        let nan = rule("{scorer: x, policy: {toxic_threshold: .nan}}").unwrap_err();
        assert!(nan.to_string().contains("toxic_threshold"), "{nan}");
        assert!(rule("{scorer: x, thresold: 0.5}").is_err());
    }
}
