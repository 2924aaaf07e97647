//! The `hf:DIR` scorer end to end on the tiny RoBERTa classifier fixture: text → word-level
//! tokenizer → classifier → toxic-label probability, equal to the classifier run on the ids; empty
//! text is a counted failure, not a score.

use lm::bert::{right_pad, SequenceClassifier};
use lm::{DeviceChoice, DtypeChoice};
use probe::HfClassifierScorer;
use score::{ScoreFailure, ToxicityScorer};

#[test]
fn scores_the_toxic_label_and_counts_empty_text() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lm/tests/fixtures/tiny-roberta-classifier");
    let mut scorer = HfClassifierScorer::load(&dir, None, DeviceChoice::Cpu).unwrap();
    assert!(scorer.id().ends_with("#toxic"), "{}", scorer.id());
    let results = scorer.score_batch(&["w17 w42 w8", "   ", "w60"]);
    assert_eq!(results[1], Err(ScoreFailure::EmptyText));
    let classifier =
        SequenceClassifier::load(&dir, DeviceChoice::Cpu, DtypeChoice::F32, None).unwrap();
    // [CLS]=3 … [SEP]=4 around the word ids; RoBERTa pads with id 1.
    let (ids, mask) = right_pad(
        &[vec![3, 17, 42, 8, 4], vec![3, 60, 4]],
        1,
        tch::Device::Cpu,
    );
    let expected = Vec::<f32>::try_from(tch::no_grad(|| classifier.toxicity(&ids, &mask))).unwrap();
    for (got, want) in [&results[0], &results[2]].into_iter().zip(expected) {
        let got = *got.as_ref().unwrap();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!((0.0..=1.0).contains(&got));
    }
}
