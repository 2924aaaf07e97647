//! Running an experiment: every cell of a spec through generate → score → evaluate, each stage
//! resumable, into `<output>/<cell id>/` (the files are [`records`]'), and the experiment's score
//! cache `<output>/score-cache.jsonl`.
//!
//! A killed run resumes where it stopped: generation and scoring skip what their files already
//! hold; a cell with its metrics written is done. Editing one method in the spec changes only that
//! method's cell ids, so only those cells run. [`Shard`] splits a sweep across machines.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use lm::{DeviceChoice, DtypeChoice};
use records::RunRecord;
use spec::Cell;

use crate::evaluate::{evaluate, EvaluateInputs, Judge, ScoreInput};
use crate::generate::{generate, GenerateOptions};
use crate::method::ResolvedMethod;
use crate::model::{hf_folder, ModelOptions};
use crate::monitor::{Count, Monitor};
use crate::process;
use crate::score::{score, CacheChoice};

/// Texts per scorer call in a run.
const SCORE_BATCH: usize = 64;
/// (prompt, continuation) pairs per judge forward pass in a run.
const JUDGE_BATCH: usize = 16;

/// One share of a sweep split across N machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether the cell at `position` (0-based, spec order) belongs to this share. Round robin
    /// balances a sweep whose cells are listed method by method.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }

    /// The folder a share writes to by default.
    pub fn folder(&self, output: &Path) -> PathBuf {
        output
            .join("shards")
            .join(format!("{}-of-{}", self.index, self.count))
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N` with 1 ≤ I ≤ N.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard takes I/N with 1 <= I <= N (e.g. 2/8), got {s:?}");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// How to run a spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// libtorch intra-op threads.
    pub threads: Option<i32>,
    pub shard: Option<Shard>,
    /// Write here instead of the spec's `output` folder (or its share folder).
    pub output: Option<PathBuf>,
}

/// What [`run_experiment`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub output: PathBuf,
    pub cells_run: usize,
    /// Whether the folder holds the whole experiment (not one share of it), so a report of it is
    /// the experiment's.
    pub whole: bool,
}

/// Runs the cells of `experiment` this share owns (all without a shard). Every cell's method is
/// checked before any model loads, and the output folder must be writable.
pub fn run_experiment(
    experiment: &spec::Experiment,
    spec_file: &Path,
    options: &RunOptions,
    monitor: &dyn Monitor,
) -> Result<RunSummary> {
    let output = match (&options.output, options.shard) {
        (Some(dir), _) => dir.clone(),
        (None, Some(shard)) => shard.folder(&experiment.output),
        (None, None) => experiment.output.clone(),
    };
    let cells: Vec<&Cell> = experiment
        .cells()
        .iter()
        .enumerate()
        .filter(|(i, _)| options.shard.is_none_or(|s| s.owns(*i)))
        .map(|(_, c)| c)
        .collect();
    for cell in &cells {
        ResolvedMethod::from_spec(&cell.method)
            .with_context(|| format!("{}: cell {}", spec_file.display(), cell.label()))?;
    }
    check_writable(&output)?;
    let share = options
        .shard
        .map(|s| format!(" (share {} of {})", s.index, s.count))
        .unwrap_or_default();
    monitor.note(&format!(
        "{}: {} of {} cells{share} → {}",
        spec_file.display(),
        cells.len(),
        experiment.cells().len(),
        output.display()
    ));
    let overall = monitor.progress(cells.len() as u64, Count::Cells);
    for (i, cell) in cells.iter().enumerate() {
        let dir = output.join(cell.cell_id());
        overall.set_message(cell.label());
        monitor.note(&format!(
            "[{}/{}] {} ({})",
            i + 1,
            cells.len(),
            cell.label(),
            dir.display()
        ));
        run_cell(cell, &dir, &output, options.threads, monitor)
            .with_context(|| format!("cell {} ({})", cell.cell_id(), cell.label()))?;
        overall.inc(1);
    }
    overall.finish();
    Ok(RunSummary {
        output,
        cells_run: cells.len(),
        whole: options.shard.is_none() || options.output.is_some(),
    })
}

/// Creates the output folder (or checks it is writable) before any model is loaded.
pub fn check_writable(output: &Path) -> Result<()> {
    std::fs::create_dir_all(output)
        .with_context(|| format!("output folder {}: cannot create", output.display()))?;
    let probe = output.join(format!(".write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .with_context(|| format!("output folder {}: not writable", output.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Runs one cell into `dir` (a finished cell returns at once). `output` holds the experiment's
/// score cache.
pub fn run_cell(
    cell: &Cell,
    dir: &Path,
    output: &Path,
    threads: Option<i32>,
    monitor: &dyn Monitor,
) -> Result<()> {
    let metrics = dir.join(records::METRICS_FILE);
    if metrics.is_file() {
        monitor.note(&format!("  done already ({})", metrics.display()));
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    write_once(&dir.join(records::CELL_FILE), &cell.resolved_json())?;
    let method = ResolvedMethod::from_spec(&cell.method)?;
    let model = ModelOptions {
        device: cell.generation.device.parse()?,
        dtype: cell_dtype(cell),
        threads,
    };
    model.apply_threads()?;
    process::reset_peak_rss();
    let record_path = dir.join(records::RECORD_FILE);
    let mut record = RunRecord::load_or_new(&record_path)?;
    process::stamp(&mut record, &cell.cell_id());
    let resolved = model.device.resolve()?;
    record.device = format!("{resolved:?}").to_lowercase();
    record.dtype = dtype_name(model.dtype.resolve(resolved)?);
    record.batch_size = cell.generation.batch_size;
    record.seed = cell.seed;

    let generations = dir.join(records::GENERATIONS_FILE);
    let expected = generate_stage(cell, &model, &method, &generations, &mut record, monitor)?;
    record.note_peak_rss(process::peak_rss_bytes());
    record.save(&record_path)?;

    let started = Instant::now();
    let score_files = score_stage(cell, model.device, &generations, output, monitor)?;
    record.add_stage("score", started.elapsed().as_secs_f64(), expected);
    record.note_peak_rss(process::peak_rss_bytes());
    record.save(&record_path)?;

    let started = Instant::now();
    let judge = Judge {
        dir: hf_folder(&cell.judge, monitor)?,
        model,
        batch_size: JUDGE_BATCH,
    };
    let evaluation = evaluate(
        &EvaluateInputs {
            generations: &generations,
            scores: &score_files,
            judge: Some(&judge),
            policy: &cell.policy,
            policy_file: None,
        },
        monitor,
    )?;
    monitor.note(&crate::evaluate::table(&evaluation));
    record.add_stage("evaluate", started.elapsed().as_secs_f64(), expected);
    record.note_peak_rss(process::peak_rss_bytes());
    // The record first: a cell whose metrics exist is done and never revisited.
    record.save(&record_path)?;
    records::write_json(&metrics, &evaluation)
}

/// Generates the cell's samples (resuming); returns how many the cell has in all.
fn generate_stage(
    cell: &Cell,
    model: &ModelOptions,
    method: &ResolvedMethod,
    generations: &Path,
    record: &mut RunRecord,
    monitor: &dyn Monitor,
) -> Result<usize> {
    let started = Instant::now();
    let prompts = data::load(&cell.prompts.source)?.prompts;
    let g = &cell.generation;
    let options = GenerateOptions {
        samples_per_prompt: g.samples_per_prompt as u64,
        max_new_tokens: g.max_new_tokens,
        min_new_tokens: g.min_new_tokens,
        sampling: decode::SamplingParams {
            temperature: g.temperature,
            top_k: g.top_k,
            top_p: g.top_p.filter(|p| *p < 1.0),
        },
        seed: cell.seed,
        batch_size: g.batch_size,
        stop_at_eos: true,
    };
    let model_dir = hf_folder(&cell.model, monitor)?;
    if let Some(outcome) = generate(
        &model_dir,
        model,
        &prompts,
        method,
        &options,
        generations,
        monitor,
    )? {
        let stats = &outcome.stats;
        record.add_stage("generate", started.elapsed().as_secs_f64(), stats.samples);
        record.add_tokens(
            stats.new_tokens,
            stats.prefill_seconds + stats.decode_seconds,
        );
        for (name, value) in &outcome.counters {
            record.add_counter(name, *value);
        }
    }
    Ok(prompts.len() * g.samples_per_prompt)
}

/// Scores the generations with every scorer of the cell, in spec order, through the experiment's
/// cache (cells that share texts score them once, and concurrent experiments never write the same
/// file).
fn score_stage(
    cell: &Cell,
    device: DeviceChoice,
    generations: &Path,
    output: &Path,
    monitor: &dyn Monitor,
) -> Result<Vec<ScoreInput>> {
    let cache = CacheChoice::File(output.join(records::SCORE_CACHE_FILE));
    let mut inputs = Vec::new();
    for scorer in &cell.scorers {
        let name = scorer.spec_name();
        let out = generations.with_file_name(records::score_file_name(&name));
        let mut built = probe::build_scorer(&name, device)?;
        score(
            generations,
            built.as_mut(),
            &out,
            &cache,
            SCORE_BATCH,
            monitor,
        )?;
        inputs.push(ScoreInput {
            path: out,
            name: Some(scorer.record().short_name()),
        });
    }
    Ok(inputs)
}

fn cell_dtype(cell: &Cell) -> DtypeChoice {
    match cell.generation.dtype {
        spec::Dtype::F32 => DtypeChoice::F32,
        spec::Dtype::F16 => DtypeChoice::F16,
        spec::Dtype::Bf16 => DtypeChoice::Bf16,
        spec::Dtype::Auto => DtypeChoice::Auto,
    }
}

/// The name a run record gives a resolved dtype.
fn dtype_name(kind: tch::Kind) -> String {
    match kind {
        tch::Kind::Float => "f32".into(),
        tch::Kind::Half => "f16".into(),
        tch::Kind::BFloat16 => "bf16".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Writes `text` to a new file; an existing file is left as it is (it describes the same cell).
fn write_once(path: &Path, text: &str) -> Result<()> {
    if !path.exists() {
        std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_split_round_robin() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!(s, Shard { index: 2, count: 3 });
        let owned: Vec<usize> = (0..7).filter(|&i| s.owns(i)).collect();
        assert_eq!(owned, [1, 4]);
        for bad in ["0/3", "4/3", "x", "1/0", "1-2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
