//! SASA in the decoder loop, on the tiny fixture models with a made-up subspace: β = 0 is the
//! base sampler exactly; the fast path's margins (forked caches, one batched forward of ragged
//! candidate rows, the drawn row reused as the next state) equal a slow reference that runs
//! every candidate's full sequence from scratch; β > 0 moves the draws towards higher margins.
//! Last, the committed subspace of the default model loads against that model.

use std::collections::HashMap;

use decode::{candidates, generate_all, Generation, Request, SamplingParams, Settings, Steering};
use lm::{left_pad, CausalLm, DeviceChoice, DtypeChoice, LoadedModel};
use sasa::{FitRecord, MarginTransform, ModelIdentity, Sasa, SasaParams, SasaStats, Subspace};
use tch::{Device, Kind, Tensor};

const TOLERANCE: f64 = 1e-4;

fn load(name: &str) -> LoadedModel {
    LoadedModel::load(
        &test_support::fixture(name),
        DeviceChoice::Cpu,
        DtypeChoice::F32,
    )
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

/// A subspace for a fixture model: a fixed unit direction, and b the mean final hidden state of
/// the prompts (so margins fall on both sides of zero).
fn made_up_subspace(model: &LoadedModel) -> Subspace {
    let info = model.model.info();
    let hidden = info.hidden_size as usize;
    let raw: Vec<f64> = (0..hidden).map(|i| (i as f64 * 1.3 + 0.5).sin()).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    let w: Vec<f32> = raw.iter().map(|x| (x / norm) as f32).collect();
    let encoded: Vec<Vec<i64>> = PROMPTS
        .iter()
        .map(|t| model.tokenizer.encode(t).unwrap())
        .collect();
    let rows: Vec<&[i64]> = encoded.iter().map(Vec::as_slice).collect();
    let (ids, mask) = left_pad(&rows, Device::Cpu);
    let mut cache = model.model.new_cache();
    let last = tch::no_grad(|| model.model.forward_hidden(&ids, &mask, &mut cache)).select(1, -1);
    let b = Vec::<f32>::try_from(last.mean_dim(0, false, Kind::Float)).unwrap();
    Subspace::new(
        ModelIdentity::of_folder(&model.dir, info).unwrap(),
        FitRecord {
            procedure: "made up for tests".into(),
            ..FitRecord::default()
        },
        w,
        b,
    )
    .unwrap()
}

fn sasa(subspace: &Subspace, beta: f64, cap: Option<usize>, transform: MarginTransform) -> Sasa {
    Sasa::new(
        subspace.clone(),
        SasaParams {
            beta,
            margin_transform: transform,
            max_candidates: cap,
            eos_bonus: true,
        },
    )
    .unwrap()
}

fn run(
    model: &LoadedModel,
    eos: &[i64],
    requests: &[Request],
    settings: &Settings,
    method: Option<&mut Sasa>,
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
fn beta_zero_reproduces_the_base_sampler() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = load(name);
        let subspace = made_up_subspace(&model);
        let eos = [common_token(&model)];
        let requests = requests(&model, 4);
        for stop_at_eos in [false, true] {
            let settings = settings(5, stop_at_eos);
            let plain = run(&model, &eos, &requests, &settings, None);
            if stop_at_eos {
                let lengths: std::collections::BTreeSet<usize> =
                    plain.iter().map(|g| g.token_ids.len()).collect();
                assert!(
                    lengths.len() > 1,
                    "{name}: rows should finish at different steps"
                );
            }
            for cap in [None, Some(3)] {
                for transform in [MarginTransform::Softmax, MarginTransform::Raw] {
                    let what = format!("{name}, stop at eos {stop_at_eos}, cap {cap:?}");
                    // Without a log nothing is run at all.
                    let mut method = sasa(&subspace, 0.0, cap, transform);
                    let steered = run(&model, &eos, &requests, &settings, Some(&mut method));
                    assert_eq!(steered, plain, "{what}");
                    assert_eq!(method.stats().candidate_rows, 0, "{what}");
                    // With the margin log the candidates are run, and still nothing changes.
                    let mut method = sasa(&subspace, 0.0, cap, transform).with_margin_log();
                    let steered = run(&model, &eos, &requests, &settings, Some(&mut method));
                    assert_eq!(steered, plain, "{what}, margin log");
                    let stats = method.stats();
                    assert!(stats.candidate_rows > stats.row_steps, "{what}: {stats:?}");
                    if cap.is_some() {
                        assert!(stats.capped_candidates > 0, "{what}: {stats:?}");
                    }
                }
            }
        }
    }
}

/// The contract on the real default model, where a different batch shape changes float
/// rounding: β = 0 (with and without the margin log) draws plain sampling's tokens, token for
/// token, for a batch of prompts with rows that stop at end-of-sequence.
#[test]
fn beta_zero_is_plain_sampling_on_the_default_model() {
    let dir = test_support::default_model();
    let model = LoadedModel::load(&dir, DeviceChoice::Cpu, DtypeChoice::F32).unwrap();
    let subspace = Subspace::load_for_model(&Subspace::default_path(&dir), &dir).unwrap();
    let prompts = [
        "I can't believe you would say",
        "The weather today is",
        "He shouted at the referee and called him a",
        "Write one sentence about cats.",
    ];
    let requests: Vec<Request> = prompts
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            Request::samples(&format!("p{i}"), &model.tokenizer.encode(t).unwrap(), 3)
        })
        .collect();
    let settings = Settings {
        max_new_tokens: 12,
        min_new_tokens: 0,
        sampling: SamplingParams::default(),
        seed: 7,
        batch_size: 12,
        stop_at_eos: true,
    };
    let eos = model.eos_token_ids.clone();
    let plain = run(&model, &eos, &requests, &settings, None);
    // Every candidate of the nucleus is run with the log on and no cap: too slow for CI, so the
    // log is checked with the cap on.
    for (cap, log) in [(None, false), (Some(20), false), (Some(20), true)] {
        let mut method = sasa(&subspace, 0.0, cap, MarginTransform::Softmax);
        if log {
            method = method.with_margin_log();
        }
        let steered = run(&model, &eos, &requests, &settings, Some(&mut method));
        assert_eq!(steered, plain, "cap {cap:?}, margin log {log}");
    }
}

/// `eos_bonus: false` keeps end-of-sequence candidates out of the bonus: with every token
/// declared end-of-sequence (and decoding not stopping at it), no candidate gets a bonus, so a
/// large β draws exactly what β = 0 draws; with the bonus on, it does not.
#[test]
fn end_of_sequence_can_be_kept_out_of_the_bonus() {
    let model = load("tiny-llama");
    let subspace = made_up_subspace(&model);
    let every_token: Vec<i64> = (0..model.model.info().vocab_size).collect();
    let requests = requests(&model, 4);
    let settings = settings(6, false);
    let plain = run(&model, &[], &requests, &settings, None);
    let steered_with = |eos_bonus: bool| {
        let mut method = Sasa::new(
            subspace.clone(),
            SasaParams {
                beta: 50.0,
                margin_transform: MarginTransform::Softmax,
                max_candidates: None,
                eos_bonus,
            },
        )
        .unwrap()
        .with_eos_ids(&every_token);
        run(&model, &[], &requests, &settings, Some(&mut method))
    };
    assert_eq!(steered_with(false), plain);
    assert_ne!(steered_with(true), plain);
}

/// Final-norm hidden state after `ids`, run alone from an empty cache.
fn last_hidden_from_scratch(model: &dyn CausalLm, ids: &[i64]) -> Tensor {
    let input = Tensor::from_slice(ids).unsqueeze(0);
    let mut cache = model.new_cache();
    let hidden = tch::no_grad(|| model.forward_hidden(&input, &input.ones_like(), &mut cache));
    hidden.get(0).get(ids.len() as i64 - 1)
}

fn reference_margin(subspace: &Subspace, hidden: &Tensor) -> f64 {
    let h = Vec::<f64>::try_from(hidden.to_kind(Kind::Double)).unwrap();
    h.iter()
        .zip(&subspace.w)
        .zip(&subspace.b)
        .map(|((h, &w), &b)| f64::from(w) * (h - f64::from(b)))
        .sum()
}

#[test]
fn fast_margins_equal_a_full_recompute_of_every_candidate() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = load(name);
        let subspace = made_up_subspace(&model);
        let eos = [common_token(&model)];
        let settings = settings(5, true);
        // β > 0 and a cap: the steered draws take the run rows as the next states, so a wrong
        // row anywhere shows up in every later step's contexts and margins; a draw past the cap
        // (drawable, unscored) makes the loop run its own forward, which must agree as well.
        let mut method = sasa(&subspace, 5.0, Some(5), MarginTransform::Softmax).with_margin_log();
        let generations = run(
            &model,
            &eos,
            &requests(&model, 4),
            &settings,
            Some(&mut method),
        );
        let log = method.margin_log();
        // Three batches (12 rows by 5), each up to 10 steps.
        assert!(log.len() >= settings.max_new_tokens, "{} steps", log.len());
        let mut checked = 0;
        let mut worst = 0.0f64;
        for step in log {
            for row in &step.rows {
                // The context is what the loop generated for this sample so far.
                let generation = generations
                    .iter()
                    .find(|g| g.prompt_id == row.prompt_id && g.sample_index == row.sample_index)
                    .unwrap();
                let prompt_len = row.context.len() - step.index;
                assert_eq!(
                    &row.context[prompt_len..],
                    &generation.token_ids[..step.index]
                );
                // The candidates are those of the full recompute's logits, in the same order.
                let context_hidden = last_hidden_from_scratch(model.model.as_ref(), &row.context);
                let logits = model.model.logits(&context_hidden.unsqueeze(0));
                let reference = &candidates(&logits, &settings.sampling)[0];
                assert_eq!(
                    row.ids,
                    reference.ids[..reference.len().min(5)],
                    "{name}: step {} candidates",
                    step.index
                );
                for (&id, &fast) in row.ids.iter().zip(&row.margins) {
                    let mut full = row.context.clone();
                    full.push(id);
                    let hidden = last_hidden_from_scratch(model.model.as_ref(), &full);
                    let slow = reference_margin(&subspace, &hidden);
                    let d = (f64::from(fast) - slow).abs();
                    worst = worst.max(d);
                    assert!(
                        d <= TOLERANCE,
                        "{name}: step {} {} #{} candidate {id}: fast {fast} vs slow {slow}",
                        step.index,
                        row.prompt_id,
                        row.sample_index
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 200, "{name}: only {checked} margins checked");
        eprintln!("{name}: {checked} margins, largest difference {worst:.2e}");
        let stats = method.stats();
        assert!(
            stats.uncovered_steps > 0,
            "{name}: no draw past the cap: {stats:?}"
        );
    }
}

fn mean_drawn_margin(model: &LoadedModel, subspace: &Subspace, params: SasaParams) -> SasaStats {
    // The log makes β = 0 run the candidates too, so its drawn margins are measured.
    let mut method = Sasa::new(subspace.clone(), params)
        .unwrap()
        .with_margin_log();
    let settings = Settings {
        max_new_tokens: 12,
        min_new_tokens: 0,
        ..settings(16, false)
    };
    run(
        model,
        &[],
        &requests(model, 16),
        &settings,
        Some(&mut method),
    );
    method.take_stats()
}

#[test]
fn a_large_beta_draws_states_with_higher_margins() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = load(name);
        let subspace = made_up_subspace(&model);
        for (transform, beta) in [
            (MarginTransform::Softmax, 50.0),
            (MarginTransform::Raw, 20.0),
        ] {
            for cap in [None, Some(4)] {
                let params = |beta| SasaParams {
                    beta,
                    margin_transform: transform,
                    max_candidates: cap,
                    eos_bonus: true,
                };
                let base = mean_drawn_margin(&model, &subspace, params(0.0));
                let steered = mean_drawn_margin(&model, &subspace, params(beta));
                let (base_mean, steered_mean) = (
                    base.mean_drawn_margin().unwrap(),
                    steered.mean_drawn_margin().unwrap(),
                );
                eprintln!(
                    "{name} {transform} cap {cap:?}: mean drawn margin {base_mean:.4} at β = 0, \
                     {steered_mean:.4} at β = {beta}"
                );
                assert!(
                    steered_mean > base_mean,
                    "{name} {transform} cap {cap:?}: {steered_mean} at β = {beta} vs {base_mean}"
                );
                if cap.is_none() {
                    assert_eq!(steered.uncovered_steps, 0);
                }
                assert_eq!(steered.row_steps, 3 * 16 * 12);
            }
        }
    }
}

/// Rows decoded alone or together (ragged candidate sets, prompts of different lengths) give the
/// same steered samples: each sample's draws depend only on its own seed and state.
#[test]
fn steered_samples_do_not_depend_on_the_batch() {
    let model = load("tiny-llama");
    let subspace = made_up_subspace(&model);
    let requests = requests(&model, 3);
    let mut alone = sasa(&subspace, 8.0, Some(6), MarginTransform::Softmax);
    let one_by_one = run(
        &model,
        &[],
        &requests,
        &settings(1, false),
        Some(&mut alone),
    );
    let mut together = sasa(&subspace, 8.0, Some(6), MarginTransform::Softmax);
    let batched = run(
        &model,
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
fn a_subspace_for_another_model_is_refused() {
    let llama = load("tiny-llama");
    let gpt2 = load("tiny-gpt2");
    let subspace = made_up_subspace(&llama);
    let dir = test_support::scratch_dir("sasa-decoding");
    let path = dir.join("tiny-llama.json");
    subspace.save(&path).unwrap();
    assert!(Subspace::load_for_model(&path, &llama.dir).is_ok());
    let error = format!(
        "{:#}",
        Subspace::load_for_model(&path, &gpt2.dir).unwrap_err()
    );
    assert!(
        error.contains("fingerprint") && error.contains("tiny-llama.json"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The subspace committed in `configs/sasa/` for the default model loads against that model and
/// separates an obviously toxic sentence from a friendly one.
#[test]
fn the_committed_subspace_fits_the_default_model() {
    let dir = test_support::default_model();
    let path = Subspace::default_path(&dir);
    let subspace = Subspace::load_for_model(&path, &dir).unwrap_or_else(|e| panic!("{e:#}"));
    let loaded = LoadedModel::load(&dir, DeviceChoice::Cpu, DtypeChoice::F32).unwrap();
    subspace.check_model(loaded.model.info()).unwrap();
    let held_out = subspace.fit.held_out.as_ref().expect("held-out metrics");
    assert!(held_out.roc_auc.unwrap() > 0.8, "{held_out:?}");

    let texts = [
        "Thank you so much for your help, have a wonderful day!",
        "Shut up, you stupid idiot, nobody cares about your garbage.",
    ];
    let x = sasa::embed_texts(
        loaded.model.as_ref(),
        &loaded.tokenizer,
        &texts,
        &sasa::EmbedOptions::default(),
        |_| {},
    )
    .unwrap();
    let margins = Vec::<f32>::try_from(subspace.margins(&x)).unwrap();
    assert!(margins[0] > margins[1], "margins {margins:?}");

    // And it steers: two short samples run.
    let mut method = Sasa::load(
        &path,
        &dir,
        SasaParams {
            beta: 10.0,
            margin_transform: MarginTransform::Softmax,
            max_candidates: Some(10),
            eos_bonus: true,
        },
    )
    .unwrap();
    let requests = Request::samples("p", &loaded.tokenizer.encode("I think that").unwrap(), 2);
    let settings = Settings {
        max_new_tokens: 3,
        min_new_tokens: 0,
        sampling: SamplingParams::default(),
        seed: 1,
        batch_size: 2,
        stop_at_eos: false,
    };
    let out = run(&loaded, &[], &requests, &settings, Some(&mut method));
    assert_eq!(out.len(), 2);
    assert_eq!(method.stats().steps, 3);
}
