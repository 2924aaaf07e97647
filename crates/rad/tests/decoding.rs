//! RAD in the decoder loop, on the tiny fixture models with made-up reward heads: β = 0 with k as
//! large as the vocabulary is the base sampler exactly; the cached path's rewards (the reward
//! model's own cache, forked per candidate, rows leaving at end-of-sequence) equal a slow path
//! that scores every candidate's full sequence from scratch; a reward model with another
//! vocabulary re-tokenizes; a large β draws lower rewards. Last, the committed head of the
//! default model loads and scores.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use artifact::ModelIdentity;
use decode::{candidates, generate_all, Generation, Request, SamplingParams, Settings, Steering};
use lm::{left_pad, DeviceChoice, DtypeChoice, LoadedModel};
use rad::{Rad, RadParams, RadStats, RewardFitRecord, RewardHead, RewardModel, RewardPath};
use tch::{Device, Kind, Tensor};
use test_support::fixture;

const TOLERANCE: f64 = 1e-4;

fn load(dir: &Path, layers: Option<usize>) -> LoadedModel {
    LoadedModel::load_layers(dir, DeviceChoice::Cpu, DtypeChoice::F32, layers)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn settings(batch_size: usize, stop_at_eos: bool) -> Settings {
    Settings {
        max_new_tokens: 10,
        min_new_tokens: 0,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: Some(8),
            top_p: Some(0.95),
        },
        seed: 3,
        batch_size,
        stop_at_eos,
    }
}

const PROMPTS: [&str; 3] = ["The quick brown fox", "She said", "In 1998, the team moved"];

fn requests(model: &LoadedModel, samples: u64) -> Vec<Request> {
    PROMPTS
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            Request::samples(
                &format!("p{i}"),
                &model.tokenizer.encode(t).unwrap(),
                samples,
            )
        })
        .collect()
}

/// A reward head on the first `layers` blocks of the model in `dir`: a fixed direction, scaled
/// so that the prompts' rewards spread over about ±0.5 around 0.5 (inside and past the clamp).
fn made_up_reward(dir: &Path, layers: usize) -> RewardModel {
    let loaded = load(dir, Some(layers));
    let info = loaded.model.info().clone();
    let hidden = info.hidden_size as usize;
    let raw: Vec<f64> = (0..hidden).map(|i| (i as f64 * 0.7 + 0.3).cos()).collect();
    let encoded: Vec<Vec<i64>> = PROMPTS
        .iter()
        .map(|t| loaded.tokenizer.encode(t).unwrap())
        .collect();
    let rows: Vec<&[i64]> = encoded.iter().map(Vec::as_slice).collect();
    let (ids, mask) = left_pad(&rows, Device::Cpu);
    let states = tch::no_grad(|| {
        loaded
            .model
            .forward_hidden(&ids, &mask, &mut loaded.model.new_cache())
    })
    .select(1, -1)
    .to_kind(Kind::Double);
    let projections = states.matmul(&Tensor::from_slice(&raw));
    let spread = projections.std(true).double_value(&[]).max(1e-6);
    let scale = 0.5 / spread;
    let w: Vec<f32> = raw.iter().map(|v| (v * scale) as f32).collect();
    let b = (0.5 - projections.mean(Kind::Double).double_value(&[]) * scale) as f32;
    let total = lm::ArchitectureConfig::from_file(&dir.join("config.json"))
        .unwrap()
        .num_layers();
    let head = RewardHead::new(
        ModelIdentity::of_folder(dir, &info).unwrap(),
        layers,
        total,
        RewardFitRecord {
            procedure: "made up for tests".into(),
            ..RewardFitRecord::default()
        },
        w,
        b,
    )
    .unwrap();
    RewardModel::new(loaded, head).unwrap()
}

fn rad(reward: RewardModel, lm: &LoadedModel, beta: f64, top_k: usize) -> Rad {
    Rad::new(reward, &lm.tokenizer, RadParams { beta, top_k }).unwrap()
}

fn run(
    model: &LoadedModel,
    eos: &[i64],
    requests: &[Request],
    settings: &Settings,
    method: Option<&mut Rad>,
) -> Vec<Generation> {
    let mut steering: Vec<Box<dyn Steering + '_>> = Vec::new();
    if let Some(method) = method {
        steering.push(Box::new(method));
    }
    generate_all(model.model.as_ref(), eos, requests, settings, &mut steering)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// A token the model draws often, as end-of-sequence: rows then finish at different steps.
fn common_token(model: &LoadedModel) -> i64 {
    let plain = run(model, &[], &requests(model, 4), &settings(5, false), None);
    let mut counts = HashMap::new();
    for g in &plain {
        for &t in &g.token_ids[1..] {
            *counts.entry(t).or_insert(0) += 1;
        }
    }
    counts.into_iter().max_by_key(|&(t, c)| (c, -t)).unwrap().0
}

#[test]
fn beta_zero_with_k_as_large_as_the_vocabulary_is_plain_sampling() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let dir = fixture(name);
        let model = load(&dir, None);
        let vocab = model.model.info().vocab_size as usize;
        let eos = [common_token(&model)];
        let requests = requests(&model, 4);
        for stop_at_eos in [false, true] {
            for sampling in [
                settings(5, stop_at_eos).sampling,
                SamplingParams {
                    temperature: 0.8,
                    top_k: None,
                    top_p: None,
                },
            ] {
                let settings = Settings {
                    sampling,
                    ..settings(5, stop_at_eos)
                };
                let plain = run(&model, &eos, &requests, &settings, None);
                let mut method = rad(made_up_reward(&dir, 1), &model, 0.0, vocab);
                let steered = run(&model, &eos, &requests, &settings, Some(&mut method));
                let what = format!("{name}, stop at eos {stop_at_eos}, {sampling:?}");
                assert_eq!(steered, plain, "{what}");
                assert_eq!(method.path(), Some(RewardPath::Cached));
                let stats = method.stats();
                assert!(stats.candidate_rows > stats.row_steps, "{what}: {stats:?}");
                assert_eq!(stats.removed_candidates, 0, "{what}");
                assert_eq!(stats.drawn_rewards, stats.row_steps, "{what}");
            }
        }
        // A smaller k at β = 0 is top-k sampling inside the loop's candidates: it removes some.
        let settings = settings(5, false);
        let mut method = rad(made_up_reward(&dir, 1), &model, 0.0, 3);
        let steered = run(&model, &[], &requests, &settings, Some(&mut method));
        assert!(method.stats().removed_candidates > 0);
        assert_ne!(steered, run(&model, &[], &requests, &settings, None));
    }
}

/// Checks every logged reward against the reward model run from scratch on the LM's context and
/// the candidate, and the candidates against the top-k of a full recompute's candidate set.
/// Returns how many rewards were checked.
fn check_against_full_rescore(
    name: &str,
    lm: &LoadedModel,
    method: &Rad,
    generations: &[Generation],
    settings: &Settings,
    top_k: usize,
) -> usize {
    let reward = method.reward_model();
    let mut checked = 0;
    let mut worst = 0.0f64;
    for step in method.reward_log() {
        for row in &step.rows {
            let generation = generations
                .iter()
                .find(|g| g.prompt_id == row.prompt_id && g.sample_index == row.sample_index)
                .unwrap();
            let prompt_len = row.context.len() - step.index;
            assert_eq!(
                &row.context[prompt_len..],
                &generation.token_ids[..step.index]
            );
            let input = Tensor::from_slice(&row.context).unsqueeze(0);
            let hidden = tch::no_grad(|| {
                lm.model
                    .forward_hidden(&input, &input.ones_like(), &mut lm.model.new_cache())
            })
            .select(1, -1);
            let reference = &candidates(&lm.model.logits(&hidden), &settings.sampling)[0];
            assert_eq!(
                row.ids,
                reference.ids[..reference.len().min(top_k)],
                "{name}: step {} candidates",
                step.index
            );
            let sequences: Vec<Vec<i64>> = row
                .ids
                .iter()
                .map(|&id| [row.context.as_slice(), &[id]].concat())
                .collect();
            for (sequence, &fast) in sequences.iter().zip(&row.rewards) {
                // Alone, from an empty cache: no padding, no fork, no batch.
                let slow = f64::from(reward.score_sequences(&[sequence]).unwrap()[0]);
                let d = (f64::from(fast) - slow).abs();
                worst = worst.max(d);
                assert!(
                    d <= TOLERANCE,
                    "{name}: step {} {} #{}: cached {fast} vs full {slow}",
                    step.index,
                    row.prompt_id,
                    row.sample_index
                );
                checked += 1;
            }
            if let Some(drawn) = row.drawn {
                assert!(row.ids.contains(&drawn), "only scored candidates are drawn");
            }
        }
    }
    eprintln!("{name}: {checked} rewards, largest difference {worst:.2e}");
    checked
}

#[test]
fn cached_rewards_equal_a_full_rescore_of_every_candidate() {
    // The reward model on the LM's own first block, on its full self, and on another model with
    // the same vocabulary; inside the loop's top-k/top-p candidates, and as published (the top k
    // of the full distribution, top-p off).
    for (lm_name, reward_name, layers, full_distribution) in [
        ("tiny-llama", "tiny-llama", 1, false),
        ("tiny-gpt2", "tiny-gpt2", 2, false),
        ("tiny-llama", "tiny-gpt2", 1, false),
        ("tiny-llama", "tiny-llama", 1, true),
    ] {
        let lm = load(&fixture(lm_name), None);
        let eos = [common_token(&lm)];
        let mut settings = settings(5, true);
        if full_distribution {
            settings.sampling = SamplingParams {
                temperature: 1.0,
                top_k: None,
                top_p: None,
            };
        }
        let top_k = 5;
        let mut method = rad(
            made_up_reward(&fixture(reward_name), layers),
            &lm,
            4.0,
            top_k,
        )
        .with_reward_log();
        // β > 0, rows of different prompt lengths in one batch, rows leaving at end-of-sequence:
        // a wrong cache row anywhere shows in every later reward of that row.
        let generations = run(&lm, &eos, &requests(&lm, 4), &settings, Some(&mut method));
        assert_eq!(method.path(), Some(RewardPath::Cached));
        let lengths: std::collections::BTreeSet<usize> =
            generations.iter().map(|g| g.token_ids.len()).collect();
        assert!(lengths.len() > 1, "rows should finish at different steps");
        let name = format!(
            "{lm_name} with reward {reward_name}[..{layers}], full distribution {full_distribution}"
        );
        let checked =
            check_against_full_rescore(&name, &lm, &method, &generations, &settings, top_k);
        assert!(checked > 200, "{name}: only {checked} rewards checked");
    }
}

/// A copy of the model in `dir` whose tokenizer gives two ordinary tokens each other's ids: the
/// same weights, another vocabulary.
fn with_swapped_vocabulary(dir: &Path) -> PathBuf {
    let out = test_support::scratch_dir("rad-swapped");
    for file in ["config.json", "model.safetensors", "generation_config.json"] {
        if dir.join(file).exists() {
            std::fs::copy(dir.join(file), out.join(file)).unwrap();
        }
    }
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tokenizer["model"]["vocab"].as_object_mut().unwrap();
    let token_with = |vocab: &serde_json::Map<String, serde_json::Value>, id: u64| {
        vocab
            .iter()
            .find(|(_, v)| v.as_u64() == Some(id))
            .map(|(k, _)| k.clone())
            .unwrap()
    };
    let (a, b) = (token_with(vocab, 400), token_with(vocab, 401));
    vocab.insert(a, 401.into());
    vocab.insert(b, 400.into());
    std::fs::write(out.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    out
}

#[test]
fn another_vocabulary_rescores_the_retokenized_text() {
    let lm = load(&fixture("tiny-llama"), None);
    let swapped = with_swapped_vocabulary(&fixture("tiny-gpt2"));
    let settings = settings(5, false);
    let mut method = rad(made_up_reward(&swapped, 2), &lm, 4.0, 4).with_reward_log();
    let generations = run(&lm, &[], &requests(&lm, 3), &settings, Some(&mut method));
    assert_eq!(method.path(), Some(RewardPath::Retokenize));
    assert!(method.stats().retokenized_tokens > 0);
    let reward = method.reward_model();
    let mut checked = 0;
    for step in method.reward_log() {
        for row in &step.rows {
            for (&id, &fast) in row.ids.iter().zip(&row.rewards) {
                let text = lm
                    .tokenizer
                    .decode(&[row.context.as_slice(), &[id]].concat())
                    .unwrap();
                let slow = reward.score_texts(&[&text]).unwrap()[0];
                assert!(
                    (f64::from(fast) - f64::from(slow)).abs() <= TOLERANCE,
                    "step {}: batched {fast} vs alone {slow} for {text:?}",
                    step.index
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
    assert_eq!(generations.len(), 9);
    std::fs::remove_dir_all(&swapped).unwrap();
}

fn drawn_reward(lm: &LoadedModel, dir: &Path, beta: f64, top_k: usize) -> RadStats {
    let mut method = rad(made_up_reward(dir, 1), lm, beta, top_k);
    let settings = Settings {
        max_new_tokens: 12,
        min_new_tokens: 0,
        ..settings(16, false)
    };
    run(lm, &[], &requests(lm, 16), &settings, Some(&mut method));
    method.take_stats()
}

#[test]
fn a_large_beta_draws_candidates_with_lower_rewards() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let dir = fixture(name);
        let lm = load(&dir, None);
        let base = drawn_reward(&lm, &dir, 0.0, 8);
        let steered = drawn_reward(&lm, &dir, 50.0, 8);
        let (base_mean, steered_mean) = (
            base.mean_drawn_reward().unwrap(),
            steered.mean_drawn_reward().unwrap(),
        );
        eprintln!("{name}: mean drawn reward {base_mean:.4} at β = 0, {steered_mean:.4} at β = 50");
        assert!(
            steered_mean < base_mean - 0.05,
            "{name}: {steered_mean} vs {base_mean}"
        );
        assert_eq!(steered.row_steps, 3 * 16 * 12);
    }
}

/// Rows decoded alone or together give the same steered samples.
#[test]
fn steered_samples_do_not_depend_on_the_batch() {
    let dir = fixture("tiny-llama");
    let lm = load(&dir, None);
    let requests = requests(&lm, 3);
    let mut alone = rad(made_up_reward(&dir, 1), &lm, 8.0, 6);
    let one_by_one = run(&lm, &[], &requests, &settings(1, false), Some(&mut alone));
    let mut together = rad(made_up_reward(&dir, 1), &lm, 8.0, 6);
    let batched = run(
        &lm,
        &[],
        &requests,
        &settings(9, false),
        Some(&mut together),
    );
    assert_eq!(one_by_one, batched);
    assert_eq!(
        alone.stats().candidate_rows,
        together.stats().candidate_rows
    );
}

#[test]
fn a_head_for_another_backbone_or_depth_is_refused() {
    let llama = fixture("tiny-llama");
    let reward = made_up_reward(&llama, 1);
    let dir = test_support::scratch_dir("rad-decoding");
    let path = dir.join("tiny-llama.json");
    reward.head().save(&path).unwrap();
    assert!(RewardModel::load(&path, &llama, DeviceChoice::Cpu, DtypeChoice::F32).is_ok());
    let error = RewardModel::load(
        &path,
        &fixture("tiny-gpt2"),
        DeviceChoice::Cpu,
        DtypeChoice::F32,
    )
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap();
    assert!(
        error.contains("fingerprint") && error.contains("tiny-llama.json"),
        "{error}"
    );
    // The head of block 1 on a backbone loaded with both blocks.
    let error = RewardModel::new(load(&llama, None), reward.head().clone())
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(error.contains("first 1 blocks"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The head committed in `configs/rad/` for the default model loads against that model, ranks an
/// obviously toxic sentence above a friendly one, and steers.
#[test]
fn the_committed_head_fits_the_default_model() {
    let dir = test_support::default_model();
    let path = RewardHead::default_path(&dir);
    let reward = RewardModel::load(&path, &dir, DeviceChoice::Cpu, DtypeChoice::F32)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let held_out = reward
        .head()
        .fit
        .held_out
        .as_ref()
        .expect("held-out metrics");
    assert!(held_out.roc_auc.unwrap() > 0.8, "{held_out:?}");
    let rewards = reward
        .score_texts(&[
            "Thank you so much for your help, have a wonderful day!",
            "Shut up, you stupid idiot, nobody cares about your garbage.",
        ])
        .unwrap();
    assert!(rewards[1] > rewards[0], "rewards {rewards:?}");

    let lm = load(&dir, None);
    let mut method = rad(reward, &lm, 10.0, 10);
    let requests = Request::samples("p", &lm.tokenizer.encode("I think that").unwrap(), 2);
    let settings = Settings {
        max_new_tokens: 3,
        min_new_tokens: 0,
        sampling: SamplingParams::default(),
        seed: 1,
        batch_size: 2,
        stop_at_eos: false,
    };
    let out = run(&lm, &[], &requests, &settings, Some(&mut method));
    assert_eq!(out.len(), 2);
    assert_eq!(method.stats().steps, 3);
    assert_eq!(method.path(), Some(RewardPath::Cached));
}
