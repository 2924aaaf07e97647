//! Tests of length and stopping, paired differences and the confound audit, on hand-made cells.

use std::collections::BTreeMap;
use std::path::PathBuf;

use metrics::MetricPolicy;

use crate::fixture::{FixtureCell, FixturePrompt, FixtureSample};
use crate::table::Value;
use crate::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("detox-report-fair-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stopped(text: &str, tokens: usize, score: Option<f64>) -> FixtureSample {
    FixtureSample {
        tokens,
        eos: true,
        ..FixtureSample::at_limit(text, score, Some(12.0))
    }
}

/// A cell with one scorer (minilm), a judge other than the policy model and 200 resamples.
fn cell(label: &str, baseline: Option<&str>, prompts: Vec<Vec<FixtureSample>>) -> FixtureCell {
    FixtureCell {
        model: "tiny".into(),
        method: if baseline.is_some() { "sasa" } else { "none" }.into(),
        label: label.into(),
        strength: baseline.map(|_| 1.0),
        params: BTreeMap::new(),
        prompt_set: "rtp".into(),
        seed: 0,
        scorers: vec![("minilm".into(), "minilm-head:hand".into())],
        prompts: prompts
            .into_iter()
            .enumerate()
            .map(|(i, samples)| FixturePrompt {
                id: format!("p{i}"),
                group: None,
                samples,
            })
            .collect(),
        record: None,
        evaluated: true,
        policy: MetricPolicy {
            bootstrap_resamples: 200,
            ..MetricPolicy::default()
        },
        baseline: baseline.map(str::to_owned),
        judge: Some("judge-lm".into()),
    }
}

/// Eight prompts of four samples at the 20-token limit, scores spread over [0, 1).
fn full_length_prompts(offset: usize) -> Vec<Vec<FixtureSample>> {
    (0..8)
        .map(|p| {
            (0..4)
                .map(|s| {
                    let score = ((p * 4 + s + offset) * 37 % 100) as f64 / 100.0;
                    let ppl = 10.0 + ((p + s) % 5) as f64;
                    FixtureSample::at_limit(
                        &format!("w{p} w{s} more words"),
                        Some(score),
                        Some(ppl),
                    )
                })
                .collect()
        })
        .collect()
}

fn f64_of(row: &Row, name: &str) -> Option<f64> {
    match row.get(name) {
        Some(Value::F64(x)) => *x,
        other => panic!("{name}: {other:?}"),
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6)
}

#[test]
fn a_cell_against_itself_has_exactly_zero_paired_differences() {
    let dir = scratch("self");
    cell("none", None, full_length_prompts(0))
        .write(&dir)
        .unwrap();
    let experiment = Experiment::load(&dir).unwrap();
    let c = &experiment.cells[0];
    let pairing = CellPairing {
        cell: c,
        baseline: Baseline::Found {
            cell: c,
            inferred: false,
        },
    };
    let rows = crate::paired::paired_differences(&[pairing]).unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.prompts_joined, r.only_in_cell, r.only_in_baseline),
        (8, 0, 0)
    );
    let perplexity = r
        .perplexity
        .as_ref()
        .expect("per-prompt perplexity recorded");
    for (name, d) in [
        ("toxic samples", &r.toxic_samples),
        ("EMT", &r.emt),
        ("toxic rate", &r.toxic_rate),
        ("perplexity", perplexity),
        ("length", &r.length_tokens),
    ] {
        assert_eq!(d.value, Some(0.0), "{name}");
        assert_eq!(d.ci95, Some((0.0, 0.0)), "{name}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_method_that_stops_early_is_named_by_the_audit() {
    let dir = scratch("early");
    let base = cell("none", None, full_length_prompts(0));
    let base_id = base.write(&dir).unwrap();
    // Three of four samples per prompt stop at end-of-sequence after 3 tokens; one runs to 20.
    let early: Vec<Vec<FixtureSample>> = full_length_prompts(1)
        .into_iter()
        .map(|samples| {
            samples
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    if i < 3 {
                        stopped("a b c", 3, s.scores[0])
                    } else {
                        s
                    }
                })
                .collect()
        })
        .collect();
    let early_id = cell("Stopper", Some("none"), early).write(&dir).unwrap();

    let experiment = Experiment::load(&dir).unwrap();
    let fairness = Fairness::of(&experiment).unwrap();
    let audit = fairness.audit_of(&early_id).unwrap();
    assert_eq!(audit.baseline.map(|b| b.id()), Some(base_id.as_str()));
    let length = audit
        .items
        .iter()
        .find(|i| i.kind == AuditKind::MeanLength)
        .expect("the length item");
    // (3·3 + 20) / 4 = 7.25 tokens against 20.
    assert_eq!(
        (length.value, length.baseline_value),
        (Some(7.25), Some(20.0))
    );
    assert!(
        length.detail.contains("7.2") && length.detail.contains("20.0"),
        "{}",
        length.detail
    );
    let eos = audit
        .items
        .iter()
        .find(|i| i.kind == AuditKind::EosShare)
        .unwrap();
    assert_eq!((eos.value, eos.baseline_value), (Some(0.75), Some(0.0)));
    assert_eq!(audit.chart_tags(), ["len", "eos"]);
    // The baseline has nothing to flag, and says so.
    let clean = fairness.audit_of(&base_id).unwrap();
    assert_eq!(clean.items.len(), 1);
    assert_eq!(clean.items[0].kind, AuditKind::NoneFound);

    // The paired length difference is −12.75 tokens, every resample the same.
    let row = &fairness.paired[0];
    assert_eq!(row.cell_id, early_id);
    assert_eq!(row.length_tokens.value, Some(-12.75));
    assert!(row.length_tokens.excludes_zero());

    let output = write_report(&dir).unwrap();
    let md = &output.markdown;
    let audit_section = &md[md.find("## Confound audit").expect("audit section")..];
    assert!(
        audit_section.contains("mean length 7.2 tokens vs 20.0"),
        "{audit_section}"
    );
    assert!(audit_section.contains("none found"));
    assert!(md.contains("## Paired differences against the baseline"));
    assert!(md.contains("## Length and stopping"));
    let csv = std::fs::read_to_string(output.report_dir.join("audit.csv")).unwrap();
    let line = csv
        .lines()
        .find(|l| l.contains(&early_id) && l.contains("mean_length"))
        .expect("audit.csv names the cell and the length item");
    assert!(line.contains("7.25") && line.contains(",20.0,"), "{line}");
    assert!(output.report_dir.join("paired.csv").is_file());
    let svg =
        std::fs::read_to_string(output.report_dir.join("charts/frontier-rtp-minilm.svg")).unwrap();
    assert!(
        svg.contains("[len,eos]"),
        "the chart labels the point with its confounds"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// a/0 "x y z" 3 tokens EOS (0.9), a/1 "" 0 tokens EOS (scoring failed), b/0 "one two three
/// four" 20 tokens at the limit (0.6), b/1 "five" 20 tokens at the limit (0.1).
fn hand_length_cell() -> FixtureCell {
    cell(
        "none",
        None,
        vec![
            vec![stopped("x y z", 3, Some(0.9)), stopped("", 0, None)],
            vec![
                FixtureSample::at_limit("one two three four", Some(0.6), Some(12.0)),
                FixtureSample::at_limit("five", Some(0.1), Some(12.0)),
            ],
        ],
    )
}

fn assert_hand_lengths(row: &Row) {
    // All samples: tokens (3 + 0 + 20 + 20) / 4, words (3 + 0 + 4 + 1) / 4.
    assert_eq!(f64_of(row, "length_tokens_mean"), Some(43.0 / 4.0));
    assert_eq!(f64_of(row, "length_words_mean"), Some(2.0));
    assert_eq!(f64_of(row, "length_eos_share"), Some(0.5));
    assert_eq!(f64_of(row, "length_empty_share"), Some(0.25));
    assert_eq!(f64_of(row, "length_at_limit_share"), Some(0.5));
    // The scorer's 3 scored samples (the empty one failed): (3 + 20 + 20) / 3 tokens.
    assert_eq!(f64_of(row, "scored_length_tokens_mean"), Some(43.0 / 3.0));
    assert_eq!(f64_of(row, "scored_length_eos_share"), Some(1.0 / 3.0));
    assert_eq!(f64_of(row, "scored_length_empty_share"), Some(0.0));
    // At the limit only: 0.6 (toxic) and 0.1 → share 1/2, mean 0.35; 2 of the 3 scored.
    assert_eq!(f64_of(row, "full_length_toxic_sample_fraction"), Some(0.5));
    assert!(close(f64_of(row, "full_length_mean_toxicity"), 0.35));
    assert!(matches!(
        row.get("full_length_toxic_sample_fraction_scored"),
        Some(Value::U64(Some(2)))
    ));
}

#[test]
fn length_metrics_of_a_hand_made_cell_and_of_an_older_record() {
    let dir = scratch("lengths");
    let id = hand_length_cell().write(&dir).unwrap();
    let tables = build_tables(&Experiment::load(&dir).unwrap()).unwrap();
    assert_hand_lengths(&tables.cells.rows[0]);
    assert!(matches!(
        tables.cells.rows[0].get("length_from_generations"),
        Some(Value::Bool(Some(false)))
    ));

    // A metrics.json written before length was measured: the report computes the same numbers.
    let metrics_file = dir.join(&id).join("metrics.json");
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics_file).unwrap()).unwrap();
    let results = record["results"].as_object_mut().unwrap();
    results.remove("length");
    results.remove("perplexity_by_prompt");
    for t in results["toxicity"].as_array_mut().unwrap() {
        let t = t.as_object_mut().unwrap();
        t.remove("length");
        t.remove("full_length");
    }
    std::fs::write(&metrics_file, record.to_string()).unwrap();
    let experiment = Experiment::load(&dir).unwrap();
    assert!(experiment.cells[0].lengths_computed);
    let tables = build_tables(&experiment).unwrap();
    assert_hand_lengths(&tables.cells.rows[0]);
    assert!(matches!(
        tables.cells.rows[0].get("length_from_generations"),
        Some(Value::Bool(Some(true)))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_baseline_that_is_missing_or_ambiguous_is_reported() {
    let dir = scratch("missing");
    cell("none", None, full_length_prompts(0))
        .write(&dir)
        .unwrap();
    let ghost = cell("Ghostly", Some("ghost"), full_length_prompts(2));
    let ghost_id = ghost.write(&dir).unwrap();
    let mut other_seed = cell("none", None, full_length_prompts(3));
    other_seed.seed = 1;
    other_seed.write(&dir).unwrap();
    let experiment = Experiment::load(&dir).unwrap();
    let fairness = Fairness::of(&experiment).unwrap();
    let pairing = fairness
        .pairings
        .iter()
        .find(|p| p.cell.id() == ghost_id)
        .unwrap();
    let reason = pairing.why_unpaired().unwrap();
    assert!(reason.contains("no cell labelled `ghost`"), "{reason}");
    let md = write_report(&dir).unwrap().markdown;
    assert!(
        md.contains("Not compared:") && md.contains(&ghost_id),
        "{md}"
    );
    let paired = std::fs::read_to_string(dir.join("report/paired.csv")).unwrap();
    assert!(paired.contains(&ghost_id), "an unpaired cell keeps its row");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dexperts_base_filter_is_named_as_a_candidate_set_change() {
    let dir = scratch("dexperts-filter");
    cell("none", None, full_length_prompts(0))
        .write(&dir)
        .unwrap();
    let dexperts = |label: &str, filter_p: f64| {
        let mut c = cell(label, Some("none"), full_length_prompts(1));
        c.method = "dexperts".into();
        c.params = BTreeMap::from([("filter_p".to_string(), serde_json::json!(filter_p))]);
        c.write(&dir).unwrap()
    };
    let filtered = dexperts("dexperts", 0.9);
    let unfiltered = dexperts("dexperts unfiltered", 1.0);
    let experiment = Experiment::load(&dir).unwrap();
    let fairness = Fairness::of(&experiment).unwrap();
    let candidates = |id: &str| -> Vec<(Option<f64>, String)> {
        fairness
            .audit_of(id)
            .unwrap()
            .items
            .iter()
            .filter(|i| i.kind == AuditKind::MethodCandidates)
            .map(|i| (i.value, i.detail.clone()))
            .collect()
    };
    let named = candidates(&filtered);
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0].0, Some(0.9));
    assert!(
        named[0].1.contains("dexperts filter_p = 0.9"),
        "{}",
        named[0].1
    );
    assert!(candidates(&unfiltered).is_empty());
}
