//! Reading an experiment folder: `<dir>/<cell id>/` with `cell.json` (the resolved cell),
//! `metrics.json` (the evaluation record), optionally `record.json` (the run record), plus the
//! generations and score files the per-prompt table is built from.
//!
//! Only the fields the report uses are read, and leniently (unknown fields are ignored), so a
//! record written by an older or newer `detox` still loads. What is read must parse: a file that
//! is present but not what it should be is an error naming the file, never a skipped cell.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use metrics::{GroupReport, Measured, MetricPolicy, ToxicitySummary};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// The fields of `cell.json` (`spec::Cell::resolved_json`) the report uses.
#[derive(Debug, Clone, Deserialize)]
pub struct CellConfig {
    pub cell_id: String,
    pub model: NamedRef,
    pub method: MethodConfig,
    pub prompts: NamedRef,
    pub seed: u64,
    #[serde(default)]
    pub generation: Option<GenerationConfig>,
    #[serde(default)]
    pub scorers: Vec<Value>,
    #[serde(default)]
    pub judge: Option<NamedRef>,
    #[serde(default)]
    pub policy: Option<MetricPolicy>,
}

/// Anything with a display name (model, judge, prompt set).
#[derive(Debug, Clone, Deserialize)]
pub struct NamedRef {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MethodConfig {
    pub name: String,
    pub label: String,
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    #[serde(default)]
    pub strength: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GenerationConfig {
    pub samples_per_prompt: Option<u64>,
    pub max_new_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
}

/// The fields of `metrics.json` (`detox evaluate`'s record) the report uses.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricsRecord {
    pub policy: MetricPolicy,
    pub prompts: usize,
    pub samples: usize,
    pub results: MetricsResults,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetricsResults {
    pub toxicity: Vec<ScorerResults>,
    pub dist_1: Measured,
    pub dist_2: Measured,
    pub dist_3: Measured,
    /// Absent when the cell was evaluated without a judge LM.
    #[serde(default)]
    pub perplexity: Option<Measured>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScorerResults {
    /// The scorer's id (name, weights and settings), as written in the score file.
    pub scorer: String,
    /// The score file as evaluation saw it (possibly an absolute path on another machine).
    pub scores: PathBuf,
    #[serde(flatten)]
    pub summary: ToxicitySummary,
    #[serde(default)]
    pub failures: BTreeMap<String, usize>,
    #[serde(default)]
    pub groups: Option<GroupReport>,
}

/// `record.json`: how a cell was run (versions, hardware, time and memory per stage).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunRecord {
    #[serde(default)]
    pub git: Option<GitRecord>,
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub batch_size: Option<u64>,
    #[serde(default)]
    pub threads: Option<u64>,
    #[serde(default)]
    pub host: Option<HostRecord>,
    #[serde(default)]
    pub stages: BTreeMap<String, StageRecord>,
    #[serde(default)]
    pub peak_memory: Option<PeakMemory>,
    /// Processes that worked on the cell (more than one after a resume).
    #[serde(default)]
    pub runs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct HostRecord {
    pub name: Option<String>,
    pub cpus: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GitRecord {
    pub commit: Option<String>,
    pub dirty: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StageRecord {
    pub wall_seconds: Option<f64>,
    pub samples: Option<u64>,
    pub new_tokens: Option<u64>,
    /// Generation only: seconds spent decoding (model loading excluded).
    pub decode_seconds: Option<f64>,
    pub tokens_per_second: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PeakMemory {
    pub host_rss_bytes: Option<u64>,
    pub device_bytes: Option<u64>,
}

impl RunRecord {
    /// Generation throughput: the recorded rate, else new tokens ÷ decoding seconds, else new
    /// tokens ÷ the stage's wall seconds.
    pub fn tokens_per_second(&self) -> Option<f64> {
        let generate = self.stages.get("generate")?;
        let rate = |seconds: Option<f64>| match (generate.new_tokens, seconds) {
            (Some(tokens), Some(seconds)) if seconds > 0.0 => Some(tokens as f64 / seconds),
            _ => None,
        };
        generate
            .tokens_per_second
            .or_else(|| rate(generate.decode_seconds))
            .or_else(|| rate(generate.wall_seconds))
    }

    pub fn stage_seconds(&self, stage: &str) -> Option<f64> {
        self.stages.get(stage).and_then(|s| s.wall_seconds)
    }

    /// Sum over every recorded stage with a wall time (stages this report does not name too).
    pub fn total_seconds(&self) -> Option<f64> {
        let times: Vec<f64> = self
            .stages
            .values()
            .filter_map(|s| s.wall_seconds)
            .collect();
        (!times.is_empty()).then(|| times.iter().sum())
    }
}

/// Whether a cell has its evaluation record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellStatus {
    Complete,
    /// `cell.json` without `metrics.json`: started, not (yet) evaluated.
    Incomplete,
}

impl CellStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CellStatus::Complete => "complete",
            CellStatus::Incomplete => "incomplete",
        }
    }
}

/// One cell folder.
#[derive(Debug, Clone)]
pub struct CellOutputs {
    pub dir: PathBuf,
    pub config: CellConfig,
    /// `None` for an incomplete cell.
    pub metrics: Option<MetricsRecord>,
    /// `None` for cells run before run records existed.
    pub record: Option<RunRecord>,
}

impl CellOutputs {
    pub fn status(&self) -> CellStatus {
        if self.metrics.is_some() {
            CellStatus::Complete
        } else {
            CellStatus::Incomplete
        }
    }

    pub fn id(&self) -> &str {
        &self.config.cell_id
    }

    /// `label@strength` (or the label alone without a strength): how charts and tables name a
    /// method setting.
    pub fn method_setting(&self) -> String {
        match self.config.method.strength {
            Some(s) => format!("{}@{}", self.config.method.label, format_strength(s)),
            None => self.config.method.label.clone(),
        }
    }

    /// Short names of the scorers in the order of `metrics.json`'s `toxicity` list: the spec's
    /// name (`minilm`, `hf:<folder>#label`) when `cell.json` lists as many scorers as were
    /// evaluated (`detox run` evaluates them in spec order), else the scorer's full id.
    pub fn scorer_names(&self) -> Vec<String> {
        let Some(metrics) = &self.metrics else {
            return Vec::new();
        };
        let from_spec: Vec<Option<String>> =
            self.config.scorers.iter().map(scorer_spec_name).collect();
        if from_spec.len() == metrics.results.toxicity.len()
            && from_spec.iter().all(Option::is_some)
        {
            from_spec.into_iter().map(Option::unwrap).collect()
        } else {
            metrics
                .results
                .toxicity
                .iter()
                .map(|t| t.scorer.clone())
                .collect()
        }
    }

    /// The score file of one scorer inside this cell's folder. The path in `metrics.json` may
    /// point to where the cell was first written (another machine, a shard folder), so only its
    /// file name is kept.
    pub fn score_file(&self, scorer: &ScorerResults) -> Result<PathBuf> {
        let name = scorer.scores.file_name().ok_or_else(|| {
            anyhow!(
                "{}: score file {:?} of scorer {:?} has no file name",
                self.dir.join(METRICS_FILE).display(),
                scorer.scores,
                scorer.scorer
            )
        })?;
        Ok(self.dir.join(name))
    }
}

/// A strength as written in the spec: `2` rather than `2.0`, `0.25` as is.
pub fn format_strength(strength: f64) -> String {
    if strength.fract() == 0.0 && strength.abs() < 1e15 {
        format!("{strength:.0}")
    } else {
        format!("{strength}")
    }
}

/// The name a spec gives a scorer (`spec::Scorer::spec_name`, with an `hf` folder shortened to
/// its last component).
fn scorer_spec_name(scorer: &Value) -> Option<String> {
    let kind = scorer.get("kind")?.as_str()?;
    if kind != "hf" {
        return Some(kind.to_owned());
    }
    let dir = scorer.get("dir")?.as_str()?;
    let folder = Path::new(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.to_owned());
    Some(match scorer.get("label").and_then(Value::as_str) {
        Some(label) => format!("hf:{folder}#{label}"),
        None => format!("hf:{folder}"),
    })
}

pub const CELL_FILE: &str = "cell.json";
pub const METRICS_FILE: &str = "metrics.json";
pub const RECORD_FILE: &str = "record.json";
pub const GENERATIONS_FILE: &str = "generations.jsonl";

/// Every cell of an experiment folder.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub dir: PathBuf,
    /// Sorted by prompt set, model, method (`none` first), label, strength, seed, id.
    pub cells: Vec<CellOutputs>,
}

impl Experiment {
    /// Reads every `<dir>/<cell id>/` that holds a `cell.json`. Cells without `metrics.json` are
    /// kept as incomplete; folders without `cell.json` (the report's own, say) are not cells.
    /// Errors name the file: unreadable JSON, a `cell_id` that differs from its folder's name, a
    /// `metrics.json` without `cell.json`, an experiment with no cell at all.
    pub fn load(dir: &Path) -> Result<Experiment> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot read the experiment folder", dir.display()))?;
        let mut cells = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("{}: cannot list", dir.display()))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let cell_file = path.join(CELL_FILE);
            let metrics_file = path.join(METRICS_FILE);
            if !cell_file.is_file() {
                ensure!(
                    !metrics_file.exists(),
                    "{}: evaluation record without {CELL_FILE} beside it; the report cannot tell which cell it belongs to",
                    metrics_file.display()
                );
                continue;
            }
            cells.push(load_cell(&path)?);
        }
        ensure!(
            !cells.is_empty(),
            "{}: no cells (no sub-folder holds a {CELL_FILE})",
            dir.display()
        );
        cells.sort_by(|a, b| sort_key(a).partial_cmp(&sort_key(b)).expect("no NaN keys"));
        Ok(Experiment {
            dir: dir.to_path_buf(),
            cells,
        })
    }

    pub fn complete(&self) -> impl Iterator<Item = &CellOutputs> {
        self.cells.iter().filter(|c| c.metrics.is_some())
    }

    pub fn incomplete(&self) -> impl Iterator<Item = &CellOutputs> {
        self.cells.iter().filter(|c| c.metrics.is_none())
    }

    /// Whether more than one model appears (tables then show a model column).
    pub fn has_several_models(&self) -> bool {
        let first = &self.cells[0].config.model.name;
        self.cells.iter().any(|c| &c.config.model.name != first)
    }

    /// Whether more than one seed appears (tables then show a seed column).
    pub fn has_several_seeds(&self) -> bool {
        let first = self.cells[0].config.seed;
        self.cells.iter().any(|c| c.config.seed != first)
    }

    /// Every (complete cell, scorer) pair, in cell order then `metrics.json` order.
    pub fn scorer_views(&self) -> Vec<ScorerView<'_>> {
        self.complete()
            .flat_map(|cell| {
                let metrics = cell.metrics.as_ref().expect("complete cells have metrics");
                cell.scorer_names()
                    .into_iter()
                    .zip(&metrics.results.toxicity)
                    .map(move |(scorer, results)| ScorerView {
                        cell,
                        scorer,
                        results,
                    })
            })
            .collect()
    }

    /// The distinct (prompt set, scorer) pairs of [`Experiment::scorer_views`], in order.
    pub fn prompt_set_scorer_pairs(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for view in self.scorer_views() {
            let pair = (view.cell.config.prompts.name.clone(), view.scorer.clone());
            if !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
        pairs
    }
}

/// One scorer's results in one complete cell.
#[derive(Debug, Clone)]
pub struct ScorerView<'a> {
    pub cell: &'a CellOutputs,
    /// Short name ([`CellOutputs::scorer_names`]).
    pub scorer: String,
    pub results: &'a ScorerResults,
}

type SortKey<'a> = (&'a str, &'a str, bool, &'a str, f64, u64, &'a str);

fn sort_key(c: &CellOutputs) -> SortKey<'_> {
    let m = &c.config.method;
    (
        &c.config.prompts.name,
        &c.config.model.name,
        m.name != "none",
        &m.label,
        // No strength sorts before every strength; strengths are finite numbers from a spec.
        m.strength.unwrap_or(f64::NEG_INFINITY),
        c.config.seed,
        &c.config.cell_id,
    )
}

fn load_cell(dir: &Path) -> Result<CellOutputs> {
    let cell_file = dir.join(CELL_FILE);
    let config: CellConfig = read_json(&cell_file, "cell record")?;
    if let Some(folder) = dir.file_name().and_then(|n| n.to_str()) {
        ensure!(
            folder == config.cell_id,
            "{}: cell_id {:?} differs from its folder's name {folder:?}; was a folder renamed or a file copied into the wrong cell?",
            cell_file.display(),
            config.cell_id
        );
    }
    if let Some(s) = config.method.strength {
        ensure!(
            s.is_finite(),
            "{}: method.strength {s} is not a finite number",
            cell_file.display()
        );
    }
    let metrics_file = dir.join(METRICS_FILE);
    let metrics = if metrics_file.exists() {
        Some(read_json::<MetricsRecord>(
            &metrics_file,
            "evaluation record",
        )?)
    } else {
        None
    };
    let record_file = dir.join(RECORD_FILE);
    let record = if record_file.exists() {
        Some(read_json::<RunRecord>(&record_file, "run record")?)
    } else {
        None
    };
    Ok(CellOutputs {
        dir: dir.to_path_buf(),
        config,
        metrics,
        record,
    })
}

fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a valid {what}", path.display()))
}

/// One prompt of one scorer: what the per-prompt table holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRow {
    pub prompt_id: String,
    pub group: Option<String>,
    pub samples: usize,
    pub scored: usize,
    pub failed: usize,
    /// `None` when no sample of the prompt was scored.
    pub max_toxicity: Option<f64>,
    pub mean_toxicity: Option<f64>,
    pub toxic_samples: usize,
    /// Whether any scored sample is toxic under the cell's policy; `None` with none scored.
    pub any_toxic: Option<bool>,
}

#[derive(Deserialize)]
struct GenerationKey {
    prompt_id: String,
    sample_index: u64,
    #[serde(default)]
    group: Option<String>,
}

#[derive(Deserialize)]
struct ScoreLine {
    prompt_id: String,
    sample_index: u64,
    #[serde(default)]
    score: Option<f64>,
    #[serde(default)]
    failure: Option<Value>,
}

/// Every sample's score of a complete cell, one list per scorer (in `metrics.json` order), samples
/// in the generations' file order. A sample counts as failed (`None`) when its score line carries a
/// failure or a non-finite score, as in evaluation. Every generation must have exactly one score
/// line and every score line a generation; errors name the file and line.
#[derive(Debug, Clone)]
pub struct SampleScores {
    /// Prompt id, group and number of samples, in order of first appearance.
    pub prompts: Vec<(String, Option<String>, usize)>,
    /// Each sample's position in `prompts`.
    pub sample_prompt: Vec<usize>,
    /// Per scorer, each sample's score (`None`: failed).
    pub scores: Vec<Vec<Option<f64>>>,
}

/// Reads a complete cell's generations and score files into [`SampleScores`].
pub fn sample_scores(cell: &CellOutputs) -> Result<SampleScores> {
    let metrics = cell
        .metrics
        .as_ref()
        .ok_or_else(|| anyhow!("cell {} has no {METRICS_FILE}", cell.id()))?;
    let generations_file = cell.dir.join(GENERATIONS_FILE);
    // Sample position in file order per (prompt id, sample index), and each sample's prompt.
    let mut sample_slot: HashMap<(String, u64), usize> = HashMap::new();
    let mut prompts: Vec<(String, Option<String>, usize)> = Vec::new();
    let mut prompt_position: HashMap<String, usize> = HashMap::new();
    let mut sample_prompt: Vec<usize> = Vec::new();
    data::jsonl::read_all(
        &generations_file,
        "generation record",
        |_, g: GenerationKey| {
            let position = *prompt_position
                .entry(g.prompt_id.clone())
                .or_insert_with(|| {
                    prompts.push((g.prompt_id.clone(), g.group.clone(), 0));
                    prompts.len() - 1
                });
            prompts[position].2 += 1;
            let index = sample_prompt.len();
            if sample_slot
                .insert((g.prompt_id.clone(), g.sample_index), index)
                .is_some()
            {
                bail!(
                    "prompt {:?} sample {} appears twice",
                    g.prompt_id,
                    g.sample_index
                );
            }
            sample_prompt.push(position);
            Ok(())
        },
    )?;

    let mut per_scorer = Vec::new();
    for scorer in &metrics.results.toxicity {
        let score_file = cell.score_file(scorer)?;
        let mut scores: Vec<Option<Option<f64>>> = vec![None; sample_prompt.len()];
        data::jsonl::read_all(&score_file, "score record", |_, s: ScoreLine| {
            let Some(&index) = sample_slot.get(&(s.prompt_id.clone(), s.sample_index)) else {
                bail!(
                    "prompt {:?} sample {} is not in {}",
                    s.prompt_id,
                    s.sample_index,
                    generations_file.display()
                );
            };
            ensure!(
                scores[index].is_none(),
                "prompt {:?} sample {} is scored twice",
                s.prompt_id,
                s.sample_index
            );
            let value = match (s.score, &s.failure) {
                (Some(x), None) if x.is_finite() => Some(x),
                (Some(_), None) | (None, Some(_)) => None,
                _ => bail!("a score record needs exactly one of \"score\" and \"failure\""),
            };
            scores[index] = Some(value);
            Ok(())
        })?;
        let unscored = scores.iter().filter(|s| s.is_none()).count();
        ensure!(
            unscored == 0,
            "{}: no score for {unscored} of {} generations in {}",
            score_file.display(),
            scores.len(),
            generations_file.display()
        );
        per_scorer.push(
            scores
                .into_iter()
                .map(|s| s.expect("checked above"))
                .collect(),
        );
    }
    Ok(SampleScores {
        prompts,
        sample_prompt,
        scores: per_scorer,
    })
}

/// Per-prompt toxicity of a complete cell, one list per scorer (in `metrics.json` order), prompts
/// in order of first appearance in the generations ([`sample_scores`] says what counts as failed).
pub fn per_prompt_toxicity(cell: &CellOutputs) -> Result<Vec<Vec<PromptRow>>> {
    let metrics = cell
        .metrics
        .as_ref()
        .ok_or_else(|| anyhow!("cell {} has no {METRICS_FILE}", cell.id()))?;
    let SampleScores {
        prompts,
        sample_prompt,
        scores: per_scorer,
    } = sample_scores(cell)?;
    let mut out = Vec::new();
    for scores in per_scorer {
        let mut rows: Vec<PromptRow> = prompts
            .iter()
            .map(|(id, group, samples)| PromptRow {
                prompt_id: id.clone(),
                group: group.clone(),
                samples: *samples,
                scored: 0,
                failed: 0,
                max_toxicity: None,
                mean_toxicity: None,
                toxic_samples: 0,
                any_toxic: None,
            })
            .collect();
        let mut sums = vec![0.0; rows.len()];
        for (index, score) in scores.into_iter().enumerate() {
            let row = &mut rows[sample_prompt[index]];
            match score {
                Some(x) => {
                    row.scored += 1;
                    sums[sample_prompt[index]] += x;
                    row.max_toxicity = Some(row.max_toxicity.map_or(x, |m| m.max(x)));
                    row.toxic_samples += usize::from(metrics.policy.is_toxic(x));
                }
                None => row.failed += 1,
            }
        }
        for (row, sum) in rows.iter_mut().zip(sums) {
            if row.scored > 0 {
                row.mean_toxicity = Some(sum / row.scored as f64);
                row.any_toxic = Some(row.toxic_samples > 0);
            }
        }
        out.push(rows);
    }
    Ok(out)
}
