//! Calibration fusion and DExperts on the tiny fixture models: a calibration model trained here
//! (tiny-llama's first block) and an alignment map trained on it; α = 0 is plain sampling to the
//! token; the fused logits equal α·LN(h_cal A) + (1 − α)·h through the head, computed by hand;
//! the follower's state equals a from-scratch run of the whole text; DExperts with the same
//! model as expert and anti-expert changes nothing, with different ones it does.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use decode::{generate_all, Follower, Request, SamplingParams, Settings, Steering};
use fusion::{
    fused_logits, train_align, train_calibration, AlignMap, AlignOn, AlignOptions,
    CalibrationFusion, CalibrationOptions, CalibrationTrainable, DExperts, DExpertsParams,
    FusionParams, TrainingText,
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

/// A calibration model (tiny-llama's first block, trained briefly) and its map onto tiny-llama,
/// made once for every test of this file.
fn calibration() -> &'static (PathBuf, PathBuf) {
    static MADE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
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
        let options = AlignOptions {
            on: AlignOn::HiddenStates,
            batch_size: 8,
            epochs: 3,
            ..AlignOptions::default()
        };
        let mut map = train_align(&cal, &target, &sentences, &options, "test".into(), |_| {})
            .unwrap_or_else(|e| panic!("{e:#}"));
        let path = AlignMap::default_path(&out, &target.dir);
        map.save(&path).unwrap();
        (out, path)
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
    let (dir, map) = calibration();
    CalibrationFusion::new(
        load(dir),
        AlignMap::load(map, dir, &target.dir).unwrap_or_else(|e| panic!("{e:#}")),
        &target.tokenizer,
        target.model.info().vocab_size,
        FusionParams { alpha },
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
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
fn fused_logits_equal_the_closed_form_by_hand() {
    let target = load(&fixture("tiny-llama"));
    let (dir, map_path) = calibration();
    let cal = load(dir);
    let map = AlignMap::load(map_path, dir, &target.dir).unwrap();
    let ids = Tensor::from_slice(
        &target
            .tokenizer
            .encode("The library opens at nine")
            .unwrap(),
    )
    .unsqueeze(0);
    let mask = ids.ones_like();
    let last = |m: &dyn CausalLm| {
        tch::no_grad(|| {
            m.forward_hidden(&ids, &mask, &mut m.new_cache())
                .select(1, -1)
        })
    };
    let (h, h_cal) = (last(target.model.as_ref()), last(cal.model.as_ref()));
    for alpha in [0.0, 0.1, 0.6, 1.0] {
        // By hand: LN over the target width with the map's gain and offset.
        let x = h_cal.matmul(&map.a);
        let mean = x.mean_dim(-1, true, Kind::Float);
        let var = (&x - &mean).square().mean_dim(-1, true, Kind::Float);
        let normed = (&x - &mean) / (var + 1e-5).sqrt() * &map.gain + &map.offset;
        let fused_state = normed * alpha + &h * (1.0 - alpha);
        let by_hand = target.model.logits(&fused_state);
        let base = target.model.logits(&h);
        let computed = fused_logits(target.model.as_ref(), &h, &h_cal, &map, alpha, &base);
        let diff = (&by_hand - &computed).abs().max().double_value(&[]);
        let scale = by_hand.abs().max().double_value(&[]).max(1.0);
        assert!(
            diff <= 1e-4 * scale,
            "alpha {alpha}: differs by {diff} (scale {scale})"
        );
    }
}

#[test]
fn the_follower_reads_the_whole_text() {
    let (dir, _) = calibration();
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
    let (dir, _) = calibration();
    let dexperts = |expert: &Path, anti: &Path, alpha: f64| -> Box<dyn Steering> {
        Box::new(
            DExperts::new(
                load(expert),
                load(anti),
                &target.tokenizer,
                target.model.info().vocab_size,
                DExpertsParams { alpha },
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
    let (dir, _) = calibration();
    let error = DExperts::new(
        load(dir),
        load(dir),
        &other,
        other.vocab_size() as i64,
        DExpertsParams { alpha: 1.0 },
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
    let (dir, _) = calibration();
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
