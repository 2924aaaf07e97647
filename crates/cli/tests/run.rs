//! `detox run` end to end on the tiny fixture model: a sweep killed with SIGKILL at several
//! moments and run again ends with exactly the files of an uninterrupted run — no duplicate, no
//! missing sample — and a finished sweep is not redone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn detox() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_detox"));
    command.env_remove("RUST_BACKTRACE");
    command
}

fn spec(dir: &Path) -> PathBuf {
    let model = paths::require(&paths::fixture_dir("tiny-llama"), "tiny-llama")
        .unwrap_or_else(|e| panic!("{e}"));
    let prompts = paths::project_root().join("configs/prompts/rtp-style.jsonl");
    let text = format!(
        "name: killed\noutput: out\nmodels:\n  - {{ name: tiny, path: {}, format: hf }}\nmethods: [{{ name: none }}]\n\
         prompts:\n  - {{ name: rtp, kind: user, path: {} }}\n\
         generation: {{ samples_per_prompt: 4, max_new_tokens: 10, batch_size: 16, seed: [0, 1], device: cpu }}\n\
         scorers: [profanity]\njudge: same\n",
        model.display(),
        prompts.display()
    );
    let path = dir.join("exp.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every output file of the sweep with its lines sorted (append order depends on where a run was
/// killed; content must not).
fn outputs(dir: &Path) -> Vec<(String, Vec<String>)> {
    let mut files = Vec::new();
    for cell in std::fs::read_dir(dir.join("out")).unwrap() {
        let cell = cell.unwrap().path();
        if !cell.is_dir() {
            continue; // the score cache: its content depends on where a run was killed
        }
        if !cell.join("cell.json").is_file() {
            // The report folder: rebuilt at the end of every run, and its cost figures come
            // from wall times; only that it was written is checked.
            assert!(cell.join("summary.md").is_file(), "{}", cell.display());
            continue;
        }
        for file in std::fs::read_dir(&cell).unwrap() {
            let file = file.unwrap().path();
            if file.file_name().unwrap() == "record.json" {
                // Wall times and process counts: checked by `record_is_complete`, not compared.
                record_is_complete(&file);
                continue;
            }
            // Records name their input files; the sweep's own folder is the only expected
            // difference between two sweeps.
            let text = std::fs::read_to_string(&file)
                .unwrap()
                .replace(&dir.display().to_string(), "<DIR>");
            let mut lines: Vec<String> = text.lines().map(String::from).collect();
            lines.sort();
            let name = format!(
                "{}/{}",
                cell.file_name().unwrap().to_string_lossy(),
                file.file_name().unwrap().to_string_lossy()
            );
            files.push((name, lines));
        }
    }
    files.sort();
    files
}

/// A finished cell's run record names what produced it and what each stage cost.
fn record_is_complete(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    for stage in ["generate", "score", "evaluate"] {
        assert!(
            record["stages"][stage]["wall_seconds"].as_f64().is_some(),
            "{}: no {stage} stage in {text}",
            path.display()
        );
    }
    assert!(
        record["stages"]["generate"]["tokens_per_second"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(record["device"], "cpu");
    assert_eq!(record["dtype"], "f32");
    assert!(record["peak_memory"]["host_rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(record["versions"]["libtorch"]
        .as_str()
        .unwrap()
        .starts_with("2."));
    assert!(record["git"]["commit"]
        .as_str()
        .is_some_and(|c| c.len() == 40));
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("detox-run-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_killed_sweep_resumes_to_the_same_outputs() {
    let reference_dir = scratch("reference");
    let run = |dir: &Path| {
        let mut command = detox();
        command.current_dir(dir).args(["run", "exp.yaml"]);
        command
    };
    let spec_path = spec(&reference_dir);
    let status = run(&reference_dir).output().unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let reference = outputs(&reference_dir);
    assert_eq!(
        reference.len(),
        8,
        "2 cells × cell.json, generations, scores, metrics"
    );
    let generations = reference
        .iter()
        .find(|(n, _)| n.ends_with("generations.jsonl"))
        .unwrap();
    assert_eq!(generations.1.len(), 100 * 4);

    for (attempt, delay_ms) in [150u64, 400, 800, 1300, 2000].into_iter().enumerate() {
        let dir = scratch(&format!("killed-{attempt}"));
        std::fs::copy(&spec_path, dir.join("exp.yaml")).unwrap();
        let mut child = run(&dir)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL: no clean-up runs
        let _ = child.wait();
        let resumed = run(&dir).output().unwrap();
        assert!(
            resumed.status.success(),
            "attempt {attempt}: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let resumed = outputs(&dir);
        let names =
            |files: &[(String, Vec<String>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&resumed),
            names(&reference),
            "attempt {attempt}: files"
        );
        for ((name, got), (_, want)) in resumed.iter().zip(&reference) {
            let first_difference = got.iter().zip(want).position(|(a, b)| a != b);
            assert!(
                got.len() == want.len() && first_difference.is_none(),
                "attempt {attempt} (killed after {delay_ms} ms): {name} differs ({} vs {} lines; first different line {first_difference:?}: {:.200})",
                got.len(),
                want.len(),
                first_difference.map(|i| got[i].as_str()).unwrap_or("")
            );
        }
        let again = run(&dir).output().unwrap();
        assert!(
            String::from_utf8_lossy(&again.stderr)
                .matches("done already")
                .count()
                == 2
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::remove_dir_all(&reference_dir).unwrap();
}

/// `--shard I/N` splits the cells round robin into disjoint shares; `merge` joins them into the
/// same cells a single run makes.
#[test]
fn shards_split_the_cells_and_merge_joins_them() {
    let dir = scratch("shards");
    spec(&dir);
    let run = |args: &[&str]| {
        let out = detox().current_dir(&dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["run", "exp.yaml", "--shard", "1/2"]);
    run(&["run", "exp.yaml", "--shard", "2/2"]);
    let cells = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("metrics.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let one = cells(&dir.join("out/shards/1-of-2"));
    let two = cells(&dir.join("out/shards/2-of-2"));
    assert_eq!((one.len(), two.len()), (1, 1), "{one:?} {two:?}");
    assert_ne!(one, two);
    run(&["merge", "out"]);
    let mut both = [one, two].concat();
    both.sort();
    assert_eq!(cells(&dir.join("out")), both);

    let bad = detox()
        .current_dir(&dir)
        .args(["run", "exp.yaml", "--shard", "3/2"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--shard takes I/N"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stack (word filter, then SASA with a subspace fitted on the tiny model by `detox train
/// sasa`) runs end to end from a spec; its generations differ from plain sampling, carry the
/// post-hoc redraw counts, and the report lists both methods.
#[test]
fn a_stacked_method_runs_from_a_spec() {
    let dir = scratch("stack");
    let model = paths::require(&paths::fixture_dir("tiny-llama"), "tiny-llama")
        .unwrap_or_else(|e| panic!("{e}"));
    let subspace = dir.join("tiny-sasa.json");
    let fit = detox()
        .args([
            "train",
            "sasa",
            "--device",
            "cpu",
            "--data",
            "jigsaw",
            "--per-label",
            "40",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--out")
        .arg(&subspace)
        .output()
        .unwrap();
    assert!(
        fit.status.success(),
        "{}",
        String::from_utf8_lossy(&fit.stderr)
    );
    let prompts = paths::project_root().join("configs/prompts/rtp-style.jsonl");
    let text = format!(
        "name: stack\noutput: out\nmodels:\n  - {{ name: tiny, path: {}, format: hf }}\n\
         methods:\n  - name: none\n  - label: filter+sasa\n    stack:\n      - {{ name: word_filter, params: {{ mode: both, max_retries: 2 }} }}\n      - {{ name: sasa, strength: 50, params: {{ subspace: {}, max_candidates: 8 }} }}\n\
         prompts:\n  - {{ name: rtp, kind: user, path: {} }}\n\
         generation: {{ samples_per_prompt: 2, max_new_tokens: 8, batch_size: 16, device: cpu }}\n\
         scorers: [profanity]\njudge: same\n",
        model.display(),
        subspace.display(),
        prompts.display()
    );
    std::fs::write(dir.join("exp.yaml"), text).unwrap();
    let out = detox()
        .current_dir(&dir)
        .args(["run", "exp.yaml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| filter+sasa"), "{stdout}");
    let mut plain = None;
    let mut stacked = None;
    for cell in std::fs::read_dir(dir.join("out")).unwrap() {
        let cell = cell.unwrap().path();
        let Ok(text) = std::fs::read_to_string(cell.join("cell.json")) else {
            continue;
        };
        let cell_json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(cell.join("generations.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 200);
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cell.join("record.json")).unwrap())
                .unwrap();
        let counters = &record["stages"]["generate"]["counters"];
        match cell_json["method"]["name"].as_str().unwrap() {
            "none" => {
                assert!(counters.get("sasa_candidate_rows").is_none(), "{counters}");
                plain = Some(lines)
            }
            "word_filter+sasa" => {
                // SASA's own totals reach the run record: it ran candidates and drew among them.
                let total = |name: &str| {
                    counters[name]
                        .as_f64()
                        .unwrap_or_else(|| panic!("{name}: {counters}"))
                };
                assert!(
                    total("sasa_candidate_rows") >= total("sasa_row_steps"),
                    "{counters}"
                );
                assert!(total("sasa_drawn_margins") > 0.0, "{counters}");
                assert!(total("posthoc_redraws") >= 0.0, "{counters}");
                stacked = Some(lines)
            }
            other => panic!("unexpected method {other}"),
        }
    }
    let (plain, stacked) = (plain.unwrap(), stacked.unwrap());
    assert!(plain.iter().all(|g| g.get("redraws").is_none()));
    assert!(stacked.iter().all(|g| g["redraws"].as_u64().is_some()));
    let text = |v: &[serde_json::Value]| -> Vec<String> {
        let mut t: Vec<String> = v
            .iter()
            .map(|g| format!("{}/{}: {}", g["prompt_id"], g["sample_index"], g["text"]))
            .collect();
        t.sort();
        t
    };
    assert_ne!(
        text(&plain),
        text(&stacked),
        "SASA at β 50 must change samples"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
