//! Word filtering on the tiny fixture model (random weights, 1,000-token vocabulary): the words
//! banned are ones the unfiltered model does produce, so each check below can fail.
//!
//! - Decode time: no banned token sequence ever appears in the generated tokens (counting
//!   sequences whose prefix lies in the prompt); the text rule, even alone, keeps every listed
//!   word out of the continuation text.
//! - Post hoc: a sample drawn once is the unfiltered sample; redraws use attempts 1, 2, …; results
//!   do not depend on the batch size; methods passed in are prepared once and applied to redraws.

use std::collections::HashMap;

use anyhow::Result;
use decode::{generate_steered, Generation, Request, SamplingParams, Settings, Steering, Step};
use filter::{
    banned_sequences, generate_posthoc, PosthocFilter, PosthocSample, TextRule, WordFilter,
    WordList, WordMatcher,
};
use lm::{CausalLm, DeviceChoice, DtypeChoice, LoadedModel};
use tch::Tensor;

fn load() -> LoadedModel {
    LoadedModel::load(
        &test_support::tiny_llama(),
        DeviceChoice::Cpu,
        DtypeChoice::F32,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn settings(batch_size: usize) -> Settings {
    Settings {
        max_new_tokens: 16,
        min_new_tokens: 0,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.9),
        },
        seed: 11,
        batch_size,
        stop_at_eos: false,
    }
}

fn requests(model: &LoadedModel) -> Vec<Request> {
    [
        "The quick brown fox",
        "She said that",
        "In 1998, the team moved to",
    ]
    .iter()
    .enumerate()
    .flat_map(|(i, t)| Request::samples(&format!("p{i}"), &model.tokenizer.encode(t).unwrap(), 8))
    .collect()
}

fn run(
    model: &LoadedModel,
    settings: &Settings,
    steering: &mut [Box<dyn Steering + '_>],
) -> Vec<Generation> {
    let mut out = Vec::new();
    generate_steered(
        model.model.as_ref(),
        &[],
        &requests(model),
        settings,
        steering,
        |g| {
            out.push(g);
            Ok(())
        },
    )
    .unwrap();
    out
}

/// The words the unfiltered model writes most often (letters only, at least three) whose every
/// spelling is two or more tokens, so that only the multi-token rule can ban them.
fn frequent_words(model: &LoadedModel, plain: &[Generation], how_many: usize) -> WordList {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for g in plain {
        let text = model.tokenizer.decode(&g.token_ids).unwrap();
        for word in text.split(|c: char| !c.is_alphabetic()) {
            if word.chars().count() >= 3 {
                *counts.entry(word.to_lowercase()).or_default() += 1;
            }
        }
    }
    let mut by_count: Vec<(String, usize)> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let multi_token = by_count.iter().map(|(w, _)| w).filter(|word| {
        let alone = WordList::from_entries([word]).unwrap();
        banned_sequences(&alone, &model.tokenizer)
            .unwrap()
            .iter()
            .all(|s| s.len() >= 2)
    });
    WordList::from_entries(multi_token.take(how_many)).unwrap()
}

/// Occurrences of banned sequences whose last token is a generated one (the prefix may lie in
/// the prompt), as (prompt id, sample index, sequence).
fn banned_occurrences(
    requests: &[Request],
    generations: &[Generation],
    sequences: &[Vec<i64>],
) -> Vec<(String, u64, Vec<i64>)> {
    let mut found = Vec::new();
    for g in generations {
        let request = requests
            .iter()
            .find(|r| r.prompt_id == g.prompt_id && r.sample_index == g.sample_index)
            .unwrap();
        let context: Vec<i64> = request
            .prompt_ids
            .iter()
            .chain(&g.token_ids)
            .copied()
            .collect();
        for sequence in sequences {
            for end in request.prompt_ids.len()..context.len() {
                if end + 1 >= sequence.len()
                    && context[end + 1 - sequence.len()..=end] == sequence[..]
                {
                    found.push((g.prompt_id.clone(), g.sample_index, sequence.clone()));
                }
            }
        }
    }
    found
}

fn texts_with_listed_words(
    model: &LoadedModel,
    matcher: &WordMatcher,
    generations: &[Generation],
) -> Vec<(String, String)> {
    generations
        .iter()
        .filter_map(|g| {
            let text = model.tokenizer.decode(&g.token_ids).unwrap();
            matcher
                .contains_listed_word(&text)
                .map(|entry| (entry.to_string(), text))
        })
        .collect()
}

#[test]
fn decode_time_filtering_never_generates_a_banned_sequence() {
    let model = load();
    let settings = settings(8);
    let plain = run(&model, &settings, &mut []);
    let list = frequent_words(&model, &plain, 12);
    let matcher = WordMatcher::new(&list).unwrap();
    let requests = requests(&model);

    let mut sequences_only = WordFilter::sequences_only(&list, &model.tokenizer).unwrap();
    let sequences = sequences_only.sequences().to_vec();
    assert!(sequences.iter().any(|s| s.len() > 1), "{sequences:?}");
    let unfiltered = banned_occurrences(&requests, &plain, &sequences);
    assert!(
        !unfiltered.is_empty(),
        "the unfiltered run should contain banned sequences"
    );
    assert!(!texts_with_listed_words(&model, &matcher, &plain).is_empty());

    let filtered = {
        let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut sequences_only)];
        run(&model, &settings, &mut steering)
    };
    assert_eq!(filtered.len(), plain.len());
    let found = banned_occurrences(&requests, &filtered, &sequences);
    assert!(found.is_empty(), "banned sequences generated: {found:?}");
    assert!(sequences_only.prefix_matches() > 0);
    let sequence_rule_leaks = texts_with_listed_words(&model, &matcher, &filtered).len();

    // The text rule alone (no token sequences) already keeps every listed word out of the text.
    let mut text_only = WordFilter::from_sequences(Vec::new())
        .unwrap()
        .with_text_rule(TextRule::new(&list, &model.tokenizer).unwrap());
    let filtered = {
        let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut text_only)];
        run(&model, &settings, &mut steering)
    };
    let leaks = texts_with_listed_words(&model, &matcher, &filtered);
    assert!(
        leaks.is_empty(),
        "listed words with the text rule alone: {leaks:?}"
    );
    assert!(text_only.text_rule_steps() > 0);

    // With both rules, neither a banned sequence nor a listed word in the text.
    let mut both_rules = WordFilter::from_list(&list, &model.tokenizer).unwrap();
    let filtered = {
        let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut both_rules)];
        run(&model, &settings, &mut steering)
    };
    assert!(banned_occurrences(&requests, &filtered, &sequences).is_empty());
    let leaks = texts_with_listed_words(&model, &matcher, &filtered);
    assert!(leaks.is_empty(), "listed words in filtered text: {leaks:?}");
    eprintln!(
        "{} entries, {} sequences; unfiltered: {} banned sequences; sequence rule alone: {} \
         texts with listed words; text rule steps: {}",
        list.len(),
        sequences.len(),
        unfiltered.len(),
        sequence_rule_leaks,
        both_rules.text_rule_steps()
    );
}

/// Counts hook calls, to check how the post-hoc loop drives the methods passed to it.
#[derive(Default)]
struct CountCalls {
    prepares: usize,
    begins: usize,
    rows_begun: usize,
}

impl Steering for CountCalls {
    fn name(&self) -> &str {
        "count"
    }
    fn prepare(&mut self, _model: &dyn CausalLm) -> Result<()> {
        self.prepares += 1;
        Ok(())
    }
    fn begin(&mut self, rows: &[&Request]) -> Result<()> {
        self.begins += 1;
        self.rows_begun += rows.len();
        Ok(())
    }
    fn adjust_logits(&mut self, _step: &Step, _logits: &mut Tensor) -> Result<()> {
        Ok(())
    }
}

fn posthoc(
    model: &LoadedModel,
    settings: &Settings,
    steering: &mut [Box<dyn Steering + '_>],
    filter: &PosthocFilter,
) -> (Vec<PosthocSample>, filter::PosthocTotals) {
    let mut out = Vec::new();
    let totals = generate_posthoc(
        model.model.as_ref(),
        &[],
        &requests(model),
        settings,
        steering,
        filter,
        &model.tokenizer,
        |s| {
            out.push(s);
            Ok(())
        },
    )
    .unwrap();
    out.sort_by(|a, b| {
        (&a.generation.prompt_id, a.generation.sample_index)
            .cmp(&(&b.generation.prompt_id, b.generation.sample_index))
    });
    (out, totals)
}

#[test]
fn posthoc_redraws_rejected_samples_in_batches() {
    let model = load();
    let plain = run(&model, &settings(8), &mut []);
    let list = frequent_words(&model, &plain, 3);
    let matcher = WordMatcher::new(&list).unwrap();
    let rejected_plain = texts_with_listed_words(&model, &matcher, &plain).len();
    assert!(rejected_plain > 0);
    let filter = PosthocFilter {
        matcher: WordMatcher::new(&list).unwrap(),
        max_retries: 10,
    };

    let mut counter = CountCalls::default();
    let (samples, totals) = {
        let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut counter)];
        posthoc(&model, &settings(8), &mut steering, &filter)
    };
    let n = plain.len();
    assert_eq!(samples.len(), n);
    assert_eq!(totals.samples, n);
    assert_eq!(totals.rejected_first_draws, rejected_plain);
    assert!(totals.redraws >= rejected_plain as u64);
    assert_eq!(
        totals.redraws,
        samples.iter().map(|s| s.redraws).sum::<u64>()
    );
    assert_eq!(totals.generation.samples as u64, n as u64 + totals.redraws);
    // Prepared once; every draw (first draws and redraws) went through the method.
    assert_eq!(counter.prepares, 1);
    assert_eq!(counter.rows_begun as u64, n as u64 + totals.redraws);
    // Redraws share batches with fresh requests: as many batches as full ones need, plus at
    // most the tail.
    let draws = n + totals.redraws as usize;
    assert!(
        counter.begins <= draws.div_ceil(8) + 10,
        "{} batches",
        counter.begins
    );

    let mut sorted_plain = plain.clone();
    sorted_plain
        .sort_by(|a, b| (&a.prompt_id, a.sample_index).cmp(&(&b.prompt_id, b.sample_index)));
    for (sample, first) in samples.iter().zip(&sorted_plain) {
        assert_eq!(sample.generation.attempt, sample.redraws);
        assert_eq!(
            sample.text,
            model
                .tokenizer
                .decode(&sample.generation.token_ids)
                .unwrap()
        );
        if sample.redraws == 0 {
            assert_eq!(
                &sample.generation, first,
                "a first draw is the unfiltered sample"
            );
            assert!(sample.still_matched.is_none());
        } else {
            assert_ne!(sample.generation.token_ids, first.token_ids);
        }
        match &sample.still_matched {
            Some(entry) => {
                assert_eq!(sample.redraws, 10);
                assert_eq!(
                    matcher.contains_listed_word(&sample.text),
                    Some(entry.as_str())
                );
            }
            None => assert_eq!(matcher.contains_listed_word(&sample.text), None),
        }
    }
    assert_eq!(
        totals.still_matched,
        samples.iter().filter(|s| s.still_matched.is_some()).count()
    );

    // The same samples whatever the batch size (each draw has its own seeded stream).
    let (other_batching, other_totals) = posthoc(&model, &settings(3), &mut [], &filter);
    assert_eq!(other_batching, samples);
    assert_eq!(other_totals.redraws, totals.redraws);

    // No retries: rejected samples are kept and flagged.
    let flag_only = PosthocFilter {
        matcher: WordMatcher::new(&list).unwrap(),
        max_retries: 0,
    };
    let (flagged, flag_totals) = posthoc(&model, &settings(8), &mut [], &flag_only);
    assert_eq!(flag_totals.redraws, 0);
    assert_eq!(flag_totals.still_matched, rejected_plain);
    assert_eq!(
        flagged.iter().map(|s| &s.generation).collect::<Vec<_>>(),
        sorted_plain.iter().collect::<Vec<_>>()
    );
}

#[test]
fn both_modes_compose() {
    let model = load();
    let plain = run(&model, &settings(8), &mut []);
    let list = frequent_words(&model, &plain, 12);
    let filter = PosthocFilter {
        matcher: WordMatcher::new(&list).unwrap(),
        max_retries: 10,
    };
    let mut decode_filter = WordFilter::from_list(&list, &model.tokenizer).unwrap();
    let (samples, totals) = {
        let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut decode_filter)];
        posthoc(&model, &settings(8), &mut steering, &filter)
    };
    // Decode-time filtering with the text rule leaves nothing for the post-hoc check.
    assert_eq!(totals.rejected_first_draws, 0);
    assert_eq!(totals.redraws, 0);
    assert!(samples.iter().all(|s| s.still_matched.is_none()));
    assert!(decode_filter.prefix_matches() > 0);
    // And the decoder loop without post-hoc gives the same samples.
    let mut again = WordFilter::from_list(&list, &model.tokenizer).unwrap();
    let mut direct = {
        let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut again)];
        run(&model, &settings(8), &mut steering)
    };
    direct.sort_by(|a, b| (&a.prompt_id, a.sample_index).cmp(&(&b.prompt_id, b.sample_index)));
    let kept: Vec<&Generation> = samples.iter().map(|s| &s.generation).collect();
    assert_eq!(kept, direct.iter().collect::<Vec<_>>());
    // The decode filter changed the samples.
    let mut sorted_plain = plain.clone();
    sorted_plain
        .sort_by(|a, b| (&a.prompt_id, a.sample_index).cmp(&(&b.prompt_id, b.sample_index)));
    assert_ne!(direct, sorted_plain);
}
