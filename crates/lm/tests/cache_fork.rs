//! The KV cache at its edges: forking rows (`fork_rows`, repeat, reorder, select) and continuing from a fork
//! gives the same hidden states as recomputing each full sequence from scratch — what SASA and
//! RAD rely on when they score every candidate token on a copy of its row's cache.

mod common;

use common::*;
use lm::{left_pad, CausalLm};
use tch::{Device, Tensor};

const TOLERANCE: f64 = 1e-4;

fn full_last_hidden(model: &dyn CausalLm, ids: &[i64]) -> Tensor {
    let (hidden, _) = run_single(model, ids);
    hidden.get(ids.len() as i64 - 1)
}

fn check(name: &str) {
    let loaded = load_cpu_f32(&fixture(name));
    let model = loaded.model.as_ref();
    let prompts: [&[i64]; 3] = [&[5, 17, 300, 42, 9], &[7, 7], &[900, 12, 33, 64]];
    let (ids, mask) = left_pad(&prompts, Device::Cpu);
    let mut cache = model.new_cache();
    let _prompt_hidden = tch::no_grad(|| model.forward_hidden(&ids, &mask, &mut cache));

    // Fork: row 2 twice, row 0 three times, row 1 once, in a scrambled order. The prompt cache
    // stays as it was and is continued on its own at the end.
    let rows = [2i64, 0, 1, 0, 2, 0];
    let prompt_cache = cache;
    let mut cache = prompt_cache.fork_rows(&Tensor::from_slice(&rows));
    let candidates = [11i64, 12, 13, 14, 15, 16];
    let step = Tensor::from_slice(&candidates).view([-1, 1]);
    let hidden = tch::no_grad(|| model.forward_hidden(&step, &step.ones_like(), &mut cache));
    for (slot, (&row, &token)) in rows.iter().zip(&candidates).enumerate() {
        let full: Vec<i64> = prompts[row as usize]
            .iter()
            .copied()
            .chain([token])
            .collect();
        let d = max_abs_diff(
            &hidden.get(slot as i64).get(0),
            &full_last_hidden(model, &full),
        );
        assert!(
            d <= TOLERANCE,
            "{name}: forked row {slot} (prompt {row} + {token}) differs by {d}"
        );
    }

    // A second step on the forked cache, then narrowing back to one row per prompt.
    cache.select_rows(&Tensor::from_slice(&[1i64, 2, 0]));
    let next = Tensor::from_slice(&[21i64, 22, 23]).view([-1, 1]);
    let hidden = tch::no_grad(|| model.forward_hidden(&next, &next.ones_like(), &mut cache));
    for (slot, (&from, &token)) in [1usize, 2, 0].iter().zip(&[21i64, 22, 23]).enumerate() {
        let prompt = prompts[rows[from] as usize];
        let full: Vec<i64> = prompt
            .iter()
            .copied()
            .chain([candidates[from], token])
            .collect();
        let d = max_abs_diff(
            &hidden.get(slot as i64).get(0),
            &full_last_hidden(model, &full),
        );
        assert!(
            d <= TOLERANCE,
            "{name}: second step row {slot} differs by {d}"
        );
    }

    // The fork and the steps on it left the prompt cache alone: continuing it still matches.
    let mut prompt_cache = prompt_cache;
    let last = Tensor::from_slice(&[31i64, 32, 33]).view([-1, 1]);
    let hidden = tch::no_grad(|| model.forward_hidden(&last, &last.ones_like(), &mut prompt_cache));
    for (row, prompt) in prompts.iter().enumerate() {
        let full: Vec<i64> = prompt.iter().copied().chain([31 + row as i64]).collect();
        let d = max_abs_diff(
            &hidden.get(row as i64).get(0),
            &full_last_hidden(model, &full),
        );
        assert!(
            d <= TOLERANCE,
            "{name}: prompt cache row {row} after the fork differs by {d}"
        );
    }

    // repeat_rows and deep_clone: a clone is independent of later steps on the original.
    let snapshot = cache.deep_clone();
    cache.repeat_rows(2);
    assert_eq!(cache.batch_size(), Some(6));
    assert_eq!(snapshot.batch_size(), Some(3));
    assert_eq!(cache.seq_len(), snapshot.seq_len());
}

#[test]
fn forked_cache_rows_match_full_recompute_llama() {
    check("tiny-llama");
}

#[test]
fn forked_cache_rows_match_full_recompute_gpt2() {
    check("tiny-gpt2");
}

/// Decoding past the cache's preallocated capacity (64 positions) grows it without changing
/// results: one token at a time through 100 positions equals one full forward pass.
#[test]
fn cache_growth_keeps_results() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let loaded = load_cpu_f32(&fixture(name));
        let model = loaded.model.as_ref();
        let ids: Vec<i64> = (0..100).map(|i| (i * 37 + 11) % 1000).collect();
        let (full, _) = run_single(model, &ids);
        let mut cache = model.new_cache();
        let first = Tensor::from_slice(&ids[..3]).unsqueeze(0);
        let _ = tch::no_grad(|| model.forward_hidden(&first, &first.ones_like(), &mut cache));
        for (t, &id) in ids.iter().enumerate().skip(3) {
            let step = Tensor::from_slice(&[id]).unsqueeze(0);
            let hidden =
                tch::no_grad(|| model.forward_hidden(&step, &step.ones_like(), &mut cache));
            let d = max_abs_diff(&hidden.get(0).get(0), &full.get(t as i64));
            assert!(d <= TOLERANCE, "{name}: position {t} differs by {d}");
        }
        assert_eq!(cache.seq_len(), 100);
    }
}
