//! Calibration fusion and DExperts on the tiny fixture models: a calibration model trained here
//! (tiny-llama's first block) and both alignment maps fitted on it; α = 0 is plain sampling to
//! the token; the paper's recipe (InfoNCE map, plain LayerNorm) gives α·LN(h_cal A) + (1 − α)·h
//! through the head, computed by hand; with the target as its own calibration model and the
//! identity readout fusion reproduces the target at every α (here and on the default model);
//! the follower's state equals a from-scratch run of the whole text; DExperts with the same
//! model as expert and anti-expert changes nothing, with different ones it does, and its base
//! filter keeps the experts from promoting a token outside the base's nucleus.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use decode::{generate_all, Follower, Request, SamplingParams, Settings, Steering};
use fusion::{
    fused_logits, nucleus_mask, train_align, train_calibration, AlignMap, AlignOn, AlignOptions,
    CalibrationFusion, CalibrationOptions, CalibrationTrainable, DExperts, DExpertsParams,
    FusionParams, MapNorm, Readout, TrainingText,
};
use lm::{CausalLm, DeviceChoice, DtypeChoice, LoadedModel};
use tch::{Kind, Tensor};
use test_support::fixture;

fn load(dir: &Path) -> LoadedModel {
    LoadedModel::load(dir, DeviceChoice::Cpu, DtypeChoice::F32).unwrap_or_else(|e| panic!("{e:#}"))
}

const SENTENCES: [&str; 8] = [
    "The weather is nice today and we went for a walk.",
    "She thanked everyone for coming to the meeting.",
    "Our team finished the project ahead of schedule.",
    "He planted tomatoes and beans in the garden.",
    "The library opens at nine in the morning.",
    "They shared a quiet dinner with their friends.",
    "Please remember to bring your notebook tomorrow.",
    "The children built a sandcastle by the sea.",
];

fn texts(n: usize) -> Vec<TrainingText> {
    (0..n)
        .map(|i| TrainingText {
            prompt: String::new(),
            completion: SENTENCES[i % SENTENCES.len()].to_string(),
        })
        .collect()
}

/// A calibration model (tiny-llama's first block, trained briefly) and its two maps onto
/// tiny-llama (ridge, and InfoNCE on embeddings as the paper), made once for every test of this
/// file: (calibration folder, ridge map, InfoNCE map).
fn calibration() -> &'static (PathBuf, PathBuf, PathBuf) {
    static MADE: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    MADE.get_or_init(|| {
        let root = test_support::scratch_dir("fusion-tests");
        let out = root.join("calibration");
        let options = CalibrationOptions {
            layers: 1,
            epochs: 3,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            batch_size: 4,
            max_tokens: 32,
            seed: 0,
            train: CalibrationTrainable::Blocks,
        };
        let record = train_calibration(
            &fixture("tiny-llama"),
            DeviceChoice::Cpu,
            &texts(16),
            &texts(8),
            &options,
            "test".into(),
            "made-up sentences".into(),
            &out,
            |_| {},
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        let (before, after) = (
            record.held_out_perplexity_before.unwrap(),
            record.held_out_perplexity_after.unwrap(),
        );
        assert!(
            after < before,
            "training did not lower perplexity: {before} -> {after}"
        );
        let target = load(&fixture("tiny-llama"));
        let cal = load(&out);
        assert_eq!(cal.model.info().num_layers, 1);
        let sentences: Vec<&str> = SENTENCES.to_vec();
        let mut fitted = Vec::new();
        for (fit, on) in [
            (Readout::Ridge, AlignOn::HiddenStates),
            (Readout::InfoNce, AlignOn::Embeddings),
        ] {
            let options = AlignOptions {
                fit,
                on,
                batch_size: 8,
                epochs: 3,
                ..AlignOptions::default()
            };
            let mut map = train_align(&cal, &target, &sentences, &options, "test".into(), |_| {})
                .unwrap_or_else(|e| panic!("{e:#}"));
            assert!(map.record.reconstruction.is_some());
            let path = AlignMap::default_path(&out, &target.dir, fit);
            map.save(&path).unwrap();
            fitted.push(path);
        }
        let infonce = fitted.pop().unwrap();
        (out, fitted.pop().unwrap(), infonce)
    })
}

fn settings(stop_at_eos: bool) -> Settings {
    Settings {
        max_new_tokens: 8,
        min_new_tokens: 0,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.95),
        },
        seed: 5,
        batch_size: 4,
        stop_at_eos,
    }
}

fn requests(model: &LoadedModel) -> Vec<Request> {
    ["The quick brown fox", "She said", "In 1998, the team moved"]
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            Request::samples(&format!("p{i}"), &model.tokenizer.encode(t).unwrap(), 3)
        })
        .collect()
}

fn run(
    model: &LoadedModel,
    eos: &[i64],
    settings: &Settings,
    method: Option<Box<dyn Steering + '_>>,
) -> Vec<Vec<i64>> {
    let mut steering: Vec<Box<dyn Steering + '_>> = method.into_iter().collect();
    let mut out = generate_all(
        model.model.as_ref(),
        eos,
        &requests(model),
        settings,
        &mut steering,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    out.sort_by(|a, b| (&a.prompt_id, a.sample_index).cmp(&(&b.prompt_id, b.sample_index)));
    out.into_iter().map(|g| g.token_ids).collect()
}

fn fusion(target: &LoadedModel, alpha: f64) -> CalibrationFusion {
    let (dir, ridge, _) = calibration();
    CalibrationFusion::new(
        load(dir),
        Some(AlignMap::load(ridge, dir, &target.dir).unwrap_or_else(|e| panic!("{e:#}"))),
        &target.tokenizer,
        target.model.info().vocab_size,
        FusionParams {
            alpha,
            norm: MapNorm::None,
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Fusion of `target` with itself as the calibration model through the identity readout.
fn self_fusion(target: &LoadedModel, alpha: f64) -> CalibrationFusion {
    CalibrationFusion::new(
        load(&target.dir),
        None,
        &target.tokenizer,
        target.model.info().vocab_size,
        FusionParams {
            alpha,
            norm: MapNorm::None,
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The last position's final hidden state of `text` under `model`.
fn last_state(model: &dyn CausalLm, ids: &Tensor) -> Tensor {
    tch::no_grad(|| {
        model
            .forward_hidden(ids, &ids.ones_like(), &mut model.new_cache())
            .select(1, -1)
    })
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
fn an_existing_output_folder_is_refused_before_training() {
    let (dir, _, _) = calibration();
    let options = CalibrationOptions {
        layers: 1,
        epochs: 1,
        learning_rate: 1e-3,
        weight_decay: 0.0,
        batch_size: 4,
        max_tokens: 32,
        seed: 0,
        train: CalibrationTrainable::Blocks,
    };
    let error = train_calibration(
        &fixture("tiny-llama"),
        DeviceChoice::Cpu,
        &texts(4),
        &[],
        &options,
        "test".into(),
        "test".into(),
        dir,
        |_| {},
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
    let options = CalibrationOptions {
        layers: 1,
        epochs: 2,
        learning_rate: 1e-3,
        weight_decay: 0.0,
        batch_size: 4,
        max_tokens: 32,
        seed: 0,
        train: CalibrationTrainable::All,
    };
    let record = train_calibration(
        &fixture("tiny-llama"),
        DeviceChoice::Cpu,
        &texts(16),
        &texts(8),
        &options,
        "test".into(),
        "made-up sentences".into(),
        &out,
        |_| {},
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
