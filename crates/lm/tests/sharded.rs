//! A checkpoint split into shards with a `model.safetensors.index.json` (how large Llama
//! checkpoints ship) loads to the same model as the single file.

mod common;

use common::*;
use tch::Tensor;

#[test]
fn sharded_checkpoint_equals_single_file() {
    let tiny = fixture("tiny-llama");
    let dir = test_support::scratch_dir("detox-sharded");
    for name in ["config.json", "tokenizer.json", "generation_config.json"] {
        std::fs::copy(tiny.join(name), dir.join(name)).unwrap();
    }
    let mut tensors = Tensor::read_safetensors(tiny.join("model.safetensors")).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let (first, second) = tensors.split_at(tensors.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        Tensor::write_safetensors(part, dir.join(file)).unwrap();
        for (name, _) in part {
            weight_map.insert(name.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let ids = [550i64, 965, 690, 283, 291];
    let (_, single) = run_single(load_cpu_f32(&tiny).model.as_ref(), &ids);
    let (_, sharded) = run_single(load_cpu_f32(&dir).model.as_ref(), &ids);
    assert_eq!(max_abs_diff(&single, &sharded), 0.0);

    // A shard named in the index but missing is an error naming that file.
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = lm::LoadedModel::load(&dir, lm::DeviceChoice::Cpu, lm::DtypeChoice::F32)
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("model-00002-of-00002.safetensors"),
        "{err:#}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
