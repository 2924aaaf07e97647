//! The score stage: score the text of every generation with one toxicity scorer, through the
//! persistent score cache, appending one [`ScoreLine`] per (prompt id, sample index). Failures are
//! written and counted, never scored 0. A rerun skips the keys already written (failed ones
//! included: write to another file to retry them, the cache makes that cheap) and refuses a file
//! written by another scorer id.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Result};
use records::{failure_kind, read_generations, ScoreLine};
use score::cache::{score_with_cache, CacheStats, ScoreCache};
use score::ToxicityScorer;

use crate::monitor::{Count, Monitor};

/// Which score cache a stage uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheChoice {
    /// The project-wide cache (`<state dir>/cache/scores.jsonl`).
    Default,
    File(PathBuf),
    /// Score everything afresh and cache nothing.
    None,
}

/// What one [`score`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScoreOutcome {
    /// Samples in the generations file.
    pub samples: usize,
    /// Samples scored by this call (the rest were already in the file).
    pub new: usize,
    pub cache_hits: Option<u64>,
    pub scored: usize,
    pub failed: BTreeMap<String, usize>,
}

/// Scores the generations in `generations` with `scorer` into `out`, `batch_size` texts per
/// scorer call and per write.
pub fn score(
    generations: &Path,
    scorer: &mut dyn ToxicityScorer,
    out: &Path,
    cache: &CacheChoice,
    batch_size: usize,
    monitor: &dyn Monitor,
) -> Result<ScoreOutcome> {
    ensure!(batch_size >= 1, "--batch-size must be at least 1");
    let generations = read_generations(generations)?;
    let id = scorer.id();
    let done = read_scored(out, &id)?;
    let todo: Vec<_> = generations
        .iter()
        .filter(|g| !done.contains(&g.key()))
        .collect();
    let mut outcome = ScoreOutcome {
        samples: generations.len(),
        new: todo.len(),
        ..ScoreOutcome::default()
    };
    if todo.is_empty() {
        monitor.note(&format!(
            "{}: all {} samples already scored by {id}",
            out.display(),
            generations.len()
        ));
        return Ok(outcome);
    }
    let mut cache = match cache {
        CacheChoice::None => None,
        CacheChoice::File(path) => Some(ScoreCache::open(path)?),
        CacheChoice::Default => Some(ScoreCache::open(ScoreCache::default_path())?),
    };
    let mut file = data::jsonl::open_append(out)?;
    let progress = monitor.progress(generations.len() as u64, Count::Texts);
    progress.set_message(format!("scoring ({id})"));
    progress.set_position((generations.len() - todo.len()) as u64);
    let mut stats = CacheStats::default();
    for chunk in todo.chunks(batch_size) {
        let texts: Vec<&str> = chunk.iter().map(|g| g.text.as_str()).collect();
        let results = match cache.as_mut() {
            Some(cache) => {
                let (results, batch_stats) = score_with_cache(scorer, cache, &texts);
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
        let lines: Vec<ScoreLine> = chunk
            .iter()
            .zip(results)
            .map(|(g, result)| ScoreLine::new(&g.prompt_id, g.sample_index, &id, result))
            .collect();
        for line in &lines {
            match &line.failure {
                Some(f) => {
                    *outcome
                        .failed
                        .entry(failure_kind(f).to_owned())
                        .or_default() += 1
                }
                None => outcome.scored += 1,
            }
        }
        data::jsonl::append(&mut file, out, &lines)?;
        progress.inc(lines.len() as u64);
    }
    progress.finish();
    if let Some(cache) = cache.as_mut() {
        cache.sync()?;
        outcome.cache_hits = Some(stats.hits);
    }
    monitor.note(&summary(out, &outcome, &id));
    Ok(outcome)
}

/// The keys already in `out`; a line by another scorer is an error.
fn read_scored(out: &Path, id: &str) -> Result<HashSet<(String, u64)>> {
    let mut done = HashSet::new();
    data::jsonl::read_resumable(out, "score record", |_, record: ScoreLine| {
        if record.scorer != id {
            bail!(
                "written by scorer {:?}, not {id:?}; use another --out",
                record.scorer
            );
        }
        done.insert((record.prompt_id, record.sample_index));
        Ok(())
    })?;
    Ok(done)
}

fn summary(out: &Path, outcome: &ScoreOutcome, id: &str) -> String {
    let failed_total: usize = outcome.failed.values().sum();
    let by_kind = if outcome.failed.is_empty() {
        String::new()
    } else {
        let kinds: Vec<String> = outcome
            .failed
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        format!(" ({})", kinds.join(", "))
    };
    let hits = outcome
        .cache_hits
        .map_or_else(|| "no cache".to_owned(), |h| h.to_string());
    format!(
        "{}: {} texts ({} already present), cache hits {hits}, scored {}, failed {failed_total}{by_kind} [{id}]",
        out.display(),
        outcome.new,
        outcome.samples - outcome.new,
        outcome.scored,
    )
}
