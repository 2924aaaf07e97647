//! Imports the real default GGUF (SmolLM2-135M-Instruct, Q4_1) and checks the folder against what
//! transformers produced for the same file (shared/fixtures/smollm2). Fails, rather than skips,
//! when the GGUF or the fixtures are missing.

use serde_json::Value;
use std::path::{Path, PathBuf};

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn require(path: PathBuf, what: &str) -> PathBuf {
    paths::require(&path, what).unwrap_or_else(|e| panic!("{e}"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

#[test]
fn import_default_smollm2_gguf() {
    let gguf_path = require(
        paths::default_gguf(),
        "default GGUF (SmolLM2-135M-Instruct.Q4_1.gguf)",
    );
    let fixtures = require(paths::fixture_dir("smollm2"), "smollm2 fixtures");
    let expected = read_json(&require(fixtures.join("expected.json"), "expected.json"));
    let reference_config = read_json(&require(
        fixtures.join("config.reference.json"),
        "config.reference.json",
    ));
    let reference_tok = read_json(&require(
        fixtures.join("tokenizer.reference.json"),
        "tokenizer.reference.json",
    ));

    let out =
        TempDir(std::env::temp_dir().join(format!("gguf-smollm2-import-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&out.0);
    let report = gguf::import_to_hf_folder(&gguf_path, &out.0).unwrap_or_else(|e| panic!("{e}"));
    println!("{report}");
    assert_eq!(report.tensors_by_type.get("Q4_1"), Some(&210));
    assert_eq!(report.tensors_by_type.get("Q8_0"), Some(&1));
    assert_eq!(report.tensors_by_type.get("F32"), Some(&61));
    assert_eq!(report.n_parameters, 134_515_008);

    // config.json: the fields transformers agrees on, with rope_theta at top level.
    let config = read_json(&out.0.join("config.json"));
    for key in [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rms_norm_eps",
        "max_position_embeddings",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "hidden_act",
        "model_type",
        "architectures",
    ] {
        assert_eq!(config[key], reference_config[key], "config.json {key}");
    }
    assert_eq!(config["vocab_size"], 49152);
    assert_eq!(config["hidden_size"], 576);
    assert_eq!(config["num_hidden_layers"], 30);
    assert_eq!(config["num_attention_heads"], 9);
    assert_eq!(config["num_key_value_heads"], 3);
    assert_eq!(config["intermediate_size"], 1536);
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(
        config["rope_theta"],
        reference_config["rope_parameters"]["rope_theta"]
    );
    assert_eq!(config["rope_theta"].as_f64(), Some(100000.0));
    assert_eq!(config["torch_dtype"], "float32");
    let generation = read_json(&out.0.join("generation_config.json"));
    assert_eq!(
        (
            generation["bos_token_id"].as_u64(),
            generation["eos_token_id"].as_u64()
        ),
        (Some(1), Some(2))
    );

    // model.safetensors: HF names and shapes, F32, no lm_head (tied).
    let bytes = std::fs::read(out.0.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 2 + 30 * 9);
    assert!(st.tensor("lm_head.weight").is_err());
    let shape = |name: &str| {
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        t.shape().to_vec()
    };
    assert_eq!(shape("model.embed_tokens.weight"), [49152, 576]);
    assert_eq!(shape("model.norm.weight"), [576]);
    for l in [0, 29] {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        assert_eq!(shape(&p("self_attn.q_proj")), [576, 576]);
        assert_eq!(shape(&p("self_attn.k_proj")), [192, 576]);
        assert_eq!(shape(&p("self_attn.v_proj")), [192, 576]);
        assert_eq!(shape(&p("self_attn.o_proj")), [576, 576]);
        assert_eq!(shape(&p("mlp.gate_proj")), [1536, 576]);
        assert_eq!(shape(&p("mlp.up_proj")), [1536, 576]);
        assert_eq!(shape(&p("mlp.down_proj")), [576, 1536]);
        assert_eq!(shape(&p("input_layernorm")), [576]);
        assert_eq!(shape(&p("post_attention_layernorm")), [576]);
    }
    let norm: Vec<f32> = st
        .tensor("model.norm.weight")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert!(norm.iter().all(|x| x.is_finite()) && norm.iter().any(|&x| x != 0.0));

    // tokenizer.json: same vocabulary, merges and special tokens as transformers' conversion.
    let tok_json = read_json(&out.0.join("tokenizer.json"));
    assert_eq!(tok_json["model"]["vocab"], reference_tok["model"]["vocab"]);
    assert_eq!(
        tok_json["model"]["merges"],
        reference_tok["model"]["merges"]
    );
    assert_eq!(tok_json["added_tokens"], reference_tok["added_tokens"]);
    assert_eq!(tok_json["decoder"], reference_tok["decoder"]);
    assert_eq!(tok_json["post_processor"], reference_tok["post_processor"]);

    // And the same ids on every fixture string, with text round-tripping through decode.
    let tokenizer = tokenizers::Tokenizer::from_file(out.0.join("tokenizer.json")).unwrap();
    let mut cases = Vec::new();
    for (texts, ids) in [
        ("tokenizer_strings", "token_ids"),
        ("prompts", "prompt_ids"),
    ] {
        let texts = expected[texts]
            .as_array()
            .unwrap_or_else(|| panic!("expected.json {texts}"));
        let ids = expected[ids]
            .as_array()
            .unwrap_or_else(|| panic!("expected.json {ids}"));
        assert_eq!(texts.len(), ids.len());
        assert!(!texts.is_empty());
        cases.extend(
            texts
                .iter()
                .zip(ids)
                .map(|(t, i)| (t.as_str().unwrap().to_string(), ids_of(i))),
        );
    }
    for (text, want) in &cases {
        let enc = tokenizer.encode(text.as_str(), false).unwrap();
        assert_eq!(enc.get_ids(), want.as_slice(), "ids of {text:?}");
        let decoded = tokenizer.decode(want, false).unwrap();
        assert_eq!(&decoded, text, "decode of {text:?}");
    }
}
