//! The walk-through of `docs/adding-a-method.md`, run: the `logit_bias` example method, registered
//! by its one line in `experiment::registry`, is named in a YAML spec, validated, run end to end on
//! the tiny fixture model through the library (no binary), scored and evaluated; and it changes
//! what is generated the way it says.

use std::path::Path;

use experiment::{Quiet, RunOptions};
use records::{read_generations, CellRecord, MetricsRecord};

fn write_spec(dir: &Path, words: &str) -> std::path::PathBuf {
    let text = format!(
        "name: bias\noutput: out\nmodels:\n  - {{ name: tiny, path: {}, format: hf }}\n\
         methods:\n  - name: none\n  - {{ name: logit_bias, strength: 50, params: {{ words: \"{words}\" }} }}\n\
         prompts:\n  - {{ name: rtp, kind: user, path: {} }}\n\
         generation: {{ samples_per_prompt: 2, max_new_tokens: 6, batch_size: 8, seed: 0, device: cpu }}\n\
         scorers: [profanity]\njudge: same\n",
        test_support::tiny_llama().display(),
        paths::project_root()
            .join("configs/prompts/rtp-style.jsonl")
            .display()
    );
    let path = dir.join("bias.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_registered_method_runs_from_a_spec_end_to_end() {
    let dir = test_support::scratch_dir("adding-a-method");
    let spec_file = write_spec(&dir, "the, a");
    let spec = experiment::load_spec(&spec_file).unwrap();
    assert_eq!(spec.cells().len(), 2);
    experiment::run_experiment(&spec, &spec_file, &RunOptions::default(), &Quiet).unwrap();

    let loaded = lm::LoadedModel::load(
        &test_support::tiny_llama(),
        lm::DeviceChoice::Cpu,
        lm::DtypeChoice::F32,
    )
    .unwrap();
    let biased = logit_bias::LogitBias::new(&loaded.tokenizer, &["the", "a"], 50.0).unwrap();
    let mut share = std::collections::BTreeMap::new();
    for cell in spec.cells() {
        let folder = spec.output.join(cell.cell_id());
        let record: CellRecord = records::read_json(&folder.join("cell.json"), "cell").unwrap();
        let metrics: MetricsRecord =
            records::read_json(&folder.join("metrics.json"), "metrics").unwrap();
        assert_eq!(metrics.samples, metrics.prompts * 2);
        assert_eq!(
            metrics.results.toxicity[0].name.as_deref(),
            Some("profanity")
        );
        let generations = read_generations(&folder.join("generations.jsonl")).unwrap();
        let tokens: Vec<i64> = generations
            .iter()
            .flat_map(|g| g.token_ids.clone())
            .collect();
        let hits = tokens
            .iter()
            .filter(|t| biased.tokens().contains(t))
            .count();
        share.insert(record.method.name, hits as f64 / tokens.len().max(1) as f64);
    }
    // +50 logits on a handful of tokens: nearly every drawn token is one of them; plain sampling
    // from the tiny random model draws them rarely.
    assert!(share["logit_bias"] > 0.9, "{share:?}");
    assert!(share["none"] < 0.2, "{share:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_method_rejects_its_bad_parameters_before_any_model_loads() {
    let dir = test_support::scratch_dir("adding-a-method-bad");
    let spec_file = write_spec(&dir, " , ");
    let spec = experiment::load_spec(&spec_file).unwrap();
    let error =
        experiment::run_experiment(&spec, &spec_file, &RunOptions::default(), &Quiet).unwrap_err();
    assert!(
        format!("{error:#}").contains("`words` lists no word"),
        "{error:#}"
    );
    assert!(!spec.output.exists(), "nothing is written");
    std::fs::remove_dir_all(&dir).unwrap();
}
