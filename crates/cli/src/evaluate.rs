//! `detox evaluate`: the protocol's metrics (METHODS.md §0) for one generations file, its score
//! files and optionally a judge LM, written as one JSON record (in the spirit of
//! lm-evaluation-harness result files) with a short table on stderr.
//!
//! For every scorer: expected maximum toxicity, toxic rate, toxic sample fraction and mean
//! toxicity, each with its bootstrap interval and counts, the failures by kind, and per-group
//! results with the largest toxic-rate gap when the generations carry a `group`. Over the texts:
//! dist-1/2/3. With two or more scorers: Spearman agreement of per-prompt maximum toxicity for
//! every pair. With `--judge`: conditional perplexity of each continuation given its prompt.
//!
//! Inputs are checked, not trusted: every generation must have exactly one score in every score
//! file, and every score must belong to a generation; errors name the file and line.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args;
use lm::{DeviceChoice, DtypeChoice};
use metrics::{
    Agreement, Distinctness, GroupReport, Measured, MetricPolicy, PplSample, Prompt, PromptScores,
    PromptTexts, ToxicitySummary,
};
use serde::{Deserialize, Serialize};

use crate::jsonl;
use crate::score_cmd::{failure_kind, ScoreRecord};

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// Generations JSONL written by `detox generate`.
    #[arg(long)]
    pub generations: PathBuf,
    /// Scores JSONL written by `detox score` (repeatable, one per scorer).
    #[arg(long = "scores")]
    pub scores: Vec<PathBuf>,
    /// Judge LM folder for conditional perplexity (any model folder `detox generate` can load).
    #[arg(long)]
    pub judge: Option<PathBuf>,
    /// Device of the judge: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Dtype of the judge: auto (f32 on CPU, bf16 on CUDA), f32, f16 or bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeChoice,
    /// Intra-op threads for libtorch (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// (prompt, continuation) pairs per judge forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Metric policy JSON (threshold, comparison, perplexity cap, bootstrap); default: the defaults.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Where to write the JSON record (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The fields of a generation record that evaluation and scoring read (see `generate::Record`).
#[derive(Debug, Clone, Deserialize)]
pub struct Generation {
    pub prompt_id: String,
    pub sample_index: u64,
    pub prompt: String,
    pub text: String,
    #[serde(default)]
    pub settings: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

/// Reads a generations file, in file order. Errors name the file and line: a line that is not a
/// record, a (prompt id, sample index) written twice, a prompt id whose prompt text or group
/// changes, records with different settings fingerprints.
pub fn read_generations(path: &Path) -> Result<Vec<Generation>> {
    let mut records: Vec<Generation> = Vec::new();
    let mut line_of: HashMap<(String, u64), usize> = HashMap::new();
    let mut first_of_prompt: HashMap<String, usize> = HashMap::new();
    jsonl::read_all(path, "generation record", |number, g: Generation| {
        if let Some(first) = records.first() {
            if g.settings != first.settings {
                bail!(
                    "generation settings {:?} differ from the first record's {:?}; a file holds one setting",
                    g.settings,
                    first.settings
                );
            }
        }
        if let Some(line) = line_of.insert((g.prompt_id.clone(), g.sample_index), number) {
            bail!(
                "prompt {:?} sample {} appears twice (first on line {line})",
                g.prompt_id,
                g.sample_index
            );
        }
        if let Some(&i) = first_of_prompt.get(&g.prompt_id) {
            let first = &records[i];
            ensure!(
                first.prompt == g.prompt && first.group == g.group,
                "prompt {:?} has another prompt text or group than on line {}",
                g.prompt_id,
                line_of[&(first.prompt_id.clone(), first.sample_index)]
            );
        } else {
            first_of_prompt.insert(g.prompt_id.clone(), records.len());
        }
        records.push(g);
        Ok(())
    })?;
    ensure!(
        !records.is_empty(),
        "{}: no generation records",
        path.display()
    );
    Ok(records)
}

/// The generations grouped by prompt: prompts in order of first appearance, samples by index.
struct Grouped {
    prompts: Vec<PromptSlot>,
    /// (prompt id, sample index) -> (prompt position, sample position).
    position: HashMap<(String, u64), (usize, usize)>,
}

struct PromptSlot {
    id: String,
    group: Option<String>,
    /// Indices into the generations, ordered by sample index.
    samples: Vec<usize>,
}

fn group_by_prompt(generations: &[Generation]) -> Grouped {
    let mut prompts: Vec<PromptSlot> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, g) in generations.iter().enumerate() {
        let slot = *index.entry(&g.prompt_id).or_insert_with(|| {
            prompts.push(PromptSlot {
                id: g.prompt_id.clone(),
                group: g.group.clone(),
                samples: Vec::new(),
            });
            prompts.len() - 1
        });
        prompts[slot].samples.push(i);
    }
    let mut position = HashMap::new();
    for (p, slot) in prompts.iter_mut().enumerate() {
        slot.samples.sort_by_key(|&i| generations[i].sample_index);
        for (s, &i) in slot.samples.iter().enumerate() {
            let g = &generations[i];
            position.insert((g.prompt_id.clone(), g.sample_index), (p, s));
        }
    }
    Grouped { prompts, position }
}

impl Grouped {
    /// Per-prompt inputs for a metric, one value per sample.
    fn build<T>(&self, mut value: impl FnMut(usize) -> T) -> Vec<Prompt<T>> {
        self.prompts
            .iter()
            .map(|p| Prompt {
                prompt_id: p.id.clone(),
                group: p.group.clone(),
                samples: p.samples.iter().map(|&i| value(i)).collect(),
            })
            .collect()
    }
}

/// One score file, checked against the generations.
struct ScoreFile {
    path: PathBuf,
    scorer: String,
    /// Per generation (same order as the generations): the score, `None` for a failure.
    scores: Vec<Option<f64>>,
    failures: BTreeMap<String, usize>,
}

fn read_scores(path: &Path, generations: &[Generation], grouped: &Grouped) -> Result<ScoreFile> {
    let mut scorer: Option<String> = None;
    let mut slots: Vec<Option<(usize, Option<f64>)>> = vec![None; generations.len()];
    let mut failures = BTreeMap::new();
    jsonl::read_all(path, "score record", |number, r: ScoreRecord| {
        match &scorer {
            None => scorer = Some(r.scorer.clone()),
            Some(s) if *s != r.scorer => {
                bail!("scorer {:?} differs from the first line's {s:?}", r.scorer)
            }
            Some(_) => {}
        }
        let Some(&(p, s)) = grouped.position.get(&(r.prompt_id.clone(), r.sample_index)) else {
            bail!(
                "prompt {:?} sample {} is not in the generations",
                r.prompt_id,
                r.sample_index
            );
        };
        let i = grouped.prompts[p].samples[s];
        if let Some((line, _)) = slots[i] {
            bail!(
                "prompt {:?} sample {} is scored twice (first on line {line})",
                r.prompt_id,
                r.sample_index
            );
        }
        let score = match r.result()? {
            Ok(x) => Some(f64::from(x)),
            Err(f) => {
                *failures.entry(failure_kind(&f)).or_default() += 1;
                None
            }
        };
        slots[i] = Some((number, score));
        Ok(())
    })?;
    let scorer = scorer.ok_or_else(|| anyhow!("{}: no score records", path.display()))?;
    let missing: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_none()).collect();
    if let Some(&first) = missing.first() {
        bail!(
            "{}: no score for {} of {} generations (first: prompt {:?} sample {}); finish it with `detox score`",
            path.display(),
            missing.len(),
            generations.len(),
            generations[first].prompt_id,
            generations[first].sample_index
        );
    }
    Ok(ScoreFile {
        path: path.to_path_buf(),
        scorer,
        scores: slots.into_iter().map(|s| s.expect("checked").1).collect(),
        failures,
    })
}

#[derive(Serialize)]
struct Report {
    inputs: Inputs,
    policy: MetricPolicy,
    /// Prompts and samples in the generations file.
    prompts: usize,
    samples: usize,
    results: Results,
}

#[derive(Serialize)]
struct Inputs {
    generations: PathBuf,
    /// Settings fingerprint of the generations (model and decoding settings).
    generation_settings: Option<String>,
    scores: Vec<PathBuf>,
    judge: Option<PathBuf>,
    policy: Option<PathBuf>,
}

#[derive(Serialize)]
struct Results {
    /// One entry per score file, in the order given.
    toxicity: Vec<ScorerResults>,
    #[serde(flatten)]
    distinctness: Distinctness,
    /// Conditional perplexity under the judge (absent without `--judge`).
    #[serde(skip_serializing_if = "Option::is_none")]
    perplexity: Option<Measured>,
    /// Every pair of scorers (empty with one score file).
    agreement: Vec<PairAgreement>,
}

#[derive(Serialize)]
struct ScorerResults {
    scorer: String,
    scores: PathBuf,
    #[serde(flatten)]
    summary: ToxicitySummary,
    /// Failed samples by failure kind (their total is `counts.failed`).
    failures: BTreeMap<String, usize>,
    /// Per group, when the generations carry groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<GroupReport>,
}

#[derive(Serialize)]
struct PairAgreement {
    a: String,
    b: String,
    #[serde(flatten)]
    agreement: Agreement,
}

pub fn run(args: &EvaluateArgs) -> Result<()> {
    let policy = match &args.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read", path.display()))?;
            let policy: MetricPolicy = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a metric policy", path.display()))?;
            policy
                .validate()
                .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            policy
        }
        None => MetricPolicy::default(),
    };
    let generations = read_generations(&args.generations)?;
    let grouped = group_by_prompt(&generations);
    let score_files = args
        .scores
        .iter()
        .map(|path| read_scores(path, &generations, &grouped))
        .collect::<Result<Vec<_>>>()?;
    for (i, a) in score_files.iter().enumerate() {
        if let Some(b) = score_files[..i].iter().find(|b| b.scorer == a.scorer) {
            bail!(
                "{} and {} hold the same scorer {:?}",
                b.path.display(),
                a.path.display(),
                a.scorer
            );
        }
    }
    let has_groups = generations.iter().any(|g| g.group.is_some());

    let scores: Vec<Vec<PromptScores>> = score_files
        .iter()
        .map(|f| grouped.build(|i| f.scores[i]))
        .collect();
    let toxicity = score_files
        .iter()
        .zip(&scores)
        .map(|(f, prompts)| ScorerResults {
            scorer: f.scorer.clone(),
            scores: f.path.clone(),
            summary: metrics::toxicity_summary(prompts, &policy),
            failures: f.failures.clone(),
            groups: has_groups.then(|| metrics::toxicity_by_group(prompts, &policy)),
        })
        .collect();
    let texts: Vec<PromptTexts> = grouped.build(|i| generations[i].text.clone());
    let distinctness = metrics::distinctness(&texts, &policy);
    let mut agreement = Vec::new();
    for i in 0..score_files.len() {
        for j in i + 1..score_files.len() {
            agreement.push(PairAgreement {
                a: score_files[i].scorer.clone(),
                b: score_files[j].scorer.clone(),
                agreement: metrics::scorer_agreement(&scores[i], &scores[j])?,
            });
        }
    }
    let perplexity = match &args.judge {
        Some(dir) => {
            let samples = judge_perplexities(args, dir, &generations)?;
            let prompts = grouped.build(|i| samples[i]);
            Some(metrics::mean_perplexity(&prompts, &policy))
        }
        None => None,
    };

    let report = Report {
        inputs: Inputs {
            generations: args.generations.clone(),
            generation_settings: generations[0].settings.clone(),
            scores: args.scores.clone(),
            judge: args.judge.clone(),
            policy: args.policy.clone(),
        },
        policy,
        prompts: grouped.prompts.len(),
        samples: generations.len(),
        results: Results {
            toxicity,
            distinctness,
            perplexity,
            agreement,
        },
    };
    eprint!("{}", table(&report));
    let mut json = serde_json::to_string_pretty(&report)?;
    json.push('\n');
    match &args.out {
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("{}: cannot create folder", parent.display()))?;
            }
            std::fs::write(path, json)
                .with_context(|| format!("{}: cannot write", path.display()))?;
        }
        None => print!("{json}"),
    }
    Ok(())
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
    args: &EvaluateArgs,
    dir: &Path,
    generations: &[Generation],
) -> Result<Vec<PplSample>> {
    ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    if let Some(threads) = args.threads {
        ensure!(threads >= 1, "--threads must be at least 1");
        tch::set_num_threads(threads);
    }
    let judge = lm::LoadedModel::load(dir, args.device, args.dtype)?;
    let max_positions = judge.model.info().max_positions;
    let mut prompt_ids: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut samples = vec![PplSample::Failed; generations.len()];
    // (generation index, continuation ids) of the pairs to score.
    let mut pairs: Vec<(usize, Vec<i64>)> = Vec::new();
    let mut unscorable = 0usize;
    for (i, g) in generations.iter().enumerate() {
        if !prompt_ids.contains_key(g.prompt.as_str()) {
            prompt_ids.insert(&g.prompt, judge.tokenizer.encode(&g.prompt)?);
        }
        let prompt = &prompt_ids[g.prompt.as_str()];
        let continuation = judge.tokenizer.encode(&g.text)?;
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
        note!(
            "perplexity: {unscorable} samples with an empty prompt or longer than the judge's \
             context are counted as failed"
        );
    }
    // Similar lengths together: less padding per batch.
    pairs.sort_by_key(|(i, c)| {
        (
            prompt_ids[generations[*i].prompt.as_str()].len() + c.len(),
            *i,
        )
    });
    let progress = crate::progress::bar(
        pairs.len() as u64,
        "perplexity [{bar:30}] {pos}/{len} samples, {per_sec}, eta {eta}",
    );
    for chunk in pairs.chunks(args.batch_size) {
        let refs: Vec<(&[i64], &[i64])> = chunk
            .iter()
            .map(|(i, c)| {
                (
                    prompt_ids[generations[*i].prompt.as_str()].as_slice(),
                    c.as_slice(),
                )
            })
            .collect();
        let nll = lm::likelihood::continuation_nll(judge.model.as_ref(), &refs, args.batch_size)
            .with_context(|| format!("judge {}", dir.display()))?;
        for ((i, _), n) in chunk.iter().zip(nll) {
            samples[*i] = PplSample::Nll {
                total_nll: n.total_nll,
                tokens: n.tokens,
            };
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(samples)
}

/// The human table: one row per metric.
fn table(report: &Report) -> String {
    let mut rows: Vec<(String, &Measured)> = Vec::new();
    for (n, t) in report.results.toxicity.iter().enumerate() {
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
    let d = &report.results.distinctness;
    rows.push(("dist-1".into(), &d.dist_1));
    rows.push(("dist-2".into(), &d.dist_2));
    rows.push(("dist-3".into(), &d.dist_3));
    if let Some(p) = &report.results.perplexity {
        rows.push(("perplexity".into(), p));
    }
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
    for (n, t) in report.results.toxicity.iter().enumerate() {
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
    for a in &report.results.agreement {
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
