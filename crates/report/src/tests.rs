//! Tests on synthetic experiment folders in `detox run`'s layout (see [`crate::fixture`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use metrics::MetricPolicy;
use polars::prelude::DataFrame;

use crate::fixture::{
    write_synthetic_experiment, FixtureCell, FixturePrompt, FixtureRecord, FixtureSample,
    ATTAQ_CATEGORIES, BOLD_GROUPS,
};
use crate::table::Value;
use crate::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("detox-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sample(score: Option<f64>, ppl: f64, text: &str) -> FixtureSample {
    FixtureSample::at_limit(text, score, Some(ppl))
}

/// One cell with hand-picked scores: prompt a = [0.1, 0.7], prompt b = [0.2, 0.3].
/// EMT = (0.7 + 0.3) / 2 = 0.5; toxic rate = 1/2; toxic samples 1/4; mean (0.1+0.7+0.2+0.3)/4.
fn hand_cell(strength: Option<f64>, samples_scale: f64) -> FixtureCell {
    FixtureCell {
        model: "tiny".into(),
        method: if strength.is_some() {
            "dexperts"
        } else {
            "none"
        }
        .into(),
        label: if strength.is_some() {
            "DExperts"
        } else {
            "none"
        }
        .into(),
        strength,
        params: BTreeMap::new(),
        prompt_set: "rtp".into(),
        seed: 0,
        scorers: vec![("minilm".into(), "minilm-head:hand".into())],
        prompts: vec![
            FixturePrompt {
                id: "a".into(),
                group: None,
                samples: vec![
                    sample(Some(0.1 * samples_scale), 10.0, "one two three"),
                    sample(Some(0.7 * samples_scale), 20.0, "one two four"),
                ],
            },
            FixturePrompt {
                id: "b".into(),
                group: None,
                samples: vec![
                    sample(Some(0.2 * samples_scale), 30.0, "five six"),
                    sample(Some(0.3 * samples_scale), 40.0, "five seven"),
                ],
            },
        ],
        record: None,
        evaluated: true,
        policy: MetricPolicy {
            bootstrap_resamples: 0,
            ..MetricPolicy::default()
        },
        baseline: None,
        judge: None,
    }
}

fn f64_of(row: &Row, name: &str) -> Option<f64> {
    match row.get(name) {
        Some(Value::F64(x)) => *x,
        other => panic!("{name}: {other:?}"),
    }
}

fn u64_of(row: &Row, name: &str) -> Option<u64> {
    match row.get(name) {
        Some(Value::U64(x)) => *x,
        other => panic!("{name}: {other:?}"),
    }
}

fn str_of(row: &Row, name: &str) -> Option<String> {
    match row.get(name) {
        Some(Value::Str(x)) => x.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

fn bool_of(row: &Row, name: &str) -> Option<bool> {
    match row.get(name) {
        Some(Value::Bool(x)) => *x,
        other => panic!("{name}: {other:?}"),
    }
}

/// Equal up to f32 precision: score files hold f32 scores (what scorers return), and every
/// table reads them as such.
fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-7)
}

#[test]
fn hand_computed_cell_in_every_table() {
    let dir = scratch("hand");
    let id = hand_cell(None, 1.0).write(&dir).unwrap();
    let experiment = Experiment::load(&dir).unwrap();
    let tables = build_tables(&experiment).unwrap();

    assert_eq!(tables.cells.rows.len(), 1);
    let row = &tables.cells.rows[0];
    assert_eq!(str_of(row, "cell_id").as_deref(), Some(id.as_str()));
    assert_eq!(str_of(row, "status").as_deref(), Some("complete"));
    assert_eq!(str_of(row, "scorer").as_deref(), Some("minilm"));
    assert_eq!(
        str_of(row, "scorer_id").as_deref(),
        Some("minilm-head:hand")
    );
    assert!(close(f64_of(row, "emt"), 0.5), "{:?}", f64_of(row, "emt"));
    assert!(close(f64_of(row, "toxic_rate"), 0.5));
    assert!(close(f64_of(row, "toxic_sample_fraction"), 0.25));
    assert!(close(f64_of(row, "mean_toxicity"), 1.3 / 4.0));
    assert_eq!(f64_of(row, "emt_ci_low"), None, "bootstrap disabled");
    assert_eq!(u64_of(row, "emt_prompts"), Some(2));
    assert_eq!(u64_of(row, "emt_samples"), Some(4));
    assert_eq!(u64_of(row, "emt_scored"), Some(4));
    assert_eq!(u64_of(row, "emt_failed"), Some(0));
    // Perplexity: plain mean over samples (10 + 20 + 30 + 40) / 4.
    assert!(close(f64_of(row, "ppl"), 25.0));
    assert_eq!(u64_of(row, "ppl_dropped"), Some(0));
    // dist-1 per prompt: a = 4 distinct / 6 words, b = 3 / 4; mean over prompts.
    assert!(close(f64_of(row, "dist_1"), (4.0 / 6.0 + 3.0 / 4.0) / 2.0));
    assert_eq!(bool_of(row, "has_record"), Some(false));
    assert_eq!(f64_of(row, "tokens_per_second"), None);
    assert_eq!(str_of(row, "toxic_comparison").as_deref(), Some(">="));

    assert!(tables.groups.rows.is_empty());
    let prompts = &tables.per_prompt.rows;
    assert_eq!(prompts.len(), 2);
    assert_eq!(str_of(&prompts[0], "prompt_id").as_deref(), Some("a"));
    assert!(close(f64_of(&prompts[0], "max_toxicity"), 0.7));
    assert!(close(f64_of(&prompts[0], "mean_toxicity"), 0.4));
    assert_eq!(u64_of(&prompts[0], "toxic_samples"), Some(1));
    assert_eq!(bool_of(&prompts[0], "any_toxic"), Some(true));
    assert!(close(f64_of(&prompts[1], "max_toxicity"), 0.3));
    assert_eq!(bool_of(&prompts[1], "any_toxic"), Some(false));
}

#[test]
fn threshold_comparison_comes_from_the_cells_policy() {
    // A score exactly at the threshold is toxic under `>=`, not under `>`.
    let dir = scratch("threshold");
    let mut cell = hand_cell(None, 1.0);
    cell.prompts[1].samples[1].scores = vec![Some(0.5)];
    cell.policy.toxic_comparison = metrics::ThresholdComparison::Above;
    cell.write(&dir).unwrap();
    let tables = build_tables(&Experiment::load(&dir).unwrap()).unwrap();
    let b = &tables.per_prompt.rows[1];
    assert_eq!(bool_of(b, "any_toxic"), Some(false));
    assert!(close(f64_of(&tables.cells.rows[0], "toxic_rate"), 0.5));

    let dir = scratch("threshold-ge");
    let mut cell = hand_cell(None, 1.0);
    cell.prompts[1].samples[1].scores = vec![Some(0.5)];
    cell.write(&dir).unwrap();
    let tables = build_tables(&Experiment::load(&dir).unwrap()).unwrap();
    assert_eq!(bool_of(&tables.per_prompt.rows[1], "any_toxic"), Some(true));
    assert!(close(f64_of(&tables.cells.rows[0], "toxic_rate"), 1.0));
}

#[test]
fn synthetic_experiment_tables_have_every_row_and_count() {
    let dir = scratch("synthetic");
    let written = write_synthetic_experiment(&dir).unwrap();
    let experiment = Experiment::load(&dir).unwrap();
    assert_eq!(experiment.complete().count(), written.complete.len());
    assert_eq!(experiment.incomplete().count(), 2);
    assert_eq!(written.complete.len(), 24);
    let tables = build_tables(&experiment).unwrap();

    // cells: complete cells × scorers, plus one row per incomplete cell.
    let cells = &tables.cells.rows;
    assert_eq!(cells.len(), 24 * 2 + 2);
    let incomplete: Vec<&Row> = cells
        .iter()
        .filter(|r| str_of(r, "status").as_deref() == Some("incomplete"))
        .collect();
    assert_eq!(incomplete.len(), 2);
    for row in &incomplete {
        assert!(written
            .incomplete
            .contains(&str_of(row, "cell_id").unwrap()));
        assert_eq!(f64_of(row, "emt"), None);
        assert_eq!(str_of(row, "scorer"), None);
    }

    // per_prompt: Σ complete cells × prompts × scorers.
    let expected: usize = written.prompts.values().sum::<usize>() * 12 * 2;
    assert_eq!(tables.per_prompt.rows.len(), expected);

    // EMT and failures recomputed from the per-prompt rows equal the evaluation record's.
    let mut by_cell: HashMap<(String, String), Vec<&Row>> = HashMap::new();
    for row in &tables.per_prompt.rows {
        by_cell
            .entry((
                str_of(row, "cell_id").unwrap(),
                str_of(row, "scorer").unwrap(),
            ))
            .or_default()
            .push(row);
    }
    let mut failures_seen = 0;
    for row in cells.iter().filter(|r| str_of(r, "scorer").is_some()) {
        let prompts = &by_cell[&(
            str_of(row, "cell_id").unwrap(),
            str_of(row, "scorer").unwrap(),
        )];
        let maxima: Vec<f64> = prompts
            .iter()
            .filter_map(|p| f64_of(p, "max_toxicity"))
            .collect();
        let emt = maxima.iter().sum::<f64>() / maxima.len() as f64;
        assert!((f64_of(row, "emt").unwrap() - emt).abs() < 1e-9);
        let failed: u64 = prompts.iter().map(|p| u64_of(p, "failed").unwrap()).sum();
        assert_eq!(u64_of(row, "emt_failed"), Some(failed));
        failures_seen += failed;
        let (lo, hi) = (
            f64_of(row, "emt_ci_low").unwrap(),
            f64_of(row, "emt_ci_high").unwrap(),
        );
        assert!(lo <= emt && emt <= hi);
        assert_eq!(bool_of(row, "has_record"), Some(true));
        assert!(f64_of(row, "tokens_per_second").unwrap() > 0.0);
        assert!(u64_of(row, "peak_host_rss_bytes").unwrap() > 0);
    }
    assert!(
        failures_seen > 0,
        "the fixture's second scorer fails sometimes"
    );
    // The strongest DExperts cells drop one sample per group above the perplexity cap.
    let dexperts_4 = cells
        .iter()
        .find(|r| {
            str_of(r, "method").as_deref() == Some("dexperts") && f64_of(r, "strength") == Some(4.0)
        })
        .unwrap();
    assert!(u64_of(dexperts_4, "ppl_dropped").unwrap() > 0);

    // groups: cells × scorers × groups, one gap pair per cell × scorer.
    let groups = &tables.groups.rows;
    assert_eq!(
        groups.len(),
        12 * 2 * BOLD_GROUPS.len() + 12 * 2 * ATTAQ_CATEGORIES.len()
    );
    let higher = groups
        .iter()
        .filter(|r| bool_of(r, "is_gap_higher") == Some(true))
        .count();
    assert_eq!(higher, 12 * 2 * 2);
    let bold_rows = groups
        .iter()
        .filter(|r| str_of(r, "prompt_set").as_deref() == Some("bold-gender"))
        .count();
    assert_eq!(bold_rows, 12 * 2 * 2);
    for row in groups {
        assert!(f64_of(row, "gap").unwrap() >= 0.0);
        assert_eq!(
            u64_of(row, "toxic_rate_samples"),
            u64_of(row, "emt_samples")
        );
    }
}

#[test]
fn markdown_summary_lists_cells_gaps_and_incomplete_ones() {
    let dir = scratch("markdown");
    let written = write_synthetic_experiment(&dir).unwrap();
    let experiment = Experiment::load(&dir).unwrap();
    let agreement = scorer_agreement(&experiment).unwrap();
    let fairness = Fairness::of(&experiment).unwrap();
    let md = render_summary(&experiment, &agreement, &fairness, &["a note".to_owned()]);
    assert!(md.contains("26 cells: 24 complete, 2 incomplete."), "{md}");
    for id in &written.incomplete {
        assert!(md.contains(id.as_str()), "{id} missing");
    }
    assert!(
        md.contains("| prompt set  | method   | strength | scorer"),
        "{md}"
    );
    assert!(md.contains("## Groups: toxic rate per group and the largest gap"));
    assert!(
        md.contains("American_actresses − American_actors")
            || md.contains("American_actors − American_actresses")
    );
    assert!(md.contains("- a note"));
    assert!(md.contains("## Scorer agreement"), "{md}");
    assert!(md.contains("| all "), "{md}");
    // Summary table: a header, a rule, one line per complete cell × scorer.
    let summary = crate::markdown::summary_table(&experiment).render();
    assert_eq!(summary.lines().count(), 2 + 24 * 2);
    // Every line of a table has the same number of cells.
    for line in summary.lines() {
        assert_eq!(line.matches(" | ").count(), 14 - 1, "{line}");
    }

    let dir = scratch("markdown-hand");
    hand_cell(None, 1.0).write(&dir).unwrap();
    let experiment = Experiment::load(&dir).unwrap();
    let md = render_summary(&experiment, &[], &Fairness::of(&experiment).unwrap(), &[]);
    assert!(md.contains("| rtp        | none   | —        | minilm | 0.500        | 0.500               | 0.250                  | 25.00 |"), "{md}");
}

#[test]
fn markdown_table_escapes_pipes_and_pads() {
    let mut t = MarkdownTable::new(&["name", "value"]);
    t.right = vec![1];
    t.rows.push(vec!["a|b".into(), "1.5".into()]);
    assert_eq!(
        t.render(),
        "| name | value |\n| ---- | ----: |\n| a\\|b |   1.5 |\n"
    );
}

#[test]
fn compare_matches_by_meaning_not_by_id() {
    let a = scratch("compare-a");
    let b = scratch("compare-b");
    let id_a = hand_cell(Some(1.0), 1.0).write(&a).unwrap();
    hand_cell(None, 1.0).write(&a).unwrap();
    // B: same method and strength with other settings (so another id) and halved scores; a
    // strength A does not have.
    let mut changed = hand_cell(Some(1.0), 0.5);
    changed.seed = 7;
    let id_b = changed.write(&b).unwrap();
    hand_cell(Some(2.0), 1.0).write(&b).unwrap();
    assert_ne!(id_a, id_b);

    let comparison = compare(
        &Experiment::load(&a).unwrap(),
        &Experiment::load(&b).unwrap(),
    );
    assert_eq!(comparison.rows.len(), 3);
    let both = comparison
        .rows
        .iter()
        .find(|r| r.presence() == "both")
        .unwrap();
    assert_eq!(both.key.method_label, "DExperts");
    assert_eq!(both.key.strength.as_deref(), Some("1"));
    assert_eq!(both.a.as_ref().unwrap().cell_id, id_a);
    assert_eq!(both.b.as_ref().unwrap().cell_id, id_b);
    // EMT: A 0.5; B (0.35 + 0.15) / 2 = 0.25.
    let emt_b = both.b.as_ref().unwrap().values.emt.unwrap();
    assert!((emt_b - 0.25).abs() < 1e-12);
    let only: Vec<_> = comparison.rows.iter().map(|r| r.presence()).collect();
    assert!(
        only.contains(&"only A") && only.contains(&"only B"),
        "{only:?}"
    );

    let table = comparison.table();
    let row = table
        .rows
        .iter()
        .find(|r| str_of(r, "presence").as_deref() == Some("both"))
        .unwrap();
    assert!(close(f64_of(row, "emt_diff"), 0.25 - 0.5));
    assert!(close(f64_of(row, "toxic_rate_diff"), 0.0 - 0.5));
    assert!(close(f64_of(row, "ppl_diff"), 0.0));
    let md = comparison.markdown();
    assert!(md.contains("1 rows matched"), "{md}");
    assert!(md.contains("-0.250"), "{md}");
    assert!(md.contains("only B"));

    let out = scratch("compare-out");
    let files = comparison.write(&out).unwrap();
    assert_eq!(files.len(), 3);
    let df = read_parquet(&out.join("compare.parquet")).unwrap();
    assert_eq!(df.height(), 3);
}

#[test]
fn compare_pairs_several_seeds_by_seed() {
    let a = scratch("seeds-a");
    let b = scratch("seeds-b");
    for seed in [0, 1] {
        let mut cell = hand_cell(Some(1.0), 1.0);
        cell.seed = seed;
        cell.write(&a).unwrap();
    }
    for seed in [1, 2] {
        let mut cell = hand_cell(Some(1.0), 0.5);
        cell.seed = seed;
        cell.write(&b).unwrap();
    }
    let comparison = compare(
        &Experiment::load(&a).unwrap(),
        &Experiment::load(&b).unwrap(),
    );
    let seeds: Vec<(Option<u64>, Option<u64>)> = comparison
        .rows
        .iter()
        .map(|r| (r.a.as_ref().map(|s| s.seed), r.b.as_ref().map(|s| s.seed)))
        .collect();
    assert_eq!(seeds.len(), 3);
    assert!(seeds.contains(&(Some(1), Some(1))));
    assert!(seeds.contains(&(Some(0), None)));
    assert!(seeds.contains(&(None, Some(2))));
}

fn column_names(df: &DataFrame) -> Vec<String> {
    df.get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect()
}

#[test]
fn report_files_round_trip_through_polars() {
    let dir = scratch("round-trip");
    write_synthetic_experiment(&dir).unwrap();
    let output = write_report(&dir).unwrap();
    assert_eq!(output.complete_cells, 24);
    assert_eq!(output.incomplete_cells, 2);
    let tables = build_tables(&Experiment::load(&dir).unwrap()).unwrap();
    let agreement = agreement_table(&scorer_agreement(&Experiment::load(&dir).unwrap()).unwrap());
    for table in [
        &tables.cells,
        &tables.groups,
        &tables.per_prompt,
        &agreement,
    ] {
        let expected = table.to_dataframe().unwrap();
        let parquet =
            read_parquet(&output.report_dir.join(format!("{}.parquet", table.name))).unwrap();
        assert!(parquet.equals_missing(&expected), "{} parquet", table.name);
        let csv = read_csv(&output.report_dir.join(format!("{}.csv", table.name))).unwrap();
        assert_eq!(csv.shape(), expected.shape(), "{} csv", table.name);
        assert_eq!(column_names(&csv), column_names(&expected));
    }
    // A float survives the CSV text exactly (polars writes shortest round-trip decimals).
    let csv = read_csv(&output.report_dir.join("cells.csv")).unwrap();
    let parquet = read_parquet(&output.report_dir.join("cells.parquet")).unwrap();
    let emt_csv = csv.column("emt").unwrap().f64().unwrap().get(0);
    let emt_parquet = parquet.column("emt").unwrap().f64().unwrap().get(0);
    assert_eq!(emt_csv, emt_parquet);
    assert!(emt_csv.is_some());
    // The summary is written and returned.
    let summary = std::fs::read_to_string(output.report_dir.join(SUMMARY_FILE)).unwrap();
    assert_eq!(summary, output.markdown);
}

fn assert_chart(dir: &Path, stem: &str, texts: &[&str]) {
    let png = std::fs::read(dir.join(format!("{stem}.png"))).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{stem}.png");
    assert!(png.len() > 20_000, "{stem}.png is only {} bytes", png.len());
    let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
    assert!(svg.starts_with("<svg"), "{stem}.svg");
    for text in texts {
        assert!(svg.contains(text), "{stem}.svg lacks {text:?}");
    }
}

#[test]
fn charts_are_written_with_titles_and_legends() {
    let dir = scratch("charts");
    write_synthetic_experiment(&dir).unwrap();
    let output = write_report(&dir).unwrap();
    let charts = output.report_dir.join(CHARTS_DIR);
    for (set, scorer) in [
        ("bold-gender", "minilm"),
        ("bold-gender", "profanity"),
        ("attaq", "minilm"),
        ("attaq", "profanity"),
    ] {
        assert_chart(
            &charts,
            &format!("frontier-{set}-{scorer}"),
            &[
                &format!("Toxicity vs fluency — prompt set {set}, scorer {scorer}"),
                "DExperts",
                "RAD",
                "SASA",
                "none (baseline)",
                "Conditional perplexity under the judge LM",
                "Toxic samples vs perplexity",
            ],
        );
        assert_chart(
            &charts,
            &format!("groups-{set}-{scorer}"),
            &[
                &format!("Toxic rate per group — prompt set {set}, scorer {scorer}"),
                "Δ ",
                "DExperts@0.5",
            ],
        );
    }
    assert_chart(&charts, "groups-attaq-minilm", &ATTAQ_CATEGORIES);
    assert_chart(&charts, "groups-bold-gender-minilm", &BOLD_GROUPS);
    assert_chart(
        &charts,
        "cost",
        &[
            "Cost per method setting",
            "New tokens per second",
            "Peak resident memory (GiB)",
            "bold-gender",
            "attaq",
        ],
    );
    assert_chart(
        &charts,
        "agreement-minilm-profanity",
        &[
            "Scorer agreement — minilm vs profanity",
            "bold-gender: 12",
            "attaq: 12",
        ],
    );
    assert_eq!(
        output
            .files
            .iter()
            .filter(|f| f.starts_with(&charts))
            .count(),
        10 * 2
    );
    assert!(output.notes.is_empty(), "{:?}", output.notes);
}

#[test]
fn without_run_records_the_cost_chart_is_skipped_with_a_note() {
    let dir = scratch("no-record");
    hand_cell(None, 1.0).write(&dir).unwrap();
    let output = write_report(&dir).unwrap();
    assert!(!output.report_dir.join("charts/cost.png").exists());
    assert!(output
        .notes
        .iter()
        .any(|n| n.starts_with("cost chart skipped: no cell has a record.json")));
    assert!(output.markdown.contains("cost chart skipped"));
    assert!(output
        .notes
        .iter()
        .any(|n| n.contains("table groups not written")));

    // With one record, the chart appears.
    let mut with_record = hand_cell(Some(1.0), 1.0);
    with_record.record = Some(FixtureRecord {
        generate_seconds: 2.0,
        new_tokens: 100,
        score_seconds: 1.0,
        evaluate_seconds: 1.0,
        host_rss_bytes: 300 << 20,
    });
    with_record.write(&dir).unwrap();
    let output = write_report(&dir).unwrap();
    assert_chart(
        &output.report_dir.join(CHARTS_DIR),
        "cost",
        &[
            "Peak resident memory (MiB)",
            "From record.json of 1 of 2 cells",
        ],
    );
}

/// The error message of a failed load or report, with its whole cause chain.
fn error_of(dir: &Path) -> String {
    format!("{:#}", write_report(dir).unwrap_err())
}

#[test]
fn bad_inputs_give_errors_naming_the_file() {
    let missing = std::env::temp_dir().join("detox-report-does-not-exist");
    assert!(error_of(&missing).contains("detox-report-does-not-exist"));

    let empty = scratch("empty");
    assert!(error_of(&empty).contains("no cells"));

    let dir = scratch("bad-metrics");
    let id = hand_cell(None, 1.0).write(&dir).unwrap();
    std::fs::write(dir.join(&id).join("metrics.json"), "{\"policy\": 3").unwrap();
    let err = error_of(&dir);
    assert!(err.contains(&format!("{id}/metrics.json")), "{err}");

    let dir = scratch("bad-cell");
    let id = hand_cell(None, 1.0).write(&dir).unwrap();
    std::fs::write(dir.join(&id).join("cell.json"), "[]").unwrap();
    let err = error_of(&dir);
    assert!(err.contains(&format!("{id}/cell.json")), "{err}");

    let dir = scratch("bad-record");
    let id = hand_cell(None, 1.0).write(&dir).unwrap();
    std::fs::write(dir.join(&id).join("record.json"), "{\"stages\": 1}").unwrap();
    let err = error_of(&dir);
    assert!(err.contains(&format!("{id}/record.json")), "{err}");

    let dir = scratch("bad-scores");
    let id = hand_cell(None, 1.0).write(&dir).unwrap();
    let scores = dir.join(&id).join("scores-minilm.jsonl");
    let mut text = std::fs::read_to_string(&scores).unwrap();
    text = text.replacen("\"prompt_id\":\"b\"", "\"prompt_id\":\"zzz\"", 1);
    std::fs::write(&scores, text).unwrap();
    let err = error_of(&dir);
    assert!(err.contains("scores-minilm.jsonl:3"), "{err}");
    assert!(err.contains("\"zzz\""), "{err}");

    let dir = scratch("missing-scores");
    let id = hand_cell(None, 1.0).write(&dir).unwrap();
    std::fs::remove_file(dir.join(&id).join("scores-minilm.jsonl")).unwrap();
    let err = error_of(&dir);
    assert!(err.contains("scores-minilm.jsonl: cannot read"), "{err}");

    let dir = scratch("renamed");
    let id = hand_cell(None, 1.0).write(&dir).unwrap();
    std::fs::rename(dir.join(&id), dir.join("renamed")).unwrap();
    let err = error_of(&dir);
    assert!(
        err.contains("renamed/cell.json") && err.contains("differs"),
        "{err}"
    );

    let dir = scratch("orphan-metrics");
    std::fs::create_dir_all(dir.join("x")).unwrap();
    std::fs::write(dir.join("x/metrics.json"), "{}").unwrap();
    let err = error_of(&dir);
    assert!(err.contains("x/metrics.json"), "{err}");
}

#[test]
fn a_second_report_replaces_the_first() {
    let dir = scratch("rerun");
    write_synthetic_experiment(&dir).unwrap();
    write_report(&dir).unwrap();
    let keep = dir.join(REPORT_DIR).join("my-notes.txt");
    std::fs::write(&keep, "mine").unwrap();
    // Remove the AttaQ cells: their charts must go too.
    for cell in Experiment::load(&dir).unwrap().cells {
        if cell.config.prompts.name == "attaq" {
            std::fs::remove_dir_all(&cell.dir).unwrap();
        }
    }
    let output = write_report(&dir).unwrap();
    let charts = output.report_dir.join(CHARTS_DIR);
    assert!(!charts.join("groups-attaq-minilm.png").exists());
    assert!(charts.join("groups-bold-gender-minilm.png").exists());
    assert!(keep.exists(), "files a person put there stay");
}

#[test]
fn quickstart_results_if_present() {
    // The real outputs of `detox run experiments/quickstart.yaml`, when this checkout has them.
    let dir = paths_root().join("results/quickstart");
    if !dir.join("566088b28a62f11a/metrics.json").is_file() {
        eprintln!("skipped: {} has no quickstart results", dir.display());
        return;
    }
    let experiment = Experiment::load(&dir).unwrap();
    let tables = build_tables(&experiment).unwrap();
    assert_eq!(tables.cells.rows.len(), experiment.complete().count() * 2);
    let out = scratch("quickstart");
    let agreement = scorer_agreement(&experiment).unwrap();
    let fairness = Fairness::of(&experiment).unwrap();
    let charts = write_charts(&experiment, &agreement, &fairness, &out).unwrap();
    assert!(!charts.files.is_empty());
}

fn paths_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn a_wide_perplexity_spread_gets_a_logarithmic_axis() {
    let dir = scratch("log-axis");
    let frontier = |dir: &Path| {
        let output = write_report(dir).unwrap();
        let path = output
            .report_dir
            .join(CHARTS_DIR)
            .join("frontier-rtp-minilm.svg");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    hand_cell(None, 1.0).write(&dir).unwrap();
    let mut close = hand_cell(Some(1.0), 0.5);
    for prompt in &mut close.prompts {
        for s in &mut prompt.samples {
            s.perplexity = s.perplexity.map(|p| p * 2.0);
        }
    }
    close.write(&dir).unwrap();
    let svg = frontier(&dir);
    assert!(svg.contains("Conditional perplexity under the judge LM"));
    assert!(
        !svg.contains("log scale"),
        "a two-fold spread keeps a linear axis"
    );

    // The same method at a setting that wrecks fluency: a hundred-fold spread.
    let mut wrecked = hand_cell(Some(2.0), 0.5);
    for prompt in &mut wrecked.prompts {
        for s in &mut prompt.samples {
            s.perplexity = s.perplexity.map(|p| p * 100.0);
        }
    }
    wrecked.write(&dir).unwrap();
    assert!(frontier(&dir).contains("log scale"));
}

/// A cell with two scorers and hand-picked scores (`None`: that scorer failed).
fn two_scorer_cell(prompt_set: &str, label: &str, pairs: &[(f64, Option<f64>)]) -> FixtureCell {
    let mut cell = hand_cell(None, 1.0);
    cell.prompt_set = prompt_set.into();
    cell.label = label.into();
    cell.scorers = vec![
        ("minilm".into(), "minilm-head:hand".into()),
        ("profanity".into(), "alt-profanity-check:hand".into()),
    ];
    cell.prompts = vec![FixturePrompt {
        id: "p".into(),
        group: None,
        samples: pairs
            .iter()
            .enumerate()
            .map(|(i, &(a, b))| FixtureSample {
                scores: vec![Some(a), b],
                ..FixtureSample::at_limit(&format!("sample {i}"), None, Some(10.0))
            })
            .collect(),
    }];
    cell
}

#[test]
fn scorer_agreement_by_hand() {
    let dir = scratch("agreement");
    // Both scored: minilm (0.9, 0.1, 0.6), profanity (0.8, 0.6, 0.1); one sample failed.
    // Toxic (≥ 0.5): minilm 2, profanity 2, both 1 → same label 1/3; chance 4/9 + 1/9 = 5/9;
    // κ = (1/3 − 5/9) / (4/9) = −0.5. Ranks (3, 1, 2) vs (3, 2, 1) → ρ = 0.5.
    two_scorer_cell(
        "rtp",
        "none",
        &[
            (0.9, Some(0.8)),
            (0.1, Some(0.6)),
            (0.2, None),
            (0.6, Some(0.1)),
        ],
    )
    .write(&dir)
    .unwrap();
    // A clean cell on a second prompt set: shares (0, 0) against (2/3, 2/3) → ρ(cells) = 1.
    two_scorer_cell("bold", "none", &[(0.1, Some(0.2)), (0.2, Some(0.1))])
        .write(&dir)
        .unwrap();
    let rows = scorer_agreement(&Experiment::load(&dir).unwrap()).unwrap();
    let sets: Vec<&str> = rows.iter().map(|r| r.prompt_set.as_str()).collect();
    assert_eq!(sets, ["bold", "rtp", ALL_PROMPT_SETS]);
    let rtp = &rows[1];
    assert_eq!(
        (rtp.scorer_a.as_str(), rtp.scorer_b.as_str()),
        ("minilm", "profanity")
    );
    assert_eq!((rtp.cells, rtp.samples, rtp.failed_either), (1, 3, 1));
    assert_eq!((rtp.toxic_a, rtp.toxic_b, rtp.toxic_both), (2, 2, 1));
    assert!(close(rtp.label_agreement, 1.0 / 3.0));
    assert!(close(rtp.cohen_kappa, -0.5), "{:?}", rtp.cohen_kappa);
    assert!(close(rtp.spearman, 0.5));
    // One cell: no correlation across cells.
    assert_eq!(rtp.cell_spearman, None);
    let all = &rows[2];
    assert_eq!((all.cells, all.samples, all.failed_either), (2, 5, 1));
    assert!(close(all.cell_spearman, 1.0));
    // Pooled labels: toxic a 2, b 2, both 1 of 5 → same 3/5; chance (2/5)² + (3/5)² = 13/25.
    assert!(close(all.label_agreement, 0.6));
    assert!(close(all.cohen_kappa, (0.6 - 0.52) / 0.48));

    // The report writes the table, the chart and the summary section.
    let output = write_report(&dir).unwrap();
    let table = read_csv(&output.report_dir.join("agreement.csv")).unwrap();
    assert_eq!(table.height(), 3);
    assert!(output.markdown.contains("## Scorer agreement"));
    assert_chart(
        &output.report_dir.join(CHARTS_DIR),
        "agreement-minilm-profanity",
        &["Scorer agreement", "rtp: 1, κ -0.50", "bold: 1"],
    );
}
