//! Cell folders written by `detox run` before the record schema (`records`) existed — no
//! `schema` fields, metrics that do not name their scorers, a `policy.json` beside them — still
//! load and rebuild a report: the committed `results/*` reports were built from such folders.
//! The fixture is a tiny run (tiny-llama, plain sampling and a post-hoc word filter, three
//! prompts, profanity and minilm) written by the binary of commit ec24e68.

use std::path::{Path, PathBuf};

fn copy_fixture(to: &Path) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v0-experiment");
    for cell in std::fs::read_dir(&from).unwrap() {
        let cell = cell.unwrap().path();
        let target = to.join(cell.file_name().unwrap());
        std::fs::create_dir_all(&target).unwrap();
        for file in std::fs::read_dir(&cell).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, target.join(file.file_name().unwrap())).unwrap();
        }
    }
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("report-v0-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn cells_written_before_the_schema_rebuild_their_report() {
    let dir = scratch();
    copy_fixture(&dir);
    let experiment = report::Experiment::load(&dir).unwrap();
    assert_eq!(experiment.cells.len(), 2);
    for cell in &experiment.cells {
        assert_eq!(cell.config.schema, 1, "no schema field reads as version 1");
        // Named from the score files, not by position.
        assert_eq!(cell.scorer_names(), ["profanity", "minilm"]);
        let rows = report::per_prompt_toxicity(cell).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows
            .iter()
            .all(|r| r.len() == 3 && r.iter().all(|p| p.samples == 3)));
        assert!(cell.record.as_ref().unwrap().runs >= 1);
    }
    let labels: Vec<String> = experiment
        .cells
        .iter()
        .map(|c| c.method_setting())
        .collect();
    assert_eq!(labels, ["none", "word_filter"]);
    let output = report::write_report(&dir).unwrap();
    assert_eq!(output.complete_cells, 2);
    let cells = report::read_csv(&dir.join("report/cells.csv")).unwrap();
    assert_eq!(cells.height(), 4, "two cells × two scorers");
    std::fs::remove_dir_all(&dir).unwrap();
}
