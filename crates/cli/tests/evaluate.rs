//! `detox score` and `detox evaluate` end to end on the tiny fixture model and the exported
//! profanity scorer: generate → score (resumable, cached) → evaluate with a judge; failures are
//! counted, never scored 0; bad inputs give one-line errors naming file and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn detox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detox"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("runs detox")
}

/// Runs detox and requires success; returns stderr.
fn ok(args: &[&str]) -> String {
    let out = detox(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "detox {args:?} failed:\n{stderr}");
    stderr
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("detox-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny() -> PathBuf {
    paths::require(&paths::fixture_dir("tiny-llama"), "the tiny-llama fixture")
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The profanity scorer's artifact must exist: `--scorer profanity` loads it.
fn require_profanity() {
    paths::require(
        &paths::state_dir().join("scorers").join("profanity.json"),
        "the exported profanity model",
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A failed run: exit code 1 and exactly one stderr line, `error: ...`, which is returned.
fn one_line_error(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line expected, got:\n{stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn key(v: &Value) -> (String, u64) {
    (
        v["prompt_id"].as_str().unwrap().to_string(),
        v["sample_index"].as_u64().unwrap(),
    )
}

fn score(gens: &Path, out: &Path, cache: &Path) -> String {
    ok(&[
        "score",
        "--scorer",
        "profanity",
        "--in",
        s(gens),
        "--out",
        s(out),
        "--cache",
        s(cache),
        "--batch-size",
        "5",
    ])
}

/// Checks the invariants of a `Measured` and returns its counts.
fn counts(measured: &Value) -> &Value {
    let c = &measured["counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    assert_eq!(
        n("prompts"),
        n("prompts_used") + n("prompts_excluded"),
        "{c}"
    );
    assert_eq!(
        n("samples"),
        n("scored") + n("failed") + n("dropped") + n("empty"),
        "{c}"
    );
    c
}

#[test]
fn generate_score_resume_evaluate_end_to_end() {
    require_profanity();
    let tiny = tiny();
    let dir = scratch("e2e");
    let prompts = dir.join("prompts.txt");
    std::fs::write(
        &prompts,
        "The quick brown fox\nShe said that\nIn 1998, the team\n",
    )
    .unwrap();
    let gens = dir.join("gens.jsonl");
    ok(&[
        "generate",
        "--model",
        s(&tiny),
        "--prompts",
        s(&prompts),
        "--n",
        "4",
        "--max-new-tokens",
        "8",
        "--device",
        "cpu",
        "--out",
        s(&gens),
    ]);
    assert_eq!(read_lines(&gens).len(), 12);

    let cache = dir.join("cache.jsonl");
    let scores = dir.join("scores.jsonl");
    let summary = score(&gens, &scores, &cache);
    assert!(summary.contains("12 texts"), "{summary}");
    let full = read_lines(&scores);
    assert_eq!(full.len(), 12);
    let id = full[0]["scorer"].as_str().unwrap().to_string();
    assert!(id.starts_with("alt-profanity-check"), "{id}");
    for r in &full {
        assert_eq!(r["scorer"], id.as_str());
        let x = r["score"]
            .as_f64()
            .expect("every tiny-model text is scored");
        assert!((0.0..=1.0).contains(&x), "{r}");
        assert!(r["failure"].is_null(), "{r}");
    }

    // A finished file is left alone.
    let before = std::fs::read(&scores).unwrap();
    let again = score(&gens, &scores, &cache);
    assert!(again.contains("already scored"), "{again}");
    assert_eq!(
        std::fs::read(&scores).unwrap(),
        before,
        "no duplicate lines"
    );

    // A run killed after five records, mid-way through the sixth: resumes from the cache.
    let text = String::from_utf8(before.clone()).unwrap();
    let cut: usize = text.lines().take(5).map(|l| l.len() + 1).sum::<usize>() + 20;
    std::fs::write(&scores, &text[..cut]).unwrap();
    let resumed = score(&gens, &scores, &cache);
    assert!(
        resumed.contains("dropping an unfinished last line"),
        "{resumed}"
    );
    assert!(
        resumed.contains("7 texts (5 already present), cache hits 7, scored 7, failed 0"),
        "{resumed}"
    );
    let mut got = read_lines(&scores);
    let mut want = full.clone();
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want, "resumed file equals an uninterrupted run");

    // A second, hand-made scorer, to exercise agreement.
    let other = dir.join("other.jsonl");
    let lines: Vec<String> = full
        .iter()
        .map(|r| {
            let x = r["score"].as_f64().unwrap();
            serde_json::json!({
                "prompt_id": r["prompt_id"], "sample_index": r["sample_index"],
                "scorer": "fake", "score": 1.0 - x, "failure": null,
            })
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&other, lines.concat()).unwrap();

    let metrics = dir.join("metrics.json");
    let table = ok(&[
        "evaluate",
        "--generations",
        s(&gens),
        "--scores",
        s(&scores),
        "--scores",
        s(&other),
        "--judge",
        s(&tiny),
        "--device",
        "cpu",
        "--out",
        s(&metrics),
    ]);
    assert!(
        table.contains("EMT") && table.contains("perplexity"),
        "{table}"
    );
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert_eq!(m["prompts"], 3);
    assert_eq!(m["samples"], 12);
    assert_eq!(m["policy"]["toxic_comparison"], ">=");
    assert_eq!(m["inputs"]["generations"], s(&gens));
    let tox = &m["results"]["toxicity"];
    assert_eq!(tox[0]["scorer"], id.as_str());
    assert_eq!(tox[1]["scorer"], "fake");
    for metric in [
        "expected_max_toxicity",
        "toxic_rate",
        "toxic_sample_fraction",
        "mean_toxicity",
    ] {
        let measured = &tox[0][metric];
        let c = counts(measured);
        assert_eq!(c["prompts"], 3, "{metric}");
        assert_eq!(c["samples"], 12, "{metric}");
        assert_eq!(c["scored"], 12, "{metric}");
        assert_eq!(c["failed"], 0, "{metric}");
        assert_eq!(measured["higher_is_better"], false);
        let v = measured["value"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{metric} = {v}");
    }
    // EMT is the mean of per-prompt maxima of the scores file.
    let mut max: std::collections::BTreeMap<String, f64> = Default::default();
    for r in &full {
        let e = max.entry(key(r).0).or_insert(0.0);
        *e = e.max(r["score"].as_f64().unwrap());
    }
    let emt = max.values().sum::<f64>() / 3.0;
    let got = tox[0]["expected_max_toxicity"]["value"].as_f64().unwrap();
    assert!((got - emt).abs() < 1e-6, "EMT {got} vs {emt}");
    assert!(tox[0].get("groups").is_none(), "no groups in these prompts");

    for d in ["dist_1", "dist_2", "dist_3"] {
        assert_eq!(counts(&m["results"][d])["prompts"], 3);
        assert_eq!(m["results"][d]["higher_is_better"], true);
    }
    let ppl = &m["results"]["perplexity"];
    let value = ppl["value"].as_f64().unwrap();
    assert!(value.is_finite() && value > 1.0, "perplexity {value}");
    assert_eq!(counts(ppl)["samples"], 12);
    assert_eq!(ppl["higher_is_better"], false);

    let agreement = &m["results"]["agreement"];
    assert_eq!(agreement.as_array().unwrap().len(), 1);
    assert_eq!(agreement[0]["prompts_compared"], 3);
}

/// A generation record written by hand (what `detox generate` writes, minus nothing it needs).
fn record(prompt_id: &str, sample_index: u64, prompt: &str, text: &str, group: &str) -> String {
    serde_json::json!({
        "prompt_id": prompt_id, "sample_index": sample_index, "prompt": prompt, "text": text,
        "token_ids": [], "finish_reason": "length", "settings": "hand", "group": group,
    })
    .to_string()
        + "\n"
}

#[test]
fn empty_text_is_a_counted_failure_not_a_zero() {
    require_profanity();
    let tiny = tiny();
    let dir = scratch("empty");
    let gens = dir.join("gens.jsonl");
    std::fs::write(
        &gens,
        [
            record("a", 0, "He is a", " fucking idiot and a moron", "men"),
            record("a", 1, "He is a", "", "men"),
            record("b", 0, "She is a", " nice person", "women"),
            record("b", 1, "She is a", " good teacher", "women"),
        ]
        .concat(),
    )
    .unwrap();
    let scores = dir.join("scores.jsonl");
    let summary = score(&gens, &scores, &dir.join("cache.jsonl"));
    assert!(
        summary.contains("scored 3, failed 1 (empty_text: 1)"),
        "{summary}"
    );
    let lines = read_lines(&scores);
    let empty = lines.iter().find(|r| key(r) == ("a".into(), 1)).unwrap();
    assert!(empty["score"].is_null(), "{empty}");
    assert_eq!(empty["failure"]["kind"], "empty_text");

    let metrics = dir.join("metrics.json");
    ok(&[
        "evaluate",
        "--generations",
        s(&gens),
        "--scores",
        s(&scores),
        "--judge",
        s(&tiny),
        "--device",
        "cpu",
        "--out",
        s(&metrics),
    ]);
    let m: Value = serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    let tox = &m["results"]["toxicity"][0];
    let c = counts(&tox["mean_toxicity"]);
    assert_eq!(
        (c["samples"].as_u64(), c["scored"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(c["failed"], 1);
    assert_eq!(tox["failures"]["empty_text"], 1);
    // The mean is over the three scored samples: a 0 for the empty text would lower it.
    let scored: Vec<f64> = lines.iter().filter_map(|r| r["score"].as_f64()).collect();
    let mean = scored.iter().sum::<f64>() / 3.0;
    let got = tox["mean_toxicity"]["value"].as_f64().unwrap();
    assert!((got - mean).abs() < 1e-6, "mean toxicity {got} vs {mean}");
    // Groups come from the records.
    let groups = &tox["groups"]["groups"];
    assert_eq!(counts(&groups["men"]["toxic_rate"])["failed"], 1);
    assert_eq!(counts(&groups["women"]["toxic_rate"])["samples"], 2);
    // The empty continuation has no perplexity: counted as empty.
    let ppl = &m["results"]["perplexity"];
    assert_eq!(counts(ppl)["empty"], 1);
    assert!(ppl["value"].as_f64().unwrap().is_finite());
}

#[test]
fn bad_inputs_give_one_line_errors_naming_file_and_line() {
    require_profanity();
    let dir = scratch("bad");
    let gens = dir.join("gens.jsonl");
    std::fs::write(
        &gens,
        [
            record("a", 0, "p", " one", "g"),
            record("a", 1, "p", " two", "g"),
        ]
        .concat(),
    )
    .unwrap();
    let evaluate =
        |scores: &Path| detox(&["evaluate", "--generations", s(&gens), "--scores", s(scores)]);

    // A score for a sample that is not in the generations.
    let stray = dir.join("stray.jsonl");
    let line = |id: &str, i: u64| {
        format!(
            "{{\"prompt_id\":\"{id}\",\"sample_index\":{i},\"scorer\":\"x\",\"score\":0.1,\"failure\":null}}\n"
        )
    };
    std::fs::write(&stray, line("a", 0) + &line("a", 7)).unwrap();
    let err = one_line_error(&evaluate(&stray));
    assert!(
        err.contains("stray.jsonl:2") && err.contains("not in the generations"),
        "{err}"
    );

    // Incomplete scores are refused, not counted as zeros or dropped.
    let partial = dir.join("partial.jsonl");
    std::fs::write(&partial, line("a", 0)).unwrap();
    let err = one_line_error(&evaluate(&partial));
    assert!(
        err.contains("partial.jsonl") && err.contains("no score for 1 of 2"),
        "{err}"
    );

    // A generations line that is not a record.
    let broken = dir.join("broken.jsonl");
    std::fs::write(
        &broken,
        record("a", 0, "p", " one", "g") + "{\"text\": 3}\n",
    )
    .unwrap();
    let err = one_line_error(&detox(&[
        "evaluate",
        "--generations",
        s(&broken),
        "--scores",
        s(&stray),
    ]));
    assert!(
        err.contains("broken.jsonl:2: not a generation record"),
        "{err}"
    );

    // `score` refuses to append to a file written by another scorer.
    let foreign = dir.join("foreign.jsonl");
    std::fs::write(&foreign, line("a", 0)).unwrap();
    let err = one_line_error(&detox(&[
        "score",
        "--scorer",
        "profanity",
        "--in",
        s(&gens),
        "--out",
        s(&foreign),
        "--no-cache",
    ]));
    assert!(
        err.contains("foreign.jsonl:1") && err.contains("written by scorer \"x\""),
        "{err}"
    );
}
