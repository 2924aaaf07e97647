//! The evaluate stage: the protocol's metrics (METHODS.md §0) of one cell's generations, its score
//! files and optionally a judge LM, as one [`MetricsRecord`].
//!
//! For every scorer: expected maximum toxicity, toxic rate, toxic sample fraction and mean
//! toxicity, each with its bootstrap interval and counts, the failures by kind, and per-group
//! results with the largest toxic-rate gap when the generations carry a `group`. Over the texts:
//! dist-1/2/3. With two or more scorers: Spearman agreement of per-prompt maximum toxicity for
//! every pair. With a judge: conditional perplexity of each continuation given its prompt (and
//! per prompt, the kept perplexities' sum and count, which paired comparisons resample). Length
//! and stopping (mean tokens and words, end-of-sequence, empty and at-the-limit shares) over all
//! samples and over each scorer's scored samples, and each scorer's toxicity over the samples
//! that reached the length limit (`metrics::length`).
//!
//! Inputs are checked, not trusted ([`CellSamples`]): every generation must have exactly one score
//! in every score file, and every score must belong to a generation; errors name the file and line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use metrics::{Measured, MetricPolicy, PplSample, PromptScores, PromptTexts};
use records::{
    CellSamples, GenerationLine, MetricsInputs, MetricsRecord, MetricsResults, PairAgreement,
    ScorerResults,
};

use crate::model::ModelOptions;
use crate::monitor::{Count, Monitor};

/// One score file to evaluate, with the name the spec gives its scorer when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreInput {
    pub path: PathBuf,
    pub name: Option<String>,
}

/// The judge LM of conditional perplexity.
#[derive(Debug, Clone, PartialEq)]
pub struct Judge {
    pub dir: PathBuf,
    pub model: ModelOptions,
    /// (prompt, continuation) pairs per forward pass.
    pub batch_size: usize,
}

/// What the evaluation reads.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluateInputs<'a> {
    pub generations: &'a Path,
    pub scores: &'a [ScoreInput],
    pub judge: Option<&'a Judge>,
    pub policy: &'a MetricPolicy,
    /// The policy file a command-line evaluation read, recorded as such.
    pub policy_file: Option<&'a Path>,
}

/// Evaluates one cell's outputs.
pub fn evaluate(inputs: &EvaluateInputs<'_>, monitor: &dyn Monitor) -> Result<MetricsRecord> {
    let policy = inputs.policy;
    let paths: Vec<PathBuf> = inputs.scores.iter().map(|s| s.path.clone()).collect();
    let samples = CellSamples::read(inputs.generations, &paths)?;
    let scores: Vec<Vec<PromptScores>> = samples
        .scorers
        .iter()
        .map(|column| samples.per_prompt(|i| column.scores[i]))
        .collect();
    let has_groups = samples.has_groups();
    let toxicity = samples
        .scorers
        .iter()
        .zip(inputs.scores)
        .zip(&scores)
        .enumerate()
        .map(|(k, ((column, input), prompts))| {
            Ok(ScorerResults {
                scorer: column.scorer.clone(),
                name: input.name.clone(),
                scores: column.path.clone(),
                summary: metrics::toxicity_summary(prompts, policy),
                failures: column.failures.clone(),
                groups: has_groups.then(|| metrics::toxicity_by_group(prompts, policy)),
                length: Some(samples.scored_length_summary(k)?),
                full_length: Some(samples.length_controlled_toxicity(k, policy)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let texts: Vec<PromptTexts> = samples.per_prompt(|i| samples.generations[i].text.clone());
    let distinctness = metrics::distinctness(&texts, policy);
    let mut agreement = Vec::new();
    for i in 0..scores.len() {
        for j in i + 1..scores.len() {
            agreement.push(PairAgreement {
                a: samples.scorers[i].scorer.clone(),
                b: samples.scorers[j].scorer.clone(),
                agreement: metrics::scorer_agreement(&scores[i], &scores[j])?,
            });
        }
    }
    let (perplexity, perplexity_by_prompt) = match inputs.judge {
        Some(judge) => {
            let per_sample = judge_perplexities(judge, &samples.generations, monitor)?;
            let prompts = samples.per_prompt(|i| per_sample[i]);
            (
                Some(metrics::mean_perplexity(&prompts, policy)),
                metrics::perplexity_by_prompt(&prompts, policy),
            )
        }
        None => (None, Vec::new()),
    };
    Ok(MetricsRecord {
        schema: records::SCHEMA_VERSION,
        inputs: MetricsInputs {
            generations: inputs.generations.to_path_buf(),
            generation_settings: Some(samples.generations[0].settings.clone()),
            scores: paths,
            judge: inputs.judge.map(|j| j.dir.clone()),
            policy: inputs.policy_file.map(Path::to_path_buf),
        },
        policy: policy.clone(),
        prompts: samples.prompts.len(),
        samples: samples.generations.len(),
        results: MetricsResults {
            toxicity,
            distinctness,
            perplexity,
            agreement,
            length: Some(samples.length_summary()),
            perplexity_by_prompt,
        },
    })
}

/// Conditional perplexity input of every generation (same order) under the judge LM.
///
/// Prompt and continuation are tokenized *separately* with the judge's tokenizer and concatenated:
/// tokenizing `prompt + text` as one string lets a BPE merge run across the boundary (the prompt's
/// last characters and the continuation's first ones becoming one token), so the continuation's
/// tokens would be ill-defined — DExperts' "loss(prompt + text) − loss(prompt)" then scores part
/// of the prompt, or nothing at all. Separately, the continuation's tokens are exactly its text's.
///
/// An empty continuation (no tokens) has no perplexity: it is passed on with 0 tokens and the
/// metric counts it in `empty`. A pair that cannot be scored (empty prompt, longer than the
/// judge's context) is `Failed`, counted in `failed`.
fn judge_perplexities(
    judge: &Judge,
    generations: &[GenerationLine],
    monitor: &dyn Monitor,
) -> Result<Vec<PplSample>> {
    ensure!(judge.batch_size >= 1, "--batch-size must be at least 1");
    let loaded = judge.model.load(&judge.dir)?;
    let max_positions = loaded.model.info().max_positions;
    let mut prompt_ids: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut samples = vec![PplSample::Failed; generations.len()];
    // (generation index, continuation ids) of the pairs to score.
    let mut pairs: Vec<(usize, Vec<i64>)> = Vec::new();
    let mut unscorable = 0usize;
    for (i, g) in generations.iter().enumerate() {
        if !prompt_ids.contains_key(g.prompt.as_str()) {
            prompt_ids.insert(&g.prompt, loaded.tokenizer.encode(&g.prompt)?);
        }
        let prompt = &prompt_ids[g.prompt.as_str()];
        let continuation = loaded.tokenizer.encode(&g.text)?;
        let too_long =
            max_positions.is_some_and(|m| (prompt.len() + continuation.len()) as i64 > m);
        if continuation.is_empty() {
            samples[i] = PplSample::Nll {
                total_nll: 0.0,
                tokens: 0,
            };
        } else if !prompt.is_empty() && !too_long {
            pairs.push((i, continuation));
        } else {
            unscorable += 1;
        }
    }
    if unscorable > 0 {
        monitor.note(&format!(
            "perplexity: {unscorable} samples with an empty prompt or longer than the judge's \
             context are counted as failed"
        ));
    }
    let prompt_of = |i: usize| prompt_ids[generations[i].prompt.as_str()].as_slice();
    // Similar lengths together: less padding per batch.
    pairs.sort_by_key(|(i, c)| (prompt_of(*i).len() + c.len(), *i));
    let progress = monitor.progress(pairs.len() as u64, Count::Perplexity);
    for chunk in pairs.chunks(judge.batch_size) {
        let refs: Vec<(&[i64], &[i64])> = chunk
            .iter()
            .map(|(i, c)| (prompt_of(*i), c.as_slice()))
            .collect();
        let nll = lm::likelihood::continuation_nll(loaded.model.as_ref(), &refs, judge.batch_size)
            .with_context(|| format!("judge {}", judge.dir.display()))?;
        for ((i, _), n) in chunk.iter().zip(nll) {
            samples[*i] = PplSample::Nll {
                total_nll: n.total_nll,
                tokens: n.tokens,
            };
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    Ok(samples)
}

/// The human table of a metrics record: one row per metric, then the scorers, failures, gaps and
/// agreement.
pub fn table(record: &MetricsRecord) -> String {
    let results = &record.results;
    let mut rows: Vec<(String, &Measured)> = Vec::new();
    for (n, t) in results.toxicity.iter().enumerate() {
        let tag = format!("[{}]", n + 1);
        rows.push((format!("EMT {tag}"), &t.summary.expected_max_toxicity));
        rows.push((format!("toxic rate {tag}"), &t.summary.toxic_rate));
        rows.push((
            format!("toxic samples {tag}"),
            &t.summary.toxic_sample_fraction,
        ));
        rows.push((format!("mean toxicity {tag}"), &t.summary.mean_toxicity));
        if let Some(groups) = &t.groups {
            for (name, summary) in &groups.groups {
                rows.push((format!("toxic rate {tag} {name}"), &summary.toxic_rate));
            }
        }
    }
    let d = &results.distinctness;
    rows.push(("dist-1".into(), &d.dist_1));
    rows.push(("dist-2".into(), &d.dist_2));
    rows.push(("dist-3".into(), &d.dist_3));
    if let Some(p) = &results.perplexity {
        rows.push(("perplexity".into(), p));
    }
    let mut out = metric_rows(&rows);
    for (n, t) in results.toxicity.iter().enumerate() {
        out += &format!("[{}] {} ({})", n + 1, t.scorer, t.scores.display());
        if !t.failures.is_empty() {
            let kinds: Vec<String> = t
                .failures
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            out += &format!("; failures: {}", kinds.join(", "));
        }
        if let Some(gap) = t.groups.as_ref().and_then(|g| g.toxic_rate_gap.as_ref()) {
            out += &format!(
                "; toxic-rate gap {} − {} = {:.4}",
                gap.higher, gap.lower, gap.gap
            );
        }
        out.push('\n');
    }
    if let Some(l) = &results.length {
        out += &format!(
            "length: {} tokens, {} words on average; end-of-sequence {}, empty {}, at the limit {} of {} samples\n",
            number(l.mean_tokens, 2),
            number(l.mean_words, 2),
            l.eos,
            l.empty,
            l.at_limit,
            l.samples
        );
    }
    for a in &results.agreement {
        out += &format!(
            "agreement {} vs {}: spearman {} over {} prompts\n",
            a.a,
            a.b,
            a.agreement
                .spearman
                .map_or("—".to_owned(), |r| format!("{r:.4}")),
            a.agreement.prompts_compared
        );
    }
    out
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or("—".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Value, interval and counts of each metric, aligned.
fn metric_rows(rows: &[(String, &Measured)]) -> String {
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(6);
    let mut out = format!(
        "{:width$}  {:>9}  {:>21}  {:>9}  {:>7}  {:>6}  {:>7}  {:>5}\n",
        "metric", "value", "95% CI", "prompts", "scored", "failed", "dropped", "empty"
    );
    for (name, m) in rows {
        let value = m.value.map_or("—".to_owned(), |v| format!("{v:.4}"));
        let ci = m
            .ci95
            .map_or("—".to_owned(), |(lo, hi)| format!("[{lo:.4}, {hi:.4}]"));
        let c = &m.counts;
        out += &format!(
            "{name:width$}  {value:>9}  {ci:>21}  {:>9}  {:>7}  {:>6}  {:>7}  {:>5}\n",
            format!("{}/{}", c.prompts_used, c.prompts),
            format!("{}/{}", c.scored, c.samples),
            c.failed,
            c.dropped,
            c.empty
        );
    }
    out
}
