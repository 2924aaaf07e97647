//! The steering hooks of the decoder loop, on the tiny fixture models: a logit ban is never
//! drawn, hooks see consistent rows, and a lookahead (the model run on every candidate) gives
//! exactly the tokens of the plain loop.

use anyhow::Result;
use decode::{
    generate_steered, Candidates, Generation, Lookahead, Request, SamplingParams, Settings,
    Steering, Step,
};
use lm::{DeviceChoice, DtypeChoice, LoadedModel};
use tch::{Kind, Tensor};

fn load(name: &str) -> LoadedModel {
    LoadedModel::load(
        &test_support::fixture(name),
        DeviceChoice::Cpu,
        DtypeChoice::F32,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn settings(batch_size: usize, stop_at_eos: bool) -> Settings {
    Settings {
        max_new_tokens: 10,
        min_new_tokens: 0,
        sampling: SamplingParams {
            temperature: 1.0,
            top_k: Some(8),
            top_p: Some(0.95),
        },
        seed: 3,
        batch_size,
        stop_at_eos,
    }
}

fn requests(model: &LoadedModel) -> Vec<Request> {
    ["The quick brown fox", "She said", "In 1998, the team moved"]
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            Request::samples(&format!("p{i}"), &model.tokenizer.encode(t).unwrap(), 4)
        })
        .collect()
}

fn collect(
    model: &LoadedModel,
    eos: &[i64],
    settings: &Settings,
    steering: &mut [Box<dyn Steering + '_>],
) -> Vec<Generation> {
    let mut out = Vec::new();
    generate_steered(
        model.model.as_ref(),
        eos,
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

/// Bans a fixed set of tokens by setting their logits to −∞.
struct Ban(Vec<i64>);

impl Steering for Ban {
    fn name(&self) -> &str {
        "ban"
    }
    fn adjust_logits(&mut self, _step: &Step, logits: &mut Tensor) -> Result<()> {
        let ids = Tensor::from_slice(&self.0);
        let _ = logits.index_fill_(1, &ids, f64::NEG_INFINITY);
        Ok(())
    }
}

/// Runs the model on every candidate (as SASA does), or on the first `cover` of each row, and
/// hands the loop the result; also checks that the rows the hooks see agree with what was drawn.
struct RunEveryCandidate {
    generated: Vec<Vec<i64>>,
    lookaheads: usize,
    cover: usize,
    /// Break the offsets (a malformed lookahead must be refused).
    bad_offsets: bool,
    /// This step's covered candidates per row, and the draws that fell outside them.
    covered: Vec<Vec<i64>>,
    uncovered_draws: usize,
}

impl RunEveryCandidate {
    fn new(cover: usize) -> Self {
        Self {
            generated: Vec::new(),
            lookaheads: 0,
            cover,
            bad_offsets: false,
            covered: Vec::new(),
            uncovered_draws: 0,
        }
    }
}

impl Steering for RunEveryCandidate {
    fn name(&self) -> &str {
        "lookahead"
    }
    fn begin(&mut self, rows: &[&Request]) -> Result<()> {
        self.generated = vec![Vec::new(); rows.len()];
        Ok(())
    }
    fn adjust_candidates(
        &mut self,
        step: &Step,
        candidates: &mut [Candidates],
    ) -> Result<Option<Lookahead>> {
        assert_eq!(step.rows.len(), self.generated.len());
        for (row, mine) in step.rows.iter().zip(&self.generated) {
            assert_eq!(row.generated, mine.as_slice());
        }
        let mut offsets = vec![0];
        let mut fork_rows = Vec::new();
        let mut ids = Vec::new();
        for (row, cand) in candidates.iter().enumerate() {
            let run = cand.len().min(self.cover);
            fork_rows.extend(std::iter::repeat_n(row as i64, run));
            ids.extend_from_slice(&cand.ids[..run]);
            offsets.push(ids.len());
        }
        self.covered = candidates
            .iter()
            .map(|c| c.ids[..c.len().min(self.cover)].to_vec())
            .collect();
        if self.bad_offsets {
            offsets.pop();
        }
        let mut cache = step.cache.fork_rows(&Tensor::from_slice(&fork_rows));
        let input = Tensor::from_slice(&ids).view([-1, 1]);
        let hidden = step
            .model
            .forward_hidden(&input, &input.ones_like().to_kind(Kind::Int64), &mut cache)
            .select(1, -1);
        self.lookaheads += 1;
        Ok(Some(Lookahead {
            cache,
            hidden,
            offsets,
        }))
    }
    fn observe(&mut self, _step: &Step, tokens: &[i64]) -> Result<()> {
        for (mine, &t) in self.generated.iter_mut().zip(tokens) {
            mine.push(t);
        }
        for (covered, t) in self.covered.iter().zip(tokens) {
            self.uncovered_draws += usize::from(!covered.contains(t));
        }
        Ok(())
    }
    fn retain_rows(&mut self, keep: &[usize]) -> Result<()> {
        self.generated = keep.iter().map(|&k| self.generated[k].clone()).collect();
        Ok(())
    }
}

#[test]
fn banned_tokens_are_never_drawn() {
    let model = load("tiny-llama");
    let plain = collect(&model, &[], &settings(5, false), &mut []);
    // Ban the tokens the plain run drew most often.
    let mut counts = std::collections::HashMap::new();
    for g in &plain {
        for &t in &g.token_ids {
            *counts.entry(t).or_insert(0) += 1;
        }
    }
    let mut by_count: Vec<(i64, i32)> = counts.into_iter().collect();
    by_count.sort_by_key(|&(t, c)| (-c, t));
    let banned: Vec<i64> = by_count.iter().take(5).map(|&(t, _)| t).collect();
    let steered = collect(
        &model,
        &[],
        &settings(5, false),
        &mut [Box::new(Ban(banned.clone()))],
    );
    assert_eq!(steered.len(), plain.len());
    for g in &steered {
        assert!(g.token_ids.iter().all(|t| !banned.contains(t)), "{g:?}");
    }
    assert_ne!(steered, plain);
}

#[test]
fn a_lookahead_reproduces_the_plain_loop() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = load(name);
        // A token the tiny model draws often serves as end-of-sequence, so rows finish at
        // different steps and the row bookkeeping (retain_rows, cache selection) is exercised.
        let common = {
            let plain = collect(&model, &[], &settings(5, false), &mut []);
            let mut counts = std::collections::HashMap::new();
            for g in &plain {
                for &t in &g.token_ids[1..] {
                    *counts.entry(t).or_insert(0) += 1;
                }
            }
            counts.into_iter().max_by_key(|&(t, c)| (c, -t)).unwrap().0
        };
        for stop_at_eos in [false, true] {
            let settings = settings(5, stop_at_eos);
            let eos = [common];
            let plain = collect(&model, &eos, &settings, &mut []);
            let mut method = RunEveryCandidate::new(usize::MAX);
            let steered = {
                let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut method)];
                collect(&model, &eos, &settings, &mut steering)
            };
            assert_eq!(steered, plain, "{name}, stop at eos {stop_at_eos}");
            assert!(method.lookaheads > 0);
            if stop_at_eos {
                let lengths: std::collections::BTreeSet<usize> =
                    plain.iter().map(|g| g.token_ids.len()).collect();
                assert!(
                    lengths.len() > 1,
                    "{name}: rows should finish at different steps"
                );
            }
        }
    }
}

/// A lookahead over only the first two candidates of each row, with every logit left as it was:
/// on steps where a row draws past them the loop runs the model itself, and the tokens are still
/// exactly the plain loop's.
#[test]
fn a_partial_lookahead_falls_back_where_it_does_not_cover_the_draw() {
    let model = load("tiny-llama");
    let settings = settings(5, false);
    let plain = collect(&model, &[], &settings, &mut []);
    let mut method = RunEveryCandidate::new(2);
    let steered = {
        let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut method)];
        collect(&model, &[], &settings, &mut steering)
    };
    assert_eq!(steered, plain);
    assert!(method.lookaheads > 0);
    assert!(
        method.uncovered_draws > 0,
        "some draws should fall past the first two candidates"
    );
}

#[test]
fn a_malformed_lookahead_is_refused() {
    let model = load("tiny-llama");
    let mut method = RunEveryCandidate::new(usize::MAX);
    method.bad_offsets = true;
    let mut steering: Vec<Box<dyn Steering + '_>> = vec![Box::new(&mut method)];
    let error = generate_steered(
        model.model.as_ref(),
        &[],
        &requests(&model),
        &settings(5, false),
        &mut steering,
        |_| Ok(()),
    )
    .unwrap_err();
    assert!(format!("{error:#}").contains("offsets"), "{error:#}");
}

/// Pushes end-of-sequence as hard as a method can: its logits overwritten with the largest value
/// (so truncation keeps it), then raised far above every other candidate.
struct PreferEos(Vec<i64>);

impl Steering for PreferEos {
    fn name(&self) -> &str {
        "prefer-eos"
    }
    fn adjust_logits(&mut self, _step: &Step, logits: &mut Tensor) -> Result<()> {
        let ids = Tensor::from_slice(&self.0);
        let top = logits.max().double_value(&[]);
        let _ = logits.index_fill_(1, &ids, top);
        Ok(())
    }
    fn adjust_candidates(
        &mut self,
        _step: &Step,
        candidates: &mut [Candidates],
    ) -> Result<Option<Lookahead>> {
        for cand in candidates {
            for (id, z) in cand.ids.iter().zip(cand.logits.iter_mut()) {
                if self.0.contains(id) {
                    *z = 1e4;
                }
            }
        }
        Ok(None)
    }
}

/// `min_new_tokens` holds whatever a method does: without steering every sample reaches it
/// (end-of-sequence a common token), and a method that overwrites end-of-sequence's logit with
/// a huge value, before and after truncation, still cannot stop a sample earlier — and stops
/// every sample right at it.
#[test]
fn min_new_tokens_holds_against_any_method() {
    for name in ["tiny-llama", "tiny-gpt2"] {
        let model = load(name);
        let plain = collect(&model, &[], &settings(6, false), &mut []);
        let mut counts = std::collections::HashMap::new();
        for g in &plain {
            for &t in &g.token_ids {
                *counts.entry(t).or_insert(0) += 1;
            }
        }
        let eos: Vec<i64> = {
            let mut by_count: Vec<(i64, i64)> = counts.into_iter().collect();
            by_count.sort_by_key(|&(t, c)| (-c, t));
            by_count.iter().take(3).map(|&(t, _)| t).collect()
        };
        let min = 4;
        let fixed = Settings {
            min_new_tokens: min,
            ..settings(6, true)
        };
        let free = collect(&model, &eos, &settings(6, true), &mut []);
        assert!(
            free.iter().any(|g| g.token_ids.len() < min),
            "{name}: without the floor some sample should stop early"
        );
        for g in collect(&model, &eos, &fixed, &mut []) {
            assert!(g.token_ids.len() >= min, "{name}: {g:?}");
            assert!(g.token_ids[..min].iter().all(|t| !eos.contains(t)));
        }
        // Top-k alone, so the candidates keep other tokens beside end-of-sequence.
        let fixed_top_k = Settings {
            sampling: SamplingParams {
                top_p: None,
                ..fixed.sampling
            },
            ..fixed
        };
        let mut pushy: Vec<Box<dyn Steering>> = vec![Box::new(PreferEos(eos.clone()))];
        for g in collect(&model, &eos, &fixed_top_k, &mut pushy) {
            assert_eq!(g.token_ids.len(), min, "{name}: {g:?}");
            assert_eq!(g.finish_reason, decode::FinishReason::Eos);
        }
    }
}
