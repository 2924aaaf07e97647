//! The profanity scorer: parity with alt-profanity-check on the shared fixture, a hand-computed
//! toy model, and the errors a broken artifact gives. Test names start with `profanity` so
//! `cargo test -p score profanity` selects them.

use std::path::PathBuf;
use std::time::Instant;

use score::profanity::{ProfanityModel, ProfanityScorer, FOLDS};
use score::{ScoreFailure, ToxicityScorer};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Fixture {
    tolerance: f64,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    text: String,
    tokens_in_vocab: Vec<String>,
    fold_decisions: Vec<f64>,
    prob: f64,
}

/// The exported model set-up made. Missing is a failure, not a skip: parity is the point.
fn exported_model() -> ProfanityModel {
    let path = ProfanityModel::default_path();
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh (it exports the alt-profanity-check model)",
        path.display()
    );
    ProfanityModel::load(&path).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn profanity_matches_alt_profanity_check_on_fixture() {
    let model = exported_model();
    let path = paths::fixture_dir("profanity").join("testvectors.json");
    let fixture: Fixture = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
    )
    .unwrap();
    assert_eq!(fixture.vectors.len(), 220);
    let tol = fixture.tolerance;
    let mut worst: f64 = 0.0;
    for v in &fixture.vectors {
        assert_eq!(
            model.tokens_in_vocab(&v.text),
            v.tokens_in_vocab,
            "tokens of {:?}",
            v.text
        );
        let d = model.decision_values(&v.text);
        assert_eq!(v.fold_decisions.len(), FOLDS);
        for (k, (got, want)) in d.iter().zip(&v.fold_decisions).enumerate() {
            assert!(
                (got - want).abs() <= tol,
                "fold {k} of {:?}: {got} vs {want}",
                v.text
            );
            worst = worst.max((got - want).abs());
        }
        let p = model.probability(&v.text);
        assert!(
            (p - v.prob).abs() <= tol,
            "prob of {:?}: {p} vs {}",
            v.text,
            v.prob
        );
        worst = worst.max((p - v.prob).abs());
    }
    eprintln!("largest deviation from the library: {worst:e}");
}

#[test]
fn profanity_scorer_refuses_empty_text_and_scores_the_rest() {
    let model = exported_model();
    let expected = model.probability("Shut up, moron.") as f32;
    let mut scorer = ProfanityScorer::new(model);
    assert!(scorer.id().starts_with("alt-profanity-check:"));
    let got = scorer.score_batch(&["", " \t\n", "Shut up, moron."]);
    assert_eq!(
        got,
        vec![
            Err(ScoreFailure::EmptyText),
            Err(ScoreFailure::EmptyText),
            Ok(expected)
        ]
    );
}

/// A two-term artifact: "bad" (index 0, idf 2) and "good" (index 1, idf 1). Fold k has weights
/// [k + 1, 0], intercept -k and calibration a = -1, b = 0, so p_k = sigmoid(d_k).
fn toy_artifact() -> Value {
    let folds: Vec<Value> = (0..FOLDS)
        .map(|k| json!({"coef": [k as f64 + 1.0, 0.0], "intercept": -(k as f64), "a": -1.0, "b": 0.0}))
        .collect();
    json!({
        "format": "detox-profanity-v1",
        "source": {"alt-profanity-check": "test"},
        "vectorizer": {
            "lowercase": true,
            "token_pattern": "(?u)\\b\\w\\w+\\b",
            "ngram_range": [1, 1],
            "binary": false,
            "norm": "l2",
            "use_idf": true,
            "smooth_idf": true,
            "sublinear_tf": false,
            "stop_words": ["the", "and"]
        },
        "vocabulary": {"bad": 0, "good": 1},
        "idf": [2.0, 1.0],
        "folds": folds
    })
}

fn toy_model(artifact: &Value) -> ProfanityModel {
    ProfanityModel::from_json(artifact.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:#}"))
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

#[test]
fn profanity_toy_model_by_hand() {
    let model = toy_model(&toy_artifact());
    assert_eq!(model.vocabulary_len(), 2);

    // "bad" twice, "good" once: tf-idf [2·2, 1·1] = [4, 1], L2 norm √17.
    let text = "BAD, bad: good x";
    assert_eq!(model.tokens_in_vocab(text), ["bad", "bad", "good"]);
    let d = model.decision_values(text);
    let x_bad = 4.0 / 17f64.sqrt();
    let mut p = 0.0;
    for (k, d) in d.iter().enumerate() {
        let want = (k as f64 + 1.0) * x_bad - k as f64;
        assert!((d - want).abs() < 1e-15, "fold {k}: {d} vs {want}");
        p += sigmoid(want);
    }
    assert!((model.probability(text) - p / FOLDS as f64).abs() < 1e-15);

    // No known term: the zero vector, so d_k is the intercept alone.
    let empty = model.decision_values("");
    assert_eq!(empty, [0.0, -1.0, -2.0, -3.0, -4.0]);
    let prior = (0..FOLDS).map(|k| sigmoid(-(k as f64))).sum::<f64>() / FOLDS as f64;
    assert!((model.probability("nothing known here") - prior).abs() < 1e-15);
}

#[test]
fn profanity_stop_words_never_count() {
    // Put a stop word into the vocabulary: sklearn drops it before lookup, so must we.
    let mut artifact = toy_artifact();
    artifact["vectorizer"]["stop_words"] = json!(["good"]);
    let model = toy_model(&artifact);
    assert_eq!(model.tokens_in_vocab("good bad"), ["bad"]);
    assert_eq!(model.decision_values("good"), model.decision_values(""));
}

#[test]
fn profanity_id_follows_the_artifact() {
    let a = ProfanityScorer::new(toy_model(&toy_artifact()));
    let b = ProfanityScorer::new(toy_model(&toy_artifact()));
    let mut changed = toy_artifact();
    changed["idf"] = json!([2.0, 1.5]);
    let c = ProfanityScorer::new(toy_model(&changed));
    assert_eq!(a.id(), b.id());
    assert_ne!(a.id(), c.id());
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("profanity-test-{}-{name}.json", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

/// Loads `contents` from a file and returns the full error chain, which must name the file.
fn load_error(name: &str, contents: &str) -> String {
    let path = temp_file(name, contents);
    let err = ProfanityModel::load(&path).expect_err("malformed artifact was accepted");
    std::fs::remove_file(&path).unwrap();
    let message = format!("{err:#}");
    assert!(
        message.contains(&path.display().to_string()),
        "error does not name the file: {message}"
    );
    message
}

#[test]
fn profanity_malformed_artifacts_are_explained() {
    let missing = std::env::temp_dir().join("profanity-test-does-not-exist.json");
    let message = format!("{:#}", ProfanityModel::load(&missing).unwrap_err());
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("setup.sh"), "{message}");

    assert!(load_error("not-json", "{\"format\": ").contains("not a profanity artifact"));

    let mut v = toy_artifact();
    v["format"] = json!("something-else");
    assert!(load_error("format", &v.to_string()).contains("format"));

    let mut v = toy_artifact();
    v["vectorizer"]["token_pattern"] = json!("(?u)\\b\\w+\\b");
    assert!(load_error("pattern", &v.to_string()).contains("token pattern"));

    let mut v = toy_artifact();
    v["vectorizer"]["sublinear_tf"] = json!(true);
    assert!(load_error("sublinear", &v.to_string()).contains("sublinear_tf"));

    let mut v = toy_artifact();
    v["vocabulary"] = json!({"bad": 0, "good": 0});
    assert!(load_error("duplicate-index", &v.to_string()).contains("more than one term"));

    let mut v = toy_artifact();
    v["vocabulary"] = json!({"bad": 0, "good": 7});
    assert!(load_error("index-range", &v.to_string()).contains("out of 0..2"));

    let mut v = toy_artifact();
    v["idf"] = json!([1.0]);
    assert!(load_error("idf-len", &v.to_string()).contains("idf has 1"));

    let mut v = toy_artifact();
    v["folds"][3]["coef"] = json!([1.0]);
    assert!(load_error("coef-len", &v.to_string()).contains("fold 3 has 1 weights"));

    let mut v = toy_artifact();
    v["folds"].as_array_mut().unwrap().pop();
    assert!(load_error("fold-count", &v.to_string()).contains("4 folds"));

    let mut v = toy_artifact();
    v["folds"][0].as_object_mut().unwrap().remove("a");
    assert!(load_error("missing-field", &v.to_string()).contains("missing field `a`"));
}

/// Throughput of `probability` on 1,000 twenty-token continuations built from ParaDetox sentences.
/// Run: `cargo test --release -p score profanity_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark; prints a number, asserts nothing about speed"]
fn profanity_throughput() {
    let model = exported_model();
    let path = paths::data_dir("paradetox").join("paradetox.tsv");
    let tsv = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    // Neutral paraphrases (column 2) read like LM continuations; chunk their words by 20.
    let words: Vec<&str> = tsv
        .lines()
        .skip(1)
        .filter_map(|line| line.split('\t').nth(1))
        .flat_map(str::split_whitespace)
        .collect();
    let texts: Vec<String> = words
        .chunks_exact(20)
        .take(1000)
        .map(|c| c.join(" "))
        .collect();
    assert_eq!(texts.len(), 1000);

    let mut best = f64::INFINITY;
    let mut checksum = 0.0;
    for _ in 0..5 {
        let start = Instant::now();
        for t in &texts {
            checksum += model.probability(t);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    eprintln!(
        "profanity: {:.0} texts/s (best of 5 passes over 1,000 twenty-word texts; checksum {checksum:.3})",
        texts.len() as f64 / best
    );
}
