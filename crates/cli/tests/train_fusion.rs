//! `detox train calibration` and `detox train align` end to end on the tiny Llama fixture and a
//! little real labelled data, then calibration fusion and DExperts decoding from one spec.

use std::path::Path;
use std::process::Output;

mod common;
use common::{detox, read_cells, scratch};

fn succeeded(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned() + &stderr
}

#[test]
fn calibration_models_and_map_train_and_decode_from_a_spec() {
    let model = paths::require(&paths::fixture_dir("tiny-llama"), "tiny-llama")
        .unwrap_or_else(|e| panic!("{e}"));
    let model = model.to_str().unwrap();
    let dir = scratch("train-fusion", "all");
    let (expert, anti) = (dir.join("expert"), dir.join("anti"));
    // The anti-expert trains every parameter (`--train all`), so decoding also meets an untied
    // calibration model.
    let calibration = |out: &Path, toxic: bool| {
        let mut args = vec![
            "train",
            "calibration",
            "--base",
            model,
            "--layers",
            "1",
            "--device",
            "cpu",
            "--data",
            "toxigen",
            "--per-label",
            "30",
            "--learning-rate",
            "1e-3",
            "--out",
            out.to_str().unwrap(),
        ];
        if toxic {
            args.extend(["--toxic", "--train", "all"]);
        }
        detox(&dir, &args)
    };
    let log = succeeded(&calibration(&expert, false));
    assert!(log.contains("held-out perplexity:"), "{log}");
    let record: fusion::CalibrationRecord =
        serde_json::from_str(&std::fs::read_to_string(expert.join("calibration.json")).unwrap())
            .unwrap();
    assert_eq!(record.options.layers, 1);
    assert_eq!(record.options.train, fusion::CalibrationTrainable::Blocks);
    assert!(record.data.contains("non-toxic"), "{}", record.data);
    let (before, after) = (
        record.held_out_perplexity_before.unwrap(),
        record.held_out_perplexity_after.unwrap(),
    );
    assert!(after < before, "{before} -> {after}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(expert.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["num_hidden_layers"], 1);

    // The folder exists now: a second run refuses before training.
    let again = calibration(&expert, false);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    succeeded(&calibration(&anti, true));
    let anti_record: fusion::CalibrationRecord =
        serde_json::from_str(&std::fs::read_to_string(anti.join("calibration.json")).unwrap())
            .unwrap();
    assert_eq!(anti_record.options.train, fusion::CalibrationTrainable::All);
    assert!(
        anti_record.procedure.contains("--train all"),
        "{}",
        anti_record.procedure
    );
    let anti_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(anti.join("config.json")).unwrap()).unwrap();
    assert_eq!(anti_config["tie_word_embeddings"], false);

    let map = dir.join("map.json");
    let log = succeeded(&detox(
        &dir,
        &[
            "train",
            "align",
            "--target",
            model,
            "--calibration",
            expert.to_str().unwrap(),
            "--device",
            "cpu",
            "--data",
            "toxigen",
            "--per-label",
            "30",
            "--epochs",
            "2",
            "--out",
            map.to_str().unwrap(),
        ],
    ));
    assert!(log.contains("partner ranked first"), "{log}");
    assert!(map.with_extension("safetensors").is_file());

    let prompts = paths::project_root().join("configs/prompts/rtp-style.jsonl");
    let text = format!(
        "name: fusion\noutput: out\nmodels:\n  - {{ name: tiny, path: {model}, format: hf }}\n\
         methods:\n  - name: none\n\
         \x20 - {{ name: calibration_fusion, strength: 0.6, params: {{ calibration: {}, align: {} }} }}\n\
         \x20 - {{ name: dexperts, strength: 2, params: {{ expert: {}, anti_expert: {} }} }}\n\
         prompts:\n  - {{ name: rtp, kind: user, path: {}, sample: 6, seed: 0 }}\n\
         generation: {{ samples_per_prompt: 2, max_new_tokens: 8, batch_size: 8, device: cpu }}\n\
         scorers: [profanity]\njudge: same\n",
        expert.display(),
        map.display(),
        expert.display(),
        anti.display(),
        prompts.display()
    );
    std::fs::write(dir.join("exp.yaml"), text).unwrap();
    let log = succeeded(&detox(&dir, &["run", "exp.yaml"]));
    assert!(log.contains("| calibration_fusion"), "{log}");
    assert!(log.contains("| dexperts"), "{log}");
    let mut by_method = std::collections::BTreeMap::new();
    for cell in read_cells(&dir.join("out")) {
        assert_eq!(cell.lines.len(), 12, "{}", cell.method);
        match cell.method.as_str() {
            "calibration_fusion" => assert!(cell.counters["fusion_steps"].as_f64().unwrap() > 0.0),
            "dexperts" => assert!(cell.counters["dexperts_steps"].as_f64().unwrap() > 0.0),
            _ => {}
        }
        by_method.insert(cell.method, cell.lines);
    }
    assert_eq!(by_method.len(), 3, "{:?}", by_method.keys());
    assert_ne!(by_method["none"], by_method["calibration_fusion"]);
    assert_ne!(by_method["none"], by_method["dexperts"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
