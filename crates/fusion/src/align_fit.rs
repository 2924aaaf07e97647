//! Fitting the map of [`crate::align`] (`detox train align`): a closed-form ridge regression onto
//! the target's final states, or the paper's InfoNCE map; then, on texts held out of the fit,
//! how well the map rebuilds the target's states and what fusing it in costs the target's
//! next-token distribution ([`crate::reconstruction`]).

use anyhow::{bail, Result};
use artifact::ModelIdentity;
use lm::{left_pad, CausalLm, LoadedModel};
use tch::{COptimizer, Device, Kind, Tensor};

use crate::align::{AlignMap, AlignOn, AlignOptions, AlignRecord, FORMAT};
use crate::readout::Readout;
use crate::reconstruction::reconstruction;

/// `model`'s final hidden states at every real position of the token rows `encoded`, in order,
/// float32 on the CPU `[positions, width]`.
fn states_at_real_positions(model: &dyn CausalLm, encoded: &[Vec<i64>]) -> Tensor {
    let _no_grad = tch::no_grad_guard();
    let mut states = Vec::new();
    for chunk in encoded.chunks(16) {
        let rows: Vec<&[i64]> = chunk.iter().map(Vec::as_slice).collect();
        let (ids, mask) = left_pad(&rows, model.info().device);
        let hidden = model.forward_hidden(&ids, &mask, &mut model.new_cache());
        let real = mask.to_device(Device::Cpu).to_kind(Kind::Bool).view([-1]);
        let width = hidden.size()[2];
        states.push(
            hidden
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .view([-1, width])
                .index(&[Some(real)]),
        );
    }
    Tensor::cat(&states, 0)
}

/// Input embeddings of the tokens whose strings both vocabularies hold.
fn shared_token_embeddings(calibration: &LoadedModel, target: &LoadedModel) -> (Tensor, Tensor) {
    let target_vocab = target.tokenizer.vocabulary();
    let mut pairs: Vec<(i64, i64)> = calibration
        .tokenizer
        .vocabulary()
        .into_iter()
        .filter_map(|(token, c)| {
            target_vocab
                .get(&token)
                .map(|&t| (i64::from(c), i64::from(t)))
        })
        .collect();
    pairs.sort_unstable();
    let index = |side: fn(&(i64, i64)) -> i64| {
        Tensor::from_slice(&pairs.iter().map(side).collect::<Vec<_>>())
    };
    let take = |model: &LoadedModel, ids: Tensor| {
        model
            .model
            .input_embeddings()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .index_select(0, &ids)
    };
    (
        take(calibration, index(|p| p.0)),
        take(target, index(|p| p.1)),
    )
}

/// Ridge regression with an intercept, in float64: A = (XcᵀXc + λ'·I)⁻¹·XcᵀYc on centred X and
/// Y, b = ȳ − x̄·A, with λ' = `ridge` × the mean variance of X's dimensions × the number of rows
/// (so the penalty does not depend on the states' scale). Returns float32 `(A, b)`.
pub fn fit_ridge(x: &Tensor, y: &Tensor, ridge: f64) -> (Tensor, Tensor) {
    let _no_grad = tch::no_grad_guard();
    let (x, y) = (x.to_kind(Kind::Double), y.to_kind(Kind::Double));
    let n = x.size()[0] as f64;
    let (x_mean, y_mean) = (
        x.mean_dim(0, true, Kind::Double),
        y.mean_dim(0, true, Kind::Double),
    );
    let (xc, yc) = (&x - &x_mean, &y - &y_mean);
    let gram = xc.tr().matmul(&xc);
    let width = gram.size()[0];
    let mean_variance = gram.diagonal(0, 0, 1).mean(Kind::Double).double_value(&[]) / n;
    let penalty = ridge * mean_variance * n;
    let regularised = gram + Tensor::eye(width, (Kind::Double, Device::Cpu)) * penalty.max(1e-12);
    let a = Tensor::linalg_solve(&regularised, &xc.tr().matmul(&yc), true);
    let b = (y_mean - x_mean.matmul(&a)).squeeze_dim(0);
    (a.to_kind(Kind::Float), b.to_kind(Kind::Float))
}

/// InfoNCE loss of anchors `x A` against partners `y` `[B, d]` and negatives `[B, K, d]`, and
/// how many anchors scored their partner above every negative.
fn info_nce(
    x: &Tensor,
    a: &Tensor,
    y: &Tensor,
    negatives: &Tensor,
    temperature: f64,
) -> (Tensor, i64) {
    let unit = |t: &Tensor| {
        let norm = t.norm_scalaropt_dim(2.0, [-1], true).clamp_min(1e-8);
        t / norm
    };
    let anchor = unit(&x.matmul(a));
    let positive = (&anchor * unit(y)).sum_dim_intlist(-1, true, Kind::Float);
    let negative = unit(negatives)
        .matmul(&anchor.unsqueeze(-1))
        .squeeze_dim(-1);
    let scores = Tensor::cat(&[positive, negative], 1) / temperature;
    let loss = -scores
        .log_softmax(1, Kind::Float)
        .select(1, 0)
        .mean(Kind::Float);
    let correct = scores
        .argmax(1, false)
        .eq(0)
        .sum(Kind::Int64)
        .int64_value(&[]);
    (loss, correct)
}

/// What an InfoNCE fit reports besides A.
struct InfoNceFit {
    a: Tensor,
    train_pairs: usize,
    held_out_pairs: usize,
    epoch_losses: Vec<f64>,
    held_out_loss: f64,
    held_out_accuracy: f64,
}

/// Trains A on pairs `(x, y)` (a seeded tenth held out), as the paper: K random negatives, Adam.
fn fit_info_nce(
    x: &Tensor,
    y: &Tensor,
    options: &AlignOptions,
    log: &mut impl FnMut(&str),
) -> Result<InfoNceFit> {
    tch::manual_seed(options.seed as i64);
    let n = x.size()[0];
    let keep = Tensor::randperm(n, (Kind::Int64, Device::Cpu)).narrow(
        0,
        0,
        n.min(options.max_pairs as i64),
    );
    let kept = keep.size()[0];
    let held = (kept / 10).max(1);
    if kept - held < options.batch_size as i64 {
        bail!(
            "{kept} pairs leave fewer than one batch of {} to train on; give more texts",
            options.batch_size
        );
    }
    let held_index = keep.narrow(0, 0, held);
    let (x_held, y_held) = (
        x.index_select(0, &held_index),
        y.index_select(0, &held_index),
    );
    let train_index = keep.narrow(0, held, kept - held);
    let (x_train, y_train) = (
        x.index_select(0, &train_index),
        y.index_select(0, &train_index),
    );
    let train_n = x_train.size()[0];
    let (dc, dt) = (x.size()[1], y.size()[1]);
    let k = options.negatives as i64;
    let batch = options.batch_size as i64;

    let a = (Tensor::randn([dc, dt], (Kind::Float, Device::Cpu)) / (dc as f64).sqrt())
        .set_requires_grad(true);
    let mut optimizer = COptimizer::adam(options.learning_rate, 0.9, 0.999, 0.0, 1e-8, false)?;
    optimizer.add_parameters(&a, 0)?;
    let mut epoch_losses = Vec::new();
    for epoch in 0..options.epochs {
        let order = Tensor::randperm(train_n, (Kind::Int64, Device::Cpu));
        let (mut total, mut batches) = (0.0, 0);
        let mut start = 0;
        while start + batch <= train_n {
            let idx = order.narrow(0, start, batch);
            start += batch;
            let negatives = y_train
                .index_select(
                    0,
                    &Tensor::randint(train_n, [batch * k], (Kind::Int64, Device::Cpu)),
                )
                .view([batch, k, dt]);
            optimizer.zero_grad()?;
            let (loss, _) = info_nce(
                &x_train.index_select(0, &idx),
                &a,
                &y_train.index_select(0, &idx),
                &negatives,
                options.temperature,
            );
            total += loss.double_value(&[]);
            batches += 1;
            loss.backward();
            optimizer.step()?;
        }
        let mean = total / f64::from(batches.max(1));
        log(&format!(
            "epoch {}/{}: InfoNCE loss {mean:.4}",
            epoch + 1,
            options.epochs
        ));
        epoch_losses.push(mean);
    }
    let a = a.detach().set_requires_grad(false);
    let (held_out_loss, held_out_accuracy) = tch::no_grad(|| {
        tch::manual_seed(options.seed as i64 + 1_000_003);
        let negatives = y_held
            .index_select(
                0,
                &Tensor::randint(held, [held * k], (Kind::Int64, Device::Cpu)),
            )
            .view([held, k, dt]);
        let (loss, correct) = info_nce(&x_held, &a, &y_held, &negatives, options.temperature);
        (loss.double_value(&[]), correct as f64 / held as f64)
    });
    log(&format!(
        "held-out: InfoNCE loss {held_out_loss:.4}, partner ranked first {:.1} % of {held} \
         (chance {:.1} %)",
        100.0 * held_out_accuracy,
        100.0 / (k + 1) as f64
    ));
    Ok(InfoNceFit {
        a,
        train_pairs: train_n as usize,
        held_out_pairs: held as usize,
        epoch_losses,
        held_out_loss,
        held_out_accuracy,
    })
}

/// Token ids of texts, one row per text.
type TokenRows = Vec<Vec<i64>>;

/// Token rows of `texts` (cut to `max_tokens`, empty ones dropped), split into fit and held-out
/// texts: a seeded tenth of the texts (at least one when there are two or more) is held out, so
/// no held-out position shares a text with a fitted one.
fn split_texts(
    target: &LoadedModel,
    texts: &[&str],
    options: &AlignOptions,
) -> Result<(TokenRows, TokenRows)> {
    let mut encoded: Vec<Vec<i64>> = Vec::with_capacity(texts.len());
    for text in texts {
        let mut ids = target.tokenizer.encode(text)?;
        ids.truncate(options.max_tokens);
        if !ids.is_empty() {
            encoded.push(ids);
        }
    }
    tch::manual_seed(options.seed as i64);
    let order = Vec::<i64>::try_from(Tensor::randperm(
        encoded.len() as i64,
        (Kind::Int64, Device::Cpu),
    ))?;
    let held = if encoded.len() >= 2 {
        (encoded.len() / 10).max(1)
    } else {
        0
    };
    let (mut fit, mut held_out) = (Vec::new(), Vec::new());
    for (rank, &i) in order.iter().enumerate() {
        let row = std::mem::take(&mut encoded[i as usize]);
        if rank < held {
            held_out.push(row);
        } else {
            fit.push(row);
        }
    }
    Ok((fit, held_out))
}

/// Fits the map from `calibration`'s final hidden state to `target`'s on `texts`, and measures
/// it on the held-out tenth of them.
pub fn train_align(
    calibration: &LoadedModel,
    target: &LoadedModel,
    texts: &[&str],
    options: &AlignOptions,
    procedure: String,
    mut log: impl FnMut(&str),
) -> Result<AlignMap> {
    options.validate()?;
    if texts.is_empty() {
        bail!("no texts to align on");
    }
    let shared_ids = calibration.tokenizer.same_ids_as(&target.tokenizer);
    let needs_states = options.fit == Readout::Ridge || options.on == AlignOn::HiddenStates;
    if needs_states && !shared_ids {
        bail!(
            "fitting on hidden states feeds both models the same token ids, but {} and {} have \
             different vocabularies; fit InfoNCE on embeddings instead (--fit infonce --on \
             embeddings)",
            calibration.dir.display(),
            target.dir.display()
        );
    }
    let (fit_rows, held_rows) = split_texts(target, texts, options)?;
    let started = std::time::Instant::now();
    // Both models read the same ids (checked above), so their states line up position by
    // position.
    let states = |rows: &[Vec<i64>]| {
        (
            states_at_real_positions(calibration.model.as_ref(), rows),
            states_at_real_positions(target.model.as_ref(), rows),
        )
    };
    let (mut epoch_losses, mut held_out_loss, mut held_out_accuracy) = (Vec::new(), None, None);
    let (a, bias, train_pairs, held_out_pairs) = match options.fit {
        Readout::Ridge => {
            let (x, y) = states(&fit_rows);
            // A seeded choice of at most max_pairs positions.
            let n = x.size()[0];
            let keep = Tensor::randperm(n, (Kind::Int64, Device::Cpu)).narrow(
                0,
                0,
                n.min(options.max_pairs as i64),
            );
            let (x, y) = (x.index_select(0, &keep), y.index_select(0, &keep));
            log(&format!(
                "ridge fit on {} positions of {} texts ({:.0}s of forward passes)",
                x.size()[0],
                fit_rows.len(),
                started.elapsed().as_secs_f64()
            ));
            let (a, b) = fit_ridge(&x, &y, options.ridge);
            (a, b, x.size()[0] as usize, 0)
        }
        Readout::InfoNce => {
            let (x, y) = match options.on {
                AlignOn::HiddenStates => states(&fit_rows),
                AlignOn::Embeddings => shared_token_embeddings(calibration, target),
            };
            log(&format!("{} InfoNCE pairs ({:?})", x.size()[0], options.on));
            let fitted = fit_info_nce(&x, &y, options, &mut log)?;
            epoch_losses = fitted.epoch_losses;
            held_out_loss = Some(fitted.held_out_loss);
            held_out_accuracy = Some(fitted.held_out_accuracy);
            let bias = Tensor::zeros([y.size()[1]], (Kind::Float, Device::Cpu));
            (fitted.a, bias, fitted.train_pairs, fitted.held_out_pairs)
        }
        Readout::Identity => unreachable!("validate refuses the identity readout"),
    };
    let reconstruction = if shared_ids && !held_rows.is_empty() {
        let (x_held, h_held) = states(&held_rows);
        let mapped = x_held.matmul(&a) + &bias;
        let measured = reconstruction(target.model.as_ref(), &x_held, &mapped, &h_held);
        log(&format!(
            "held-out texts ({} positions): cosine {:.3}, relative error {:.3}",
            measured.positions, measured.cosine, measured.relative_error
        ));
        Some(measured)
    } else {
        None
    };
    let record = AlignRecord {
        format: FORMAT.into(),
        procedure,
        calibration: ModelIdentity::of_folder(&calibration.dir, calibration.model.info())?,
        target: ModelIdentity::of_folder(&target.dir, target.model.info())?,
        options: options.clone(),
        texts: fit_rows.len() + held_rows.len(),
        held_out_texts: held_rows.len(),
        train_pairs,
        epoch_losses,
        held_out_pairs,
        held_out_loss,
        held_out_accuracy,
        reconstruction,
        tensors: String::new(),
    };
    Ok(AlignMap {
        record,
        a,
        bias,
        source: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ridge_recovers_an_affine_map_exactly_without_penalty() {
        tch::manual_seed(3);
        let x = Tensor::randn([200, 6], (Kind::Float, Device::Cpu));
        let a = Tensor::randn([6, 4], (Kind::Float, Device::Cpu));
        let b = Tensor::from_slice(&[1.0f32, -2.0, 30.0, 0.5]);
        let y = x.matmul(&a) + &b;
        let (a_fit, b_fit) = fit_ridge(&x, &y, 0.0);
        assert!(a_fit.allclose(&a, 1e-3, 1e-3, false));
        assert!(b_fit.allclose(&b, 1e-3, 1e-3, false));
        // A penalty shrinks A.
        let (a_shrunk, _) = fit_ridge(&x, &y, 10.0);
        assert!(a_shrunk.norm().double_value(&[]) < a_fit.norm().double_value(&[]));
    }
}
