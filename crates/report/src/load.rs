//! Reading an experiment folder: `<dir>/<cell id>/` with `cell.json` (the resolved cell),
//! `metrics.json` (the evaluation record), optionally `record.json` (the run record), plus the
//! generations and score files the per-prompt table is built from.
//!
//! Every file is read through its type in [`records`], the schema the pipeline writes with; unknown
//! fields are ignored and a schema newer than this build is refused. What is read must parse: a
//! file that is present but not what it should be is an error naming the file, never a skipped
//! cell.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
pub use records::{
    format_strength, CellRecord as CellConfig, MetricsRecord, PromptRow, RunRecord, ScorerResults,
};
use records::{read_json, CellSamples};

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
    /// Whether the length results were computed by the report from the generations because
    /// `metrics.json` predates them.
    pub lengths_computed: bool,
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
        self.config.method_setting()
    }

    /// Short names of the scorers in the order of `metrics.json`'s `toxicity` list: the name the
    /// evaluation recorded; for records written before it did, the cell's scorer whose score file
    /// it is (`minilm`, `hf:<folder>#label`); else the scorer's full id.
    pub fn scorer_names(&self) -> Vec<String> {
        let Some(metrics) = &self.metrics else {
            return Vec::new();
        };
        metrics
            .results
            .toxicity
            .iter()
            .map(|t| match &t.name {
                Some(name) => name.clone(),
                None => self
                    .config
                    .scorer_for_file(&t.scores)
                    .map_or_else(|| t.scorer.clone(), |s| s.short_name()),
            })
            .collect()
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

    /// The cell's generations joined with its score files, in `metrics.json` order.
    pub fn samples(&self) -> Result<CellSamples> {
        let metrics = self
            .metrics
            .as_ref()
            .ok_or_else(|| anyhow!("cell {} has no {METRICS_FILE}", self.id()))?;
        let files = metrics
            .results
            .toxicity
            .iter()
            .map(|s| self.score_file(s))
            .collect::<Result<Vec<_>>>()?;
        CellSamples::read(&self.dir.join(GENERATIONS_FILE), &files)
    }
}

pub use records::{CELL_FILE, GENERATIONS_FILE, METRICS_FILE, RECORD_FILE};

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
    let mut cell = CellOutputs {
        dir: dir.to_path_buf(),
        config,
        metrics,
        record,
        lengths_computed: false,
    };
    cell.lengths_computed = crate::length::fill_missing(&mut cell)?;
    Ok(cell)
}

/// Every sample's score of a complete cell, one list per scorer (in `metrics.json` order), samples
/// in the generations' file order; `None` is a failed sample.
pub fn sample_scores(cell: &CellOutputs) -> Result<Vec<Vec<Option<f64>>>> {
    Ok(cell
        .samples()?
        .scorers
        .into_iter()
        .map(|column| column.scores)
        .collect())
}

/// Per-prompt toxicity of a complete cell, one list per scorer (in `metrics.json` order), prompts
/// in order of first appearance in the generations.
pub fn per_prompt_toxicity(cell: &CellOutputs) -> Result<Vec<Vec<PromptRow>>> {
    let samples = cell.samples()?;
    let policy = &cell.metrics.as_ref().expect("samples() checked").policy;
    (0..samples.scorers.len())
        .map(|column| samples.prompt_rows(column, policy))
        .collect()
}
