//! What the fusion crate's test files share: the tiny fixture models, a calibration model trained
//! on made-up sentences with its two maps (made once per test binary), and a decoding loop run.

// Each test file uses some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use decode::{generate_all, Request, SamplingParams, Settings, Steering};
use fusion::{
    train_align, train_calibration, AlignMap, AlignOn, AlignOptions, CalibrationOptions,
    CalibrationRecord, CalibrationTrainable, Readout, TrainingText,
};
use lm::{CausalLm, DeviceChoice, DtypeChoice, LoadedModel};
use tch::Tensor;
use test_support::fixture;

pub fn load(dir: &Path) -> LoadedModel {
    LoadedModel::load(dir, DeviceChoice::Cpu, DtypeChoice::F32).unwrap_or_else(|e| panic!("{e:#}"))
}

pub const SENTENCES: [&str; 8] = [
    "The weather is nice today and we went for a walk.",
    "She thanked everyone for coming to the meeting.",
    "Our team finished the project ahead of schedule.",
    "He planted tomatoes and beans in the garden.",
    "The library opens at nine in the morning.",
    "They shared a quiet dinner with their friends.",
    "Please remember to bring your notebook tomorrow.",
    "The children built a sandcastle by the sea.",
];

pub fn texts(n: usize) -> Vec<TrainingText> {
    (0..n)
        .map(|i| TrainingText {
            prompt: String::new(),
            completion: SENTENCES[i % SENTENCES.len()].to_string(),
        })
        .collect()
}

/// Options for a calibration model of tiny-llama's first block, trained briefly.
pub fn tiny_calibration_options(epochs: usize, train: CalibrationTrainable) -> CalibrationOptions {
    CalibrationOptions {
        layers: 1,
        epochs,
        learning_rate: 1e-3,
        weight_decay: 0.0,
        batch_size: 4,
        max_tokens: 32,
        seed: 0,
        train,
    }
}

/// Trains a calibration model from tiny-llama into `out` on `train` made-up sentences, measuring
/// perplexity on `held_out` of them.
pub fn train_tiny_calibration(
    out: &Path,
    options: &CalibrationOptions,
    train: usize,
    held_out: usize,
) -> anyhow::Result<CalibrationRecord> {
    train_calibration(
        &fixture("tiny-llama"),
        DeviceChoice::Cpu,
        &texts(train),
        &texts(held_out),
        options,
        "test".into(),
        "made-up sentences".into(),
        out,
        |_| {},
    )
}

/// A calibration model (tiny-llama's first block, trained briefly) and its two maps onto
/// tiny-llama (ridge, and InfoNCE on embeddings as the paper), made once for every test of this
/// file: (calibration folder, ridge map, InfoNCE map).
pub fn calibration() -> &'static (PathBuf, PathBuf, PathBuf) {
    static MADE: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    MADE.get_or_init(|| {
        let root = test_support::scratch_dir("fusion-tests");
        let out = root.join("calibration");
        let record = train_tiny_calibration(
            &out,
            &tiny_calibration_options(3, CalibrationTrainable::Blocks),
            16,
            8,
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

pub fn settings(stop_at_eos: bool) -> Settings {
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

pub fn requests(model: &LoadedModel) -> Vec<Request> {
    ["The quick brown fox", "She said", "In 1998, the team moved"]
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            Request::samples(&format!("p{i}"), &model.tokenizer.encode(t).unwrap(), 3)
        })
        .collect()
}

pub fn run(
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

/// The last position's final hidden state of `text` under `model`.
pub fn last_state(model: &dyn CausalLm, ids: &Tensor) -> Tensor {
    tch::no_grad(|| {
        model
            .forward_hidden(ids, &ids.ones_like(), &mut model.new_cache())
            .select(1, -1)
    })
}
