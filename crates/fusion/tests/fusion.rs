//! Calibration fusion on the tiny fixture models (tests/common): α = 0 is plain sampling to the
//! token; the paper's recipe (InfoNCE map, plain LayerNorm) gives α·LN(h_cal A) + (1 − α)·h
//! through the head, computed by hand; with the target as its own calibration model and the
//! identity readout fusion reproduces the target at every α (here and on the default model); a
//! ridge map rebuilds the target's states better than the InfoNCE map; the follower's state
//! equals a from-scratch run of the whole text.

mod common;

use std::path::Path;

use common::{calibration, last_state, load, run, settings};
use decode::Follower;
use fusion::{fused_logits, AlignMap, CalibrationFusion, FusionParams, MapNorm, Readout};
use lm::LoadedModel;
use tch::{Kind, Tensor};
use test_support::fixture;

/// Fusion into `target` of the calibration model in `calibration` through `map` (`None`: the
/// identity readout), with no norm.
fn fusion_of(
    target: &LoadedModel,
    calibration: &Path,
    map: Option<AlignMap>,
    alpha: f64,
) -> CalibrationFusion {
    CalibrationFusion::new(
        load(calibration),
        map,
        &target.tokenizer,
        target.model.info().vocab_size,
        FusionParams {
            alpha,
            norm: MapNorm::None,
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Fusion through the ridge map of the shared calibration model.
fn fusion(target: &LoadedModel, alpha: f64) -> CalibrationFusion {
    let (dir, ridge, _) = calibration();
    let map = AlignMap::load(ridge, dir, &target.dir).unwrap_or_else(|e| panic!("{e:#}"));
    fusion_of(target, dir, Some(map), alpha)
}

/// Fusion of `target` with itself as the calibration model through the identity readout.
fn self_fusion(target: &LoadedModel, alpha: f64) -> CalibrationFusion {
    fusion_of(target, &target.dir, None, alpha)
}

/// The target as its own calibration model, identity readout: the same logits at every α (the
/// fused state is α·h + (1 − α)·h), and, with `decode`, the same tokens as plain sampling.
fn assert_self_fusion_reproduces_the_target(target: &LoadedModel, decode: bool) {
    let ids = Tensor::from_slice(
        &target
            .tokenizer
            .encode("The library opens at nine")
            .unwrap(),
    )
    .unsqueeze(0);
    let h = last_state(target.model.as_ref(), &ids);
    let same = load(&target.dir);
    let h_self = last_state(same.model.as_ref(), &ids);
    let base = target.model.logits(&h);
    for alpha in [0.0, 0.1, 0.3, 0.6, 1.0] {
        let fused = fused_logits(
            target.model.as_ref(),
            &h,
            &h_self,
            None,
            MapNorm::None,
            alpha,
            &base,
        );
        let diff = (&fused - &base).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "alpha {alpha}: logits moved by {diff}");
    }
    if !decode {
        return;
    }
    let plain = run(target, &[], &settings(false), None);
    for alpha in [0.3, 1.0] {
        let fused = run(
            target,
            &[],
            &settings(false),
            Some(Box::new(self_fusion(target, alpha))),
        );
        assert_eq!(plain, fused, "alpha {alpha}");
    }
}

#[test]
fn self_fusion_through_the_identity_readout_reproduces_the_target() {
    assert_self_fusion_reproduces_the_target(&load(&fixture("tiny-llama")), true);
    assert_self_fusion_reproduces_the_target(&load(&test_support::default_model()), false);
}

#[test]
fn alpha_zero_is_plain_sampling_and_alpha_above_zero_is_not() {
    let target = load(&fixture("tiny-llama"));
    // A token the model draws often ends rows early, so rows leave at different steps.
    let plain_free = run(&target, &[], &settings(false), None);
    let eos = [plain_free[0][1]];
    for stop in [false, true] {
        let plain = run(&target, &eos, &settings(stop), None);
        let fused = run(
            &target,
            &eos,
            &settings(stop),
            Some(Box::new(fusion(&target, 0.0))),
        );
        assert_eq!(plain, fused, "alpha 0, stop at eos {stop}");
    }
    let strong = run(
        &target,
        &[],
        &settings(false),
        Some(Box::new(fusion(&target, 0.9))),
    );
    assert_ne!(plain_free, strong, "alpha 0.9 changed nothing");
}

#[test]
fn the_papers_recipe_is_plain_layer_norm_of_h_cal_a_mixed_at_alpha_by_hand() {
    let target = load(&fixture("tiny-llama"));
    let (dir, _, infonce) = calibration();
    let cal = load(dir);
    let map = AlignMap::load(infonce, dir, &target.dir).unwrap();
    assert_eq!(map.fit(), Readout::InfoNce);
    assert_eq!(map.default_norm(), MapNorm::LayerNorm);
    assert_eq!(
        map.bias.abs().max().double_value(&[]),
        0.0,
        "the paper's A has no bias"
    );
    let ids = Tensor::from_slice(
        &target
            .tokenizer
            .encode("The library opens at nine")
            .unwrap(),
    )
    .unsqueeze(0);
    let (h, h_cal) = (
        last_state(target.model.as_ref(), &ids),
        last_state(cal.model.as_ref(), &ids),
    );
    for alpha in [0.0, 0.1, 0.6, 1.0] {
        // By hand: LayerNorm over the target width, no gain, no offset.
        let x = h_cal.matmul(&map.a);
        let mean = x.mean_dim(-1, true, Kind::Float);
        let var = (&x - &mean).square().mean_dim(-1, true, Kind::Float);
        let normed = (&x - &mean) / (var + 1e-5).sqrt();
        let fused_state = normed * alpha + &h * (1.0 - alpha);
        let by_hand = target.model.logits(&fused_state);
        let base = target.model.logits(&h);
        let computed = fused_logits(
            target.model.as_ref(),
            &h,
            &h_cal,
            Some(&map),
            MapNorm::LayerNorm,
            alpha,
            &base,
        );
        let diff = (&by_hand - &computed).abs().max().double_value(&[]);
        let scale = by_hand.abs().max().double_value(&[]).max(1.0);
        assert!(
            diff <= 1e-4 * scale,
            "alpha {alpha}: differs by {diff} (scale {scale})"
        );
    }
}

#[test]
fn a_ridge_map_rebuilds_the_targets_states_better_than_the_infonce_map() {
    let target = load(&fixture("tiny-llama"));
    let (dir, ridge, infonce) = calibration();
    let cosine = |path: &Path| {
        AlignMap::load(path, dir, &target.dir)
            .unwrap()
            .record
            .reconstruction
            .unwrap()
            .cosine
    };
    let (ridge, infonce) = (cosine(ridge), cosine(infonce));
    assert!(ridge > infonce, "ridge {ridge}, infonce {infonce}");
}

#[test]
fn the_follower_reads_the_whole_text() {
    let (dir, _, _) = calibration();
    let cal = load(dir);
    let model = cal.model.as_ref();
    let prompts: Vec<Vec<i64>> = ["She said", "In 1998, the team moved", "She said"]
        .iter()
        .map(|t| cal.tokenizer.encode(t).unwrap())
        .collect();
    let rows: Vec<&[i64]> = prompts.iter().map(Vec::as_slice).collect();
    let mut follower = Follower::begin(model, &rows).unwrap();
    let mut texts = prompts.clone();
    for step in [[5i64, 9, 11], [7, 3, 2], [4, 4, 8]] {
        follower.advance(model, &step).unwrap();
        for (text, t) in texts.iter_mut().zip(step) {
            text.push(t);
        }
    }
    // The middle row leaves; the others go on.
    follower.retain(&[0, 2]);
    texts.remove(1);
    follower.advance(model, &[6, 1]).unwrap();
    texts[0].push(6);
    texts[1].push(1);
    for (i, text) in texts.iter().enumerate() {
        let ids = Tensor::from_slice(text).unsqueeze(0);
        let scratch = tch::no_grad(|| {
            model
                .forward_hidden(&ids, &ids.ones_like(), &mut model.new_cache())
                .select(1, -1)
        });
        let diff = (scratch - follower.hidden().get(i as i64).unsqueeze(0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(
            diff < 1e-4,
            "row {i}: follower differs from scratch by {diff}"
        );
    }
}
