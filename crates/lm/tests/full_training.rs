//! Training every tensor, embeddings and head included, on the tiny fixture models (both tie
//! their head to the embedding): the head unties and trains apart from the embedding, and the
//! folder written from the trained model says so and loads back as the same model. The default
//! selection still exports only blocks and final norm, and leaves a written folder tied.

use std::collections::BTreeSet;
use std::path::Path;

use lm::sequences::{batches, summed_nll, Sequence};
use lm::train::AdamW;
use lm::{CausalLm, DeviceChoice, DtypeChoice, LoadedModel, TrainableSelection};
use tch::Tensor;

const MODELS: [&str; 2] = ["tiny-llama", "tiny-gpt2"];

fn load(dir: &Path) -> LoadedModel {
    LoadedModel::load(dir, DeviceChoice::Cpu, DtypeChoice::F32).unwrap_or_else(|e| panic!("{e:#}"))
}

fn sequences() -> Vec<Sequence> {
    [
        vec![5i64, 17, 230, 4, 99, 12],
        vec![8, 3, 41],
        vec![700, 2, 2, 9],
    ]
    .into_iter()
    .map(|ids| Sequence {
        ids,
        counted_from: 1,
        label: 1.0,
        regularize: false,
    })
    .collect()
}

/// Every position's logits `[batch, t, vocab]` on the test sequences.
fn logits(model: &dyn CausalLm) -> Tensor {
    let batch = batches(&sequences(), 8, tch::Device::Cpu).remove(0);
    tch::no_grad(|| {
        let hidden = model.forward_hidden(&batch.ids, &batch.mask, &mut model.new_cache());
        model.logits(&hidden) * batch.mask.unsqueeze(-1)
    })
}

fn named<'a>(tensors: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &tensors
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .1
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn stored_names(dir: &Path) -> BTreeSet<String> {
    Tensor::read_safetensors(dir.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn training_everything_unties_the_head_and_the_written_folder_loads_back_the_same() {
    for name in MODELS {
        let source = test_support::fixture(name);
        let loaded = load(&source);
        let model = loaded.model.as_ref();
        let embedding_name = if name == "tiny-llama" {
            "model.embed_tokens.weight"
        } else {
            "transformer.wte.weight"
        };
        let selection = TrainableSelection::everything(model.info().num_layers);

        let trainable = model.trainable_tensors(&selection);
        let head = named(&trainable, "lm_head.weight_t").shallow_clone();
        let embedding = named(&trainable, embedding_name).shallow_clone();
        let (head_before, embedding_before) = (head.copy(), embedding.copy());
        assert!(
            head_before.transpose(0, 1).equal(&embedding_before),
            "{name}: the fixture's head is tied to its embedding"
        );

        // One optimiser step on the next-token loss, as the calibration trainer takes them.
        let batch = batches(&sequences(), 8, tch::Device::Cpu).remove(0);
        let mut optimizer = AdamW::new(
            trainable.into_iter().map(|(_, t)| t).collect(),
            1e-2,
            0.0,
            1,
        )
        .unwrap();
        let (loss, n) = summed_nll(model, &batch);
        optimizer.minimize(&(loss / n)).unwrap();
        drop(optimizer);

        let head_step = &head - &head_before;
        let embedding_step = &embedding - &embedding_before;
        assert!(
            head_step.abs().max().double_value(&[]) > 1e-4,
            "{name}: the head did not move"
        );
        assert!(
            embedding_step.abs().max().double_value(&[]) > 1e-4,
            "{name}: the embedding did not move"
        );
        // Independently: the head's step is not the embedding's (a tied pair moves as one).
        assert!(
            max_diff(&head_step.transpose(0, 1), &embedding_step) > 1e-4,
            "{name}: head and embedding moved together"
        );

        let in_memory = logits(model);
        let root = test_support::scratch_dir(&format!("lm-full-training-{name}"));
        let out = root.join("trained");
        lm::checkpoint::write_folder(&source, &out, None, model.export_tensors(&selection))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            config_json(&out)["tie_word_embeddings"],
            serde_json::json!(false),
            "{name}"
        );
        assert!(stored_names(&out).contains("lm_head.weight"), "{name}");
        let stored = Tensor::read_safetensors(out.join("model.safetensors")).unwrap();
        assert!(
            named(&stored, "lm_head.weight").equal(&head.transpose(0, 1)),
            "{name}: the stored head is not the trained one in Hugging Face's [vocab, hidden]"
        );

        let reloaded = load(&out);
        let diff = max_diff(&in_memory, &logits(reloaded.model.as_ref()));
        assert!(diff < 1e-5, "{name}: reloaded logits differ by {diff}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn the_default_selection_exports_only_blocks_and_final_norm_and_keeps_the_head_tied() {
    let expected: [(&str, Vec<&str>); 2] = [
        (
            "tiny-llama",
            vec![
                "model.layers.1.input_layernorm.weight",
                "model.layers.1.self_attn.q_proj.weight",
                "model.layers.1.self_attn.k_proj.weight",
                "model.layers.1.self_attn.v_proj.weight",
                "model.layers.1.self_attn.o_proj.weight",
                "model.layers.1.post_attention_layernorm.weight",
                "model.layers.1.mlp.gate_proj.weight",
                "model.layers.1.mlp.up_proj.weight",
                "model.layers.1.mlp.down_proj.weight",
                "model.norm.weight",
            ],
        ),
        (
            "tiny-gpt2",
            vec![
                "transformer.h.1.ln_1.weight",
                "transformer.h.1.ln_1.bias",
                "transformer.h.1.attn.c_attn.weight",
                "transformer.h.1.attn.c_attn.bias",
                "transformer.h.1.attn.c_proj.weight",
                "transformer.h.1.attn.c_proj.bias",
                "transformer.h.1.ln_2.weight",
                "transformer.h.1.ln_2.bias",
                "transformer.h.1.mlp.c_fc.weight",
                "transformer.h.1.mlp.c_fc.bias",
                "transformer.h.1.mlp.c_proj.weight",
                "transformer.h.1.mlp.c_proj.bias",
                "transformer.ln_f.weight",
                "transformer.ln_f.bias",
            ],
        ),
    ];
    for (name, expected) in expected {
        let source = test_support::fixture(name);
        let loaded = load(&source);
        let model = loaded.model.as_ref();
        let selection = TrainableSelection::top(1, model.info().num_layers);
        let exported = model.export_tensors(&selection);
        let names: Vec<&str> = exported.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, expected, "{name}");

        let root = test_support::scratch_dir(&format!("lm-default-selection-{name}"));
        let out = root.join("written");
        lm::checkpoint::write_folder(&source, &out, None, exported)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            config_json(&out)["tie_word_embeddings"],
            serde_json::json!(true),
            "{name}"
        );
        assert_eq!(stored_names(&out), stored_names(&source), "{name}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
#[should_panic(expected = "needs the head trained too")]
fn training_a_tied_models_embeddings_without_its_head_is_refused() {
    let loaded = load(&test_support::tiny_llama());
    let selection = TrainableSelection {
        head: false,
        ..TrainableSelection::everything(loaded.model.info().num_layers)
    };
    let _ = loaded.model.trainable_tensors(&selection);
}
