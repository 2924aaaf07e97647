//! Hugging Face sequence classifiers (BERT with a pooler, RoBERTa with its classification head)
//! against transformers' logits on tiny random checkpoints written by
//! `fixtures/make_tiny_classifiers.py`; and the toxic label and activation read from the config.

use std::path::PathBuf;

use lm::bert::{LabelActivation, SequenceClassifier};
use lm::{DeviceChoice, DtypeChoice};
use tch::{Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check(name: &str, toxic_label: usize, activation: LabelActivation) {
    let dir = fixture(name);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let ids: Vec<Vec<i64>> = serde_json::from_value(expected["input_ids"].clone()).unwrap();
    let mask: Vec<Vec<i64>> = serde_json::from_value(expected["attention_mask"].clone()).unwrap();
    let reference: Vec<Vec<f32>> = serde_json::from_value(expected["logits"].clone()).unwrap();
    let classifier =
        SequenceClassifier::load(&dir, DeviceChoice::Cpu, DtypeChoice::F32, None).unwrap();
    assert_eq!(classifier.toxic_label, toxic_label, "{name}");
    assert_eq!(classifier.activation, activation, "{name}");
    let to_tensor =
        |rows: &[Vec<i64>]| Tensor::from_slice(&rows.concat()).view([rows.len() as i64, -1]);
    let (ids, mask) = (to_tensor(&ids), to_tensor(&mask));
    let logits = tch::no_grad(|| classifier.logits(&ids, &mask));
    let reference = Tensor::from_slice(&reference.concat()).view([3, -1]);
    let diff = (&logits - &reference).abs().max().double_value(&[]);
    assert!(diff <= 1e-5, "{name}: logits differ by {diff}");
    let p = tch::no_grad(|| classifier.toxicity(&ids, &mask));
    let expected_p = match activation {
        LabelActivation::Softmax => reference.softmax(-1, Kind::Float),
        LabelActivation::Sigmoid => reference.sigmoid(),
    }
    .select(1, toxic_label as i64);
    assert!((p - expected_p).abs().max().double_value(&[]) <= 1e-6);
}

#[test]
fn bert_multi_label_classifier_matches_transformers() {
    check("tiny-bert-classifier", 0, LabelActivation::Sigmoid);
}

#[test]
fn roberta_classifier_matches_transformers() {
    check("tiny-roberta-classifier", 1, LabelActivation::Softmax);
}

#[test]
fn an_unnamed_toxic_label_is_a_clear_error() {
    let err = SequenceClassifier::load(
        &fixture("tiny-bert-classifier"),
        DeviceChoice::Cpu,
        DtypeChoice::F32,
        Some("hateful"),
    )
    .err()
    .unwrap();
    assert!(
        format!("{err:#}").contains("cannot tell which label is toxic"),
        "{err:#}"
    );
}
