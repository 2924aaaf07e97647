//! Helpers shared by the parity tests: fixture loading and tensor comparison.
#![allow(dead_code)]

use std::collections::HashMap;

use lm::{CausalLm, DeviceChoice, DtypeChoice, KvCache, LoadedModel};
use tch::{Kind, Tensor};

pub use test_support::fixture;

pub fn expected_json(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

pub fn expected_tensors(dir: &std::path::Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("expected.safetensors"))
        .expect("expected.safetensors")
        .into_iter()
        .collect()
}

pub fn ids_of(value: &serde_json::Value) -> Vec<Vec<i64>> {
    value
        .as_array()
        .expect("array of id lists")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("id list")
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect()
        })
        .collect()
}

pub fn load_cpu_f32(dir: &std::path::Path) -> LoadedModel {
    LoadedModel::load(dir, DeviceChoice::Cpu, DtypeChoice::F32).unwrap_or_else(|e| panic!("{e:#}"))
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Runs one unpadded sequence; returns (hidden [T, H], logits [T, V]).
pub fn run_single(model: &dyn CausalLm, ids: &[i64]) -> (Tensor, Tensor) {
    let input = Tensor::from_slice(ids).unsqueeze(0);
    let mask = input.ones_like();
    let mut cache = model.new_cache();
    let hidden = tch::no_grad(|| model.forward_hidden(&input, &mask, &mut cache));
    let logits = model.logits(&hidden);
    (hidden.squeeze_dim(0), logits.squeeze_dim(0))
}

/// Greedy continuation of `ids` by `steps` tokens, one cached token at a time (no EOS stop).
pub fn greedy_cached(model: &dyn CausalLm, ids: &[i64], steps: usize) -> Vec<i64> {
    tch::no_grad(|| {
        let mut cache: KvCache = model.new_cache();
        let mut input = Tensor::from_slice(ids).unsqueeze(0);
        let mut out = Vec::with_capacity(steps);
        for _ in 0..steps {
            let mask = input.ones_like();
            let hidden = model.forward_hidden(&input, &mask, &mut cache);
            let last = hidden.select(1, -1);
            let next = model.logits(&last).argmax(-1, false).int64_value(&[0]);
            out.push(next);
            input = Tensor::from_slice(&[next]).unsqueeze(0);
        }
        out
    })
}
