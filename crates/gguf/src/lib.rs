//! Reads GGUF files (v2/v3) and imports `llama` models into Hugging Face folders: `config.json`,
//! `generation_config.json`, `model.safetensors` (all tensors dequantized to f32, HF names, Q/K
//! rows un-permuted), `tokenizer.json` and `tokenizer_config.json`.
//!
//! ```no_run
//! let report = gguf::import_to_hf_folder("model.gguf".as_ref(), "out/model".as_ref())?;
//! println!("{report}");
//! # Ok::<(), gguf::GgufError>(())
//! ```

mod error;
pub mod hf;
pub mod quant;
pub mod reader;
pub mod tokenizer;

#[cfg(test)]
mod testutil;

pub use error::GgufError;
pub use hf::LlamaConfig;
pub use quant::GgmlType;
pub use reader::{GgufFile, MetadataValue, TensorInfo};

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// What [`import_to_hf_folder`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport {
    pub gguf_path: PathBuf,
    pub out_dir: PathBuf,
    /// Number of tensors stored in each ggml type, e.g. {"F32": 61, "Q4_1": 210, "Q8_0": 1}.
    pub tensors_by_type: BTreeMap<String, usize>,
    pub n_parameters: u64,
    pub tie_word_embeddings: bool,
    pub vocab_size: u64,
    /// Every file written, in the order written.
    pub files: Vec<PathBuf>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n_tensors: usize = self.tensors_by_type.values().sum();
        let types = self
            .tensors_by_type
            .iter()
            .map(|(ty, n)| format!("{ty} x{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            f,
            "imported {} -> {}",
            self.gguf_path.display(),
            self.out_dir.display()
        )?;
        writeln!(f, "  tensors: {n_tensors} ({types}), written as F32")?;
        writeln!(
            f,
            "  parameters: {} ({:.1}M), vocab {}, tied embeddings: {}",
            self.n_parameters,
            self.n_parameters as f64 / 1e6,
            self.vocab_size,
            self.tie_word_embeddings
        )?;
        write!(f, "  files:")?;
        for file in &self.files {
            write!(f, "\n    {}", file.display())?;
        }
        Ok(())
    }
}

/// Imports a `llama` GGUF into `out_dir`, which must not exist or be empty. Everything (metadata,
/// tokenizer, tensor names, shapes and types) is validated before the first file is written.
pub fn import_to_hf_folder(gguf_path: &Path, out_dir: &Path) -> Result<ImportReport, GgufError> {
    check_out_dir(out_dir)?;
    let gguf = GgufFile::open(gguf_path)?;
    let tok = tokenizer::build(&gguf)?;
    let vocab_size = match gguf.get_u64_opt("llama.vocab_size")? {
        Some(n) => n,
        None => tok.vocab_size as u64,
    };
    let config = LlamaConfig::from_gguf(&gguf, vocab_size)?;
    let planned = hf::plan(&gguf, &config)?;

    fs::create_dir_all(out_dir).map_err(|e| GgufError::io(out_dir, e))?;
    let mut files = Vec::new();
    for (name, value) in [
        ("config.json", config.to_json()),
        ("generation_config.json", config.generation_config_json()),
        ("tokenizer.json", tok.tokenizer_json),
        ("tokenizer_config.json", tok.tokenizer_config),
    ] {
        let path = out_dir.join(name);
        write_json(&path, &value)?;
        files.push(path);
    }
    let st_path = out_dir.join("model.safetensors");
    let n_parameters = hf::write_safetensors(&gguf, &planned, &st_path)?;
    files.push(st_path);

    let mut tensors_by_type = BTreeMap::new();
    for t in gguf.tensors() {
        *tensors_by_type.entry(t.ty.name()).or_insert(0) += 1;
    }
    Ok(ImportReport {
        gguf_path: gguf_path.to_path_buf(),
        out_dir: out_dir.to_path_buf(),
        tensors_by_type,
        n_parameters,
        tie_word_embeddings: config.tie_word_embeddings,
        vocab_size,
        files,
    })
}

fn check_out_dir(out_dir: &Path) -> Result<(), GgufError> {
    match fs::read_dir(out_dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(GgufError::OutputNotEmpty {
                path: out_dir.to_path_buf(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(GgufError::io(out_dir, e)),
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), GgufError> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| GgufError::io(path, e.into()))?;
    text.push('\n');
    fs::write(path, text).map_err(|e| GgufError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{llama_fixture, GgufWriter, TempDir};
    use half::f16;

    #[test]
    fn tiny_gguf_round_trips_metadata_and_tensors() {
        let dir = TempDir::new("roundtrip");
        let mut w = GgufWriter::new();
        w.kv_str("general.architecture", "llama");
        w.kv_u32("general.alignment", 64);
        w.kv_f32("x.float", 0.25);
        w.kv_bool("x.bool", true);
        w.kv_str_array("x.strings", &["a", "b c"]);
        w.kv_i32_array("x.ints", &[-1, 2, 3]);
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        w.tensor_f32("a", &[4, 3], &values);
        let halfs: Vec<u8> = values
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect();
        w.tensor_raw("b", &[12], GgmlType::F16, &halfs);
        let path = dir.path().join("tiny.gguf");
        w.write(&path);

        let g = GgufFile::open(&path).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.alignment(), 64);
        assert_eq!(g.data_offset() % 64, 0);
        assert_eq!(g.architecture().unwrap(), "llama");
        assert_eq!(g.get_f64("x.float").unwrap(), 0.25);
        assert_eq!(g.get_bool_opt("x.bool").unwrap(), Some(true));
        assert_eq!(g.get_str_array("x.strings").unwrap(), vec!["a", "b c"]);
        assert_eq!(g.get_int_array("x.ints").unwrap(), vec![-1, 2, 3]);
        assert!(matches!(
            g.get_str("x.float"),
            Err(GgufError::WrongType { .. })
        ));
        assert!(
            matches!(g.get_str("nope"), Err(GgufError::MissingKey { key, .. }) if key == "nope")
        );

        let a = g.tensor("a").unwrap();
        assert_eq!(
            (a.dims.clone(), a.shape(), a.ty),
            (vec![4, 3], vec![3, 4], GgmlType::F32)
        );
        assert_eq!(g.dequantize("a").unwrap(), values);
        assert_eq!(g.dequantize("b").unwrap(), values);
        assert!(matches!(
            g.dequantize("c"),
            Err(GgufError::MissingTensor { .. })
        ));
    }

    #[test]
    fn bad_inputs_give_the_right_errors() {
        let dir = TempDir::new("bad");
        let path = dir.path().join("bad.gguf");

        std::fs::write(&path, b"GGML\x03\0\0\0rest of a file").unwrap();
        let err = GgufFile::open(&path).unwrap_err();
        assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
        assert!(err.to_string().contains("bad.gguf"), "{err}");

        std::fs::write(&path, b"GGUF\x01\0\0\0").unwrap();
        let err = GgufFile::open(&path).unwrap_err();
        assert!(
            matches!(err, GgufError::UnsupportedVersion { version: 1, .. }),
            "{err}"
        );

        std::fs::write(&path, b"GG").unwrap();
        assert!(matches!(
            GgufFile::open(&path),
            Err(GgufError::Truncated { .. })
        ));

        // A valid file cut anywhere must give an error, never a panic.
        let mut w = GgufWriter::new();
        w.kv_str("general.architecture", "llama");
        w.kv_str_array("tokens", &["x", "y"]);
        w.tensor_f32("t", &[8], &[1.0; 8]);
        let full = w.to_bytes();
        for cut in 0..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let err = GgufFile::open(&path).unwrap_err();
            assert!(
                matches!(err, GgufError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
        }
        std::fs::write(&path, &full).unwrap();
        GgufFile::open(&path).unwrap();

        // A huge array count must not allocate or panic.
        let mut w = GgufWriter::new();
        w.kv_raw(
            "k",
            9,
            &[&4u32.to_le_bytes()[..], &u64::MAX.to_le_bytes()].concat(),
        );
        std::fs::write(&path, w.to_bytes()).unwrap();
        assert!(matches!(
            GgufFile::open(&path),
            Err(GgufError::Truncated { .. })
        ));

        // An unknown type id cannot be sized, so open refuses it by name.
        let mut w = GgufWriter::new();
        w.tensor_raw("weird", &[4], GgmlType::Unknown(99), &[0; 16]);
        std::fs::write(&path, w.to_bytes()).unwrap();
        let err = GgufFile::open(&path).unwrap_err();
        assert!(
            matches!(&err, GgufError::UnsupportedType { tensor, .. } if tensor == "weird"),
            "{err}"
        );

        // A known type without a decoder opens, and dequantizing names the tensor and type.
        let mut w = GgufWriter::new();
        w.tensor_raw("blk.0.ffn_up.weight", &[256], GgmlType::Q2K, &[0; 84]);
        std::fs::write(&path, w.to_bytes()).unwrap();
        let g = GgufFile::open(&path).unwrap();
        let err = g.dequantize("blk.0.ffn_up.weight").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("blk.0.ffn_up.weight") && msg.contains("Q2_K"),
            "{msg}"
        );
    }

    #[test]
    fn import_tiny_llama_unpermutes_and_names_tensors() {
        let dir = TempDir::new("import");
        let fx = llama_fixture(false);
        let gguf_path = dir.path().join("tiny.gguf");
        fx.writer.write(&gguf_path);
        let out = dir.path().join("hf");
        let report = import_to_hf_folder(&gguf_path, &out).unwrap();
        assert!(report.tie_word_embeddings);
        assert_eq!(report.files.len(), 5);
        assert_eq!(report.n_parameters, fx.n_parameters);
        assert!(report.to_string().contains("Q8_0 x1"), "{report}");

        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        assert_eq!(names.len(), fx.hf_tensors.len());
        assert!(!names.contains(&"lm_head.weight"));
        for (name, (shape, values)) in &fx.hf_tensors {
            let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.shape(), shape.as_slice(), "{name}");
            let got: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(&got, values, "{name}");
        }

        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["num_attention_heads"], 4);
        assert_eq!(config["num_key_value_heads"], 2);
        assert_eq!(config["head_dim"], 8);
        assert_eq!(config["tie_word_embeddings"], true);

        // A second import into the now non-empty folder is refused.
        let err = import_to_hf_folder(&gguf_path, &out).unwrap_err();
        assert!(matches!(err, GgufError::OutputNotEmpty { .. }), "{err}");
    }

    #[test]
    fn import_refuses_bad_models_before_writing() {
        let dir = TempDir::new("refuse");
        let gguf_path = dir.path().join("tiny.gguf");
        let out = dir.path().join("hf");
        let try_with = |edit: &dyn Fn(&mut GgufWriter)| {
            let mut fx = llama_fixture(true);
            edit(&mut fx.writer);
            fx.writer.write(&gguf_path);
            let err = import_to_hf_folder(&gguf_path, &out).unwrap_err();
            assert!(!out.exists(), "nothing may be written on error: {err}");
            err
        };
        let err = try_with(&|w| w.set_str("general.architecture", "gpt2"));
        assert!(
            matches!(err, GgufError::UnknownArchitecture { .. }),
            "{err}"
        );
        let err = try_with(&|w| w.set_str("tokenizer.ggml.pre", "klingon"));
        assert!(
            matches!(err, GgufError::UnknownPreTokenizer { .. }),
            "{err}"
        );
        let err = try_with(&|w| w.remove_kv("llama.block_count"));
        assert!(
            matches!(&err, GgufError::MissingKey { key, .. } if key == "llama.block_count"),
            "{err}"
        );
        let err = try_with(&|w| {
            w.tensor_raw("blk.0.ffn_gate.weight", &[256, 1], GgmlType::Q4K, &[0; 144])
        });
        assert!(
            matches!(
                err,
                GgufError::BadShape { .. } | GgufError::UnsupportedType { .. }
            ),
            "{err}"
        );
        let err = try_with(&|w| w.retype_tensor("blk.1.ffn_down.weight", GgmlType::Q3K));
        assert!(
            matches!(&err, GgufError::UnsupportedType { tensor, ty, .. } if tensor == "blk.1.ffn_down.weight" && ty == "Q3_K"),
            "{err}"
        );
        let err = try_with(&|w| w.remove_tensor("blk.1.attn_v.weight"));
        assert!(matches!(err, GgufError::MissingTensor { .. }), "{err}");
        let err = try_with(&|w| w.tensor_f32("rope_freqs.weight", &[2], &[1.0, 1.0]));
        assert!(matches!(err, GgufError::UnmappedTensor { .. }), "{err}");
    }
}
