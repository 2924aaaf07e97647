//! The pipeline library reproduces what the `detox` binary of commit ec24e68 (before the pipeline
//! moved out of the binary) wrote for the same spec: the same samples, token for token, the same
//! scores, and the same metrics. The reference cells are the report crate's fixture
//! `tests/fixtures/v0-experiment` (tiny-llama; plain sampling and a post-hoc word filter; three
//! prompts; profanity and minilm). Paths inside the files differ by machine, so the comparison
//! leaves them out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use experiment::{Quiet, RunOptions};
use records::{CellRecord, GenerationLine, MetricsRecord, ScoreLine};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../report/tests/fixtures/v0-experiment")
}

/// Per method name: the cell folder.
fn cells_by_method(dir: &Path) -> BTreeMap<String, PathBuf> {
    let mut cells = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if let Ok(record) = records::read_json::<CellRecord>(&path.join("cell.json"), "cell") {
            cells.insert(record.method.name, path);
        }
    }
    cells
}

fn lines<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let mut out = Vec::new();
    data::jsonl::read_all(path, "line", |_, line: T| {
        out.push(line);
        Ok(())
    })
    .unwrap();
    out
}

/// A generation without its settings fingerprint (which hashes the machine's model path).
fn sample(g: &GenerationLine) -> GenerationLine {
    GenerationLine {
        settings: String::new(),
        ..g.clone()
    }
}

#[test]
fn the_library_reproduces_the_binary_before_it() {
    let dir = test_support::scratch_dir("reproduces-v0");
    let prompts: String =
        std::fs::read_to_string(paths::project_root().join("configs/prompts/rtp-style.jsonl"))
            .unwrap()
            .lines()
            .take(3)
            .map(|l| format!("{l}\n"))
            .collect();
    std::fs::write(dir.join("prompts.jsonl"), prompts).unwrap();
    let spec_text = format!(
        "name: v0-cells\noutput: out\nmodels:\n  - {{ name: tiny, path: {}, format: hf }}\n\
         methods:\n  - name: none\n  - {{ name: word_filter, label: word_filter, params: {{ mode: both, max_retries: 2, text_rule: true }} }}\n\
         prompts:\n  - {{ name: rtp, kind: user, path: prompts.jsonl }}\n\
         generation: {{ samples_per_prompt: 3, max_new_tokens: 6, batch_size: 8, seed: 0, device: cpu }}\n\
         scorers: [profanity, minilm]\njudge: same\n",
        test_support::tiny_llama().display()
    );
    let spec_file = dir.join("fx.yaml");
    std::fs::write(&spec_file, spec_text).unwrap();
    let spec = experiment::load_spec(&spec_file).unwrap();
    experiment::run_experiment(&spec, &spec_file, &RunOptions::default(), &Quiet).unwrap();

    let new = cells_by_method(&spec.output);
    let old = cells_by_method(&fixture_dir());
    assert_eq!(
        new.keys().collect::<Vec<_>>(),
        old.keys().collect::<Vec<_>>()
    );
    for (method, old_dir) in &old {
        let new_dir = &new[method];
        let read = |d: &Path| -> Vec<GenerationLine> {
            lines::<GenerationLine>(&d.join("generations.jsonl"))
                .iter()
                .map(sample)
                .collect()
        };
        assert_eq!(read(new_dir), read(old_dir), "{method}: generations");
        for scorer in ["profanity", "minilm"] {
            let file = format!("scores-{scorer}.jsonl");
            let a: Vec<ScoreLine> = lines(&new_dir.join(&file));
            let b: Vec<ScoreLine> = lines(&old_dir.join(&file));
            assert_eq!(a, b, "{method}: {file}");
        }
        let a: MetricsRecord = records::read_json(&new_dir.join("metrics.json"), "m").unwrap();
        let b: MetricsRecord = records::read_json(&old_dir.join("metrics.json"), "m").unwrap();
        assert_eq!(a.policy, b.policy);
        assert_eq!((a.prompts, a.samples), (b.prompts, b.samples));
        assert_eq!(a.results.distinctness, b.results.distinctness, "{method}");
        assert_eq!(a.results.perplexity, b.results.perplexity, "{method}");
        assert_eq!(a.results.agreement, b.results.agreement, "{method}");
        for (x, y) in a.results.toxicity.iter().zip(&b.results.toxicity) {
            assert_eq!(x.summary, y.summary, "{method}: {}", x.scorer);
            assert_eq!(x.failures, y.failures);
            assert_eq!((&x.scorer, &x.groups), (&y.scorer, &y.groups));
        }
        let names: Vec<_> = a.results.toxicity.iter().map(|t| t.name.clone()).collect();
        assert_eq!(names, [Some("profanity".into()), Some("minilm".into())]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
