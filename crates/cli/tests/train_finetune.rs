//! `detox train finetune` end to end on the tiny Llama fixture with a little real text (ToxiGen
//! and WikiText-2): a parallel NADO schedule whose later rounds run their jobs as concurrent
//! processes, its timing record, resuming after a lost job, the bad-input errors, and the
//! resulting checkpoint and auxiliary model decoding from a sweep spec beside plain sampling.

use std::path::Path;
use std::process::Output;

mod common;
use common::{detox, read_cells, scratch};

fn succeeded(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned() + &stderr
}

fn failed(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn spec(model: &str, output: &str, extra: &str) -> String {
    format!(
        "base: {model}\noutput: {output}\nobjective: nado\nlambda: 1.0\nschedule: parallel\n\
         iterations: 3\nthreads_per_job: 1\n\
         data:\n  - {{source: toxigen, limit: 12}}\n  - {{source: wikitext2, limit: 12, regularize: false}}\n\
         sampling: {{prompts: 8, prompt_tokens: 4, max_new_tokens: 6, batch_size: 8, allow_few_samples: true}}\n\
         label: {{scorer: profanity}}\n\
         auxiliary: {{layers: 1, epochs: 2, learning_rate: 0.001, batch_size: 4}}\n\
         finetune: {{learning_rate: 0.001, batch_size: 4, accumulate: 2, max_tokens: 24}}\n{extra}"
    )
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn a_parallel_schedule_trains_resumes_and_its_checkpoints_decode_from_a_spec() {
    let model = paths::require(&paths::fixture_dir("tiny-llama"), "tiny-llama")
        .unwrap_or_else(|e| panic!("{e}"));
    let model = model.to_str().unwrap();
    let dir = scratch("train-finetune", "all");
    std::fs::write(dir.join("ft.yaml"), spec(model, "run", "")).unwrap();
    let log = succeeded(&detox(&dir, &["train", "finetune", "ft.yaml"]));
    assert!(
        log.contains("round 2/3: samples-1, auxiliary-2, policy-2 (at once)"),
        "{log}"
    );
    let run = dir.join("run");

    let schedule = json(&run.join("schedule.json"));
    let rounds = schedule["rounds"].as_array().unwrap();
    let shape: Vec<(bool, usize)> = rounds
        .iter()
        .map(|r| {
            (
                r["concurrent"].as_bool().unwrap(),
                r["jobs"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(shape, [(false, 3), (true, 3), (true, 1)]);
    for round in rounds {
        assert!(round["wall_seconds"].as_f64().unwrap() > 0.0);
        let jobs = round["jobs"].as_array().unwrap();
        let slowest = jobs
            .iter()
            .map(|j| j["cpu_seconds"].as_f64().unwrap())
            .fold(0.0, f64::max);
        if round["concurrent"].as_bool().unwrap() {
            assert_eq!(round["critical_path_seconds"].as_f64().unwrap(), slowest);
        }
        for job in jobs {
            assert!(job["wall_seconds"].as_f64().unwrap() > 0.0);
            assert!(job["cpu_seconds"].as_f64().unwrap() > 0.0);
            assert_eq!(job["threads"], 1);
        }
    }
    // The wikitext prompts' samples are masked from the KL term (adaptive regularization).
    let record = json(&run.join("policy-3/finetune.json"));
    assert_eq!(record["objective"], "nado");
    assert_eq!(record["round"], 3);
    assert!(record["auxiliary"]
        .as_str()
        .unwrap()
        .ends_with("auxiliary-2"));
    assert!(record["samples"]
        .as_str()
        .unwrap()
        .ends_with("samples-1.jsonl"));
    let stats = &record["stats"];
    assert!(stats["masked_samples"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        stats["masked_samples"].as_u64().unwrap() < stats["regularizer_samples"].as_u64().unwrap()
    );
    let samples = std::fs::read_to_string(run.join("samples-0.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), 8);

    // The folder exists now: without --resume the run refuses; with it, only the lost job reruns.
    let err = failed(&detox(&dir, &["train", "finetune", "ft.yaml"]));
    assert!(err.contains("already exists; pass --resume"), "{err}");
    std::fs::remove_file(run.join("jobs/policy-3.done.json")).unwrap();
    let log = succeeded(&detox(&dir, &["train", "finetune", "ft.yaml", "--resume"]));
    assert!(log.contains("round 3/3: policy-3"), "{log}");
    assert!(
        !log.contains("round 1/3:") && !log.contains("round 2/3:"),
        "{log}"
    );
    // Rounds 1 and 2 did not rerun and keep the wall times measured the first time; round 3 ran
    // whole again and has a new one.
    let resumed = json(&run.join("schedule.json"));
    let walls: Vec<Option<f64>> = resumed["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["wall_seconds"].as_f64())
        .collect();
    assert_eq!(walls[0], rounds[0]["wall_seconds"].as_f64());
    assert_eq!(walls[1], rounds[1]["wall_seconds"].as_f64());
    assert!(walls[2].is_some_and(|w| w > 0.0), "{walls:?}");
    // A changed spec does not resume someone else's run.
    std::fs::write(dir.join("ft.yaml"), spec(model, "run", "seed: 9\n")).unwrap();
    let err = failed(&detox(&dir, &["train", "finetune", "ft.yaml", "--resume"]));
    assert!(err.contains("the spec changed"), "{err}");

    // Bad input, each refused before anything trains (and nothing left behind).
    let bad = |name: &str, text: String| {
        std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
        let err = failed(&detox(
            &dir,
            &["train", "finetune", &format!("{name}.yaml")],
        ));
        assert!(!dir.join(name).exists(), "{name}: output left behind");
        err
    };
    let err = bad(
        "negative",
        spec(model, "negative", "").replace("lambda: 1.0", "lambda: -0.5"),
    );
    assert!(
        err.contains("negative.yaml: lambda: must be a finite number >= 0"),
        "{err}"
    );
    let err = bad(
        "empty",
        spec(
            model,
            "empty",
            "filter: {scorer: profanity, threshold: 0.0}\n",
        ),
    );
    assert!(
        err.contains("empty.yaml: data: the mix is empty after filtering"),
        "{err}"
    );
    let err = bad(
        "wide",
        spec(model, "wide", "").replace(
            "finetune: {",
            "finetune: {adaptation: {mode: lora, rank: 1000}, ",
        ),
    );
    assert!(
        err.contains("wide.yaml: finetune.adaptation: lora rank 1000 is larger than the width 64"),
        "{err}"
    );

    // A LoRA SFT run writes a merged checkpoint and its adapters.
    let lora = spec(model, "lora", "")
        .replace(
            "objective: nado\nlambda: 1.0\nschedule: parallel\niterations: 3",
            "objective: sft\nschedule: sequential\niterations: 1",
        )
        .replace(
            "finetune: {",
            "finetune: {adaptation: {mode: lora, rank: 4}, ",
        );
    std::fs::write(dir.join("lora.yaml"), lora).unwrap();
    succeeded(&detox(&dir, &["train", "finetune", "lora.yaml"]));
    assert!(dir
        .join("lora/policy-1/lora-adapters.safetensors")
        .is_file());

    // The checkpoint and the auxiliary model in a sweep, beside plain sampling.
    let prompts = paths::project_root().join("configs/prompts/rtp-style.jsonl");
    let text = format!(
        "name: ft\noutput: out\nmodels:\n  - {{ name: tiny, path: {model}, format: hf }}\n\
         methods:\n  - name: none\n\
         \x20 - {{ name: finetuned, label: ours-parallel, strength: 1, params: {{ checkpoint: run/policy-3 }} }}\n\
         \x20 - {{ name: nado, strength: 1, params: {{ auxiliary: run/auxiliary-1 }} }}\n\
         prompts:\n  - {{ name: rtp, kind: user, path: {}, sample: 4, seed: 0 }}\n\
         generation: {{ samples_per_prompt: 2, max_new_tokens: 8, batch_size: 8, device: cpu }}\n\
         scorers: [profanity]\njudge: same\n",
        prompts.display()
    );
    std::fs::write(dir.join("exp.yaml"), text).unwrap();
    let log = succeeded(&detox(&dir, &["run", "exp.yaml"]));
    assert!(log.contains("| ours-parallel"), "{log}");
    let mut by_method = std::collections::BTreeMap::new();
    for cell in read_cells(&dir.join("out")) {
        assert_eq!(cell.lines.len(), 8, "{}", cell.method);
        if cell.method == "nado" {
            assert!(cell.counters["nado_steps"].as_f64().unwrap() > 0.0);
        }
        by_method.insert(cell.method, cell.lines);
    }
    assert_eq!(by_method.len(), 3, "{:?}", by_method.keys());
    assert_ne!(by_method["none"], by_method["finetuned"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
