//! DExperts on the tiny fixture models (tests/common): the same model as expert and anti-expert
//! changes nothing, different ones change the samples; the base filter keeps every drawn token
//! inside the base's nucleus; a model with another tokenizer is refused.

mod common;

use std::path::Path;

use common::{calibration, last_state, load, requests, run, settings};
use decode::Steering;
use fusion::{nucleus_mask, DExperts, DExpertsParams};
use tch::Tensor;
use test_support::fixture;

#[test]
fn dexperts_with_one_model_as_both_experts_changes_nothing() {
    let target = load(&fixture("tiny-llama"));
    let (dir, _, _) = calibration();
    let dexperts = |expert: &Path, anti: &Path, alpha: f64| -> Box<dyn Steering> {
        Box::new(
            DExperts::new(
                load(expert),
                load(anti),
                &target.tokenizer,
                target.model.info().vocab_size,
                DExpertsParams {
                    alpha,
                    filter_p: 1.0,
                },
            )
            .unwrap_or_else(|e| panic!("{e:#}")),
        )
    };
    let plain = run(&target, &[], &settings(false), None);
    let same = run(
        &target,
        &[],
        &settings(false),
        Some(dexperts(dir, dir, 5.0)),
    );
    assert_eq!(plain, same);
    let zero = run(
        &target,
        &[],
        &settings(false),
        Some(dexperts(dir, &target.dir, 0.0)),
    );
    assert_eq!(plain, zero);
    let different = run(
        &target,
        &[],
        &settings(false),
        Some(dexperts(dir, &target.dir, 2.0)),
    );
    assert_ne!(plain, different);
}

#[test]
fn a_model_with_another_tokenizer_is_refused() {
    // The tiny fixtures share one tokenizer: a copy of it where two tokens trade ids stands in
    // for a target's of another vocabulary (same size, so only the ids tell them apart).
    let path = fixture("tiny-llama").join("tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let name_of = |id: u64| {
        vocab
            .iter()
            .find(|(_, v)| v.as_u64() == Some(id))
            .map(|(k, _)| k.clone())
            .unwrap()
    };
    let (a, b) = (name_of(400), name_of(401));
    vocab.insert(a, 401.into());
    vocab.insert(b, 400.into());
    let scratch = test_support::scratch_dir("fusion-swapped");
    let swapped = scratch.join("tokenizer.json");
    std::fs::write(&swapped, json.to_string()).unwrap();
    let other = lm::TextTokenizer::from_file(&swapped).unwrap_or_else(|e| panic!("{e:#}"));
    std::fs::remove_dir_all(&scratch).unwrap();
    let (dir, _, _) = calibration();
    let error = DExperts::new(
        load(dir),
        load(dir),
        &other,
        other.vocab_size() as i64,
        DExpertsParams {
            alpha: 1.0,
            filter_p: 0.9,
        },
    )
    .err()
    .map(|e| format!("{e:#}"))
    .expect("refused");
    assert!(
        error.contains("does not share the target's tokenizer") && error.contains("expert"),
        "{error}"
    );
}

#[test]
fn the_nucleus_mask_keeps_the_smallest_set_reaching_p() {
    // Probabilities 0.5, 0.3, 0.15, 0.05 (in a shuffled order).
    let probs = [0.15f64, 0.5, 0.05, 0.3];
    let logits = Tensor::from_slice(&probs.map(|p| p.ln() as f32)).unsqueeze(0);
    let kept = |p: f64| Vec::<bool>::try_from(nucleus_mask(&logits, p).squeeze_dim(0)).unwrap();
    assert_eq!(kept(0.5), [false, true, false, false]);
    assert_eq!(kept(0.6), [false, true, false, true]);
    assert_eq!(kept(0.9), [true, true, false, true]);
    assert_eq!(kept(1.0), [true, true, true, true]);
}

#[test]
fn dexperts_filters_the_base_before_the_experts() {
    // Experts that disagree everywhere would promote tokens the base rules out; with the base
    // filter, every drawn token lies in the base's nucleus of filter_p at its step.
    let target = load(&fixture("tiny-llama"));
    let (dir, _, _) = calibration();
    let filter_p = 0.5;
    let method = DExperts::new(
        load(dir),
        load(&target.dir),
        &target.tokenizer,
        target.model.info().vocab_size,
        DExpertsParams {
            alpha: 20.0,
            filter_p,
        },
    )
    .unwrap();
    let mut settings = settings(false);
    settings.sampling.top_p = None;
    let rows = run(&target, &[], &settings, Some(Box::new(method)));
    let mut sorted = requests(&target);
    sorted.sort_by(|a, b| (&a.prompt_id, a.sample_index).cmp(&(&b.prompt_id, b.sample_index)));
    for (request, continuation) in sorted.iter().zip(&rows) {
        for (t, &token) in continuation.iter().enumerate() {
            let mut text = request.prompt_ids.clone();
            text.extend(&continuation[..t]);
            let h = last_state(
                target.model.as_ref(),
                &Tensor::from_slice(&text).unsqueeze(0),
            );
            let inside = nucleus_mask(&target.model.logits(&h), filter_p);
            assert!(
                inside.int64_value(&[0, token]) == 1,
                "token {token} at new position {t} is outside the base nucleus"
            );
        }
    }
}
