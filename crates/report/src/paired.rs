//! Paired differences against the baseline: per cell with a baseline ([`crate::pairing`]) and
//! per scorer both cells have, `cell − baseline` in toxic-sample share, EMT, toxic rate, mean
//! perplexity and mean length in tokens, each with a paired bootstrap 95 % interval over prompts
//! ([`metrics::paired_difference`]: one resample of prompts applied to both cells; resamples and
//! seed from the cell's metric policy).
//!
//! Prompts are joined by id; prompts only one of the two cells has are left out of the
//! differences and counted. Perplexity needs the per-prompt sums evaluation records since this
//! version (`perplexity_by_prompt`); for an older record its difference is absent and the row
//! says why. Length is over all samples (it does not depend on the scorer).

use std::collections::HashMap;

use anyhow::Result;
use metrics::{paired_difference, PairedDifference, RatioTerm};
use records::PromptRow;

use crate::load::CellOutputs;
use crate::pairing::{Baseline, CellPairing};

/// The per-prompt inputs of one cell, read once.
struct CellPrompts {
    /// Prompt id → position.
    index: HashMap<String, usize>,
    ids: Vec<String>,
    /// Per scorer (in `metrics.json` order), per prompt.
    rows: Vec<Vec<PromptRow>>,
    /// Per prompt: summed new tokens over its samples, weight = samples.
    tokens: Vec<RatioTerm>,
    /// Per prompt id: kept perplexities (sum, count); `None` when the record has none.
    perplexity: Option<HashMap<String, RatioTerm>>,
}

fn read_prompts(cell: &CellOutputs) -> Result<CellPrompts> {
    let samples = cell.samples()?;
    let metrics = cell.metrics.as_ref().expect("samples() checked");
    let rows = (0..samples.scorers.len())
        .map(|k| samples.prompt_rows(k, &metrics.policy))
        .collect::<Result<Vec<_>>>()?;
    let tokens = samples
        .prompts
        .iter()
        .map(|p| RatioTerm {
            sum: p
                .samples
                .iter()
                .map(|&i| samples.generations[i].token_ids.len() as f64)
                .sum(),
            weight: p.samples.len() as f64,
        })
        .collect();
    let by_prompt = &metrics.results.perplexity_by_prompt;
    let perplexity = (!by_prompt.is_empty()).then(|| {
        by_prompt
            .iter()
            .map(|p| {
                let term = RatioTerm {
                    sum: p.sum,
                    weight: p.kept as f64,
                };
                (p.prompt_id.clone(), term)
            })
            .collect()
    });
    let ids: Vec<String> = samples.prompts.iter().map(|p| p.id.clone()).collect();
    Ok(CellPrompts {
        index: ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect(),
        ids,
        rows,
        tokens,
        perplexity,
    })
}

/// One cell × scorer against its baseline.
#[derive(Debug, Clone)]
pub struct PairedRow {
    pub cell_id: String,
    pub baseline_id: String,
    pub model: String,
    pub prompt_set: String,
    pub seed: u64,
    pub method_setting: String,
    pub baseline_setting: String,
    pub scorer: String,
    /// The baseline was inferred for a record that names none.
    pub inferred: bool,
    pub prompts_joined: usize,
    pub only_in_cell: usize,
    pub only_in_baseline: usize,
    pub toxic_samples: PairedDifference,
    pub emt: PairedDifference,
    pub toxic_rate: PairedDifference,
    /// `None` when either record lacks per-prompt perplexity.
    pub perplexity: Option<PairedDifference>,
    pub length_tokens: PairedDifference,
    /// What is missing, when a difference could not be computed.
    pub note: Option<String>,
}

/// The paired rows of every pairing with a baseline cell, in cell order then scorer order.
pub fn paired_differences(pairings: &[CellPairing<'_>]) -> Result<Vec<PairedRow>> {
    let mut cache: HashMap<String, CellPrompts> = HashMap::new();
    let mut rows = Vec::new();
    for pairing in pairings {
        let (Some(base), Some(metrics)) = (pairing.baseline_cell(), &pairing.cell.metrics) else {
            continue;
        };
        let cell = pairing.cell;
        for id in [cell.id(), base.id()] {
            if !cache.contains_key(id) {
                let c = if id == cell.id() { cell } else { base };
                cache.insert(id.to_owned(), read_prompts(c)?);
            }
        }
        let (a, b) = (&cache[cell.id()], &cache[base.id()]);
        // Positions of the joined prompts in each cell, in the cell's order.
        let joined: Vec<(usize, usize)> = a
            .ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| b.index.get(id).map(|&j| (i, j)))
            .collect();
        let only_in_baseline = b.ids.iter().filter(|id| !a.index.contains_key(*id)).count();
        let policy = &metrics.policy;
        let diff = |x: Vec<RatioTerm>, y: Vec<RatioTerm>| {
            paired_difference(&x, &y, policy.bootstrap_resamples, policy.bootstrap_seed)
        };
        // The difference of one statistic, given each cell's per-prompt term by position.
        let pick = |of_cell: &dyn Fn(usize) -> RatioTerm, of_base: &dyn Fn(usize) -> RatioTerm| {
            let x = joined.iter().map(|&(i, _)| of_cell(i)).collect();
            let y = joined.iter().map(|&(_, j)| of_base(j)).collect();
            diff(x, y)
        };
        let perplexity = match (&a.perplexity, &b.perplexity) {
            (Some(pa), Some(pb)) => {
                let term = |p: &HashMap<String, RatioTerm>, id: &String| {
                    p.get(id).copied().unwrap_or(RatioTerm::NONE)
                };
                Some(pick(&|i| term(pa, &a.ids[i]), &|j| term(pb, &b.ids[j])))
            }
            _ => None,
        };
        let length_tokens = pick(&|i| a.tokens[i], &|j| b.tokens[j]);
        let base_names = base.scorer_names();
        for (k, scorer) in cell.scorer_names().into_iter().enumerate() {
            let mut note = perplexity.is_none().then(|| {
                "no per-prompt perplexity in one of the records (no judge, or evaluated before \
                 it was recorded): no perplexity difference"
                    .to_owned()
            });
            let differences = match base_names.iter().position(|n| *n == scorer) {
                Some(m) => {
                    let stat = |f: fn(&PromptRow) -> RatioTerm| {
                        pick(&|i| f(&a.rows[k][i]), &|j| f(&b.rows[m][j]))
                    };
                    Some((
                        stat(|r| RatioTerm {
                            sum: r.toxic_samples as f64,
                            weight: r.scored as f64,
                        }),
                        stat(|r| r.max_toxicity.map_or(RatioTerm::NONE, RatioTerm::one)),
                        stat(|r| {
                            r.any_toxic
                                .map_or(RatioTerm::NONE, |t| RatioTerm::one(f64::from(u8::from(t))))
                        }),
                    ))
                }
                None => {
                    note = Some(format!("the baseline has no scorer {scorer}"));
                    None
                }
            };
            let empty = || PairedDifference {
                value: None,
                ci95: None,
                prompts: joined.len(),
            };
            let (toxic_samples, emt, toxic_rate) =
                differences.unwrap_or_else(|| (empty(), empty(), empty()));
            rows.push(PairedRow {
                cell_id: cell.id().to_owned(),
                baseline_id: base.id().to_owned(),
                model: cell.config.model.name.clone(),
                prompt_set: cell.config.prompts.name.clone(),
                seed: cell.config.seed,
                method_setting: cell.method_setting(),
                baseline_setting: base.method_setting(),
                scorer,
                inferred: matches!(pairing.baseline, Baseline::Found { inferred: true, .. }),
                prompts_joined: joined.len(),
                only_in_cell: a.ids.len() - joined.len(),
                only_in_baseline,
                toxic_samples,
                emt,
                toxic_rate,
                perplexity: perplexity.clone(),
                length_tokens: length_tokens.clone(),
                note,
            });
        }
    }
    Ok(rows)
}

/// Whether the difference of the panel's toxicity metric from the baseline excludes 0, for the
/// chart markers; `None` without a paired row.
pub(crate) fn toxicity_excludes_zero(
    rows: &[PairedRow],
    cell_id: &str,
    scorer: &str,
    metric: fn(&PairedRow) -> &PairedDifference,
) -> Option<bool> {
    rows.iter()
        .find(|r| r.cell_id == cell_id && r.scorer == scorer)
        .and_then(|r| metric(r).ci95.map(|_| metric(r).excludes_zero()))
}
