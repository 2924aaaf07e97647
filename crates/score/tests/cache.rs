//! The persistent score cache and scoring through it, with a counting fake scorer.

use std::path::PathBuf;

use score::cache::{score_with_cache, CacheStats, CachedScorer, ScoreCache};
use score::{ScoreFailure, ScoreResult, ToxicityScorer};

/// Scores a text by its length (so results are checkable), fails on texts starting with "fail",
/// and records every text it was asked about.
struct Counting {
    id: String,
    seen: Vec<String>,
}

impl Counting {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            seen: Vec::new(),
        }
    }
}

fn fake_score(text: &str) -> ScoreResult {
    if text.starts_with("fail") {
        Err(ScoreFailure::Timeout)
    } else {
        Ok(text.len() as f32 / 100.0)
    }
}

impl ToxicityScorer for Counting {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn score_batch(&mut self, texts: &[&str]) -> Vec<ScoreResult> {
        self.seen.extend(texts.iter().map(|t| t.to_string()));
        texts.iter().map(|t| fake_score(t)).collect()
    }
}

/// A fresh folder under the system temp dir, unique per test and process.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("score-cache-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn hits_avoid_calls_and_results_keep_their_order() {
    let dir = temp_dir("hits");
    let mut cache = ScoreCache::open(dir.join("scores.jsonl")).unwrap();
    let mut scorer = Counting::new("fake:1");

    let (first, stats) = score_with_cache(&mut scorer, &mut cache, &["aa", "bbbb", "aa", "fail x"]);
    assert_eq!(
        first,
        vec![Ok(0.02), Ok(0.04), Ok(0.02), Err(ScoreFailure::Timeout)]
    );
    assert_eq!(
        stats,
        CacheStats {
            hits: 0,
            misses: 4,
            failures: 1
        }
    );
    // The duplicate "aa" was sent once.
    assert_eq!(scorer.seen, ["aa", "bbbb", "fail x"]);

    scorer.seen.clear();
    let (second, stats) =
        score_with_cache(&mut scorer, &mut cache, &["bbbb", "fail x", "new!", "aa"]);
    assert_eq!(
        second,
        vec![Ok(0.04), Err(ScoreFailure::Timeout), Ok(0.04), Ok(0.02)]
    );
    assert_eq!(
        stats,
        CacheStats {
            hits: 2,
            misses: 2,
            failures: 1
        }
    );
    // Failures are not cached, so "fail x" is asked again.
    assert_eq!(scorer.seen, ["fail x", "new!"]);

    scorer.seen.clear();
    let (third, stats) = score_with_cache(&mut scorer, &mut cache, &["aa", "new!"]);
    assert_eq!(third, vec![Ok(0.02), Ok(0.04)]);
    assert_eq!(stats.hits, 2);
    assert!(scorer.seen.is_empty(), "all hits: the scorer is not called");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn scores_persist_across_reopen() {
    let dir = temp_dir("persist");
    let path = dir.join("nested").join("scores.jsonl");
    // Texts that need JSON escaping must come back unchanged.
    let texts = [
        "plain",
        "line\nbreak \"quoted\" \\ tab\t",
        "ünïcödé 🙂",
        "fail now",
    ];
    {
        let mut cache = ScoreCache::open(&path).unwrap();
        let mut scorer = Counting::new("fake:1");
        score_with_cache(&mut scorer, &mut cache, &texts);
        cache.sync().unwrap();
    }
    let mut cache = ScoreCache::open(&path).unwrap();
    assert_eq!(cache.len(), 3, "three successes, the failure is not stored");
    assert_eq!(cache.torn_bytes(), 0);
    let mut scorer = Counting::new("fake:1");
    let (results, stats) = score_with_cache(&mut scorer, &mut cache, &texts);
    assert_eq!(results, texts.map(fake_score).to_vec());
    assert_eq!(stats.hits, 3);
    assert_eq!(scorer.seen, ["fail now"]);

    // One line per stored score.
    let content = std::fs::read_to_string(&path).unwrap();
    assert_eq!(content.lines().count(), 3);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_torn_last_line_is_dropped_and_truncated() {
    let dir = temp_dir("torn");
    let path = dir.join("scores.jsonl");
    {
        let mut cache = ScoreCache::open(&path).unwrap();
        cache.insert_many("fake:1", [("one", 0.1), ("two", 0.2)]);
    }
    let good_len = std::fs::metadata(&path).unwrap().len();
    // Simulate a kill in the middle of writing a third line.
    let torn = r#"{"scorer":"fake:1","text":"thr"#;
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(torn.as_bytes());
    std::fs::write(&path, bytes).unwrap();

    {
        let mut cache = ScoreCache::open(&path).unwrap();
        assert_eq!(cache.torn_bytes(), torn.len() as u64);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        assert_eq!(cache.get("fake:1", "one"), Some(0.1));
        assert_eq!(cache.get("fake:1", "two"), Some(0.2));
        assert_eq!(cache.len(), 2);
        // Appending after the truncation yields a clean file.
        cache.insert("fake:1", "three", 0.3);
    }
    let cache = ScoreCache::open(&path).unwrap();
    assert_eq!(cache.torn_bytes(), 0);
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.get("fake:1", "three"), Some(0.3));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_corrupt_complete_line_is_an_error_naming_it() {
    let dir = temp_dir("corrupt");
    let path = dir.join("scores.jsonl");
    std::fs::write(
        &path,
        "{\"scorer\":\"s\",\"text\":\"a\",\"score\":0.5}\nnot json\n{\"scorer\":\"s\",\"text\":\"b\",\"score\":0.5}\n",
    )
    .unwrap();
    let err = format!("{:#}", ScoreCache::open(&path).unwrap_err());
    assert!(err.contains("line 2"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn different_scorer_ids_do_not_mix() {
    let dir = temp_dir("ids");
    let path = dir.join("scores.jsonl");
    let mut cache = ScoreCache::open(&path).unwrap();
    let mut a = Counting::new("fake:a");
    score_with_cache(&mut a, &mut cache, &["same text"]);

    let mut b = Counting::new("fake:b");
    let (_, stats) = score_with_cache(&mut b, &mut cache, &["same text"]);
    assert_eq!(stats.misses, 1, "a score from another scorer is not a hit");
    assert_eq!(b.seen, ["same text"]);

    cache.insert("fake:b", "same text", 0.99);
    drop(cache);
    let cache = ScoreCache::open(&path).unwrap();
    assert_eq!(cache.get("fake:a", "same text"), Some(0.09));
    assert_eq!(cache.get("fake:b", "same text"), Some(0.99));
    assert_eq!(cache.get("fake:c", "same text"), None);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cached_scorer_wraps_a_scorer() {
    let dir = temp_dir("wrapper");
    let path = dir.join("scores.jsonl");
    let mut cached = CachedScorer::new(Counting::new("fake:1"), ScoreCache::open(&path).unwrap());
    assert_eq!(cached.id(), "fake:1");
    assert_eq!(
        cached.score_batch(&["x", "fail"]),
        vec![Ok(0.01), Err(ScoreFailure::Timeout)]
    );
    assert_eq!(cached.score_batch(&["x", "y"]), vec![Ok(0.01), Ok(0.01)]);
    assert_eq!(
        cached.stats(),
        CacheStats {
            hits: 1,
            misses: 3,
            failures: 1
        }
    );
    let (inner, _cache) = cached.into_parts();
    assert_eq!(inner.seen, ["x", "fail", "y"]);
    std::fs::remove_dir_all(dir).unwrap();
}
