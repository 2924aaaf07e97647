//! What a trainer relies on, for both architectures on the tiny fixture models: splitting the
//! forward pass at a block gives `forward_hidden` back; gradients reach the trainable tensors and
//! agree with finite differences; exported weights loaded as overrides rebuild the trained model.

use std::path::PathBuf;

use lm::{left_pad, CausalLm, DeviceChoice, DtypeChoice, LoadedModel, TrainableSelection};
use tch::{Kind, Tensor};

const MODELS: [&str; 2] = ["tiny-llama", "tiny-gpt2"];

fn load(name: &str, overrides: &[PathBuf]) -> LoadedModel {
    LoadedModel::load_with(
        &test_support::fixture(name),
        DeviceChoice::Cpu,
        DtypeChoice::F32,
        None,
        overrides,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Two rows of different lengths, so the second is left-padded.
fn batch() -> (Tensor, Tensor) {
    left_pad(
        &[&[5i64, 17, 230, 4, 99, 12], &[8, 3, 41]],
        tch::Device::Cpu,
    )
}

fn full_hidden(model: &dyn CausalLm, ids: &Tensor, mask: &Tensor) -> Tensor {
    tch::no_grad(|| model.forward_hidden(ids, mask, &mut model.new_cache()))
}

/// The largest difference on real tokens only (padded positions are never read).
fn max_diff_on_real(a: &Tensor, b: &Tensor, mask: &Tensor) -> f64 {
    ((a - b).abs() * mask.unsqueeze(-1)).max().double_value(&[])
}

#[test]
fn a_forward_split_at_any_block_equals_the_whole_forward() {
    for name in MODELS {
        let loaded = load(name, &[]);
        let model = loaded.model.as_ref();
        let (ids, mask) = batch();
        let whole = full_hidden(model, &ids, &mask);
        for split in 0..=model.info().num_layers {
            let split_hidden = tch::no_grad(|| {
                let residual = model.residual_after(&ids, &mask, split);
                model.hidden_from(&residual, &mask, split)
            });
            let diff = max_diff_on_real(&whole, &split_hidden, &mask);
            assert!(diff < 1e-5, "{name}, split {split}: differs by {diff}");
        }
    }
}

#[test]
fn gradients_of_the_top_block_match_finite_differences() {
    for name in MODELS {
        let loaded = load(name, &[]);
        let model = loaded.model.as_ref();
        let layers = model.info().num_layers;
        let selection = TrainableSelection::top(1, layers);
        let (ids, mask) = batch();
        let residual = tch::no_grad(|| model.residual_after(&ids, &mask, layers - 1));
        tch::manual_seed(7);
        let probe = Tensor::randn(
            [2, ids.size()[1], model.info().hidden_size],
            (Kind::Float, tch::Device::Cpu),
        ) * mask.unsqueeze(-1);
        let loss = || (model.hidden_from(&residual, &mask, layers - 1) * &probe).sum(Kind::Float);

        let params = model.trainable_tensors(&selection);
        assert!(params.len() >= 5, "{name}: {} tensors", params.len());
        let mut params: Vec<(String, Tensor)> = params
            .into_iter()
            .map(|(n, t)| (n, t.set_requires_grad(true)))
            .collect();
        loss().backward();
        for (param_name, param) in &mut params {
            let grad = param.grad();
            assert!(grad.defined(), "{name}: no gradient for {param_name}");
            assert!(
                grad.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}: zero gradient for {param_name}"
            );
            // Directional derivative along a random direction: autograd against a central
            // difference (float32, so the tolerance is loose).
            let direction = param.randn_like();
            let direction = &direction / direction.norm();
            let analytic = (&grad * &direction).sum(Kind::Float).double_value(&[]);
            let eps = 1e-2;
            let _no_grad = tch::no_grad_guard();
            let _ = param.g_add_(&(&direction * eps));
            let plus = loss().double_value(&[]);
            let _ = param.g_sub_(&(&direction * (2.0 * eps)));
            let minus = loss().double_value(&[]);
            let _ = param.g_add_(&(&direction * eps));
            let numeric = (plus - minus) / (2.0 * eps);
            assert!(
                (analytic - numeric).abs() <= 1e-2 * analytic.abs() + 1e-3,
                "{name}: {param_name}: autograd {analytic} vs finite difference {numeric}"
            );
        }
        for (_, param) in &params {
            let _ = param.set_requires_grad(false);
        }
    }
}

#[test]
fn exported_top_blocks_load_back_as_overrides() {
    for name in MODELS {
        let trained = load(name, &[]);
        let model = trained.model.as_ref();
        let layers = model.info().num_layers;
        let selection = TrainableSelection::top(1, layers);
        let (ids, mask) = batch();
        let before = full_hidden(model, &ids, &mask);
        // "Train": move every selected tensor, in place, as an optimiser step would.
        tch::manual_seed(3);
        tch::no_grad(|| {
            for (_, mut t) in model.trainable_tensors(&selection) {
                let step = t.randn_like() * 0.05;
                let _ = t.g_add_(&step);
            }
        });
        let after = full_hidden(model, &ids, &mask);
        assert!(
            max_diff_on_real(&before, &after, &mask) > 1e-3,
            "{name}: the update changed nothing"
        );

        let dir = test_support::scratch_dir(&format!("lm-training-{name}"));
        let file = dir.join("top.safetensors");
        let exported = model.export_tensors(&selection);
        Tensor::write_safetensors(&exported, &file).unwrap();
        let reloaded = load(name, std::slice::from_ref(&file));
        let again = full_hidden(reloaded.model.as_ref(), &ids, &mask);
        let diff = max_diff_on_real(&after, &again, &mask);
        assert!(diff < 1e-5, "{name}: reloaded model differs by {diff}");

        // An override naming a tensor the checkpoint lacks is refused, naming file and tensor.
        let mut bad = exported;
        bad[0].0 = "no.such.tensor".into();
        Tensor::write_safetensors(&bad, &file).unwrap();
        let dir_of_model = test_support::fixture(name);
        let error = LoadedModel::load_with(
            &dir_of_model,
            DeviceChoice::Cpu,
            DtypeChoice::F32,
            None,
            std::slice::from_ref(&file),
        )
        .err()
        .map(|e| format!("{e:#}"))
        .expect("a bad override is refused");
        assert!(
            error.contains("top.safetensors") && error.contains("no.such.tensor"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
