//! `detox score`: score the `text` of every generation record with one toxicity scorer, through
//! the persistent score cache, and append one line per (prompt id, sample index) to a JSONL file:
//!
//! `{"prompt_id": "...", "sample_index": 0, "scorer": "<scorer id>", "score": 0.12, "failure": null}`
//!
//! or, for a text the scorer could not judge, `"score": null, "failure": {"kind": "...", "detail": ...}`.
//! Failures are written and counted, never scored 0. A rerun skips the keys already written (failed
//! ones included: write to another `--out` to retry them, the cache makes that cheap) and refuses a
//! file written by another scorer id.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{bail, ensure, Result};
use clap::Args;
use lm::DeviceChoice;
use score::cache::{score_with_cache, CacheStats, ScoreCache};
use score::{ScoreFailure, ScoreResult};
use serde::{Deserialize, Serialize};

use crate::evaluate::read_generations;
use crate::jsonl;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Scorer: minilm, profanity or perspective.
    #[arg(long)]
    pub scorer: String,
    /// Generations JSONL written by `detox generate`.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Scores JSONL; appended to, and samples already in it are skipped.
    #[arg(long)]
    pub out: PathBuf,
    /// Score cache file. Default: <state dir>/cache/scores.jsonl.
    #[arg(long, conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Score everything afresh and cache nothing.
    #[arg(long)]
    pub no_cache: bool,
    /// Texts per scorer call (and per write to --out).
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Device of model-based scorers: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

/// One line of a scores file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreRecord {
    pub prompt_id: String,
    pub sample_index: u64,
    /// The scorer's id (name, weights and settings).
    pub scorer: String,
    /// `None` exactly when `failure` is set.
    pub score: Option<f32>,
    pub failure: Option<ScoreFailure>,
}

impl ScoreRecord {
    /// The score or the failure; a line with both or neither is malformed.
    pub fn result(&self) -> Result<ScoreResult> {
        match (self.score, &self.failure) {
            (Some(score), None) => Ok(Ok(score)),
            (None, Some(failure)) => Ok(Err(failure.clone())),
            _ => bail!("a score record needs exactly one of \"score\" and \"failure\""),
        }
    }
}

/// The `kind` a failure is written with (`empty_text`, `http_status`, ...).
pub fn failure_kind(failure: &ScoreFailure) -> String {
    serde_json::to_value(failure)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "other".to_owned())
}

pub fn run(args: &ScoreArgs) -> Result<()> {
    ensure!(args.batch_size >= 1, "--batch-size must be at least 1");
    let generations = read_generations(&args.input)?;
    let mut scorer = probe::build_scorer(&args.scorer, args.device)?;
    let id = scorer.id();

    let mut done = HashSet::new();
    jsonl::read_resumable(&args.out, "score record", |_, record: ScoreRecord| {
        if record.scorer != id {
            bail!(
                "written by scorer {:?}, not {id:?}; use another --out",
                record.scorer
            );
        }
        done.insert((record.prompt_id, record.sample_index));
        Ok(())
    })?;
    let todo: Vec<_> = generations
        .iter()
        .filter(|g| !done.contains(&(g.prompt_id.clone(), g.sample_index)))
        .collect();
    if todo.is_empty() {
        note!(
            "{}: all {} samples already scored by {id}",
            args.out.display(),
            generations.len()
        );
        return Ok(());
    }

    let mut cache = match (&args.cache, args.no_cache) {
        (_, true) => None,
        (Some(path), false) => Some(ScoreCache::open(path)?),
        (None, false) => Some(ScoreCache::open(ScoreCache::default_path())?),
    };
    let mut file = jsonl::open_append(&args.out)?;
    let progress = crate::progress::bar(
        generations.len() as u64,
        "{msg} [{bar:30}] {pos}/{len} texts, {per_sec}, eta {eta}",
    );
    progress.set_message(format!("scoring ({id})"));
    progress.set_position((generations.len() - todo.len()) as u64);
    let mut stats = CacheStats::default();
    let mut scored = 0usize;
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for chunk in todo.chunks(args.batch_size) {
        let texts: Vec<&str> = chunk.iter().map(|g| g.text.as_str()).collect();
        let results = match cache.as_mut() {
            Some(cache) => {
                let (results, batch_stats) = score_with_cache(scorer.as_mut(), cache, &texts);
                stats += batch_stats;
                results
            }
            None => scorer.score_batch(&texts),
        };
        ensure!(
            results.len() == texts.len(),
            "scorer {id} returned {} results for {} texts",
            results.len(),
            texts.len()
        );
        let records: Vec<ScoreRecord> = chunk
            .iter()
            .zip(results)
            .map(|(g, result)| {
                let (score, failure) = match result {
                    // A non-finite score is no score: write it as a failure, never as a number.
                    Ok(s) if s.is_finite() => (Some(s), None),
                    Ok(s) => (
                        None,
                        Some(ScoreFailure::Other(format!("non-finite score {s}"))),
                    ),
                    Err(f) => (None, Some(f)),
                };
                match &failure {
                    Some(f) => *failed.entry(failure_kind(f)).or_default() += 1,
                    None => scored += 1,
                }
                ScoreRecord {
                    prompt_id: g.prompt_id.clone(),
                    sample_index: g.sample_index,
                    scorer: id.clone(),
                    score,
                    failure,
                }
            })
            .collect();
        jsonl::append(&mut file, &args.out, &records)?;
        progress.inc(records.len() as u64);
    }
    progress.finish_and_clear();
    if let Some(cache) = cache.as_mut() {
        cache.sync()?;
    }
    let failed_total: usize = failed.values().sum();
    let by_kind = if failed.is_empty() {
        String::new()
    } else {
        let kinds: Vec<String> = failed.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        format!(" ({})", kinds.join(", "))
    };
    let hits = if cache.is_some() {
        stats.hits.to_string()
    } else {
        "no cache".to_owned()
    };
    note!(
        "{}: {} texts ({} already present), cache hits {hits}, scored {scored}, failed {failed_total}{by_kind} [{id}]",
        args.out.display(),
        todo.len(),
        generations.len() - todo.len(),
    );
    Ok(())
}
