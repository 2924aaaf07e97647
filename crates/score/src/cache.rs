//! Persistent score cache, so re-scoring a finished or interrupted run costs nothing.
//!
//! The cache is an append-only JSONL file, one line per scored text:
//! `{"scorer": "<scorer id>", "text": "<text>", "score": 0.123}`, loaded into memory on open and
//! keyed by (scorer id, text). The scorer id names the scorer *and its settings*, so scores from
//! different scorers or versions never mix.
//!
//! Only successes are cached. A failure (rate limit, timeout, empty text) says nothing lasting
//! about the text, so it is retried on the next run instead of being remembered; every run still
//! counts its own failures.
//!
//! A process killed mid-write can leave a last line without its newline. Opening the cache drops
//! that torn line and truncates the file back to the last complete one, so appending continues
//! cleanly. Any other unreadable line means the file is not ours or was edited, and opening fails
//! rather than guessing.
//!
//! One process should write a cache file at a time: no lock is taken. (Each batch goes out in one
//! `write` on an O_APPEND handle, so two writers would interleave whole batches on Linux, not
//! half lines, but nothing here relies on that.)

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::{ScoreResult, ToxicityScorer};

/// One line of the cache file. `Cow` borrows from the file's bytes unless JSON escapes force a copy.
#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    scorer: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
    score: f32,
}

/// Scores by scorer id, then by text. Nested maps keep one copy of each scorer id instead of one
/// per text, and allow lookups by `&str` without building a key.
type Scores = HashMap<String, HashMap<String, f32>>;

/// An open score cache: the file's contents in memory plus a handle that appends to it.
#[derive(Debug)]
pub struct ScoreCache {
    path: PathBuf,
    file: File,
    scores: Scores,
    /// Bytes dropped from a torn last line when the file was opened.
    torn_bytes: u64,
    /// First failed append. Scores keep coming from memory, but the file is no longer written,
    /// so a later append cannot land after a half-written line; [`ScoreCache::sync`] reports it.
    write_error: Option<io::Error>,
}

impl ScoreCache {
    /// Opens (creating it and its folder if needed) the cache at `path`.
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("creating the folder of score cache {}", path.display())
            })?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening score cache {}", path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("reading score cache {}", path.display()))?;

        let (scores, complete_len) =
            parse(&bytes).with_context(|| format!("score cache {} is corrupt", path.display()))?;
        let torn_bytes = (bytes.len() - complete_len) as u64;
        if torn_bytes > 0 {
            // Appends always go to the end (O_APPEND), so truncating is all it takes.
            file.set_len(complete_len as u64)
                .with_context(|| format!("truncating torn line of {}", path.display()))?;
        }
        Ok(Self {
            path,
            file,
            scores,
            torn_bytes,
            write_error: None,
        })
    }

    /// The default location: `<state dir>/cache/scores.jsonl`.
    pub fn default_path() -> PathBuf {
        paths::state_dir().join("cache").join("scores.jsonl")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of a torn last line dropped on open (0 if the file ended cleanly).
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }

    /// Number of cached scores over all scorers.
    pub fn len(&self) -> usize {
        self.scores.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, scorer: &str, text: &str) -> Option<f32> {
        self.scores.get(scorer)?.get(text).copied()
    }

    /// Caches scores of one scorer, in memory and on disk (one write for the whole batch, so a
    /// kill tears at most the last line). Scores already cached with the same value, and
    /// non-finite scores, are skipped. A write error is kept for [`ScoreCache::sync`]; from then
    /// on scores stay in memory only.
    pub fn insert_many<'t>(
        &mut self,
        scorer: &str,
        scores: impl IntoIterator<Item = (&'t str, f32)>,
    ) {
        let mut lines = Vec::new();
        let by_text = self.scores.entry(scorer.to_owned()).or_default();
        for (text, score) in scores {
            if !score.is_finite() || by_text.get(text) == Some(&score) {
                continue;
            }
            by_text.insert(text.to_owned(), score);
            serde_json::to_writer(
                &mut lines,
                &Entry {
                    scorer: Cow::Borrowed(scorer),
                    text: Cow::Borrowed(text),
                    score,
                },
            )
            .expect("serialising a cache entry cannot fail");
            lines.push(b'\n');
        }
        if lines.is_empty() || self.write_error.is_some() {
            return;
        }
        if let Err(err) = self.file.write_all(&lines) {
            eprintln!(
                "warning: score cache {} can no longer be written ({err}); scores are kept in \
                 memory only for the rest of this run",
                self.path.display()
            );
            self.write_error = Some(err);
        }
    }

    pub fn insert(&mut self, scorer: &str, text: &str, score: f32) {
        self.insert_many(scorer, [(text, score)]);
    }

    /// Flushes the file to disk and reports the first append that failed, if any.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        if let Some(err) = &self.write_error {
            bail!("writing score cache {}: {err}", self.path.display());
        }
        self.file
            .sync_data()
            .with_context(|| format!("syncing score cache {}", self.path.display()))
    }
}

/// Parses the file: the scores and the length of the prefix made of complete lines.
fn parse(bytes: &[u8]) -> anyhow::Result<(Scores, usize)> {
    let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut scores = Scores::new();
    for (index, line) in bytes[..complete_len].split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let entry: Entry = serde_json::from_slice(line)
            .with_context(|| format!("line {} is not a cache entry", index + 1))?;
        // A later line for the same key wins, as a replayed append log should.
        // Look the scorer id up before allocating it: nearly every line repeats a known one.
        if !scores.contains_key(entry.scorer.as_ref()) {
            scores.insert(entry.scorer.to_string(), HashMap::new());
        }
        scores
            .get_mut(entry.scorer.as_ref())
            .expect("inserted above")
            .insert(entry.text.into_owned(), entry.score);
    }
    Ok((scores, complete_len))
}

/// Counts from scoring through the cache. Every input text is either a hit or a miss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Texts whose score came from the cache.
    pub hits: u64,
    /// Texts not in the cache, scored by the inner scorer.
    pub misses: u64,
    /// Misses the inner scorer failed on (not cached, so retried next time).
    pub failures: u64,
}

impl std::ops::AddAssign for CacheStats {
    fn add_assign(&mut self, other: Self) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.failures += other.failures;
    }
}

/// Scores `texts` in order, sending only the uncached ones (each distinct text once) to `scorer`
/// in one batch, and caching its successes.
pub fn score_with_cache<S: ToxicityScorer + ?Sized>(
    scorer: &mut S,
    cache: &mut ScoreCache,
    texts: &[&str],
) -> (Vec<ScoreResult>, CacheStats) {
    let id = scorer.id();
    let mut stats = CacheStats::default();
    let mut results: Vec<Option<ScoreResult>> = Vec::with_capacity(texts.len());
    // Distinct uncached texts in first-seen order, and where each input position finds its result.
    let mut to_score: Vec<&str> = Vec::new();
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    let mut pending: Vec<(usize, usize)> = Vec::new();
    for (position, &text) in texts.iter().enumerate() {
        match cache.get(&id, text) {
            Some(score) => {
                stats.hits += 1;
                results.push(Some(Ok(score)));
            }
            None => {
                stats.misses += 1;
                let slot = *slot_of.entry(text).or_insert_with(|| {
                    to_score.push(text);
                    to_score.len() - 1
                });
                pending.push((position, slot));
                results.push(None);
            }
        }
    }

    if !to_score.is_empty() {
        let fresh = scorer.score_batch(&to_score);
        assert_eq!(
            fresh.len(),
            to_score.len(),
            "scorer {id} returned {} results for {} texts",
            fresh.len(),
            to_score.len()
        );
        cache.insert_many(
            &id,
            to_score
                .iter()
                .zip(&fresh)
                .filter_map(|(&text, result)| result.as_ref().ok().map(|&score| (text, score))),
        );
        for (position, slot) in pending {
            if fresh[slot].is_err() {
                stats.failures += 1;
            }
            results[position] = Some(fresh[slot].clone());
        }
    }

    let results = results
        .into_iter()
        .map(|r| r.expect("every position is a hit or pending"))
        .collect();
    (results, stats)
}

/// A scorer that answers from a [`ScoreCache`] and asks `inner` only about texts it has not seen.
/// Its id is the inner scorer's: caching does not change scores.
#[derive(Debug)]
pub struct CachedScorer<S> {
    inner: S,
    cache: ScoreCache,
    stats: CacheStats,
}

impl<S: ToxicityScorer> CachedScorer<S> {
    pub fn new(inner: S, cache: ScoreCache) -> Self {
        Self {
            inner,
            cache,
            stats: CacheStats::default(),
        }
    }

    /// Counts summed over every batch so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn cache_mut(&mut self) -> &mut ScoreCache {
        &mut self.cache
    }

    pub fn into_parts(self) -> (S, ScoreCache) {
        (self.inner, self.cache)
    }
}

impl<S: ToxicityScorer> ToxicityScorer for CachedScorer<S> {
    fn id(&self) -> String {
        self.inner.id()
    }

    fn score_batch(&mut self, texts: &[&str]) -> Vec<ScoreResult> {
        let (results, stats) = score_with_cache(&mut self.inner, &mut self.cache, texts);
        self.stats += stats;
        results
    }
}
