//! The decoder loop on the tiny fixture models: determinism independent of batching, greedy
//! parity with transformers, EOS handling and input checks.

use decode::{generate, FinishReason, Generation, Request, SamplingParams, Settings};
use lm::{DeviceChoice, DtypeChoice, LoadedModel};

fn load(name: &str) -> LoadedModel {
    LoadedModel::load(
        &test_support::fixture(name),
        DeviceChoice::Cpu,
        DtypeChoice::F32,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn settings(batch_size: usize, seed: u64) -> Settings {
    Settings {
        max_new_tokens: 12,
        min_new_tokens: 0,
        sampling: SamplingParams::default(),
        seed,
        batch_size,
        stop_at_eos: false,
    }
}

fn run(model: &LoadedModel, requests: &[Request], settings: &Settings) -> Vec<Generation> {
    let mut out = Vec::new();
    generate(
        model.model.as_ref(),
        &model.eos_token_ids,
        requests,
        settings,
        |g| {
            out.push(g);
            Ok(())
        },
    )
    .unwrap();
    out.sort_by(|a, b| (&a.prompt_id, a.sample_index).cmp(&(&b.prompt_id, b.sample_index)));
    out
}

fn prompts(model: &LoadedModel) -> Vec<(String, Vec<i64>)> {
    [
        "The quick brown fox",
        "In 1998, the team moved to a new stadium",
        "She said",
        "Once upon a time there was",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| (format!("p{i}"), model.tokenizer.encode(t).unwrap()))
    .collect()
}

#[test]
fn samples_do_not_depend_on_batching() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = load(name);
        let prompts = prompts(&model);
        let requests: Vec<Request> = prompts
            .iter()
            .flat_map(|(id, ids)| Request::samples(id, ids, 5))
            .collect();
        let reference = run(&model, &requests, &settings(1, 7));
        assert_eq!(reference.len(), 20);
        for batch in [3, 7, 32] {
            assert_eq!(
                run(&model, &requests, &settings(batch, 7)),
                reference,
                "{name}: batch {batch}"
            );
        }
        // Another composition: reversed order, and one prompt alone with its samples.
        let reversed: Vec<Request> = requests.iter().rev().cloned().collect();
        assert_eq!(
            run(&model, &reversed, &settings(6, 7)),
            reference,
            "{name}: reversed"
        );
        let alone: Vec<Request> = requests
            .iter()
            .filter(|r| r.prompt_id == "p2")
            .cloned()
            .collect();
        let subset: Vec<Generation> = reference
            .iter()
            .filter(|g| g.prompt_id == "p2")
            .cloned()
            .collect();
        assert_eq!(
            run(&model, &alone, &settings(2, 7)),
            subset,
            "{name}: alone"
        );
        // Samples of one prompt differ from each other, and another seed gives other samples.
        assert_ne!(
            reference[0].token_ids, reference[1].token_ids,
            "{name}: samples differ"
        );
        assert_ne!(
            run(&model, &requests, &settings(7, 8)),
            reference,
            "{name}: seed matters"
        );
        assert!(reference
            .iter()
            .all(|g| g.token_ids.len() == 12 && g.finish_reason == FinishReason::Length));
    }
}

#[test]
fn greedy_loop_matches_transformers() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = load(name);
        let fixture = test_support::fixture(name);
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
                .unwrap();
        let ids: Vec<Vec<i64>> = serde_json::from_value(expected["ids"].clone()).unwrap();
        let greedy: Vec<Vec<i64>> = serde_json::from_value(expected["greedy"].clone()).unwrap();
        let requests: Vec<Request> = ids
            .iter()
            .enumerate()
            .flat_map(|(i, ids)| Request::samples(&format!("s{i}"), ids, 2))
            .collect();
        let settings = Settings {
            max_new_tokens: 12,
            min_new_tokens: 0,
            sampling: SamplingParams::GREEDY,
            seed: 0,
            batch_size: 6,
            stop_at_eos: false,
        };
        for g in run(&model, &requests, &settings) {
            let i: usize = g.prompt_id[1..].parse().unwrap();
            assert_eq!(g.token_ids, greedy[i], "{name}: greedy after sentence {i}");
        }
    }
}

#[test]
fn stops_at_eos_and_drops_the_row() {
    let model = load("tiny-llama");
    // tiny-llama's greedy continuation of sentence 1 is 866 ×4, then 127: make 127 the EOS.
    let ids = model
        .tokenizer
        .encode("In 1998, the team moved to a new stadium")
        .unwrap();
    let other = model.tokenizer.encode("She said that").unwrap();
    let requests = vec![
        Request {
            prompt_id: "a".into(),
            prompt_ids: ids,
            sample_index: 0,
            attempt: 0,
        },
        Request {
            prompt_id: "b".into(),
            prompt_ids: other,
            sample_index: 0,
            attempt: 0,
        },
    ];
    let settings = Settings {
        max_new_tokens: 12,
        min_new_tokens: 0,
        sampling: SamplingParams::GREEDY,
        seed: 0,
        batch_size: 2,
        stop_at_eos: true,
    };
    let mut out = Vec::new();
    generate(model.model.as_ref(), &[127], &requests, &settings, |g| {
        out.push(g);
        Ok(())
    })
    .unwrap();
    assert_eq!(out[0].token_ids, vec![866, 866, 866, 866]);
    assert_eq!(out[0].finish_reason, FinishReason::Eos);
    // The other row continues unaffected after its neighbour left the batch.
    assert_eq!(
        out[1].token_ids,
        vec![556, 602, 251, 251, 251, 251, 204, 204, 204, 251, 251, 251]
    );
    assert_eq!(out[1].finish_reason, FinishReason::Length);
}

#[test]
fn rejects_bad_requests_before_running() {
    let model = load("tiny-gpt2");
    let run_one = |ids: Vec<i64>, max_new_tokens: usize| {
        let request = Request {
            prompt_id: "x".into(),
            prompt_ids: ids,
            sample_index: 0,
            attempt: 0,
        };
        let settings = Settings {
            max_new_tokens,
            min_new_tokens: 0,
            ..settings(1, 0)
        };
        generate(model.model.as_ref(), &[], &[request], &settings, |_| Ok(()))
            .unwrap_err()
            .to_string()
    };
    assert!(run_one(vec![1, 2, 1000], 5).contains("outside the vocabulary"));
    assert!(run_one(vec![], 5).contains("no tokens"));
    assert!(run_one(vec![1; 120], 20).contains("exceed the model's 128 positions"));
}
