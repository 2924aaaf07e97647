//! The fine-tuning pieces on the tiny Llama fixture: LoRA's gradients agree with central
//! differences and its update stays rank r; a zero-initialised auxiliary model leaves decoding
//! unchanged and a trained one lowers its loss and survives a save; the NADO regularizer pulls the
//! policy towards the teacher; REINFORCE raises a rewarded continuation; a written checkpoint
//! reloads as the trained model.

use std::path::Path;

use decode::{generate_all, Request, SamplingParams, Settings, Steering};
use finetune::sequences::{batches, encode_texts, summed_nll, MixText, Sequence};
use finetune::{
    finetune, Adaptation, Auxiliary, AuxiliaryOptions, FinetuneOptions, LoraOptions, LoraSet,
    LoraTargets, NadoDecoding, NadoParams, Regularizer,
};
use lm::{CausalLm, DeviceChoice, DtypeChoice, LoadedModel, TrainableSelection};
use tch::{Kind, Tensor};
use test_support::{scratch_dir, tiny_llama};

fn load(dir: &Path) -> LoadedModel {
    LoadedModel::load(dir, DeviceChoice::Cpu, DtypeChoice::F32).unwrap_or_else(|e| panic!("{e:#}"))
}

const TEXTS: [&str; 4] = [
    "The weather is nice today and we went for a walk.",
    "She thanked everyone for coming to the meeting.",
    "Our team finished the project ahead of schedule.",
    "The library opens at nine in the morning.",
];

fn data(model: &LoadedModel) -> Vec<Sequence> {
    let texts: Vec<MixText> = TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| MixText {
            id: format!("t:{i}"),
            source: "test".into(),
            text: t.to_string(),
            regularize: true,
        })
        .collect();
    encode_texts(&model.tokenizer, &texts, 32, model.model.info().vocab_size).unwrap()
}

fn mean_nll(model: &dyn CausalLm, sequences: &[Sequence]) -> f64 {
    let _no_grad = tch::no_grad_guard();
    let (mut total, mut n) = (0.0, 0.0);
    for batch in batches(sequences, 8, model.info().device) {
        let (nll, count) = summed_nll(model, &batch);
        total += nll.double_value(&[]);
        n += count;
    }
    total / n
}

fn all_blocks(model: &dyn CausalLm) -> TrainableSelection {
    let layers = model.info().num_layers;
    TrainableSelection::top(layers, layers)
}

#[test]
fn lora_gradients_match_central_differences_and_the_update_has_rank_r() {
    let loaded = load(&tiny_llama());
    let model = loaded.model.as_ref();
    let sequences = data(&loaded);
    let tensors = model.trainable_tensors(&all_blocks(model));
    let options = LoraOptions {
        rank: 2,
        alpha: 4.0,
        targets: LoraTargets::All,
    };
    let set = LoraSet::new(&tensors, &options, 3).unwrap();
    let parameters = set.parameters();
    // Move B off zero so both factors have a gradient.
    tch::no_grad(|| {
        for (i, p) in parameters.iter().enumerate() {
            if i % 2 == 1 {
                let mut p = p.shallow_clone();
                p.copy_(&(Tensor::randn(p.size(), (Kind::Float, p.device())) * 0.05));
            }
        }
    });
    set.merge();
    let batch = &batches(&sequences, 8, model.info().device)[0];
    let loss = |set: &LoraSet| {
        set.merge();
        let (nll, n) = summed_nll(model, batch);
        nll / n
    };
    for p in &parameters {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    loss(&set).backward();
    set.transfer_gradients();
    let epsilon = 1e-2;
    // The first adapter's A and B: the largest gradient entries of each, against central
    // differences of the whole model's loss.
    for p in &parameters[..2] {
        let grad = p.grad().flatten(0, -1);
        let index = grad.abs().argmax(0, false).int64_value(&[]);
        let analytic = grad.double_value(&[index]);
        let mut flat = p.detach().flatten(0, -1);
        let original = flat.double_value(&[index]);
        let at = |v: f64, flat: &mut Tensor| {
            tch::no_grad(|| {
                let _ = flat.get(index).fill_(v);
            });
            let _no_grad = tch::no_grad_guard();
            loss(&set).double_value(&[])
        };
        let plus = at(original + epsilon, &mut flat);
        let minus = at(original - epsilon, &mut flat);
        at(original, &mut flat);
        let numeric = (plus - minus) / (2.0 * epsilon);
        assert!(
            (numeric - analytic).abs() <= 0.05 * analytic.abs().max(1e-3),
            "analytic {analytic} numeric {numeric}"
        );
    }

    // Training moves only the adapters: every adapted weight minus its original has rank ≤ r.
    let before: Vec<Tensor> = tensors.iter().map(|(_, t)| t.copy()).collect();
    let nll_before = mean_nll(model, &sequences);
    drop(set);
    let options = FinetuneOptions {
        adaptation: Adaptation::Lora(options),
        learning_rate: 1e-2,
        weight_decay: 0.0,
        batch_size: 2,
        accumulate: 2,
        epochs: 5,
    };
    let (stats, factors) = finetune(
        model,
        &sequences,
        &Regularizer::None,
        0.0,
        &options,
        0,
        |_| {},
    )
    .unwrap();
    assert_eq!(stats.micro_batches, 10);
    assert_eq!(stats.steps, 5, "two micro-batches per step");
    assert!(factors.unwrap().len() >= 2);
    assert!(mean_nll(model, &sequences) < nll_before);
    for ((name, after), before) in tensors.iter().zip(&before) {
        let delta = (after - before).to_kind(Kind::Double);
        if after.dim() == 2 {
            let rank = delta.linalg_matrix_rank(1e-5, false).int64_value(&[]);
            assert!(rank <= 2, "{name}: update of rank {rank}");
        } else {
            assert_eq!(delta.abs().max().double_value(&[]), 0.0, "{name} changed");
        }
        assert!(!after.requires_grad(), "{name} still requires grad");
    }

    let too_wide = LoraOptions {
        rank: 65,
        alpha: 1.0,
        targets: LoraTargets::Attention,
    };
    let err = LoraSet::new(&tensors, &too_wide, 0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("lora rank 65 is larger than the width 64 of model.layers.0.self_attn"),
        "{err}"
    );
}

fn sample(model: &LoadedModel, steering: &mut [Box<dyn Steering + '_>]) -> Vec<Vec<i64>> {
    let prompt = model.tokenizer.encode("The library opens").unwrap();
    let settings = Settings {
        max_new_tokens: 8,
        min_new_tokens: 0,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.9),
        },
        seed: 5,
        batch_size: 4,
        stop_at_eos: false,
    };
    let requests = Request::samples("p", &prompt, 4);
    generate_all(
        model.model.as_ref(),
        &model.eos_token_ids,
        &requests,
        &settings,
        steering,
    )
    .unwrap()
    .into_iter()
    .map(|g| g.token_ids)
    .collect()
}

/// Labelled samples: continuations of one prompt, those containing `bad` labelled 0.
fn labelled(model: &LoadedModel, bad: i64) -> Vec<Sequence> {
    let prompt = model.tokenizer.encode("The library opens").unwrap();
    let mut out = Vec::new();
    for i in 0..16i64 {
        let mut ids = prompt.clone();
        let token = if i % 2 == 0 { bad } else { 100 + i };
        ids.extend([token, 200 + i, 300 + i]);
        out.push(Sequence {
            ids,
            counted_from: prompt.len(),
            label: if token == bad { 0.0 } else { 1.0 },
            regularize: true,
        });
    }
    out
}

#[test]
fn auxiliary_starts_neutral_learns_its_labels_and_reloads() {
    let dir = scratch_dir("finetune-tests-auxiliary");
    let policy = load(&tiny_llama());
    let bad = 42;
    let sequences = labelled(&policy, bad);
    let prior = finetune::nado::mean_label(&sequences);
    let mut auxiliary = Auxiliary::fresh(&tiny_llama(), 1, DeviceChoice::Cpu, prior).unwrap();
    let plain = sample(&policy, &mut []);
    let neutral = Auxiliary::fresh(&tiny_llama(), 1, DeviceChoice::Cpu, 0.9).unwrap();
    let vocab = policy.model.info().vocab_size;
    let nado =
        NadoDecoding::new(neutral, &policy.tokenizer, vocab, NadoParams { alpha: 3.0 }).unwrap();
    assert_eq!(
        sample(&policy, &mut [Box::new(nado)]),
        plain,
        "a fresh head is q = p"
    );

    // NADO decoding's perplexity equals the model's own with a neutral head, not with a trained one.
    let texts = data(&policy);
    let own = finetune::sequences::perplexity(policy.model.as_ref(), &texts, 2);
    let neutral = Auxiliary::fresh(&tiny_llama(), 1, DeviceChoice::Cpu, 0.9).unwrap();
    let under_q =
        finetune::nado::decoding_perplexity(policy.model.as_ref(), &neutral, 1.0, &texts, 2);
    assert_eq!(own.1, under_q.1);
    assert!(
        (own.0 - under_q.0).abs() < 1e-3 * own.0,
        "{own:?} vs {under_q:?}"
    );

    let options = AuxiliaryOptions {
        layers: 1,
        epochs: 20,
        learning_rate: 1e-2,
        weight_decay: 0.0,
        batch_size: 8,
        consistency: 1.0,
    };
    let record = auxiliary
        .train(
            &sequences,
            &options,
            policy.model.as_ref(),
            0,
            "tiny".into(),
            |_| {},
        )
        .unwrap();
    // Half the labels are 0: the prior is logit(½) = 0, and the BCE before training is ln 2.
    assert_eq!(record.head_bias_init, Some(0.0));
    assert!(
        (record.loss_before - std::f64::consts::LN_2).abs() < 1e-4,
        "{}",
        record.loss_before
    );
    assert_eq!(record.epoch_consistency.len(), 20);
    assert!(record.loss_after.unwrap() < record.loss_before);
    assert!(record.kl_q_p_per_sequence.unwrap() > 0.0);
    assert!((record.kl_bound.unwrap() - std::f64::consts::LN_2).abs() < 1e-9);
    assert!(
        *record.epoch_losses.last().unwrap() < 0.3,
        "{:?}",
        record.epoch_losses
    );
    assert_eq!(record.mean_label, 0.5);
    // After the prompt, R of the token labelled bad is below R of the ones labelled good.
    let prompt = policy.tokenizer.encode("The library opens").unwrap();
    let log_r = {
        let _no_grad = tch::no_grad_guard();
        let trunk = auxiliary.trunk.model.as_ref();
        let ids = Tensor::from_slice(&prompt).unsqueeze(0);
        let hidden = trunk.forward_hidden(&ids, &ids.ones_like(), &mut trunk.new_cache());
        auxiliary
            .log_r(&hidden.select(1, prompt.len() as i64 - 1))
            .squeeze()
    };
    assert!(log_r.double_value(&[bad]) < log_r.double_value(&[101]) - 1.0);

    let steered_ppl =
        finetune::nado::decoding_perplexity(policy.model.as_ref(), &auxiliary, 1.0, &texts, 2);
    assert!(
        (steered_ppl.0 - own.0).abs() > 1e-3 * own.0,
        "{steered_ppl:?}"
    );

    let saved = dir.join("aux");
    auxiliary.save(&saved, &record).unwrap();
    assert!(
        auxiliary.save(&saved, &record).is_err(),
        "an existing folder is refused"
    );
    let reloaded = Auxiliary::load(&saved, DeviceChoice::Cpu, DtypeChoice::F32).unwrap();
    let trained = NadoDecoding::new(
        auxiliary,
        &policy.tokenizer,
        vocab,
        NadoParams { alpha: 3.0 },
    )
    .unwrap();
    let again = NadoDecoding::new(
        reloaded,
        &policy.tokenizer,
        vocab,
        NadoParams { alpha: 3.0 },
    )
    .unwrap();
    let steered = sample(&policy, &mut [Box::new(trained)]);
    assert_ne!(steered, plain, "a trained auxiliary model steers");
    assert_eq!(sample(&policy, &mut [Box::new(again)]), steered);
    assert!(Auxiliary::load(&tiny_llama(), DeviceChoice::Cpu, DtypeChoice::F32).is_err());
    assert!(NadoParams { alpha: -1.0 }.validate().is_err());
}

#[test]
fn a_fresh_head_starts_at_the_mean_label_and_leaves_q_equal_to_p() {
    let policy = load(&tiny_llama());
    // Labels averaging 0.75: not the ½ a zero bias would say.
    let mut sequences = labelled(&policy, 42);
    for (i, s) in sequences.iter_mut().enumerate() {
        s.label = if i % 4 == 0 { 0.0 } else { 1.0 };
    }
    let mean = finetune::nado::mean_label(&sequences);
    assert_eq!(mean, 0.75);
    let auxiliary = Auxiliary::fresh(&tiny_llama(), 1, DeviceChoice::Cpu, mean).unwrap();
    let logit = (0.75f64 / 0.25).ln();
    let bias = &auxiliary.head_bias;
    assert!((bias.max().double_value(&[]) - logit).abs() < 1e-6);
    assert!((bias.min().double_value(&[]) - logit).abs() < 1e-6);
    let _no_grad = tch::no_grad_guard();
    let batch = &batches(&sequences, 16, policy.model.info().device)[0];
    let t = batch.ids.size()[1];
    let z = {
        let model = policy.model.as_ref();
        let hidden = model.forward_hidden(&batch.ids, &batch.mask, &mut model.new_cache());
        model.logits(&hidden.narrow(1, 0, t - 1))
    };
    let log_r = {
        let trunk = auxiliary.trunk.model.as_ref();
        let hidden = trunk.forward_hidden(&batch.ids, &batch.mask, &mut trunk.new_cache());
        auxiliary.log_r(&hidden.narrow(1, 0, t - 1))
    };
    let log_q = (&z + log_r).log_softmax(-1, Kind::Float);
    let log_p = z.log_softmax(-1, Kind::Float);
    let gap = (log_q - log_p).abs().max().double_value(&[]);
    assert!(gap < 1e-5, "{gap}");
}

/// Full fine-tuning, one sequence per step, six passes: enough for the tiny model to move.
fn full_finetuning() -> FinetuneOptions {
    FinetuneOptions {
        adaptation: Adaptation::Full,
        learning_rate: 3e-3,
        weight_decay: 0.0,
        batch_size: 1,
        accumulate: 1,
        epochs: 6,
    }
}

/// The probability the policy gives `token` right after the prompt.
fn next_probability(model: &dyn CausalLm, prompt: &[i64], token: i64) -> f64 {
    let _no_grad = tch::no_grad_guard();
    let ids = Tensor::from_slice(prompt).unsqueeze(0);
    let hidden = model.forward_hidden(&ids, &ids.ones_like(), &mut model.new_cache());
    model
        .logits(&hidden.select(1, prompt.len() as i64 - 1))
        .softmax(-1, Kind::Float)
        .squeeze()
        .double_value(&[token])
}

#[test]
fn the_nado_regularizer_pulls_the_policy_towards_its_teacher() {
    let dir = scratch_dir("finetune-tests-nado-finetune");
    let policy = load(&tiny_llama());
    let reference = load(&tiny_llama());
    let auxiliary = Auxiliary::fresh(&tiny_llama(), 1, DeviceChoice::Cpu, 0.5).unwrap();
    // A teacher that strongly avoids one token everywhere: R(·, bad) = σ(−8).
    let bad = 42;
    tch::no_grad(|| {
        let _ = auxiliary.head_bias.get(bad).fill_(-8.0);
    });
    let prompt = policy.tokenizer.encode("The library opens").unwrap();
    let samples = labelled(&policy, bad);
    let options = full_finetuning();
    let regularizer = Regularizer::Nado {
        reference: reference.model.as_ref(),
        auxiliary: &auxiliary,
        samples: &samples,
    };
    let data = data(&policy);
    // The same data and steps without the regularizer, for comparison.
    let unregularized = load(&tiny_llama());
    let (plain, _) = finetune(
        unregularized.model.as_ref(),
        &data,
        &Regularizer::Nado {
            reference: reference.model.as_ref(),
            auxiliary: &auxiliary,
            samples: &samples,
        },
        0.0,
        &options,
        0,
        |_| {},
    )
    .unwrap();
    let (stats, factors) = finetune(
        policy.model.as_ref(),
        &data,
        &regularizer,
        5.0,
        &options,
        0,
        |_| {},
    )
    .unwrap();
    assert!(factors.is_none());
    assert_eq!(stats.kl_before, plain.kl_before);
    let (with, without) = (stats.kl_after.unwrap(), plain.kl_after.unwrap());
    assert!(
        with < 0.5 * without,
        "KL(q‖p) after: λ 5 {with}, λ 0 {without}"
    );
    let p_after = next_probability(policy.model.as_ref(), &prompt, 101);

    // Masked samples do not count: with every sample masked the regularizer is silent.
    let masked: Vec<Sequence> = samples
        .iter()
        .cloned()
        .map(|s| Sequence {
            regularize: false,
            ..s
        })
        .collect();
    let silent = Regularizer::Nado {
        reference: reference.model.as_ref(),
        auxiliary: &auxiliary,
        samples: &masked,
    };
    let fresh = load(&tiny_llama());
    let (stats, _) = finetune(
        fresh.model.as_ref(),
        &data,
        &silent,
        5.0,
        &options,
        0,
        |_| {},
    )
    .unwrap();
    assert!(stats.regularizer_losses.is_empty());
    assert_eq!(stats.masked_samples, masked.len());

    // The trained policy written as a checkpoint reloads as itself.
    let out = dir.join("policy");
    let model = policy.model.as_ref();
    lm::checkpoint::write_folder(
        &tiny_llama(),
        &out,
        None,
        model.export_tensors(&all_blocks(model)),
    )
    .unwrap();
    let reloaded = load(&out);
    let p_reloaded = next_probability(reloaded.model.as_ref(), &prompt, 101);
    assert!(
        (p_reloaded - p_after).abs() < 1e-6,
        "{p_reloaded} vs {p_after}"
    );

    let err = finetune(
        fresh.model.as_ref(),
        &data,
        &Regularizer::None,
        -1.0,
        &options,
        0,
        |_| {},
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("lambda must be a finite number >= 0"),
        "{err}"
    );
    assert!(finetune(
        fresh.model.as_ref(),
        &[],
        &Regularizer::None,
        0.0,
        &options,
        0,
        |_| {}
    )
    .is_err());
}

#[test]
fn reinforce_raises_the_rewarded_continuation() {
    let policy = load(&tiny_llama());
    let bad = 42;
    let samples = labelled(&policy, bad);
    let prompt = policy.tokenizer.encode("The library opens").unwrap();
    let good = 101;
    let (p_bad, p_good) = (
        next_probability(policy.model.as_ref(), &prompt, bad),
        next_probability(policy.model.as_ref(), &prompt, good),
    );
    let options = full_finetuning();
    let data = data(&policy);
    finetune(
        policy.model.as_ref(),
        &data,
        &Regularizer::Reinforce { samples: &samples },
        5.0,
        &options,
        0,
        |_| {},
    )
    .unwrap();
    let (q_bad, q_good) = (
        next_probability(policy.model.as_ref(), &prompt, bad),
        next_probability(policy.model.as_ref(), &prompt, good),
    );
    assert!(q_bad < p_bad, "p(bad) {p_bad} -> {q_bad}");
    assert!(q_good > p_good, "p(good) {p_good} -> {q_good}");
}
