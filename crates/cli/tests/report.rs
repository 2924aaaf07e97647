//! `detox report` and `detox compare` through the binary, on synthetic experiment folders in
//! `detox run`'s layout: no model is loaded, the summary goes to stdout, files to `report/`.

use std::path::PathBuf;
use std::process::{Command, Output};

use report::fixture::write_synthetic_experiment;

fn detox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detox"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("runs detox")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("detox-cli-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn report_rebuilds_tables_and_charts_from_stored_outputs() {
    let dir = scratch("report");
    let written = write_synthetic_experiment(&dir).unwrap();
    let output = detox(&["report", dir.to_str().unwrap()]);
    let stdout = stdout_of(&output);
    assert!(
        stdout.contains("26 cells: 24 complete, 2 incomplete."),
        "{stdout}"
    );
    assert!(stdout.contains("| prompt set"), "{stdout}");
    assert!(stdout.contains(&written.incomplete[0]), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("report"), "{stderr}");

    let report = dir.join("report");
    for table in ["cells", "groups", "per_prompt"] {
        for ext in ["parquet", "csv"] {
            let file = report.join(format!("{table}.{ext}"));
            assert!(
                std::fs::metadata(&file).unwrap().len() > 0,
                "{}",
                file.display()
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(report.join("summary.md")).unwrap(),
        stdout
    );
    for chart in [
        "frontier-bold-gender-minilm",
        "groups-attaq-profanity",
        "cost",
    ] {
        for ext in ["png", "svg"] {
            let file = report.join("charts").join(format!("{chart}.{ext}"));
            assert!(
                std::fs::metadata(&file).unwrap().len() > 1000,
                "{}",
                file.display()
            );
        }
    }
}

#[test]
fn compare_matches_two_experiments_and_writes_the_table() {
    let a = scratch("compare-a");
    let b = scratch("compare-b");
    write_synthetic_experiment(&a).unwrap();
    write_synthetic_experiment(&b).unwrap();
    let out = scratch("compare-out");
    let stdout = stdout_of(&detox(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    // The same experiment twice: every row matched, every difference zero.
    assert!(stdout.contains("48 rows matched"), "{stdout}");
    assert!(stdout.contains("0 only in A, 0 only in B"), "{stdout}");
    assert!(stdout.contains("+0.000"), "{stdout}");
    assert!(!stdout.contains("only A |"), "{stdout}");
    for file in ["compare.parquet", "compare.csv", "compare.md"] {
        assert!(out.join(file).is_file(), "{file}");
    }
}

#[test]
fn report_of_a_missing_folder_is_one_line_naming_it() {
    let missing = std::env::temp_dir().join("detox-cli-report-no-such-experiment");
    let output = detox(&["report", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains("detox-cli-report-no-such-experiment"),
        "{stderr}"
    );
}
