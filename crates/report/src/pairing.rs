//! Which cell each cell is compared with: its baseline.
//!
//! `cell.json`'s `method.baseline` names the label of the method entry a cell is compared with
//! (`none` by default; absent for a baseline). The baseline cell must have the same model, prompt
//! set, seed, samples per prompt, `max_new_tokens` and `min_new_tokens`, and that label. When
//! several cells qualify, those with the same `top_p` and `top_k` are preferred, then those with
//! the same strength; if more than one is still left the pairing is ambiguous and reported, never
//! chosen at random. A cell written before `method.baseline` existed (no field, a method other
//! than `none`) is compared with a `none`-labelled cell when one qualifies, as a spec with a
//! `none` entry would have resolved it; the report says it was inferred.

use crate::load::{CellOutputs, Experiment};

/// Where a cell stands against its baseline.
#[derive(Debug, Clone)]
pub enum Baseline<'a> {
    /// The cell is a baseline itself (names none).
    IsBaseline,
    /// The baseline cell; `inferred` when `cell.json` names no baseline (an older record).
    Found {
        cell: &'a CellOutputs,
        inferred: bool,
    },
    /// No complete cell qualifies; the reason says which label was looked for and what is
    /// missing.
    Missing(String),
    /// Several cells qualify even after the preferences.
    Ambiguous(Vec<&'a CellOutputs>),
}

/// One cell and its baseline.
#[derive(Debug, Clone)]
pub struct CellPairing<'a> {
    pub cell: &'a CellOutputs,
    pub baseline: Baseline<'a>,
}

impl CellPairing<'_> {
    /// The baseline cell, when one was found.
    pub fn baseline_cell(&self) -> Option<&CellOutputs> {
        match &self.baseline {
            Baseline::Found { cell, .. } => Some(cell),
            _ => None,
        }
    }

    /// Why there is no baseline cell, in words (`None` when there is one).
    pub fn why_unpaired(&self) -> Option<String> {
        match &self.baseline {
            Baseline::Found { .. } => None,
            Baseline::IsBaseline => Some("is a baseline (names no baseline)".into()),
            Baseline::Missing(reason) => Some(reason.clone()),
            Baseline::Ambiguous(cells) => Some(format!(
                "ambiguous baseline: {} cells qualify ({})",
                cells.len(),
                cells
                    .iter()
                    .map(|c| format!("`{}` {}", c.id(), c.method_setting()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

/// What must be equal for two cells to be compared: model, prompt set, seed, samples per prompt,
/// `max_new_tokens`, `min_new_tokens` (absent = 0).
fn comparable(a: &CellOutputs, b: &CellOutputs) -> bool {
    let (a, b) = (&a.config, &b.config);
    let generation = |c: &records::CellRecord| {
        let g = c.generation.as_ref();
        (
            g.and_then(|g| g.samples_per_prompt),
            g.and_then(|g| g.max_new_tokens),
            g.and_then(|g| g.min_new_tokens).unwrap_or(0),
        )
    };
    a.model.name == b.model.name
        && a.prompts.name == b.prompts.name
        && a.seed == b.seed
        && generation(a) == generation(b)
}

fn same_candidates(a: &CellOutputs, b: &CellOutputs) -> bool {
    let sampling = |c: &CellOutputs| {
        let g = c.config.generation.as_ref();
        (g.and_then(|g| g.top_p), g.and_then(|g| g.top_k))
    };
    sampling(a) == sampling(b)
}

/// The baseline label a cell names, and whether it was inferred.
fn wanted_label(cell: &CellOutputs, experiment: &Experiment) -> Option<(String, bool)> {
    let m = &cell.config.method;
    if let Some(label) = &m.baseline {
        return Some((label.clone(), false));
    }
    let older_method = m.name != "none" && m.label != "none";
    let has_none = experiment
        .cells
        .iter()
        .any(|c| c.config.method.label == "none");
    (older_method && has_none).then(|| ("none".into(), true))
}

/// Every cell (complete or not) with its baseline, in the experiment's order.
pub fn pair_cells(experiment: &Experiment) -> Vec<CellPairing<'_>> {
    experiment
        .cells
        .iter()
        .map(|cell| CellPairing {
            cell,
            baseline: find_baseline(cell, experiment),
        })
        .collect()
}

fn find_baseline<'a>(cell: &CellOutputs, experiment: &'a Experiment) -> Baseline<'a> {
    let Some((label, inferred)) = wanted_label(cell, experiment) else {
        return Baseline::IsBaseline;
    };
    let labelled: Vec<&CellOutputs> = experiment
        .cells
        .iter()
        .filter(|c| c.config.method.label == label && c.id() != cell.id())
        .collect();
    let qualifying: Vec<&CellOutputs> = labelled
        .iter()
        .copied()
        .filter(|c| comparable(cell, c))
        .collect();
    let complete: Vec<&CellOutputs> = qualifying
        .iter()
        .copied()
        .filter(|c| c.metrics.is_some())
        .collect();
    if complete.is_empty() {
        return Baseline::Missing(if !qualifying.is_empty() {
            format!("baseline `{label}` has not been evaluated yet (incomplete)")
        } else if !labelled.is_empty() {
            format!(
                "no `{label}` cell with the same model, prompt set, seed, samples per prompt, \
                 max_new_tokens and min_new_tokens"
            )
        } else {
            format!("no cell labelled `{label}` in this experiment")
        });
    }
    let mut best = complete;
    for prefer in [
        &(|c: &CellOutputs| same_candidates(cell, c)) as &dyn Fn(&CellOutputs) -> bool,
        &|c: &CellOutputs| c.config.method.strength == cell.config.method.strength,
    ] {
        if best.len() > 1 {
            let preferred: Vec<&CellOutputs> = best.iter().copied().filter(|c| prefer(c)).collect();
            if !preferred.is_empty() {
                best = preferred;
            }
        }
    }
    if best.len() == 1 {
        Baseline::Found {
            cell: best[0],
            inferred,
        }
    } else {
        Baseline::Ambiguous(best)
    }
}
