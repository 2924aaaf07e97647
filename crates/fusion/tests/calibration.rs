//! Training the calibration model (tests/common): an existing output folder is refused before
//! training; training every parameter unties the head and the record says so.

mod common;

use common::{calibration, load, tiny_calibration_options, train_tiny_calibration};
use fusion::CalibrationTrainable;
use tch::Tensor;
use test_support::fixture;

#[test]
fn an_existing_output_folder_is_refused_before_training() {
    let (dir, _, _) = calibration();
    let error = train_tiny_calibration(
        dir,
        &tiny_calibration_options(1, CalibrationTrainable::Blocks),
        4,
        0,
    )
    .err()
    .map(|e| format!("{e:#}"))
    .expect("refused");
    assert!(error.contains("already exists"), "{error}");
}

#[test]
fn a_calibration_model_training_every_parameter_unties_its_head_and_says_so() {
    let root = test_support::scratch_dir("fusion-calibration-all");
    let out = root.join("calibration");
    let record = train_tiny_calibration(
        &out,
        &tiny_calibration_options(2, CalibrationTrainable::All),
        16,
        8,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let (before, after) = (
        record.held_out_perplexity_before.unwrap(),
        record.held_out_perplexity_after.unwrap(),
    );
    assert!(after < before, "{before} -> {after}");

    let written: fusion::CalibrationRecord = serde_json::from_str(
        &std::fs::read_to_string(out.join(fusion::calibration::RECORD_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(written.options.train, CalibrationTrainable::All);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["tie_word_embeddings"], serde_json::json!(false));
    assert_eq!(config["num_hidden_layers"], 1);

    // The trained head and embedding both left the base's (tied) embedding, apart.
    let stored: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(out.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let base: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture("tiny-llama").join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let base_embedding = &base["model.embed_tokens.weight"];
    let (embedding, head) = (
        &stored["model.embed_tokens.weight"],
        &stored["lm_head.weight"],
    );
    assert!(!embedding.allclose(base_embedding, 1e-6, 1e-6, false));
    assert!(!head.allclose(base_embedding, 1e-6, 1e-6, false));
    assert!(!head.allclose(embedding, 1e-6, 1e-6, false));

    let cal = load(&out);
    assert_eq!(cal.model.info().num_layers, 1);
    std::fs::remove_dir_all(&root).unwrap();
}
