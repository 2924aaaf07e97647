//! Loading only the first N blocks of a checkpoint gives the same model as a checkpoint that has
//! only those blocks (config and weights cut by hand), for both architectures; keeping every
//! block is the full model.

use std::path::Path;

use lm::{CausalLm, DeviceChoice, DtypeChoice, LoadedModel};
use tch::Tensor;

fn hidden(model: &dyn CausalLm, ids: &[i64]) -> Tensor {
    let input = Tensor::from_slice(ids).unsqueeze(0);
    let mut cache = model.new_cache();
    tch::no_grad(|| model.forward_hidden(&input, &input.ones_like(), &mut cache))
}

/// A copy of `dir` whose config and weights hold only block 0.
fn one_block_copy(dir: &Path, layers_key: &str, block_prefix: &str) -> std::path::PathBuf {
    let out = test_support::scratch_dir(&format!(
        "lm-truncated-{}",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config[layers_key] = serde_json::json!(1);
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(dir.join("tokenizer.json"), out.join("tokenizer.json")).unwrap();
    let tensors = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    let kept: Vec<(String, Tensor)> = tensors
        .into_iter()
        .filter(|(name, _)| !name.contains(block_prefix))
        .collect();
    assert!(kept.len() > 3);
    Tensor::write_safetensors(&kept, out.join("model.safetensors")).unwrap();
    out
}

#[test]
fn first_blocks_equal_a_checkpoint_cut_by_hand() {
    for (name, layers_key, block_prefix) in [
        ("tiny-llama", "num_hidden_layers", "layers.1."),
        ("tiny-gpt2", "n_layer", "h.1."),
    ] {
        let dir = test_support::fixture(name);
        let load = |dir: &Path, layers| {
            LoadedModel::load_layers(dir, DeviceChoice::Cpu, DtypeChoice::F32, layers)
                .unwrap_or_else(|e| panic!("{e:#}"))
        };
        let ids = [5i64, 17, 230, 4, 99, 12];
        let full = load(&dir, None);
        let all = load(&dir, Some(2));
        assert!(hidden(full.model.as_ref(), &ids).equal(&hidden(all.model.as_ref(), &ids)));

        let first = load(&dir, Some(1));
        assert_eq!(first.model.info().num_layers, 1);
        assert_eq!(first.model.new_cache().num_layers(), 1);
        let by_hand_dir = one_block_copy(&dir, layers_key, block_prefix);
        let by_hand = load(&by_hand_dir, None);
        let (a, b) = (
            hidden(first.model.as_ref(), &ids),
            hidden(by_hand.model.as_ref(), &ids),
        );
        assert!(
            a.equal(&b),
            "{name}: truncated load differs from the cut checkpoint"
        );
        assert!(
            !a.allclose(&hidden(full.model.as_ref(), &ids), 1e-3, 1e-3, false),
            "{name}: one block should not equal two"
        );

        let error = LoadedModel::load_layers(&dir, DeviceChoice::Cpu, DtypeChoice::F32, Some(3))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap();
        assert!(error.contains("cannot keep 3 layers"), "{error}");
        std::fs::remove_dir_all(&by_hand_dir).unwrap();
    }
}
