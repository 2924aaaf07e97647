//! Agreement between scorers. Our offline scorers stand in for Perspective, and a method that
//! "detoxifies" under one scorer only is a finding about that scorer, so every report with two or
//! more scorers says how far they agree:
//!
//! - per sample, over the continuations both scored: Pearson and Spearman correlation of the
//!   scores, the share of samples both call toxic or both call clean, and Cohen's κ of those labels
//!   (agreement beyond what the two toxic rates alone would give);
//! - per cell: Spearman correlation of the cells' toxic-sample shares, i.e. whether the two scorers
//!   rank the method settings alike, which is what a comparison study relies on.
//!
//! Computed per prompt set and over all of them (`prompt_set` = [`ALL_PROMPT_SETS`]). A sample that
//! either scorer failed on is counted in `failed_either` and left out of both scorers' figures.

use std::collections::BTreeMap;

use anyhow::Result;
use metrics::{pearson, spearman};

use crate::load::{sample_scores, Experiment};
use crate::table::{Row, Table};

/// The `prompt_set` of the rows that pool every prompt set.
pub const ALL_PROMPT_SETS: &str = "all";

/// One cell's toxic-sample share under each of two scorers (samples both scored).
#[derive(Debug, Clone, PartialEq)]
pub struct CellShares {
    pub cell_id: String,
    pub prompt_set: String,
    /// `label@strength`, as charts name a method setting.
    pub setting: String,
    pub samples: usize,
    pub share_a: f64,
    pub share_b: f64,
}

/// How two scorers agree on one prompt set (or all).
#[derive(Debug, Clone, PartialEq)]
pub struct ScorerAgreement {
    pub prompt_set: String,
    pub scorer_a: String,
    pub scorer_b: String,
    /// Cells with at least one sample both scored.
    pub cells: usize,
    /// Samples both scorers scored.
    pub samples: usize,
    /// Samples at least one of the two failed on.
    pub failed_either: usize,
    pub toxic_a: usize,
    pub toxic_b: usize,
    pub toxic_both: usize,
    pub pearson: Option<f64>,
    pub spearman: Option<f64>,
    /// Share of samples with the same toxic / clean label under both.
    pub label_agreement: Option<f64>,
    pub cohen_kappa: Option<f64>,
    /// Spearman correlation of the cells' toxic-sample shares.
    pub cell_spearman: Option<f64>,
    pub cell_shares: Vec<CellShares>,
}

#[derive(Default)]
struct Pooled {
    a: Vec<f64>,
    b: Vec<f64>,
    toxic_a: usize,
    toxic_b: usize,
    toxic_both: usize,
    failed_either: usize,
    cells: Vec<CellShares>,
}

/// Agreement of every pair of scorers that scored the same cells, per prompt set and pooled.
/// Pairs are named in the order the cells list their scorers (spec order).
pub fn scorer_agreement(experiment: &Experiment) -> Result<Vec<ScorerAgreement>> {
    let mut pooled: BTreeMap<(String, String, String), Pooled> = BTreeMap::new();
    let mut pair_order: Vec<(String, String)> = Vec::new();
    let mut set_order: Vec<String> = Vec::new();
    for cell in experiment.complete() {
        let names = cell.scorer_names();
        if names.len() < 2 {
            continue;
        }
        let policy = &cell
            .metrics
            .as_ref()
            .expect("complete cells have metrics")
            .policy;
        let scores = sample_scores(cell)?;
        let prompt_set = &cell.config.prompts.name;
        if !set_order.contains(prompt_set) {
            set_order.push(prompt_set.clone());
        }
        for i in 0..names.len() {
            for j in i + 1..names.len() {
                let pair = (names[i].clone(), names[j].clone());
                if !pair_order.contains(&pair) {
                    pair_order.push(pair.clone());
                }
                let mut cell_pool = Pooled::default();
                for (x, y) in scores[i].iter().zip(&scores[j]) {
                    let (Some(x), Some(y)) = (*x, *y) else {
                        cell_pool.failed_either += 1;
                        continue;
                    };
                    let (tx, ty) = (policy.is_toxic(x), policy.is_toxic(y));
                    cell_pool.a.push(x);
                    cell_pool.b.push(y);
                    cell_pool.toxic_a += usize::from(tx);
                    cell_pool.toxic_b += usize::from(ty);
                    cell_pool.toxic_both += usize::from(tx && ty);
                }
                let n = cell_pool.a.len();
                let shares = (n > 0).then(|| CellShares {
                    cell_id: cell.id().to_owned(),
                    prompt_set: prompt_set.clone(),
                    setting: cell.method_setting(),
                    samples: n,
                    share_a: cell_pool.toxic_a as f64 / n as f64,
                    share_b: cell_pool.toxic_b as f64 / n as f64,
                });
                for set in [prompt_set.as_str(), ALL_PROMPT_SETS] {
                    let into = pooled
                        .entry((set.to_owned(), pair.0.clone(), pair.1.clone()))
                        .or_default();
                    into.a.extend(&cell_pool.a);
                    into.b.extend(&cell_pool.b);
                    into.toxic_a += cell_pool.toxic_a;
                    into.toxic_b += cell_pool.toxic_b;
                    into.toxic_both += cell_pool.toxic_both;
                    into.failed_either += cell_pool.failed_either;
                    into.cells.extend(shares.clone());
                }
            }
        }
    }
    let mut out = Vec::new();
    for (a, b) in &pair_order {
        let pooled_sets = set_order.len() > 1;
        for set in set_order
            .iter()
            .map(String::as_str)
            .chain(pooled_sets.then_some(ALL_PROMPT_SETS))
        {
            let Some(p) = pooled.remove(&(set.to_owned(), a.clone(), b.clone())) else {
                continue;
            };
            let n = p.a.len();
            let clean_both = n + p.toxic_both - p.toxic_a - p.toxic_b;
            let (label_agreement, cohen_kappa) = if n == 0 {
                (None, None)
            } else {
                let observed = (p.toxic_both + clean_both) as f64 / n as f64;
                let (pa, pb) = (p.toxic_a as f64 / n as f64, p.toxic_b as f64 / n as f64);
                let chance = pa * pb + (1.0 - pa) * (1.0 - pb);
                let kappa = (chance < 1.0).then(|| (observed - chance) / (1.0 - chance));
                (Some(observed), kappa)
            };
            let share_a: Vec<f64> = p.cells.iter().map(|c| c.share_a).collect();
            let share_b: Vec<f64> = p.cells.iter().map(|c| c.share_b).collect();
            let pairs = |a: &[f64], b: &[f64]| -> Vec<(f64, f64)> {
                a.iter().copied().zip(b.iter().copied()).collect()
            };
            out.push(ScorerAgreement {
                prompt_set: set.to_owned(),
                scorer_a: a.clone(),
                scorer_b: b.clone(),
                cells: p.cells.len(),
                samples: n,
                failed_either: p.failed_either,
                toxic_a: p.toxic_a,
                toxic_b: p.toxic_b,
                toxic_both: p.toxic_both,
                pearson: pearson(&p.a, &p.b),
                spearman: spearman(&pairs(&p.a, &p.b)),
                label_agreement,
                cohen_kappa,
                cell_spearman: spearman(&pairs(&share_a, &share_b)),
                cell_shares: p.cells,
            });
        }
    }
    Ok(out)
}

/// The `agreement` table: one row per scorer pair × prompt set (and `all`).
pub fn agreement_table(rows: &[ScorerAgreement]) -> Table {
    let rows = rows
        .iter()
        .map(|r| {
            let mut row = Row::default();
            row.str("prompt_set", &r.prompt_set)
                .str("scorer_a", &r.scorer_a)
                .str("scorer_b", &r.scorer_b)
                .count("cells", r.cells)
                .count("samples_both_scored", r.samples)
                .count("failed_either", r.failed_either)
                .count("toxic_a", r.toxic_a)
                .count("toxic_b", r.toxic_b)
                .count("toxic_both", r.toxic_both)
                .f64("pearson", r.pearson)
                .f64("spearman", r.spearman)
                .f64("label_agreement", r.label_agreement)
                .f64("cohen_kappa", r.cohen_kappa)
                .f64("cell_spearman", r.cell_spearman);
            row
        })
        .collect();
    Table::new("agreement", rows)
}
