//! What the CLI end-to-end tests share: running the binary, a scratch folder, and reading back
//! the cells a `detox run` wrote.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `detox` binary in `dir` (without a backtrace in its errors).
pub fn detox(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_detox"))
        .current_dir(dir)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("runs detox")
}

/// An empty folder for one test, named after the test binary and `name`.
pub fn scratch(test: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("detox-{test}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One cell folder of a run, as the tests look at it.
pub struct CellOutput {
    /// The method's name in cell.json (a stack's name joins its steps with `+`).
    pub method: String,
    /// `prompt/sample: text` per generation, sorted.
    pub lines: Vec<String>,
    /// record.json's `stages.generate.counters`.
    pub counters: serde_json::Value,
}

/// Every cell under the run folder `out` (folders without cell.json are skipped).
pub fn read_cells(out: &Path) -> Vec<CellOutput> {
    let mut cells = Vec::new();
    for cell in std::fs::read_dir(out).unwrap() {
        let cell = cell.unwrap().path();
        let Ok(text) = std::fs::read_to_string(cell.join("cell.json")) else {
            continue;
        };
        let cell_json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut lines: Vec<String> = std::fs::read_to_string(cell.join("generations.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let g: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{}/{}: {}", g["prompt_id"], g["sample_index"], g["text"])
            })
            .collect();
        lines.sort();
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cell.join("record.json")).unwrap())
                .unwrap();
        cells.push(CellOutput {
            method: cell_json["method"]["name"].as_str().unwrap().to_string(),
            lines,
            counters: record["stages"]["generate"]["counters"].clone(),
        });
    }
    cells
}
