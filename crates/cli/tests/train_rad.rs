//! `detox train rad-reward` end to end on the tiny Llama fixture and a little real labelled data:
//! it prints held-out MSE and ROC-AUC, writes a head that loads for that backbone, reuses its
//! feature cache; and the head decodes from a spec, stacked after the word filter.

use std::path::Path;

mod common;
use common::{detox, read_cells};

fn scratch(name: &str) -> std::path::PathBuf {
    common::scratch("train-rad", name)
}

#[test]
fn train_rad_reward_writes_a_head_that_decodes_in_a_stack() {
    let model = paths::require(&paths::fixture_dir("tiny-llama"), "tiny-llama")
        .unwrap_or_else(|e| panic!("{e}"));
    let model = model.to_str().unwrap();
    let dir = scratch("fit");
    let out = dir.join("tiny-rad.json");
    let cache = dir.join("cache");
    let args = [
        "train",
        "rad-reward",
        "--backbone",
        model,
        "--layers",
        "1",
        "--device",
        "cpu",
        "--data",
        "toxigen",
        "--evaluate",
        "jigsaw",
        "--per-label",
        "40",
        "--out",
        out.to_str().unwrap(),
        "--feature-cache",
        cache.to_str().unwrap(),
    ];
    let first = detox(&dir, &args);
    let stdout = String::from_utf8_lossy(&first.stdout);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    for line in [
        "train: MSE",
        "held-out toxigen: MSE",
        "held-out jigsaw: MSE",
        "held-out, sources fitted on:",
        "held-out, every source:",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    assert!(stderr.contains("first 1 of 2 blocks"), "{stderr}");

    let head = rad::RewardHead::load_for_backbone(&out, Path::new(model))
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!((head.layers, head.total_layers), (1, 2));
    assert_eq!(head.w.len(), 64);
    assert_eq!(head.backbone.folder, "tiny-llama");
    let fit = &head.fit;
    assert!(fit.sources["toxigen"].train > 0);
    assert_eq!(fit.sources["jigsaw"].train, 0, "jigsaw is only measured");
    let held_out = fit.held_out.as_ref().expect("held-out metrics");
    assert_eq!(held_out.texts, fit.sources["toxigen"].held_out);
    assert!(held_out.mse.is_finite() && held_out.prefix_loss.is_finite());
    assert!(fit.train_prefixes > fit.train_texts);
    assert!(fit.procedure.contains("--layers 1"), "{}", fit.procedure);

    // The second run runs nothing: every part comes from the cache, and the head is the same.
    let second = detox(&dir, &args);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(!stderr.contains(" ran "), "{stderr}");
    assert_eq!(stderr.matches(" texts from ").count(), 3, "{stderr}");
    assert_eq!(rad::RewardHead::load(&out).unwrap().w, head.w);

    // Decoding: plain sampling and word_filter + RAD from one spec.
    let prompts = paths::project_root().join("configs/prompts/rtp-style.jsonl");
    let text = format!(
        "name: rad\noutput: out\nmodels:\n  - {{ name: tiny, path: {model}, format: hf }}\n\
         methods:\n  - name: none\n  - label: filter+rad\n    stack:\n      - {{ name: word_filter }}\n      - {{ name: rad, strength: 50, params: {{ reward: {}, top_k: 5 }} }}\n\
         prompts:\n  - {{ name: rtp, kind: user, path: {}, sample: 10, seed: 0 }}\n\
         generation: {{ samples_per_prompt: 2, max_new_tokens: 8, batch_size: 16, device: cpu }}\n\
         scorers: [profanity]\njudge: same\n",
        out.display(),
        prompts.display()
    );
    std::fs::write(dir.join("exp.yaml"), text).unwrap();
    let run = detox(&dir, &["run", "exp.yaml"]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("| filter+rad"), "{stdout}");
    let cells = read_cells(&dir.join("out"));
    for cell in &cells {
        assert_eq!(cell.lines.len(), 20);
        if cell.method == "word_filter+rad" {
            let counters = &cell.counters;
            let total = |name: &str| {
                counters[name]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{counters}"))
            };
            // RAD scored at most 5 candidates per row-step and drew only among them.
            assert!(total("rad_candidate_rows") <= 5.0 * total("rad_row_steps"));
            assert_eq!(total("rad_drawn_rewards"), total("rad_row_steps"));
        }
    }
    let texts: Vec<&Vec<String>> = cells.iter().map(|c| &c.lines).collect();
    assert_eq!(texts.len(), 2);
    assert_ne!(texts[0], texts[1], "RAD at β 50 must change samples");
    std::fs::remove_dir_all(&dir).unwrap();
}
