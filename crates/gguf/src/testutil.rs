//! Test helpers: a minimal GGUF writer, a tiny llama model, and a self-cleaning temp folder.

use crate::hf::permute_rows;
use crate::quant::GgmlType;
use half::f16;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("gguf-unit-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Tensor {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    data: Vec<u8>,
}

/// Writes GGUF v3 the way llama.cpp does: header, key/values, tensor infos, padding to the
/// alignment, then each tensor's data padded to the alignment.
#[derive(Default)]
pub struct GgufWriter {
    kvs: Vec<(String, u32, Vec<u8>)>,
    tensors: Vec<Tensor>,
    alignment: u64,
}

fn gguf_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend(s.as_bytes());
    out
}

fn type_id(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::Unknown(id) => id,
        known => (0..64).find(|&id| GgmlType::from_id(id) == known).unwrap(),
    }
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            alignment: 32,
            ..Default::default()
        }
    }

    pub fn kv_raw(&mut self, key: &str, ty: u32, payload: &[u8]) {
        self.remove_kv(key);
        self.kvs.push((key.to_string(), ty, payload.to_vec()));
    }

    pub fn remove_kv(&mut self, key: &str) {
        self.kvs.retain(|(k, _, _)| k != key);
    }

    pub fn kv_str(&mut self, key: &str, value: &str) {
        self.kv_raw(key, 8, &gguf_string(value));
    }

    pub fn set_str(&mut self, key: &str, value: &str) {
        self.kv_str(key, value);
    }

    pub fn kv_u32(&mut self, key: &str, value: u32) {
        if key == "general.alignment" {
            self.alignment = value.into();
        }
        self.kv_raw(key, 4, &value.to_le_bytes());
    }

    pub fn kv_f32(&mut self, key: &str, value: f32) {
        self.kv_raw(key, 6, &value.to_le_bytes());
    }

    pub fn kv_bool(&mut self, key: &str, value: bool) {
        self.kv_raw(key, 7, &[u8::from(value)]);
    }

    pub fn kv_str_array(&mut self, key: &str, values: &[&str]) {
        let mut payload = 8u32.to_le_bytes().to_vec();
        payload.extend((values.len() as u64).to_le_bytes());
        for v in values {
            payload.extend(gguf_string(v));
        }
        self.kv_raw(key, 9, &payload);
    }

    pub fn kv_i32_array(&mut self, key: &str, values: &[i32]) {
        let mut payload = 5u32.to_le_bytes().to_vec();
        payload.extend((values.len() as u64).to_le_bytes());
        for v in values {
            payload.extend(v.to_le_bytes());
        }
        self.kv_raw(key, 9, &payload);
    }

    pub fn tensor_raw(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: &[u8]) {
        self.remove_tensor(name);
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty: type_id(ty),
            data: data.to_vec(),
        });
    }

    pub fn tensor_f32(&mut self, name: &str, dims: &[u64], values: &[f32]) {
        let data: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensor_raw(name, dims, GgmlType::F32, &data);
    }

    pub fn remove_tensor(&mut self, name: &str) {
        self.tensors.retain(|t| t.name != name);
    }

    /// Swaps a tensor's type, with zeroed data of the new type's size.
    pub fn retype_tensor(&mut self, name: &str, ty: GgmlType) {
        let t = self.tensors.iter_mut().find(|t| t.name == name).unwrap();
        let (block, size) = ty.block_layout().unwrap();
        let n: u64 = t.dims.iter().product();
        t.ty = type_id(ty);
        t.data = vec![0; (n / block * size) as usize];
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment as usize;
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        for (key, ty, payload) in &self.kvs {
            out.extend(gguf_string(key));
            out.extend(ty.to_le_bytes());
            out.extend(payload);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            out.extend(gguf_string(&t.name));
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset = (offset + t.data.len()).next_multiple_of(align);
        }
        if !self.tensors.is_empty() {
            out.resize(out.len().next_multiple_of(align), 0);
        }
        for t in &self.tensors {
            out.extend(&t.data);
            out.resize(out.len().next_multiple_of(align), 0);
        }
        out
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_bytes()).unwrap();
    }
}

/// Deterministic small integers, so quantized test data is exact.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, modulo: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % modulo
    }
}

/// Data of `n` elements in `ty` with the exact f32 values it decodes to. Scales are powers of two
/// so every value is exact in every type.
fn exact_data(ty: GgmlType, n: usize, rng: &mut Lcg) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut values = Vec::new();
    match ty {
        GgmlType::F32 | GgmlType::F16 => {
            for _ in 0..n {
                let x = (rng.next(64) as f32 - 32.0) * 0.125;
                values.push(x);
                if ty == GgmlType::F32 {
                    bytes.extend(x.to_le_bytes());
                } else {
                    bytes.extend(f16::from_f32(x).to_le_bytes());
                }
            }
        }
        GgmlType::Q8_0 => {
            for _ in 0..n / 32 {
                bytes.extend(f16::from_f32(0.5).to_le_bytes());
                for _ in 0..32 {
                    let q = rng.next(41) as i8 - 20;
                    bytes.push(q as u8);
                    values.push(f32::from(q) * 0.5);
                }
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            for _ in 0..n / 32 {
                let q: Vec<u8> = (0..32).map(|_| rng.next(16) as u8).collect();
                bytes.extend(f16::from_f32(0.25).to_le_bytes());
                if ty == GgmlType::Q4_1 {
                    bytes.extend(f16::from_f32(-1.0).to_le_bytes());
                    values.extend(q.iter().map(|&x| f32::from(x) * 0.25 - 1.0));
                } else {
                    values.extend(q.iter().map(|&x| (f32::from(x) - 8.0) * 0.25));
                }
                bytes.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
            }
        }
        other => panic!("no exact test data for {other}"),
    }
    (bytes, values)
}

pub struct LlamaFixture {
    pub writer: GgufWriter,
    /// HF name -> (shape, values) that the import must produce.
    pub hf_tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pub n_parameters: u64,
}

/// A two-layer llama (hidden 32, 4 heads, 2 KV heads of size 8, FFN 256, vocab 8) with a mix of
/// types, Q/K rows permuted the way convert_hf_to_gguf does.
pub fn llama_fixture(with_output: bool) -> LlamaFixture {
    let (hidden, heads, kv_heads, head_dim, ff, vocab, layers) =
        (32u64, 4u64, 2u64, 8u64, 256u64, 8u64, 2u64);
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama");
    w.kv_u32("llama.block_count", layers as u32);
    w.kv_u32("llama.context_length", 128);
    w.kv_u32("llama.embedding_length", hidden as u32);
    w.kv_u32("llama.feed_forward_length", ff as u32);
    w.kv_u32("llama.attention.head_count", heads as u32);
    w.kv_u32("llama.attention.head_count_kv", kv_heads as u32);
    w.kv_f32("llama.rope.freq_base", 100000.0);
    w.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    w.kv_str("tokenizer.ggml.model", "gpt2");
    w.kv_str("tokenizer.ggml.pre", "smollm");
    w.kv_str_array(
        "tokenizer.ggml.tokens",
        &["<|endoftext|>", "a", "b", "ab", "Ġ", "Ġa", "c", "d"],
    );
    w.kv_i32_array("tokenizer.ggml.token_type", &[3, 1, 1, 1, 1, 1, 1, 1]);
    w.kv_str_array("tokenizer.ggml.merges", &["a b", "Ġ a"]);
    w.kv_u32("tokenizer.ggml.bos_token_id", 0);
    w.kv_u32("tokenizer.ggml.eos_token_id", 0);

    let mut rng = Lcg(7);
    let mut hf_tensors = BTreeMap::new();
    let mut add = |w: &mut GgufWriter,
                   gguf: &str,
                   hf: &str,
                   dims: &[u64],
                   ty: GgmlType,
                   heads: Option<u64>| {
        let n = dims.iter().product::<u64>() as usize;
        let (bytes, values) = exact_data(ty, n, &mut rng);
        let (bytes, hf_values) = match heads {
            // The file holds the permuted rows: permute the decoded values and re-encode (F32).
            Some(h) => {
                let permuted = permute_rows(&values, dims[0] as usize, h as usize);
                (
                    permuted.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    values,
                )
            }
            None => (bytes, values),
        };
        w.tensor_raw(gguf, dims, ty, &bytes);
        let shape = dims.iter().rev().map(|&d| d as usize).collect();
        hf_tensors.insert(hf.to_string(), (shape, hf_values));
    };
    add(
        &mut w,
        "token_embd.weight",
        "model.embed_tokens.weight",
        &[hidden, vocab],
        GgmlType::Q8_0,
        None,
    );
    add(
        &mut w,
        "output_norm.weight",
        "model.norm.weight",
        &[hidden],
        GgmlType::F32,
        None,
    );
    if with_output {
        add(
            &mut w,
            "output.weight",
            "lm_head.weight",
            &[hidden, vocab],
            GgmlType::F16,
            None,
        );
    }
    for l in 0..layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}.weight");
        add(
            &mut w,
            &g("attn_norm"),
            &p("input_layernorm.weight"),
            &[hidden],
            GgmlType::F32,
            None,
        );
        add(
            &mut w,
            &g("ffn_norm"),
            &p("post_attention_layernorm.weight"),
            &[hidden],
            GgmlType::F32,
            None,
        );
        add(
            &mut w,
            &g("attn_q"),
            &p("self_attn.q_proj.weight"),
            &[hidden, heads * head_dim],
            GgmlType::F32,
            Some(heads),
        );
        add(
            &mut w,
            &g("attn_k"),
            &p("self_attn.k_proj.weight"),
            &[hidden, kv_heads * head_dim],
            GgmlType::F32,
            Some(kv_heads),
        );
        add(
            &mut w,
            &g("attn_v"),
            &p("self_attn.v_proj.weight"),
            &[hidden, kv_heads * head_dim],
            GgmlType::Q4_0,
            None,
        );
        add(
            &mut w,
            &g("attn_output"),
            &p("self_attn.o_proj.weight"),
            &[heads * head_dim, hidden],
            GgmlType::F16,
            None,
        );
        add(
            &mut w,
            &g("ffn_gate"),
            &p("mlp.gate_proj.weight"),
            &[hidden, ff],
            GgmlType::Q4_1,
            None,
        );
        add(
            &mut w,
            &g("ffn_up"),
            &p("mlp.up_proj.weight"),
            &[hidden, ff],
            GgmlType::F32,
            None,
        );
        add(
            &mut w,
            &g("ffn_down"),
            &p("mlp.down_proj.weight"),
            &[ff, hidden],
            GgmlType::F32,
            None,
        );
    }
    let n_parameters = hf_tensors.values().map(|(_, v)| v.len() as u64).sum();
    LlamaFixture {
        writer: w,
        hf_tensors,
        n_parameters,
    }
}
